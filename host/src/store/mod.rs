//! The durable fact store: the base facts with the policy they were stored under, then
//! every change with its revision: a list of deltas, or a new policy (its sources and
//! hash). The embedded default is SQLite (bundled, WAL, synchronous writes); hosts that
//! outgrow one machine share a PostgreSQL store ([`postgres`]) through the same
//! async `FactStore` trait, appending by compare-and-set on the revision.
//!
//! The store checks itself: the base and every change carry a SHA-256 chained from the
//! one before, verified on every load, so a changed byte, a changed or missing row is
//! found and the store refuses to load, naming the revision. A store is seeded only when
//! it is created, atomically (built under a temporary name, then renamed into place): an
//! existing file that holds no store is refused, never seeded again.
//!
//! The files: this one holds what both backends share (the records, the trait and the
//! one dispatcher that opens or migrates either); [`chain`] the checksums and the
//! verified reading of changes; [`sqlite`] and [`postgres`] the backends; [`checkpoint`]
//! recovery, written once above the trait.

pub mod chain;
pub mod checkpoint;
pub mod postgres;
pub mod sqlite;

pub(crate) use chain::{
    Chain, CheckpointRow, Row, base_checksum, change_checksum, checkpoint_checksum, policy_of,
    verify_checkpoint,
};
pub use sqlite::{FORMAT, SqliteFile, SqliteStore, checkpoint_path};

use clearance_core::{Delta, Facts, Schema, Source};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// What kind of failure a store error is: what the caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store refused or could not do it (a damaged store, a bad row).
    Failed,
    /// The revision asked to append is taken: another host appended first. Nothing was
    /// stored; catch up and judge again.
    Conflict,
    /// The store could not be reached (a lost connection, a database restarting).
    /// Whether a write in flight was stored is to be read back.
    Unavailable,
}

/// A store error, with what failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("fact store: {message}")]
pub struct StoreError {
    /// What the caller can do about it.
    pub kind: StoreErrorKind,
    /// What failed.
    pub message: String,
}

impl StoreError {
    /// The store refused or could not do it.
    pub fn failed(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Failed,
            message: message.into(),
        }
    }

    /// Another host took the revision first.
    pub fn conflict(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Conflict,
            message: message.into(),
        }
    }

    /// The store could not be reached.
    pub fn unavailable(message: impl Into<String>) -> StoreError {
        StoreError {
            kind: StoreErrorKind::Unavailable,
            message: message.into(),
        }
    }
}

fn e(err: impl std::fmt::Display) -> StoreError {
    StoreError::failed(err.to_string())
}

/// A stored policy: its sources and the hash they compile to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredPolicy {
    /// The policy hash (lowercase hex) of the sources.
    pub hash: String,
    /// The policy files, in order.
    pub sources: Vec<Source>,
}

impl StoredPolicy {
    /// The policy `sources` make, as the store keeps it: compiled to learn its hash.
    pub fn of(sources: &[Source]) -> Result<StoredPolicy, String> {
        let schema = Schema::compile(sources).map_err(|e| e.to_string())?;
        Ok(StoredPolicy {
            hash: schema.hash_hex(),
            sources: sources.to_vec(),
        })
    }

    /// The policy compiled, refused unless it compiles to the stored hash; errors name
    /// `at`, where it was stored.
    pub fn compile(&self, at: &str) -> Result<Arc<Schema>, String> {
        let schema = Schema::compile(&self.sources).map_err(|e| format!("{at}: {e}"))?;
        if schema.hash_hex() != self.hash {
            return Err(format!(
                "{at}: the stored policy compiles to {}, not the stored hash {}",
                schema.hash_hex(),
                self.hash
            ));
        }
        Ok(Arc::new(schema))
    }
}

/// One change: a list of deltas applied, or a new policy.
#[derive(Debug, Clone)]
pub struct Change {
    /// The revision it produced.
    pub revision: u64,
    /// Who made it.
    pub author: String,
    /// When it was applied (seconds).
    pub at: i64,
    /// The deltas (empty for a policy change).
    pub deltas: Vec<Delta>,
    /// The new policy, for a policy change.
    pub policy: Option<StoredPolicy>,
    /// The credential that made it when that is not the author itself: a service key
    /// writing on the author's behalf (`key:<id>`), or an admin import.
    pub via: Option<String>,
    /// The accounts whose facts it touches (`account:<id>`), so a follower scoped to some
    /// accounts sees only their changes. `None` for a change stored before the store
    /// recorded them (only an admin follows those); a policy change concerns every
    /// follower whatever it holds here.
    pub accounts: Option<Vec<String>>,
}

/// A service key as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The public part of the key, which names it.
    pub id: String,
    /// The SHA-256 of the secret part, lowercase hex.
    pub hash: String,
    /// `admin`, `service` or `read`.
    pub scope: String,
    /// The accounts a `service` or `read` key is for (none for `admin`).
    pub accounts: Vec<String>,
    /// What the key is for, as its creator described it.
    pub label: String,
    /// When it was created (seconds).
    pub created: i64,
    /// When it was revoked (seconds), if it was.
    pub revoked: Option<i64>,
}

/// What a store holds: the base, the policy it was stored under (none for a store from
/// before policies were stored), and every change since, verified.
#[derive(Debug)]
pub struct Stored {
    /// The base facts.
    pub base: Facts,
    /// The policy of the base.
    pub policy: Option<StoredPolicy>,
    /// Every change after the base, in order.
    pub changes: Vec<Change>,
}

/// The state at a revision, kept so that start-up loads it and the changes after it
/// instead of replaying the whole history: the facts, the policy they hold under and the
/// snapshot built from both.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The revision it is the state at.
    pub revision: u64,
    /// The facts, as a JSON facts document (the base's format).
    pub facts: String,
    /// The policy at that revision.
    pub policy: StoredPolicy,
    /// The snapshot of the facts under the policy (`Snapshot::to_bytes`); empty in a
    /// checkpoint written by an import, which holds the facts only: the first host to
    /// start on it builds the snapshot and writes it into the checkpoint.
    pub snapshot: Vec<u8>,
}

/// Where start-up begins: the latest checkpoint that verifies (or else the base), and
/// every change after it, verified.
#[derive(Debug)]
pub struct Latest {
    /// The revision of the store's base (changes before it are not kept).
    pub base_revision: u64,
    /// The revision of the state below: a checkpoint's, or the base's.
    pub revision: u64,
    /// The facts at `revision`, as a JSON facts document.
    pub facts: String,
    /// The policy at `revision` (none for a store from before policies were stored).
    pub policy: Option<StoredPolicy>,
    /// The snapshot at `revision`, from a checkpoint.
    pub snapshot: Option<Vec<u8>>,
    /// The changes after `revision`, in order.
    pub changes: Vec<Change>,
    /// Checkpoints that did not verify and were passed over, each with why.
    pub passed_over: Vec<String>,
}

/// What a store call answers, later: every store is reached without blocking an async
/// worker (SQLite on the blocking pool, PostgreSQL over its own connections).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where facts live durably: one ordered history of changes, appended by compare-and-set
/// on the revision, so that several hosts can share one.
pub trait FactStore: Send + Sync {
    /// Where the store is, for logs (never a password).
    fn describe(&self) -> String;
    /// Everything stored, with every checksum verified.
    fn load(&self) -> StoreFuture<'_, Stored>;
    /// Appends consecutive changes all or nothing, in one transaction (one sync to disk);
    /// answers only once they are durable. Fails with [`StoreErrorKind::Conflict`],
    /// storing nothing, if the first revision is not the next one (another host took it)
    /// or the revisions do not follow one another.
    fn append_all(&self, changes: Arc<Vec<Change>>) -> StoreFuture<'_, ()>;
    /// Appends one change whose deltas are given as their JSON text (an array) rather
    /// than in `change.deltas`: an import's, so that its deltas are in memory once, as
    /// text. The same compare-and-set as [`FactStore::append_all`].
    fn append_serialized(&self, change: Change, deltas: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut change = change;
            change.deltas = serde_json::from_str(&deltas)
                .map_err(|x| StoreError::failed(format!("the deltas given: {x}")))?;
            self.append_all(Arc::new(vec![change])).await
        })
    }
    /// Appends one change ([`FactStore::append_all`]).
    fn append(&self, change: Change) -> StoreFuture<'_, ()> {
        self.append_all(Arc::new(vec![change]))
    }
    /// The last revision stored.
    fn last_revision(&self) -> StoreFuture<'_, u64>;
    /// The changes after `revision`, in order: at most `max_count` of them and, past the
    /// first, at most about `max_bytes` of stored text.
    fn changes_page(
        &self,
        revision: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> StoreFuture<'_, Vec<Change>>;
    /// Every service key, revoked ones included.
    fn keys(&self) -> StoreFuture<'_, Vec<StoredKey>>;
    /// Stores a new key; fails if its id is taken.
    fn add_key(&self, key: StoredKey) -> StoreFuture<'_, ()>;
    /// Marks a key revoked at `at`; answers whether a live key of that id was there.
    fn revoke_key(&self, id: String, at: i64) -> StoreFuture<'_, bool>;
    /// The latest checkpoint at or before `upto` (every one when `None`) that verifies,
    /// or the base when none does, and the changes after it up to `upto`, verified.
    fn latest(&self, upto: Option<u64>) -> StoreFuture<'_, Latest>;
    /// Keeps a checkpoint; the revision must be stored. Older checkpoints but the one
    /// before it are dropped. Never holds up appends.
    fn put_checkpoint(&self, checkpoint: Arc<Checkpoint>) -> StoreFuture<'_, ()>;
    /// The revisions of the checkpoints kept, oldest first.
    fn checkpoints(&self) -> StoreFuture<'_, Vec<u64>>;
    /// Reads the base's facts and checks them against their checksum. Start-up from a
    /// checkpoint does not read them; the service checks them after it serves.
    fn verify_base(&self) -> StoreFuture<'_, ()>;
    /// Holds off every other host's appends until this store's next append (which it
    /// then makes) or [`FactStore::release_appends`]: how a host that lost the
    /// compare-and-set catches up and judges again without losing once more. Bounded by
    /// the store (a holder that stops is cut off). A no-op for a store one process
    /// writes.
    fn hold_appends(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    /// Lets other hosts append again, if this store held them off and has not appended.
    fn release_appends(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    /// Woken when another host may have appended (PostgreSQL's LISTEN/NOTIFY); `None`
    /// when the store has no such signal and followers poll.
    fn appended_elsewhere(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// Opens the existing store `spec` names: a PostgreSQL URL (`postgres://…`), or else
/// the path of a SQLite file.
pub async fn open_existing(spec: &str) -> Result<Arc<dyn FactStore>, StoreError> {
    if postgres::is_postgres(spec) {
        return Ok(Arc::new(postgres::PgStore::connect(spec).await?));
    }
    let path = PathBuf::from(spec);
    let file = tokio::task::spawn_blocking(move || SqliteFile::open(&path))
        .await
        .map_err(|x| StoreError::failed(format!("the store's thread failed: {x}")))??;
    Ok(Arc::new(SqliteStore::new(file)))
}

/// Migrates the store `spec` names to this host's format; answers what it did.
pub async fn migrate(spec: &str) -> Result<String, StoreError> {
    if postgres::is_postgres(spec) {
        let from = postgres::PgStore::migrate(spec).await?;
        let to = postgres::PG_FORMAT;
        return Ok(if from == to {
            format!("the schema is at version {to} already")
        } else {
            format!("migrated the schema from version {from} to {to}")
        });
    }
    let path = PathBuf::from(spec);
    let from = tokio::task::spawn_blocking(move || SqliteFile::migrate(&path))
        .await
        .map_err(|x| StoreError::failed(format!("the store's thread failed: {x}")))??;
    Ok(if from == FORMAT {
        format!("the store is at format {FORMAT} already")
    } else {
        format!("migrated the store from format {from} to {FORMAT}")
    })
}

/// How many checkpoints a store keeps: the latest, and the one before in case the latest
/// does not verify.
pub const CHECKPOINTS_KEPT: usize = 2;
