//! `clearance backup` and `clearance restore`. A backup is a SQLite store of its own
//! whose base is the state of the source at one revision (its latest checkpoint and the
//! changes after it, every checksum verified, read while the source keeps serving), with
//! the source's policy and service keys. Restore seeds an empty store (SQLite or a
//! migrated PostgreSQL) with it, and a checkpoint of it: a host started on it serves that
//! revision, loading the checkpoint's snapshot rather than building one.

use clearance_host::store::checkpoint::recover;
use clearance_host::store::{FactStore, SqliteFile, SqliteStore, StoredKey, open_existing};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What a store holds at its last revision: facts and policy, with its keys.
async fn state(
    store: &dyn FactStore,
) -> Result<
    (
        clearance_core::Facts,
        clearance_host::store::StoredPolicy,
        Vec<StoredKey>,
    ),
    String,
> {
    let recovered = recover(store, None).await?;
    let policy = recovered
        .policy
        .ok_or("the store keeps no policy yet: start a host on it once, then back it up")?;
    let keys = store.keys().await.map_err(|e| e.to_string())?;
    Ok((recovered.facts, policy, keys))
}

/// Writes a SQLite store at `path` (which must not exist) holding `facts` under
/// `policy` as its base, and `keys`.
async fn write_sqlite(
    path: &Path,
    facts: clearance_core::Facts,
    policy: clearance_host::store::StoredPolicy,
    keys: Vec<StoredKey>,
) -> Result<(), String> {
    if path.exists() {
        return Err(format!(
            "{} exists: a backup or a restore never writes over a store",
            path.display()
        ));
    }
    let path = PathBuf::from(path);
    tokio::task::spawn_blocking(move || {
        let (mut file, _) = SqliteFile::open_or_create(&path, move || Ok((facts, policy)))
            .map_err(|e| e.to_string())?;
        for key in &keys {
            file.add_key(key).map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Backs up the store `spec` names into a new SQLite file `out`, online.
pub async fn backup(spec: &str, out: &Path) -> Result<ExitCode, String> {
    let store = open_existing(spec).await.map_err(|e| e.to_string())?;
    let (facts, policy, keys) = state(store.as_ref()).await?;
    let (revision, entities, tuples, n) = (
        facts.revision,
        facts.entities.len(),
        facts.tuples.len(),
        keys.len(),
    );
    write_sqlite(out, facts, policy, keys).await?;
    eprintln!(
        "clearance: backed up revision {revision} of {} ({entities} entities, {tuples} tuples, {n} keys) to {}",
        store.describe(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Restores the backup `from` into the empty store `spec` names.
pub async fn restore(from: &Path, spec: &str) -> Result<ExitCode, String> {
    let path = from.to_path_buf();
    let file = tokio::task::spawn_blocking(move || SqliteFile::open(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", from.display()))?;
    let (facts, policy, keys) = state(&SqliteStore::new(file)).await?;
    let revision = facts.revision;
    if clearance_host::store::postgres::is_postgres(spec) {
        let store = clearance_host::store::postgres::PgStore::connect(spec)
            .await
            .map_err(|e| e.to_string())?;
        let seeded = store
            .seed_if_empty(move || Ok((facts, policy)))
            .await
            .map_err(|e| e.to_string())?;
        if !seeded {
            return Err(format!(
                "{} holds facts already: restore only into an empty store",
                store.describe()
            ));
        }
        for key in keys {
            store.add_key(key).await.map_err(|e| e.to_string())?;
        }
    } else {
        write_sqlite(Path::new(spec), facts, policy, keys).await?;
    }
    eprintln!(
        "clearance: restored revision {revision} from {} into {spec}",
        from.display()
    );
    // A checkpoint at the restored revision, snapshot and all, so that the first host to
    // start on the store loads the snapshot instead of building it.
    let store = open_existing(spec).await.map_err(|e| e.to_string())?;
    match clearance_host::store::checkpoint::write_checkpoint(store.as_ref(), revision).await {
        Ok(Some(w)) => eprintln!(
            "clearance: a checkpoint at revision {revision} ({} bytes of facts, {} of snapshot)",
            w.facts_bytes, w.snapshot_bytes
        ),
        Ok(None) => {}
        // The restore is whole: a host builds the snapshot at start, only slower.
        Err(e) => eprintln!("clearance: no checkpoint was written ({e})"),
    }
    Ok(ExitCode::SUCCESS)
}
