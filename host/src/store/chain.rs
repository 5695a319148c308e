//! The store's chain: every change and the base carry a SHA-256 chained from the one
//! before, computed alike by both backends and verified on every load, so a changed byte,
//! a changed, missing or reordered row is found, naming the revision.

use super::{Change, StoreError, StoredPolicy, e};
use sha2::{Digest, Sha256};

pub(crate) fn hash_fields(fields: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for f in fields {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f);
    }
    clearance_core::policy::hex(&h.finalize())
}

pub(crate) fn base_checksum(revision: u64, facts: &str, policy: Option<&str>) -> String {
    hash_fields(&[
        b"clearance.base.v2",
        &revision.to_le_bytes(),
        facts.as_bytes(),
        policy.unwrap_or("").as_bytes(),
    ])
}

pub(crate) fn checkpoint_checksum(
    revision: u64,
    chain: &str,
    facts: &str,
    policy: &str,
    snapshot: &[u8],
) -> String {
    hash_fields(&[
        b"clearance.checkpoint.v1",
        &revision.to_le_bytes(),
        chain.as_bytes(),
        facts.as_bytes(),
        policy.as_bytes(),
        snapshot,
    ])
}

pub(crate) fn change_checksum(prev: &str, row: &Row) -> String {
    let revision = row.revision.to_le_bytes();
    let at = row.at.to_le_bytes();
    let common: [&[u8]; 6] = [
        prev.as_bytes(),
        &revision,
        row.author.as_bytes(),
        &at,
        row.deltas.as_bytes(),
        row.policy.as_deref().unwrap_or("").as_bytes(),
    ];
    match (&row.via, &row.accounts) {
        // A change from before format 3 hashes as in format 2, so older chains verify.
        (None, None) => hash_fields(&[&[b"clearance.change.v2".as_slice()], &common[..]].concat()),
        (via, accounts) => hash_fields(
            &[
                &[b"clearance.change.v3".as_slice()],
                &common[..],
                &[
                    via.as_deref().unwrap_or("").as_bytes(),
                    accounts.as_deref().unwrap_or("").as_bytes(),
                ],
            ]
            .concat(),
        ),
    }
}

/// A change as stored.
pub(crate) struct Row {
    pub(crate) revision: u64,
    pub(crate) author: String,
    pub(crate) at: i64,
    pub(crate) deltas: String,
    pub(crate) policy: Option<String>,
    pub(crate) via: Option<String>,
    pub(crate) accounts: Option<String>,
    pub(crate) checksum: Option<String>,
}

impl Row {
    /// The row of `c`, with its deltas as `deltas` gives them (a JSON array) when given,
    /// instead of `c.deltas`.
    pub(crate) fn with(c: &Change, deltas: Option<String>) -> Result<Row, StoreError> {
        let deltas = match deltas {
            Some(text) => text,
            None => serde_json::to_string(&c.deltas).map_err(e)?,
        };
        Ok(Row {
            revision: c.revision,
            author: c.author.clone(),
            at: c.at,
            deltas,
            policy: c
                .policy
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(e)?,
            via: c.via.clone(),
            accounts: c
                .accounts
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(e)?,
            checksum: None,
        })
    }

    pub(crate) fn change(&self) -> Result<Change, StoreError> {
        let at = |m: String| StoreError::failed(format!("revision {}: {m}", self.revision));
        Ok(Change {
            revision: self.revision,
            author: self.author.clone(),
            at: self.at,
            deltas: serde_json::from_str(&self.deltas).map_err(|x| at(x.to_string()))?,
            policy: self
                .policy
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|x| at(x.to_string()))?,
            via: self.via.clone(),
            accounts: self
                .accounts
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|x| at(x.to_string()))?,
        })
    }

    pub(crate) fn bytes(&self) -> usize {
        self.deltas.len()
            + self.policy.as_ref().map_or(0, String::len)
            + self.author.len()
            + self.via.as_ref().map_or(0, String::len)
    }
}

pub(crate) fn policy_of(
    text: Option<&str>,
    what: &str,
) -> Result<Option<StoredPolicy>, StoreError> {
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|x| StoreError::failed(format!("{what}: {x}")))
}

/// A checkpoint as stored: its chain, facts, policy, snapshot and checksum.
pub(crate) type CheckpointRow = (String, String, String, Vec<u8>, String);

/// Verifies a checkpoint read at `revision` against its checksum and `stored`, the chain
/// the store holds at that revision.
pub(crate) fn verify_checkpoint(
    revision: u64,
    (chain, facts, policy, snapshot, checksum): CheckpointRow,
    stored: Option<&str>,
) -> Result<(String, String, StoredPolicy, Vec<u8>), String> {
    if checkpoint_checksum(revision, &chain, &facts, &policy, &snapshot) != checksum {
        return Err("it does not match its checksum".into());
    }
    if stored != Some(chain.as_str()) {
        return Err("it does not match the change stored at its revision".into());
    }
    let policy = serde_json::from_str(&policy).map_err(|x| format!("its policy: {x}"))?;
    Ok((chain, facts, policy, snapshot))
}

/// The changes of a store read page by page, each verified against the checksum of the
/// one before: a changed, missing or reordered row is found.
pub(crate) struct Chain {
    expected: u64,
    prev: String,
    upto: Option<u64>,
    /// The changes verified so far, in order.
    pub(crate) changes: Vec<Change>,
}

impl Chain {
    /// A chain after `revision`, whose checksum is `prev`, up to `upto`.
    pub(crate) fn new(revision: u64, prev: String, upto: Option<u64>) -> Chain {
        Chain {
            expected: revision + 1,
            prev,
            upto,
            changes: Vec::new(),
        }
    }

    /// The revision the next page is read after.
    pub(crate) fn after(&self) -> u64 {
        self.expected - 1
    }

    /// Whether `upto` is reached.
    pub(crate) fn done(&self) -> bool {
        self.upto.is_some_and(|u| self.expected > u)
    }

    /// Verifies a page read after [`Chain::after`]; false once `upto` is passed.
    pub(crate) fn take(&mut self, page: Vec<Row>) -> Result<bool, StoreError> {
        for row in page {
            if self.upto.is_some_and(|u| row.revision > u) {
                return Ok(false);
            }
            if row.revision != self.expected {
                return Err(StoreError::failed(format!(
                    "revision {} is missing (the next stored is {}): the store was changed outside Clearance; restore it from a backup",
                    self.expected, row.revision
                )));
            }
            let sum = change_checksum(&self.prev, &row);
            if row.checksum.as_deref() != Some(sum.as_str()) {
                return Err(StoreError::failed(format!(
                    "revision {} does not match its checksum: the store was changed outside Clearance; restore it from a backup",
                    row.revision
                )));
            }
            self.changes.push(row.change()?);
            self.prev = sum;
            self.expected += 1;
        }
        Ok(true)
    }
}
