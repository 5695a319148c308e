//! The fact store's contract, held on SQLite and PostgreSQL alike, through the
//! `FactStore` trait the service uses: appends all or nothing by compare-and-set on the
//! revision (a taken revision is a conflict, nothing stored; two handles racing for one
//! revision, one wins), bounded pages, checkpoints that start-up prefers, keys.

use super::block;
use super::pg::Pg;
use clearance_core::Facts;
use clearance_host::store::postgres::PgStore;
use clearance_host::store::{
    Change, Checkpoint, FactStore, SqliteFile, SqliteStore, StoreErrorKind, StoredKey, StoredPolicy,
};
use serde_json::json;
use std::sync::Arc;

fn policy() -> StoredPolicy {
    let sources =
        clearance_host::policy_dir::read_policies(&super::root().join("policies")).unwrap();
    clearance_host::store::StoredPolicy::of(&sources).unwrap()
}

fn change(revision: u64, author: &str) -> Change {
    Change {
        revision,
        author: author.into(),
        at: 1_700_000_000 + i64::try_from(revision).unwrap(),
        deltas: serde_json::from_value(json!([
            { "op": "add_entity", "entity": { "type": "event", "id": format!("e{revision}"), "account": "skyways" } }
        ]))
        .unwrap(),
        policy: None,
        via: Some(format!("key:{author}")),
        accounts: Some(vec!["account:skyways".into()]),
    }
}

fn revisions(changes: &[Change]) -> Vec<u64> {
    changes.iter().map(|c| c.revision).collect()
}

/// The contract, on a store seeded with empty facts at revision 0; `other` is a second
/// handle on the same store.
async fn contract(store: &dyn FactStore, other: &dyn FactStore) {
    let l = store.latest(None).await.unwrap();
    assert_eq!((l.revision, l.changes.len()), (0, 0));
    assert!(l.snapshot.is_none() && l.policy.is_some());
    assert_eq!(store.last_revision().await.unwrap(), 0);

    store
        .append_all(Arc::new(vec![
            change(1, "a"),
            change(2, "a"),
            change(3, "a"),
        ]))
        .await
        .unwrap();
    store.append(change(4, "a")).await.unwrap();
    // A revision taken: a conflict, nothing stored, through either handle.
    for s in [store, other] {
        let e = s.append(change(4, "b")).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Conflict, "{e}");
        let e = s
            .append_all(Arc::new(vec![change(4, "b"), change(5, "b")]))
            .await
            .unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Conflict, "{e}");
    }
    // A gap is refused, and is no conflict.
    let e = store.append(change(6, "a")).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Failed, "{e}");
    assert_eq!(store.last_revision().await.unwrap(), 4);
    assert_eq!(other.last_revision().await.unwrap(), 4);

    // The other handle appends next; this one, behind, is refused, then goes on.
    other.append(change(5, "b")).await.unwrap();
    let e = store.append(change(5, "a")).await.unwrap_err();
    assert_eq!(e.kind, StoreErrorKind::Conflict);
    store.append(change(6, "a")).await.unwrap();

    // Two handles racing for one revision: exactly one wins.
    let (x, y) = tokio::join!(store.append(change(7, "a")), other.append(change(7, "b")));
    assert!(x.is_ok() != y.is_ok(), "{x:?} {y:?}");
    let loser = x.err().or(y.err()).unwrap();
    assert_eq!(loser.kind, StoreErrorKind::Conflict);

    // Pages: after a revision, at most a count, and at most about a byte size past the
    // first; each change as it was appended.
    let page = store.changes_page(1, 2, usize::MAX).await.unwrap();
    assert_eq!(revisions(&page), [2, 3]);
    assert_eq!(page[0].author, "a");
    assert_eq!(page[0].via.as_deref(), Some("key:a"));
    assert_eq!(
        page[0].accounts.as_deref(),
        Some(&["account:skyways".to_string()][..])
    );
    assert_eq!(
        serde_json::to_value(&page[0].deltas).unwrap(),
        serde_json::to_value(&change(2, "a").deltas).unwrap()
    );
    assert_eq!(
        revisions(&store.changes_page(0, 100, 1).await.unwrap()),
        [1]
    );
    assert_eq!(
        store.changes_page(7, 100, usize::MAX).await.unwrap().len(),
        0
    );

    // Every change verified along the chain.
    let l = store.latest(None).await.unwrap();
    assert_eq!(revisions(&l.changes), [1, 2, 3, 4, 5, 6, 7]);
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.changes.len(), 7);
    store.verify_base().await.unwrap();

    // A checkpoint is where start-up begins; one of a revision not stored is refused.
    let checkpoint = Checkpoint {
        revision: 3,
        facts: serde_json::to_string(&Facts::default().to_doc()).unwrap(),
        policy: policy(),
        snapshot: vec![1, 2, 3],
    };
    store
        .put_checkpoint(Arc::new(checkpoint.clone()))
        .await
        .unwrap();
    let mut beyond = checkpoint.clone();
    beyond.revision = 99;
    assert!(store.put_checkpoint(Arc::new(beyond)).await.is_err());
    assert_eq!(other.checkpoints().await.unwrap(), [3]);
    let l = other.latest(None).await.unwrap();
    assert_eq!(
        (l.revision, l.snapshot.as_deref()),
        (3, Some(&[1u8, 2, 3][..]))
    );
    assert_eq!(revisions(&l.changes), [4, 5, 6, 7]);
    let l = other.latest(Some(5)).await.unwrap();
    assert_eq!((l.revision, revisions(&l.changes)), (3, vec![4, 5]));
    let l = other.latest(Some(2)).await.unwrap();
    assert_eq!((l.revision, revisions(&l.changes)), (0, vec![1, 2]));

    // Keys: stored, listed through the other handle, an id taken refused, revoked once.
    let key = StoredKey {
        id: "k1".into(),
        hash: "00".repeat(32),
        scope: "service".into(),
        accounts: vec!["skyways".into()],
        label: "backend".into(),
        created: 5,
        revoked: None,
    };
    store.add_key(key.clone()).await.unwrap();
    assert!(store.add_key(key.clone()).await.is_err());
    assert_eq!(other.keys().await.unwrap(), std::slice::from_ref(&key));
    assert!(other.revoke_key("k1".into(), 9).await.unwrap());
    assert!(!store.revoke_key("k1".into(), 10).await.unwrap());
    assert_eq!(store.keys().await.unwrap()[0].revoked, Some(9));
}

#[test]
fn the_sqlite_store_keeps_the_contract() {
    let db = super::scratch("stores-sqlite").join("s.db");
    let (file, created) =
        SqliteFile::open_or_create(&db, || Ok((Facts::default(), policy()))).unwrap();
    assert!(created);
    let store = SqliteStore::new(file);
    let other = SqliteStore::new(SqliteFile::open(&db).unwrap());
    block(contract(&store, &other));
}

#[test]
fn the_postgres_store_keeps_the_contract() {
    let pg = Pg::start("stores");
    let url = pg.database("contract");
    block(async {
        PgStore::migrate(&url).await.unwrap();
        let store = PgStore::connect(&url).await.unwrap();
        let other = PgStore::connect(&url).await.unwrap();
        assert!(
            store
                .seed_if_empty(|| Ok((Facts::default(), policy())))
                .await
                .unwrap()
        );
        assert!(
            !other
                .seed_if_empty(|| Err("seeded twice".into()))
                .await
                .unwrap()
        );
        contract(&store, &other).await;
        // A changed row is found, naming its revision, as on SQLite.
        pg.sql(
            "contract",
            "UPDATE clearance_changes SET author = 'mallory' WHERE revision = 5",
        );
        let e = store.latest(Some(7)).await.unwrap_err();
        assert!(
            e.message.contains("revision 5 does not match its checksum"),
            "{e}"
        );
    });
}

#[test]
fn a_postgres_holder_of_the_append_lock_that_stops_is_cut_off() {
    let pg = Pg::start("holder");
    let url = pg.database("holder");
    block(async {
        PgStore::migrate(&url).await.unwrap();
        let stopped = PgStore::connect(&url).await.unwrap();
        let other = PgStore::connect(&url).await.unwrap();
        stopped
            .seed_if_empty(|| Ok((Facts::default(), policy())))
            .await
            .unwrap();
        // A host that holds the lock, then stops: the database ends its transaction
        // after 5 s idle, and the others append.
        stopped.hold_appends().await.unwrap();
        let t = std::time::Instant::now();
        other.append(change(1, "other")).await.unwrap();
        let waited = t.elapsed();
        assert!(
            waited >= std::time::Duration::from_secs(4),
            "the append did not wait for the holder: {waited:?}"
        );
        // The stopped host, resumed, stores nothing on the transaction it lost.
        let e = stopped.append(change(1, "stopped")).await.unwrap_err();
        assert_ne!(e.kind, StoreErrorKind::Failed, "{e}");
        let page = other.changes_page(0, 10, usize::MAX).await.unwrap();
        assert_eq!(revisions(&page), [1]);
        assert_eq!(page[0].author, "other");
        // And goes on with a new one.
        stopped.append(change(2, "stopped")).await.unwrap();
    });
}
