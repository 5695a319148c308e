//! The durable fact store: every applied list of deltas kept with its revision. The
//! embedded default is SQLite (bundled, WAL, synchronous writes); the `FactStore` trait
//! is where a PostgreSQL backend fits for hosts that outgrow one machine.

use clearance_core::{Delta, Facts, FactsJson};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// A store error, with what failed.
#[derive(Debug, thiserror::Error)]
#[error("fact store: {0}")]
pub struct StoreError(pub String);

fn e(err: impl std::fmt::Display) -> StoreError {
    StoreError(err.to_string())
}

/// One applied list of deltas.
#[derive(Debug, Clone)]
pub struct Change {
    /// The revision it produced.
    pub revision: u64,
    /// Who made it.
    pub author: String,
    /// When it was applied (seconds).
    pub at: i64,
    /// The deltas.
    pub deltas: Vec<Delta>,
}

/// Where facts live durably.
pub trait FactStore: Send {
    /// The base facts and every change since, or `None` for an empty store.
    fn load(&self) -> Result<Option<(Facts, Vec<Change>)>, StoreError>;
    /// Starts the store with base facts.
    fn init(&mut self, base: &Facts) -> Result<(), StoreError>;
    /// Appends a change; returns only once it is durable.
    fn append(&mut self, change: &Change) -> Result<(), StoreError>;
    /// The changes after `revision`, in order.
    fn changes_since(&self, revision: u64) -> Result<Vec<Change>, StoreError>;
}

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS base (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL, facts TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS changes (revision INTEGER PRIMARY KEY, author TEXT NOT NULL, at INTEGER NOT NULL, deltas TEXT NOT NULL);",
        )
        .map_err(e)?;
        Ok(SqliteStore { conn })
    }
}

fn rows(conn: &Connection, since: u64) -> Result<Vec<Change>, StoreError> {
    let mut stmt = conn.prepare("SELECT revision, author, at, deltas FROM changes WHERE revision > ?1 ORDER BY revision").map_err(e)?;
    let mapped = stmt
        .query_map(params![since as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(e)?;
    let mut out = Vec::new();
    for row in mapped {
        let (revision, author, at, deltas) = row.map_err(e)?;
        let deltas: Vec<Delta> = serde_json::from_str(&deltas).map_err(e)?;
        out.push(Change {
            revision: revision as u64,
            author,
            at,
            deltas,
        });
    }
    Ok(out)
}

impl FactStore for SqliteStore {
    fn load(&self) -> Result<Option<(Facts, Vec<Change>)>, StoreError> {
        let base: Option<(i64, String)> = self
            .conn
            .query_row("SELECT revision, facts FROM base WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(e)?;
        let Some((revision, text)) = base else {
            return Ok(None);
        };
        let mut doc: FactsJson = serde_json::from_str(&text).map_err(e)?;
        doc.revision = revision as u64;
        let facts = Facts::from_doc(doc).map_err(e)?;
        let changes = rows(&self.conn, revision as u64)?;
        Ok(Some((facts, changes)))
    }

    fn init(&mut self, base: &Facts) -> Result<(), StoreError> {
        let text = serde_json::to_string(&base.to_doc()).map_err(e)?;
        let tx = self.conn.transaction().map_err(e)?;
        tx.execute("DELETE FROM changes", []).map_err(e)?;
        tx.execute(
            "INSERT OR REPLACE INTO base (id, revision, facts) VALUES (1, ?1, ?2)",
            params![base.revision as i64, text],
        )
        .map_err(e)?;
        tx.commit().map_err(e)
    }

    fn append(&mut self, change: &Change) -> Result<(), StoreError> {
        let deltas = serde_json::to_string(&change.deltas).map_err(e)?;
        self.conn
            .execute(
                "INSERT INTO changes (revision, author, at, deltas) VALUES (?1, ?2, ?3, ?4)",
                params![change.revision as i64, change.author, change.at, deltas],
            )
            .map_err(e)?;
        Ok(())
    }

    fn changes_since(&self, revision: u64) -> Result<Vec<Change>, StoreError> {
        rows(&self.conn, revision)
    }
}
