//! The embedded SQLite store: bundled, WAL, synchronous writes; checkpoints in a database
//! file of their own beside it, so writing one never holds up appends.

use super::{
    CHECKPOINTS_KEPT, Chain, Change, Checkpoint, CheckpointRow, FactStore, Latest, Row, StoreError,
    StoreFuture, Stored, StoredKey, StoredPolicy, base_checksum, change_checksum,
    checkpoint_checksum, e, policy_of, verify_checkpoint,
};
use clearance_core::{Facts, FactsJson};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The embedded SQLite store, for the service: a [`SqliteFile`] reached on the blocking
/// pool. Long reads and checkpoint writes take a handle of their own, so appends go on
/// meanwhile; several processes may share the file (the revision is the compare-and-set).
pub struct SqliteStore {
    path: PathBuf,
    main: Arc<std::sync::Mutex<SqliteFile>>,
}

impl SqliteStore {
    /// The service's handle on an open file.
    pub fn new(file: SqliteFile) -> SqliteStore {
        SqliteStore {
            path: file.path.clone(),
            main: Arc::new(std::sync::Mutex::new(file)),
        }
    }

    /// Runs `f` on the main handle, on the blocking pool.
    fn on_main<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteFile) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let main = Arc::clone(&self.main);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = main
                    .lock()
                    .map_err(|_| StoreError::failed("the store's lock is poisoned"))?;
                f(&mut guard)
            })
            .await
            .map_err(|x| StoreError::failed(format!("the store's thread failed: {x}")))?
        })
    }

    /// Runs `f` on a handle of its own, on the blocking pool.
    fn on_own<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteFile) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&mut SqliteFile::open(&path)?))
                .await
                .map_err(|x| StoreError::failed(format!("the store's thread failed: {x}")))?
        })
    }
}

impl FactStore for SqliteStore {
    fn describe(&self) -> String {
        format!("SQLite at {}", self.path.display())
    }
    fn load(&self) -> StoreFuture<'_, Stored> {
        self.on_own(|f| f.load())
    }
    fn append_all(&self, changes: Arc<Vec<Change>>) -> StoreFuture<'_, ()> {
        self.on_main(move |f| f.append_all(&changes))
    }
    fn append_serialized(&self, change: Change, deltas: String) -> StoreFuture<'_, ()> {
        self.on_main(move |f| f.append_serialized(&change, deltas))
    }
    fn last_revision(&self) -> StoreFuture<'_, u64> {
        self.on_main(|f| f.last_revision())
    }
    fn changes_page(
        &self,
        revision: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> StoreFuture<'_, Vec<Change>> {
        self.on_main(move |f| f.changes_page(revision, max_count, max_bytes))
    }
    fn keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        self.on_main(|f| f.keys())
    }
    fn add_key(&self, key: StoredKey) -> StoreFuture<'_, ()> {
        self.on_main(move |f| f.add_key(&key))
    }
    fn revoke_key(&self, id: String, at: i64) -> StoreFuture<'_, bool> {
        self.on_main(move |f| f.revoke_key(&id, at))
    }
    fn latest(&self, upto: Option<u64>) -> StoreFuture<'_, Latest> {
        self.on_own(move |f| f.latest(upto))
    }
    fn put_checkpoint(&self, checkpoint: Arc<Checkpoint>) -> StoreFuture<'_, ()> {
        self.on_own(move |f| f.put_checkpoint(&checkpoint))
    }
    fn checkpoints(&self) -> StoreFuture<'_, Vec<u64>> {
        self.on_main(|f| f.checkpoints())
    }
    fn verify_base(&self) -> StoreFuture<'_, ()> {
        self.on_own(|f| f.verify_base())
    }
}

/// The store format this host writes (SQLite's `user_version`). Version 1, from before
/// the store checked itself or kept its policy, had no `user_version`. An older store is
/// migrated only on request ([`SqliteFile::migrate`], `clearance migrate`).
pub const FORMAT: i64 = 4;

/// A blocking handle on the embedded SQLite store, for commands run beside a service and
/// for [`SqliteStore`].
pub struct SqliteFile {
    conn: Connection,
    /// Where it is: [`SqliteStore`] opens handles of its own on it.
    path: PathBuf,
    /// The checksum of the last change (or of the base), which the next one chains from.
    last: Option<(u64, String)>,
}

const SCHEMA: &str = "
    CREATE TABLE base (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL,
                       facts TEXT NOT NULL, policy TEXT, checksum TEXT NOT NULL);
    CREATE TABLE changes (revision INTEGER PRIMARY KEY, author TEXT NOT NULL,
                          at INTEGER NOT NULL, deltas TEXT NOT NULL, policy TEXT,
                          checksum TEXT NOT NULL, via TEXT, accounts TEXT);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, scope TEXT NOT NULL,
                       accounts TEXT NOT NULL, label TEXT NOT NULL, created INTEGER NOT NULL,
                       revoked INTEGER);
";

/// The checkpoints table, in a database of its own beside the store (attached as `cp`):
/// writing a checkpoint of hundreds of megabytes takes that file's write lock, never the
/// store's, so appends go on meanwhile.
const CHECKPOINTS: &str = "
    CREATE TABLE IF NOT EXISTS cp.checkpoints (revision INTEGER PRIMARY KEY, chain TEXT NOT NULL,
                              facts TEXT NOT NULL, policy TEXT NOT NULL,
                              snapshot BLOB NOT NULL, checksum TEXT NOT NULL,
                              created INTEGER NOT NULL);
";

fn rows(conn: &Connection, since: u64, limit: i64) -> Result<Vec<Row>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT revision, author, at, deltas, policy, checksum, via, accounts FROM changes
             WHERE revision > ?1 ORDER BY revision LIMIT ?2",
        )
        .map_err(e)?;
    let mapped = stmt
        .query_map(params![since as i64, limit], |r| {
            Ok(Row {
                revision: r.get::<_, i64>(0)? as u64,
                author: r.get(1)?,
                at: r.get(2)?,
                deltas: r.get(3)?,
                policy: r.get(4)?,
                checksum: r.get(5)?,
                via: r.get(6)?,
                accounts: r.get(7)?,
            })
        })
        .map_err(e)?;
    mapped.map(|r| r.map_err(e)).collect()
}

/// The base: its revision, facts text, policy text and checksum, verified.
fn base(conn: &Connection) -> Result<(u64, String, Option<String>, String), StoreError> {
    let (revision, text, policy, checksum): (i64, String, Option<String>, Option<String>) = conn
        .query_row(
            "SELECT revision, facts, policy, checksum FROM base WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(e)?;
    let revision = revision as u64;
    let computed = base_checksum(revision, &text, policy.as_deref());
    if checksum.as_deref() != Some(computed.as_str()) {
        return Err(StoreError::failed(format!(
            "the base facts (revision {revision}) do not match their checksum: the store was changed outside Clearance; restore it from a backup"
        )));
    }
    Ok((revision, text, policy, computed))
}

/// The base's revision and stored checksum, without reading its facts: enough to verify
/// a checkpoint at the base's revision, which carries its own checksum.
fn base_head(conn: &Connection) -> Result<(u64, String), StoreError> {
    let (revision, checksum): (i64, Option<String>) = conn
        .query_row(
            "SELECT revision, checksum FROM base WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(e)?;
    Ok((revision as u64, checksum.unwrap_or_default()))
}

/// The checksum the change at `revision` (or the base, at its revision) ends the chain
/// with.
fn chain_at(conn: &Connection, revision: u64) -> Result<String, StoreError> {
    let change: Option<Option<String>> = conn
        .query_row(
            "SELECT checksum FROM changes WHERE revision = ?1",
            [revision as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(e)?;
    let sum = match change {
        Some(sum) => sum,
        None => conn
            .query_row(
                "SELECT checksum FROM base WHERE id = 1 AND revision = ?1",
                [revision as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(e)?
            .flatten(),
    };
    sum.ok_or_else(|| StoreError::failed(format!("revision {revision} is not stored")))
}

/// A checkpoint, verified: its checksum, and its chain against the change it is at.
/// Answers the chain, the facts, the policy and the snapshot.
fn checkpoint(
    conn: &Connection,
    revision: u64,
    base_revision: u64,
    base_sum: &str,
) -> Result<(String, String, StoredPolicy, Vec<u8>), String> {
    let row: CheckpointRow = conn
        .query_row(
            "SELECT chain, facts, policy, snapshot, checksum FROM cp.checkpoints WHERE revision = ?1",
            [revision as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .map_err(|x| x.to_string())?;
    let stored = if revision == base_revision {
        Some(base_sum.to_string())
    } else {
        chain_at(conn, revision).ok()
    };
    verify_checkpoint(revision, row, stored.as_deref())
}

/// The changes after `revision` (up to `upto`), each verified against the chain from
/// `prev`, the checksum at `revision`.
fn verified_changes(
    conn: &Connection,
    revision: u64,
    prev: String,
    upto: Option<u64>,
) -> Result<Vec<Change>, StoreError> {
    let mut chain = Chain::new(revision, prev, upto);
    while !chain.done() {
        let page = rows(conn, chain.after(), 1024)?;
        if page.is_empty() || !chain.take(page)? {
            break;
        }
    }
    Ok(chain.changes)
}

/// Where a store's checkpoints are kept: `<store>.checkpoints`, a database of its own, so
/// that writing one never holds up appends. Removing it loses nothing but start-up time.
pub fn checkpoint_path(store: &Path) -> PathBuf {
    PathBuf::from(format!("{}.checkpoints", store.display()))
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(e)?;
    Ok(())
}

/// Attaches the store's checkpoints ([`checkpoint_path`]) as `cp`.
fn attach_checkpoints(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let side = checkpoint_path(path);
    conn.execute(
        "ATTACH DATABASE ?1 AS cp",
        [side
            .to_str()
            .ok_or_else(|| StoreError::failed(format!("{}: not UTF-8", side.display())))?],
    )
    .map_err(e)?;
    conn.pragma_update(Some("cp"), "journal_mode", "WAL")
        .map_err(e)?;
    conn.pragma_update(Some("cp"), "synchronous", "FULL")
        .map_err(e)?;
    conn.execute_batch(CHECKPOINTS).map_err(e)?;
    Ok(())
}

fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(e)
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(e)
}

impl SqliteFile {
    /// Opens the store at `path`, or creates it, seeded with `seed()` (the facts and the
    /// policy they are stored under), when no file is there. Returns whether it was
    /// created. An existing file that is not a complete store is refused, never seeded:
    /// that is what a store looks like whose write-ahead log was lost.
    pub fn open_or_create(
        path: &Path,
        seed: impl FnOnce() -> Result<(Facts, StoredPolicy), String>,
    ) -> Result<(SqliteFile, bool), StoreError> {
        if path.exists() {
            return Ok((SqliteFile::open(path)?, false));
        }
        let (facts, policy) = seed().map_err(StoreError::failed)?;
        // Checkpoints left by an earlier store of this name are not this one's.
        for stale in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{stale}", checkpoint_path(path).display()));
        }
        let creating = PathBuf::from(format!("{}.creating", path.display()));
        for stale in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{stale}", creating.display()));
        }
        {
            let mut conn = Connection::open(&creating).map_err(e)?;
            conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
            let tx = conn.transaction().map_err(e)?;
            tx.execute_batch(SCHEMA).map_err(e)?;
            let text = serde_json::to_string(&facts.to_doc()).map_err(e)?;
            let policy = serde_json::to_string(&policy).map_err(e)?;
            tx.execute(
                "INSERT INTO base (id, revision, facts, policy, checksum) VALUES (1, ?1, ?2, ?3, ?4)",
                params![
                    facts.revision as i64,
                    text,
                    policy,
                    base_checksum(facts.revision, &text, Some(&policy))
                ],
            )
            .map_err(e)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('created', ?1)",
                [crate::clock::now_seconds().to_string()],
            )
            .map_err(e)?;
            tx.pragma_update(None, "user_version", FORMAT).map_err(e)?;
            tx.commit().map_err(e)?;
            conn.close().map_err(|(_, x)| e(x))?;
        }
        std::fs::File::open(&creating)
            .and_then(|f| f.sync_all())
            .map_err(e)?;
        std::fs::rename(&creating, path).map_err(e)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok((SqliteFile::open(path)?, true))
    }

    /// Opens an existing store, migrating one of format 1; refuses a file that holds no
    /// store or one of a newer format.
    pub fn open(path: &Path) -> Result<SqliteFile, StoreError> {
        if !path.exists() {
            return Err(StoreError::failed(format!(
                "{}: no store here",
                path.display()
            )));
        }
        let conn = Connection::open(path).map_err(e)?;
        configure(&conn)?;
        let version = user_version(&conn)?;
        let empty = || {
            StoreError::failed(format!(
                "{} exists but holds no complete store (was its -wal file lost?); it is never seeded again: restore it from a backup, or remove it to start afresh",
                path.display()
            ))
        };
        match version {
            FORMAT => {}
            0 if has_table(&conn, "base")? && has_table(&conn, "changes")? => {
                return Err(older(path, 1));
            }
            2 | 3 => return Err(older(path, version)),
            0 => return Err(empty()),
            v => {
                return Err(StoreError::failed(format!(
                    "{} is of store format {v}, newer than this host's {FORMAT}: run a newer host on it",
                    path.display()
                )));
            }
        }
        let base: Option<i64> = conn
            .query_row("SELECT revision FROM base WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(e)?;
        if base.is_none() {
            return Err(empty());
        }
        attach_checkpoints(&conn, path)?;
        Ok(SqliteFile {
            conn,
            path: path.to_path_buf(),
            last: None,
        })
    }
}

/// A store of an older format than this host's: it is migrated only on request.
fn older(path: &Path, version: i64) -> StoreError {
    StoreError::failed(format!(
        "{} is of store format {version}, older than this host's {FORMAT}: back it up, then run `clearance migrate --data {}`",
        path.display(),
        path.display()
    ))
}

impl SqliteFile {
    /// Migrates the store at `path` to this host's format, each step in a transaction of
    /// its own. Answers the format it was of (`FORMAT` when there was nothing to do).
    /// Refuses a file that holds no store, or one of a newer format.
    pub fn migrate(path: &Path) -> Result<i64, StoreError> {
        if !path.exists() {
            return Err(StoreError::failed(format!(
                "{}: no store here",
                path.display()
            )));
        }
        let mut conn = Connection::open(path).map_err(e)?;
        configure(&conn)?;
        let version = match user_version(&conn)? {
            0 if has_table(&conn, "base")? && has_table(&conn, "changes")? => 1,
            0 => {
                return Err(StoreError::failed(format!(
                    "{} holds no store to migrate",
                    path.display()
                )));
            }
            v => v,
        };
        if version > FORMAT {
            return Err(StoreError::failed(format!(
                "{} is of store format {version}, newer than this host's {FORMAT}",
                path.display()
            )));
        }
        if version <= 1 {
            migrate_from_1(&mut conn)?;
        }
        if version <= 2 {
            migrate_from_2(&mut conn)?;
        }
        if version <= 3 {
            migrate_from_3(&mut conn)?;
        }
        Ok(version)
    }
}

/// Format 1 to 2: the checksum and policy columns, the checksums computed over what is
/// there (format 1 had none to verify), and a policy the host adopts from its files on
/// the next start, as a change of its own.
fn migrate_from_1(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(e)?;
    tx.execute_batch(
        "ALTER TABLE base ADD COLUMN policy TEXT;
         ALTER TABLE base ADD COLUMN checksum TEXT;
         ALTER TABLE changes ADD COLUMN policy TEXT;
         ALTER TABLE changes ADD COLUMN checksum TEXT;
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )
    .map_err(e)?;
    let base: Option<(i64, String)> = tx
        .query_row("SELECT revision, facts FROM base WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(e)?;
    if let Some((revision, facts)) = base {
        let mut prev = base_checksum(revision as u64, &facts, None);
        tx.execute("UPDATE base SET checksum = ?1 WHERE id = 1", [&prev])
            .map_err(e)?;
        for row in rows(&tx, revision as u64, i64::MAX)? {
            prev = change_checksum(&prev, &row);
            tx.execute(
                "UPDATE changes SET checksum = ?1 WHERE revision = ?2",
                params![prev, row.revision as i64],
            )
            .map_err(e)?;
        }
    }
    tx.pragma_update(None, "user_version", 2).map_err(e)?;
    tx.commit().map_err(e)
}

/// Format 2 to 3: who a change was made through (`via`), the accounts it touches, and
/// the service keys. Changes stored before have neither (an admin follows them).
fn migrate_from_2(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(e)?;
    tx.execute_batch(
        "ALTER TABLE changes ADD COLUMN via TEXT;
         ALTER TABLE changes ADD COLUMN accounts TEXT;
         CREATE TABLE keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, scope TEXT NOT NULL,
                            accounts TEXT NOT NULL, label TEXT NOT NULL,
                            created INTEGER NOT NULL, revoked INTEGER);",
    )
    .map_err(e)?;
    tx.pragma_update(None, "user_version", 3).map_err(e)?;
    tx.commit().map_err(e)
}

/// Format 3 to 4: checkpoints, kept in a database beside the store.
fn migrate_from_3(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(e)?;
    tx.pragma_update(None, "user_version", FORMAT).map_err(e)?;
    tx.commit().map_err(e)
}

impl SqliteFile {
    /// The checksum the next change chains from.
    fn tail(&mut self) -> Result<(u64, String), StoreError> {
        if let Some(t) = &self.last {
            return Ok(t.clone());
        }
        let last: Option<(i64, Option<String>)> = self
            .conn
            .query_row(
                "SELECT revision, checksum FROM changes ORDER BY revision DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(e)?;
        let tail = match last {
            Some((revision, Some(sum))) => (revision as u64, sum),
            Some((revision, None)) => {
                return Err(StoreError::failed(format!(
                    "revision {revision}: no checksum"
                )));
            }
            None => self
                .conn
                .query_row(
                    "SELECT revision, checksum FROM base WHERE id = 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
                )
                .map_err(e)?,
        };
        self.last = Some(tail.clone());
        Ok(tail)
    }
}

impl SqliteFile {
    /// [`FactStore::load`], blocking.
    pub fn load(&self) -> Result<Stored, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(e)?;
        let (revision, text, policy, computed) = base(&tx)?;
        let mut doc: FactsJson = serde_json::from_str(&text).map_err(|x| {
            StoreError::failed(format!("the base facts (revision {revision}): {x}"))
        })?;
        doc.revision = revision;
        let base = Facts::from_doc(doc).map_err(|x| {
            StoreError::failed(format!("the base facts (revision {revision}): {x}"))
        })?;
        let policy = policy_of(policy.as_deref(), "the base policy")?;
        let changes = verified_changes(&tx, revision, computed, None)?;
        Ok(Stored {
            base,
            policy,
            changes,
        })
    }

    /// [`FactStore::latest`], blocking.
    pub fn latest(&self, upto: Option<u64>) -> Result<Latest, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(e)?;
        // The base's facts are read (and verified) only when no checkpoint verifies: at a
        // million resources they take about a second. [`FactStore::verify_base`] checks
        // them off the start-up path.
        let (base_revision, base_sum) = base_head(&tx)?;
        let mut passed_over = Vec::new();
        let revisions: Vec<i64> = {
            let mut stmt = tx
                .prepare(
                    "SELECT revision FROM cp.checkpoints WHERE revision <= ?1 ORDER BY revision DESC",
                )
                .map_err(e)?;
            let rows = stmt
                .query_map([upto.map_or(i64::MAX, |u| u as i64)], |r| r.get(0))
                .map_err(e)?;
            rows.collect::<Result<_, _>>().map_err(e)?
        };
        for revision in revisions {
            let revision = revision as u64;
            match checkpoint(&tx, revision, base_revision, &base_sum) {
                Ok((chain, facts, policy, snapshot)) => {
                    let changes = verified_changes(&tx, revision, chain, upto)?;
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
        let (base_revision, text, policy, base_sum) = base(&tx)?;
        let changes = verified_changes(&tx, base_revision, base_sum, upto)?;
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

    /// [`FactStore::put_checkpoint`], blocking.
    pub fn put_checkpoint(&mut self, c: &Checkpoint) -> Result<(), StoreError> {
        let policy = serde_json::to_string(&c.policy).map_err(e)?;
        let tx = self.conn.transaction().map_err(e)?;
        let chain = chain_at(&tx, c.revision)?;
        let sum = checkpoint_checksum(c.revision, &chain, &c.facts, &policy, &c.snapshot);
        tx.execute(
            "INSERT OR REPLACE INTO cp.checkpoints (revision, chain, facts, policy, snapshot, checksum, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                c.revision as i64,
                chain,
                c.facts,
                policy,
                c.snapshot,
                sum,
                crate::clock::now_seconds()
            ],
        )
        .map_err(e)?;
        tx.execute(
            "DELETE FROM cp.checkpoints WHERE revision NOT IN (SELECT revision FROM cp.checkpoints ORDER BY revision DESC LIMIT ?1)",
            [CHECKPOINTS_KEPT as i64],
        )
        .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// [`FactStore::checkpoints`], blocking.
    pub fn checkpoints(&self) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT revision FROM cp.checkpoints ORDER BY revision")
            .map_err(e)?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).map_err(e)?;
        rows.map(|r| r.map(|v| v as u64).map_err(e)).collect()
    }

    /// [`FactStore::verify_base`], blocking.
    pub fn verify_base(&self) -> Result<(), StoreError> {
        base(&self.conn).map(|_| ())
    }

    /// Appends one change ([`SqliteFile::append_all`]).
    pub fn append(&mut self, change: &Change) -> Result<(), StoreError> {
        self.append_all(std::slice::from_ref(change))
    }

    /// Appends consecutive changes all or nothing, in one transaction (one sync to
    /// disk): [`FactStore::append_all`].
    pub fn append_all(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        self.append_rows(changes, None)
    }

    /// Appends one change whose deltas are `deltas`, their JSON text (an array):
    /// [`FactStore::append_serialized`].
    pub fn append_serialized(&mut self, change: &Change, deltas: String) -> Result<(), StoreError> {
        self.append_rows(std::slice::from_ref(change), Some(deltas))
    }

    /// [`SqliteFile::append_all`], the first change's deltas given as text when
    /// `serialized` is.
    fn append_rows(
        &mut self,
        changes: &[Change],
        mut serialized: Option<String>,
    ) -> Result<(), StoreError> {
        let (mut last, mut prev) = self.tail()?;
        if changes.first().is_some_and(|c| c.revision != last + 1) {
            // Another process may have appended since the tail was read.
            self.last = None;
            (last, prev) = self.tail()?;
        }
        if let Some(first) = changes.first().filter(|c| c.revision <= last) {
            return Err(StoreError::conflict(format!(
                "revision {} is taken: the store is at {last}",
                first.revision
            )));
        }
        let mut rows = Vec::with_capacity(changes.len());
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
            rows.push(row);
            (last, prev) = (change.revision, sum);
        }
        let inserted = (|| {
            let tx = self.conn.transaction()?;
            for row in &rows {
                tx.execute(
                    "INSERT INTO changes (revision, author, at, deltas, policy, checksum, via, accounts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        row.revision as i64,
                        row.author,
                        row.at,
                        row.deltas,
                        row.policy,
                        row.checksum,
                        row.via,
                        row.accounts
                    ],
                )?;
            }
            tx.commit()
        })();
        match inserted {
            Ok(()) => {
                if !rows.is_empty() {
                    self.last = Some((last, prev));
                }
                Ok(())
            }
            Err(x) => {
                // What is stored is read again before the next append.
                self.last = None;
                Err(match x.sqlite_error_code() {
                    Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::conflict(
                        format!("revision {} is taken: another process appended it", last),
                    ),
                    Some(
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked,
                    ) => StoreError::unavailable(x.to_string()),
                    _ => e(x),
                })
            }
        }
    }

    /// [`FactStore::last_revision`], blocking.
    pub fn last_revision(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT MAX((SELECT revision FROM base WHERE id = 1), COALESCE((SELECT MAX(revision) FROM changes), 0))",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|r| r as u64)
            .map_err(e)
    }

    /// [`FactStore::changes_page`], blocking.
    pub fn changes_page(
        &self,
        revision: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for row in rows(&self.conn, revision, max_count.max(1) as i64)? {
            bytes += row.bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(row.change()?);
        }
        Ok(out)
    }

    /// [`FactStore::keys`], blocking.
    pub fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, hash, scope, accounts, label, created, revoked FROM keys ORDER BY created, id",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    StoredKey {
                        id: r.get(0)?,
                        hash: r.get(1)?,
                        scope: r.get(2)?,
                        accounts: Vec::new(),
                        label: r.get(4)?,
                        created: r.get(5)?,
                        revoked: r.get(6)?,
                    },
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(e)?;
        rows.map(|row| {
            let (mut key, accounts) = row.map_err(e)?;
            key.accounts = serde_json::from_str(&accounts)
                .map_err(|x| StoreError::failed(format!("key {}: its accounts: {x}", key.id)))?;
            Ok(key)
        })
        .collect()
    }

    /// [`FactStore::add_key`], blocking.
    pub fn add_key(&mut self, key: &StoredKey) -> Result<(), StoreError> {
        let accounts = serde_json::to_string(&key.accounts).map_err(e)?;
        self.conn
            .execute(
                "INSERT INTO keys (id, hash, scope, accounts, label, created, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![key.id, key.hash, key.scope, accounts, key.label, key.created, key.revoked],
            )
            .map(|_| ())
            .map_err(e)
    }

    /// [`FactStore::revoke_key`], blocking.
    pub fn revoke_key(&mut self, id: &str, at: i64) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "UPDATE keys SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL",
                params![id, at],
            )
            .map(|n| n > 0)
            .map_err(e)
    }
}
