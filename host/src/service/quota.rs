//! Creation quotas: how many entities an account and an author may create, charged when
//! a write is queued, kept only when it is stored.

use crate::codes::Code;
use crate::service::error::ServiceError;
use clearance_core::Delta;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Quotas on the entities writes create: any user may create some (a guest record, an
/// event), so the number an author, and an account, creates an hour is bounded. A write's
/// creations are taken from both budgets while it is judged and given back if it is not
/// stored, so refused writes cannot use up an account's budget.
pub(crate) struct Creations {
    pub(crate) per_author: Option<Buckets>,
    pub(crate) per_account: Option<Buckets>,
}

/// Token buckets by key: each holds up to `per_hour` and refills at that rate.
pub(crate) struct Buckets {
    pub(crate) per_hour: f64,
    pub(crate) held: std::sync::Mutex<HashMap<String, (f64, std::time::Instant)>>,
}

/// The most keys a quota remembers; past it, buckets refilled to the full are dropped
/// first (a full bucket is the same as none).
pub(crate) const MAX_BUCKETS: usize = 100_000;

impl Buckets {
    pub(crate) fn new(per_hour: std::num::NonZeroU32) -> Buckets {
        Buckets {
            per_hour: f64::from(per_hour.get()),
            held: std::sync::Mutex::default(),
        }
    }

    /// Takes `n` from `key`'s bucket, or says how long until it holds `n` (`None`: never,
    /// `n` is more than a bucket holds).
    pub(crate) fn take(&self, key: &str, n: f64) -> Result<(), Option<Duration>> {
        if n > self.per_hour {
            return Err(None);
        }
        let now = std::time::Instant::now();
        let rate = self.per_hour / 3600.0;
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.len() >= MAX_BUCKETS && !held.contains_key(key) {
            let full = self.per_hour;
            held.retain(|_, (level, at)| *level + at.elapsed().as_secs_f64() * rate < full);
        }
        let (level, at) = held.entry(key.to_string()).or_insert((self.per_hour, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * rate).min(self.per_hour);
        *at = now;
        if *level < n {
            return Err(Some(Duration::from_secs_f64((n - *level) / rate)));
        }
        *level -= n;
        Ok(())
    }

    /// Gives `n` back to `key`'s bucket.
    pub(crate) fn give_back(&self, key: &str, n: f64) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((level, _)) = held.get_mut(key) {
            *level = (*level + n).min(self.per_hour);
        }
    }
}

/// A write's creations, taken from its quotas: given back when dropped unless kept. It
/// travels with the write to the writer ([`Reply`]), so that a client hanging up cannot
/// take back what a stored write took.
pub(crate) struct Charge {
    pub(crate) creations: Arc<Creations>,
    pub(crate) taken: Vec<(bool, String)>,
    pub(crate) n: f64,
}

impl Charge {
    /// The write was stored: what it took stays taken.
    pub(crate) fn keep(mut self) {
        self.taken.clear();
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        for (author, key) in &self.taken {
            let buckets = if *author {
                &self.creations.per_author
            } else {
                &self.creations.per_account
            };
            if let Some(b) = buckets {
                b.give_back(key, self.n);
            }
        }
    }
}

impl Creations {
    pub(crate) fn new(
        author: Option<std::num::NonZeroU32>,
        account: Option<std::num::NonZeroU32>,
    ) -> Creations {
        Creations {
            per_author: author.map(Buckets::new),
            per_account: account.map(Buckets::new),
        }
    }

    /// Takes the creations of `deltas` from `author`'s and its `account`'s quotas, or says
    /// which quota they exceed and when to retry.
    pub(crate) fn charge(
        self: &Arc<Self>,
        author: &str,
        account: Option<&str>,
        deltas: &[Delta],
    ) -> Result<Charge, ServiceError> {
        let made = deltas
            .iter()
            .filter(|d| matches!(d, Delta::AddEntity { .. }))
            .count();
        let mut charge = Charge {
            creations: Arc::clone(self),
            taken: Vec::new(),
            n: made as f64,
        };
        if made == 0 {
            return Ok(charge);
        }
        let quotas = [
            (true, self.per_author.as_ref(), Some(author), "the author"),
            (
                false,
                self.per_account.as_ref(),
                account,
                "the author's account",
            ),
        ];
        for (is_author, buckets, key, whose) in quotas {
            let (Some(buckets), Some(key)) = (buckets, key) else {
                continue;
            };
            if let Err(retry) = buckets.take(key, charge.n) {
                let budget = match retry {
                    Some(_) => "used up for now".to_string(),
                    None => format!("at most {} an hour", buckets.per_hour),
                };
                let mut e = ServiceError::new(
                    Code::WriteQuota,
                    format!(
                        "the write creates {made} entities, past the quota of {whose}: {budget}"
                    ),
                )
                .help("create fewer entities, or wait for retry-after; nothing was written");
                e.retry_after =
                    retry.map(|w| u32::try_from(w.as_secs().max(1)).unwrap_or(u32::MAX));
                return Err(e);
            }
            charge.taken.push((is_author, key.to_string()));
        }
        Ok(charge)
    }
}
