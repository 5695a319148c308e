//! The PostgreSQL fact store, for several hosts on one history: the same base, changes,
//! keys and checkpoints as the SQLite store, with the same chained checksums, in tables
//! of their own (`clearance_*`) that versioned migrations create ([`PgStore::migrate`]).
//!
//! Appending revision N is the compare-and-set: the revision is the primary key, so two
//! hosts cannot both take N; the one that loses gets [`StoreErrorKind::Conflict`] and
//! nothing stored, catches up and judges again. A committed append notifies the channel
//! `clearance_changes`; every host listens on it (and also polls, since a notification
//! sent while a listener reconnects is lost).
//!
//! sqlx rather than tokio-postgres with deadpool: its pool tests a connection before
//! handing it out and drops broken ones, so a restarted database is reconnected to
//! without code of ours, and its listener reconnects and listens again by itself.

use super::{
    CHECKPOINTS_KEPT, Chain, Change, Checkpoint, CheckpointRow, FactStore, Latest, Row, StoreError,
    StoreErrorKind, StoreFuture, Stored, StoredKey, StoredPolicy, base_checksum, change_checksum,
    checkpoint_checksum, policy_of, verify_checkpoint,
};
use clearance_core::{Facts, FactsJson};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row as _};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The migrations, in order: version N is the Nth. A migration is never changed once
/// released; a new one is added.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE clearance_base (id INTEGER PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL,
                                 facts TEXT NOT NULL, policy TEXT, checksum TEXT NOT NULL,
                                 created BIGINT NOT NULL);
    CREATE TABLE clearance_changes (revision BIGINT PRIMARY KEY, author TEXT NOT NULL,
                                    at BIGINT NOT NULL, deltas TEXT NOT NULL, policy TEXT,
                                    checksum TEXT NOT NULL, via TEXT, accounts TEXT);
    CREATE TABLE clearance_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, scope TEXT NOT NULL,
                                 accounts TEXT NOT NULL, label TEXT NOT NULL,
                                 created BIGINT NOT NULL, revoked BIGINT);
    CREATE TABLE clearance_checkpoints (revision BIGINT PRIMARY KEY, chain TEXT NOT NULL,
                                        facts TEXT NOT NULL, policy TEXT NOT NULL,
                                        snapshot BYTEA NOT NULL, checksum TEXT NOT NULL,
                                        created BIGINT NOT NULL);
"];

/// The schema version this host knows: the number of migrations.
pub const PG_FORMAT: i64 = MIGRATIONS.len() as i64;

/// The channel a committed append notifies, with its last revision.
const CHANNEL: &str = "clearance_changes";

/// A lock key of this project's, taken while migrating so that two `migrate` runs do not
/// interleave.
const MIGRATE_LOCK: i64 = 0x636c_6561_7261_6e63;

/// Whether `spec` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// A store error from the database: a lost connection or a database shutting down or
/// starting is [`StoreErrorKind::Unavailable`]; a revision taken is a conflict.
fn pe(err: sqlx::Error) -> StoreError {
    let message = err.to_string();
    match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            if code == "23505" {
                StoreError::conflict(message)
            } else if code.starts_with("08")
                || code.starts_with("57")
                || code == "53300"
                || code == "55P03"
                || code == "25P03"
            {
                StoreError::unavailable(message)
            } else {
                StoreError::failed(message)
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::unavailable(message),
        _ => StoreError::failed(message),
    }
}

/// Where a database is, without its password: for logs.
fn describe(url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(o) => format!(
            "PostgreSQL at {}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("")
        ),
        Err(_) => "PostgreSQL".into(),
    }
}

/// The lock every append takes (transaction-scoped), and a host holds while it catches
/// up after losing the compare-and-set.
const APPEND_LOCK: i64 = 0x636c_7200_6170_7064;

/// How long a holder of the append lock may sit idle in its transaction before the
/// database ends it, so a host stopped while it holds the lock (SIGSTOP, a pause) never
/// blocks the others for longer.
const HOLD_IDLE: &str = "5s";

/// How long an append waits for the append lock before it is answered unavailable:
/// longer than [`HOLD_IDLE`], so a stopped holder is cut off first.
const LOCK_WAIT: &str = "10s";

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    /// The transaction holding the append lock, between [`FactStore::hold_appends`] and
    /// the next append.
    held: tokio::sync::Mutex<Option<sqlx::Transaction<'static, sqlx::Postgres>>>,
    described: String,
    signal: Arc<tokio::sync::Notify>,
}

fn options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::failed(format!("{}: {e}", describe(url))))
}

/// The schema version a database holds: `None` when it was never migrated.
async fn version(conn: &mut sqlx::PgConnection) -> Result<Option<i64>, StoreError> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('clearance_schema')::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(pe)?;
    if exists.is_none() {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT version FROM clearance_schema")
        .fetch_optional(&mut *conn)
        .await
        .map_err(pe)
}

impl PgStore {
    /// Migrates the database at `url` to this host's schema, all in one transaction
    /// under a lock; answers the version it was at (0: never migrated). Refuses a schema
    /// newer than this host's.
    pub async fn migrate(url: &str) -> Result<i64, StoreError> {
        let mut conn = sqlx::PgConnection::connect_with(&options(url)?)
            .await
            .map_err(pe)?;
        let mut tx = conn.begin().await.map_err(pe)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(pe)?;
        let from = version(&mut tx).await?.unwrap_or(0);
        if from > PG_FORMAT {
            return Err(StoreError::failed(format!(
                "{} holds schema version {from}, newer than this host's {PG_FORMAT}",
                describe(url)
            )));
        }
        if from == 0 {
            sqlx::query("CREATE TABLE IF NOT EXISTS clearance_schema (version BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await
                .map_err(pe)?;
            sqlx::query("INSERT INTO clearance_schema (version) VALUES (0)")
                .execute(&mut *tx)
                .await
                .map_err(pe)?;
        }
        for (i, migration) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(from).unwrap_or(usize::MAX))
        {
            sqlx::raw_sql(migration)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::failed(format!("migration {}: {e}", i + 1)))?;
        }
        sqlx::query("UPDATE clearance_schema SET version = $1")
            .bind(PG_FORMAT)
            .execute(&mut *tx)
            .await
            .map_err(pe)?;
        tx.commit().await.map_err(pe)?;
        Ok(from)
    }

    /// Connects to the database at `url`, refusing a schema that is unmigrated or newer
    /// than this host's (and saying which), and listens for appends of other hosts.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let described = describe(url);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .test_before_acquire(true)
            .connect_with(options(url)?)
            .await
            .map_err(pe)?;
        let mut conn = pool.acquire().await.map_err(pe)?;
        match version(&mut conn).await? {
            Some(PG_FORMAT) => {}
            None => {
                return Err(StoreError::failed(format!(
                    "{described} is not migrated: run `clearance migrate --store <url>` first"
                )));
            }
            Some(v) if v < PG_FORMAT => {
                return Err(StoreError::failed(format!(
                    "{described} holds schema version {v}, older than this host's {PG_FORMAT}: back it up, then run `clearance migrate --store <url>`"
                )));
            }
            Some(v) => {
                return Err(StoreError::failed(format!(
                    "{described} holds schema version {v}, newer than this host's {PG_FORMAT}: run a newer host on it"
                )));
            }
        }
        drop(conn);
        let signal = Arc::new(tokio::sync::Notify::new());
        let listener = PgListener::connect_with(&pool).await.map_err(pe)?;
        tokio::spawn(listen(listener, Arc::downgrade(&signal)));
        Ok(PgStore {
            pool,
            held: tokio::sync::Mutex::new(None),
            described,
            signal,
        })
    }

    /// Seeds the database with `seed()` (the facts and the policy they are stored
    /// under) when it holds no base yet; answers whether this call seeded it. When
    /// several hosts start at once, one seeds and the others read what it stored.
    pub async fn seed_if_empty(
        &self,
        seed: impl FnOnce() -> Result<(Facts, StoredPolicy), String>,
    ) -> Result<bool, StoreError> {
        let has: Option<i64> =
            sqlx::query_scalar("SELECT revision FROM clearance_base WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(pe)?;
        if has.is_some() {
            return Ok(false);
        }
        let (facts, policy) = seed().map_err(StoreError::failed)?;
        let text = serde_json::to_string(&facts.to_doc())
            .map_err(|e| StoreError::failed(e.to_string()))?;
        let policy =
            serde_json::to_string(&policy).map_err(|e| StoreError::failed(e.to_string()))?;
        let inserted = sqlx::query(
            "INSERT INTO clearance_base (id, revision, facts, policy, checksum, created)
             VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(facts.revision as i64)
        .bind(&text)
        .bind(&policy)
        .bind(base_checksum(facts.revision, &text, Some(&policy)))
        .bind(crate::clock::now_seconds())
        .execute(&self.pool)
        .await
        .map_err(pe)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn base_head(&self) -> Result<(u64, String), StoreError> {
        let row = sqlx::query("SELECT revision, checksum FROM clearance_base WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(pe)?
            .ok_or_else(|| StoreError::failed(format!("{} holds no base facts", self.described)))?;
        Ok((get_u64(&row, 0)?, get(&row, 1)?))
    }

    /// The base: its revision, facts text, policy text and checksum, verified.
    async fn base(&self) -> Result<(u64, String, Option<String>, String), StoreError> {
        let row = sqlx::query(
            "SELECT revision, facts, policy, checksum FROM clearance_base WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(pe)?
        .ok_or_else(|| StoreError::failed(format!("{} holds no base facts", self.described)))?;
        let revision = get_u64(&row, 0)?;
        let (text, policy, checksum): (String, Option<String>, String) =
            (get(&row, 1)?, get(&row, 2)?, get(&row, 3)?);
        let computed = base_checksum(revision, &text, policy.as_deref());
        if checksum != computed {
            return Err(StoreError::failed(format!(
                "the base facts (revision {revision}) do not match their checksum: the store was changed outside Clearance; restore it from a backup"
            )));
        }
        Ok((revision, text, policy, computed))
    }

    async fn rows(&self, after: u64, limit: i64) -> Result<Vec<Row>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision, author, at, deltas, policy, checksum, via, accounts FROM clearance_changes
             WHERE revision > $1 ORDER BY revision LIMIT $2",
        )
        .bind(after as i64)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(pe)?;
        rows.iter().map(row_of).collect()
    }

    async fn verified(
        &self,
        revision: u64,
        prev: String,
        upto: Option<u64>,
    ) -> Result<Vec<Change>, StoreError> {
        let mut chain = Chain::new(revision, prev, upto);
        while !chain.done() {
            let page = self.rows(chain.after(), 1024).await?;
            if page.is_empty() || !chain.take(page)? {
                break;
            }
        }
        Ok(chain.changes)
    }

    async fn chain_at(&self, revision: u64) -> Result<Option<String>, StoreError> {
        let change: Option<String> =
            sqlx::query_scalar("SELECT checksum FROM clearance_changes WHERE revision = $1")
                .bind(revision as i64)
                .fetch_optional(&self.pool)
                .await
                .map_err(pe)?;
        if change.is_some() {
            return Ok(change);
        }
        sqlx::query_scalar("SELECT checksum FROM clearance_base WHERE id = 1 AND revision = $1")
            .bind(revision as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(pe)
    }

    async fn append_group(
        &self,
        changes: &[Change],
        serialized: Option<String>,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let held = self.held.lock().await.take();
        let mut tx = match held {
            Some(tx) => tx,
            None => self.locked().await?,
        };
        match self.insert(&mut tx, changes, serialized).await {
            Ok(()) => tx.commit().await.map_err(|e| {
                // A commit that fails to answer may or may not have taken: the caller
                // reads it back.
                let mut e = pe(e);
                if e.kind == StoreErrorKind::Failed {
                    e.kind = StoreErrorKind::Unavailable;
                }
                e
            }),
            Err(e) => {
                // Rolled back now, not when the pool next hands the connection out: until
                // then it would hold the append lock.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Checks the tail and inserts `changes` (not empty) in `tx`, which holds the append
    /// lock, and notifies the other hosts on commit.
    async fn insert(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        changes: &[Change],
        mut serialized: Option<String>,
    ) -> Result<(), StoreError> {
        let Some(first) = changes.first() else {
            return Ok(());
        };
        let tail = sqlx::query(
            "SELECT revision, checksum FROM clearance_changes ORDER BY revision DESC LIMIT 1",
        )
        .fetch_optional(&mut **tx)
        .await
        .map_err(pe)?;
        let tail = match tail {
            Some(row) => row,
            None => sqlx::query("SELECT revision, checksum FROM clearance_base WHERE id = 1")
                .fetch_optional(&mut **tx)
                .await
                .map_err(pe)?
                .ok_or_else(|| {
                    StoreError::failed(format!("{} holds no base facts", self.described))
                })?,
        };
        let (mut last, mut prev): (u64, String) = (get_u64(&tail, 0)?, get(&tail, 1)?);
        if first.revision <= last {
            return Err(StoreError::conflict(format!(
                "revision {} is taken: the store is at {last}",
                first.revision
            )));
        }
        for change in changes {
            if change.revision != last + 1 {
                return Err(StoreError::failed(format!(
                    "revision {} is not next: the store is at {last}",
                    change.revision
                )));
            }
            let mut row = Row::with(change, serialized.take())?;
            let sum = change_checksum(&prev, &row);
            row.checksum = Some(sum.clone());
            sqlx::query(
                "INSERT INTO clearance_changes (revision, author, at, deltas, policy, checksum, via, accounts)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(row.revision as i64)
            .bind(&row.author)
            .bind(row.at)
            .bind(&row.deltas)
            .bind(&row.policy)
            .bind(&row.checksum)
            .bind(&row.via)
            .bind(&row.accounts)
            .execute(&mut **tx)
            .await
            .map_err(pe)?;
            (last, prev) = (change.revision, sum);
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(last.to_string())
            .execute(&mut **tx)
            .await
            .map_err(pe)?;
        Ok(())
    }

    /// A transaction holding the append lock.
    async fn locked(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pe)?;
        match lock(&mut tx).await {
            Ok(()) => Ok(tx),
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn latest_state(&self, upto: Option<u64>) -> Result<Latest, StoreError> {
        let (base_revision, base_sum) = self.base_head().await?;
        let revisions: Vec<i64> = sqlx::query_scalar(
            "SELECT revision FROM clearance_checkpoints WHERE revision <= $1 ORDER BY revision DESC",
        )
        .bind(upto.map_or(i64::MAX, |u| u as i64))
        .fetch_all(&self.pool)
        .await
        .map_err(pe)?;
        let mut passed_over = Vec::new();
        for revision in revisions {
            let revision =
                u64::try_from(revision).map_err(|e| StoreError::failed(e.to_string()))?;
            let row = sqlx::query(
                "SELECT chain, facts, policy, snapshot, checksum FROM clearance_checkpoints WHERE revision = $1",
            )
            .bind(revision as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(pe)?;
            let Some(row) = row else { continue };
            let read: CheckpointRow = (
                get(&row, 0)?,
                get(&row, 1)?,
                get(&row, 2)?,
                get(&row, 3)?,
                get(&row, 4)?,
            );
            let stored = if revision == base_revision {
                Some(base_sum.clone())
            } else {
                self.chain_at(revision).await?
            };
            match verify_checkpoint(revision, read, stored.as_deref()) {
                Ok((chain, facts, policy, snapshot)) => {
                    let changes = self.verified(revision, chain, upto).await?;
                    return Ok(Latest {
                        base_revision,
                        revision,
                        facts,
                        policy: Some(policy),
                        snapshot: Some(snapshot),
                        changes,
                        passed_over,
                    });
                }
                Err(why) => {
                    passed_over.push(format!("the checkpoint at revision {revision}: {why}"))
                }
            }
        }
        let (base_revision, text, policy, base_sum) = self.base().await?;
        let changes = self.verified(base_revision, base_sum, upto).await?;
        Ok(Latest {
            base_revision,
            revision: base_revision,
            facts: text,
            policy: policy_of(policy.as_deref(), "the base policy")?,
            snapshot: None,
            changes,
            passed_over,
        })
    }
}

/// Takes the append lock in `tx`, waiting at most [`LOCK_WAIT`], and bounds how long
/// the transaction may then sit idle ([`HOLD_IDLE`]).
async fn lock(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>) -> Result<(), StoreError> {
    for set in [
        format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"),
        format!("SET LOCAL idle_in_transaction_session_timeout = '{HOLD_IDLE}'"),
    ] {
        sqlx::query(&set).execute(&mut **tx).await.map_err(pe)?;
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut **tx)
        .await
        .map_err(pe)?;
    Ok(())
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    i: usize,
) -> Result<T, StoreError> {
    row.try_get(i).map_err(pe)
}

fn get_u64(row: &PgRow, i: usize) -> Result<u64, StoreError> {
    let v: i64 = get(row, i)?;
    u64::try_from(v).map_err(|e| StoreError::failed(format!("a revision of {v}: {e}")))
}

fn row_of(r: &PgRow) -> Result<Row, StoreError> {
    Ok(Row {
        revision: get_u64(r, 0)?,
        author: get(r, 1)?,
        at: get(r, 2)?,
        deltas: get(r, 3)?,
        policy: get(r, 4)?,
        checksum: get(r, 5)?,
        via: get(r, 6)?,
        accounts: get(r, 7)?,
    })
}

/// Wakes `signal` on every notification of an append, and once after the listener
/// reconnects (notifications sent meanwhile are lost), until the store is dropped.
async fn listen(mut listener: PgListener, signal: std::sync::Weak<tokio::sync::Notify>) {
    let mut listening = false;
    loop {
        if !listening {
            match listener.listen(CHANNEL).await {
                Ok(()) => listening = true,
                Err(_) => {
                    if signal.strong_count() == 0 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            }
        }
        let next = tokio::time::timeout(Duration::from_secs(1), listener.try_recv()).await;
        let Some(signal) = signal.upgrade() else {
            return;
        };
        match next {
            Ok(Ok(Some(_))) | Ok(Ok(None)) => signal.notify_one(),
            Ok(Err(_)) => {
                // The connection is lost and could not be made again yet.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(_) => {}
        }
    }
}

impl FactStore for PgStore {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn load(&self) -> StoreFuture<'_, Stored> {
        Box::pin(async move {
            let (revision, text, policy, computed) = self.base().await?;
            let mut doc: FactsJson = serde_json::from_str(&text).map_err(|x| {
                StoreError::failed(format!("the base facts (revision {revision}): {x}"))
            })?;
            doc.revision = revision;
            let base = Facts::from_doc(doc).map_err(|x| {
                StoreError::failed(format!("the base facts (revision {revision}): {x}"))
            })?;
            let policy = policy_of(policy.as_deref(), "the base policy")?;
            let changes = self.verified(revision, computed, None).await?;
            Ok(Stored {
                base,
                policy,
                changes,
            })
        })
    }

    fn append_all(&self, changes: Arc<Vec<Change>>) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.append_group(&changes, None).await })
    }

    fn append_serialized(&self, change: Change, deltas: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.append_group(std::slice::from_ref(&change), Some(deltas))
                .await
        })
    }

    fn last_revision(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let v: i64 = sqlx::query_scalar(
                "SELECT GREATEST((SELECT revision FROM clearance_base WHERE id = 1),
                                 COALESCE((SELECT MAX(revision) FROM clearance_changes), 0))",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(pe)?;
            u64::try_from(v).map_err(|e| StoreError::failed(e.to_string()))
        })
    }

    fn changes_page(
        &self,
        revision: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> StoreFuture<'_, Vec<Change>> {
        Box::pin(async move {
            let limit = i64::try_from(max_count.max(1)).unwrap_or(i64::MAX);
            let mut out = Vec::new();
            let mut bytes = 0;
            for row in self.rows(revision, limit).await? {
                bytes += row.bytes();
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(row.change()?);
            }
            Ok(out)
        })
    }

    fn keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, hash, scope, accounts, label, created, revoked FROM clearance_keys ORDER BY created, id",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(pe)?;
            rows.iter()
                .map(|r| {
                    let id: String = get(r, 0)?;
                    let accounts: String = get(r, 3)?;
                    Ok(StoredKey {
                        accounts: serde_json::from_str(&accounts).map_err(|x| {
                            StoreError::failed(format!("key {id}: its accounts: {x}"))
                        })?,
                        id,
                        hash: get(r, 1)?,
                        scope: get(r, 2)?,
                        label: get(r, 4)?,
                        created: get(r, 5)?,
                        revoked: get(r, 6)?,
                    })
                })
                .collect()
        })
    }

    fn add_key(&self, key: StoredKey) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let accounts = serde_json::to_string(&key.accounts)
                .map_err(|e| StoreError::failed(e.to_string()))?;
            sqlx::query(
                "INSERT INTO clearance_keys (id, hash, scope, accounts, label, created, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&key.id)
            .bind(&key.hash)
            .bind(&key.scope)
            .bind(accounts)
            .bind(&key.label)
            .bind(key.created)
            .bind(key.revoked)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(pe)
        })
    }

    fn revoke_key(&self, id: String, at: i64) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            sqlx::query("UPDATE clearance_keys SET revoked = $2 WHERE id = $1 AND revoked IS NULL")
                .bind(id)
                .bind(at)
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(pe)
        })
    }

    fn latest(&self, upto: Option<u64>) -> StoreFuture<'_, Latest> {
        Box::pin(self.latest_state(upto))
    }

    fn put_checkpoint(&self, c: Arc<Checkpoint>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let policy =
                serde_json::to_string(&c.policy).map_err(|e| StoreError::failed(e.to_string()))?;
            let chain = self.chain_at(c.revision).await?.ok_or_else(|| {
                StoreError::failed(format!("revision {} is not stored", c.revision))
            })?;
            let sum = checkpoint_checksum(c.revision, &chain, &c.facts, &policy, &c.snapshot);
            let mut tx = self.pool.begin().await.map_err(pe)?;
            sqlx::query(
                "INSERT INTO clearance_checkpoints (revision, chain, facts, policy, snapshot, checksum, created)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (revision) DO UPDATE SET snapshot = EXCLUDED.snapshot,
                     checksum = EXCLUDED.checksum, created = EXCLUDED.created
                 WHERE length(clearance_checkpoints.snapshot) = 0
                   AND clearance_checkpoints.facts = EXCLUDED.facts",
            )
            .bind(c.revision as i64)
            .bind(&chain)
            .bind(&c.facts)
            .bind(&policy)
            .bind(&c.snapshot)
            .bind(&sum)
            .bind(crate::clock::now_seconds())
            .execute(&mut *tx)
            .await
            .map_err(pe)?;
            sqlx::query(
                "DELETE FROM clearance_checkpoints WHERE revision NOT IN
                 (SELECT revision FROM clearance_checkpoints ORDER BY revision DESC LIMIT $1)",
            )
            .bind(i64::try_from(CHECKPOINTS_KEPT).unwrap_or(2))
            .execute(&mut *tx)
            .await
            .map_err(pe)?;
            tx.commit().await.map_err(pe)
        })
    }

    fn checkpoints(&self) -> StoreFuture<'_, Vec<u64>> {
        Box::pin(async move {
            let v: Vec<i64> =
                sqlx::query_scalar("SELECT revision FROM clearance_checkpoints ORDER BY revision")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(pe)?;
            v.into_iter()
                .map(|r| u64::try_from(r).map_err(|e| StoreError::failed(e.to_string())))
                .collect()
        })
    }

    fn verify_base(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.base().await.map(|_| ()) })
    }

    fn hold_appends(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut held = self.held.lock().await;
            if held.is_none() {
                *held = Some(self.locked().await?);
            }
            Ok(())
        })
    }

    fn release_appends(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let held = self.held.lock().await.take();
            match held {
                Some(tx) => tx.rollback().await.map_err(pe),
                None => Ok(()),
            }
        })
    }

    fn appended_elsewhere(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(Arc::clone(&self.signal))
    }
}
