//! The aviation rules the engine holds by itself: licence categories, certification
//! authorisations resting on licences, and relations carried as counts.

use super::{Column, NEVER, NONE_I64, REMOVED, Snapshot, bad, id32};
use crate::error::ErrorCode;
use crate::error::FactsError;
use crate::policy::TypeId;

impl Snapshot {
    /// The subjects entity `e` holds through relations `rels` (of its type) at `now`, and
    /// the first instant after `now` at which one of their tuples ends, where the facts
    /// carry them as numbers; `None` where the tuples are to be counted.
    #[inline]
    pub(crate) fn carried_count(
        &self,
        e: u32,
        rels: &[(TypeId, u16)],
        now: i64,
    ) -> Option<(i64, i64)> {
        if self.counts.is_empty() {
            return None;
        }
        let ent = self.ent(e)?;
        let c = self.counts.iter().find(|c| {
            c.ty == ent.ty
                && rels
                    .iter()
                    .all(|&(t, r)| t == ent.ty && c.rels.contains(&r))
                && c.rels.iter().all(|r| rels.iter().any(|&(_, x)| x == *r))
        })?;
        let n = c
            .slot
            .get(ent.local as usize)
            .and_then(|&i| c.of.get(i as usize));
        Some(n.map_or((0, NEVER), |n| n.at(now)))
    }

    /// The time attribute `a` of entity `id`, if set.
    pub(crate) fn time_of(&self, id: u32, a: u16) -> Option<i64> {
        let e = self.ent(id)?;
        match self.types.get(e.ty as usize)?.columns.get(a as usize)? {
            Column::Time(v) => v.get(e.local as usize).copied().filter(|t| *t != NONE_I64),
            _ => None,
        }
    }

    /// Every certification authorisation and licence holds together: their categories
    /// are licence categories ([`LICENCE_CATEGORIES`]), and an authorisation resting on
    /// a licence does not outlast it.
    pub(crate) fn check_certifications(&self) -> Result<(), FactsError> {
        let b = &self.schema.builtins;
        let (aa, la) = (b.auth_attrs, b.licence_attrs);
        let known = |t: TypeId, a: u16, local: usize, id: u32| -> Result<(), FactsError> {
            for c in self.set_attr_strings(t, a, local) {
                if !LICENCE_CATEGORIES.contains(&c.as_str()) {
                    return Err(bad(
                        ErrorCode::FactsInvalidValue,
                        &format!("entity `{}` attribute `categories`", self.name(id)),
                        format!(
                            "unknown licence category `{c}`: expected one of {}",
                            LICENCE_CATEGORIES.join(", ")
                        ),
                    ));
                }
            }
            Ok(())
        };
        let live = |t: TypeId| -> Vec<u32> {
            self.types
                .get(t as usize)
                .map(|x| x.entities.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|&e| self.type_of(e).is_some_and(|x| x != REMOVED))
                .collect()
        };
        for id in live(b.licence) {
            let local = self.ent(id).map_or(0, |e| e.local as usize);
            known(b.licence, la.categories, local, id)?;
        }
        for id in live(b.authorization) {
            let local = self.ent(id).map_or(0, |e| e.local as usize);
            known(b.authorization, aa.categories, local, id)?;
            let Some(csr) = self
                .types
                .get(b.authorization as usize)
                .and_then(|t| t.rels.get(aa.licence as usize))
            else {
                continue;
            };
            // A slice leaves out the validity of authorisations its principal does not
            // hold; only those whose validity is known are checked.
            let until_omitted = self.omits.contains(&(b.authorization, aa.valid_until));
            for &licence in csr.view(id32(local)).subjects {
                let Some(ends) = self.time_of(licence, la.valid_until) else {
                    continue;
                };
                let until = self.time_of(id, aa.valid_until);
                if until.is_none() && until_omitted {
                    continue;
                }
                if until.is_none_or(|u| u > ends) {
                    return Err(bad(
                        ErrorCode::FactsInvalidAuthorization,
                        &format!("entity `{}`", self.name(id)),
                        format!(
                            "the authorisation is valid until {}, after the licence `{}` it rests on ends ({}): an authorisation cannot outlast its licence",
                            until.map_or_else(|| "no end".to_string(), crate::time::format),
                            self.name(licence),
                            crate::time::format(ends)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The licence categories a certification authorisation or a licence may name: those of
/// aircraft maintenance licences (`A` and `B1` with their subcategories, `B2`, `B2L`,
/// `B3`, `C`). A category covers its subcategories (`B1` covers `B1.1`).
pub const LICENCE_CATEGORIES: [&str; 14] = [
    "A", "A1", "A2", "A3", "A4", "B1", "B1.1", "B1.2", "B1.3", "B1.4", "B2", "B2L", "B3", "C",
];
