//! Scenario files: a world, requests and the decisions expected of them, each case naming
//! the requirements it pins (docs/scenarios.md). Used by the test suite and by
//! `clearance test`.

use clearance_core::{Delta, Facts, Request, Schema, Snapshot, Source, TimeValue};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The world's name in `tests/worlds/`.
    pub world: String,
    /// The cases.
    #[serde(default)]
    pub case: Vec<Case>,
}

/// One scenario case: see docs/scenarios.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Case {
    pub name: String,
    pub requirements: Vec<String>,
    #[serde(default)]
    pub deltas: Vec<Delta>,
    pub delta_error: Option<String>,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub target: Option<String>,
    pub now: Option<TimeValue>,
    pub expect: Option<String>,
    pub codes: Option<Vec<String>>,
    /// The codes `explain` gives, in order: past the first failed gate, every failed
    /// check (MX9).
    pub explained: Option<Vec<String>>,
    pub valid_until: Option<String>,
    pub allowed_actions: Option<Vec<String>>,
    pub resource_type: Option<String>,
    pub resources: Option<Vec<String>>,
    pub principals: Option<Vec<String>>,
    pub account: Option<String>,
    /// For a write case: who makes the deltas.
    pub author: Option<String>,
    /// For a write case: `allow` or `refuse`.
    pub write: Option<String>,
}

/// Every scenario file of `tests/scenarios/`, with its file name.
/// The sources of every `*.policy` file of a directory, in name order, named
/// `policies/<file>` in errors.
pub fn policy_sources(dir: &Path) -> Result<Vec<Source>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "policy"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let name = p
                .file_name()
                .map(|n| format!("policies/{}", n.to_string_lossy()))
                .unwrap_or_default();
            Ok(Source::new(name, text))
        })
        .collect()
}

/// Every scenario file (`*.toml`) of a directory, in name order, with its file name.
pub fn load_dir(dir: &Path) -> Result<Vec<(String, ScenarioFile)>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files.iter().map(|p| load_file(p)).collect()
}

/// One scenario file, with its file name.
pub fn load_file(path: &Path) -> Result<(String, ScenarioFile), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let file: ScenarioFile = toml::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
    Ok((name, file))
}

/// The outcome of one case: its name and, if it failed, how.
pub type Outcome = (String, Result<(), String>);

/// Runs every case of a file against `schema` and the file's world in `worlds`.
pub fn run_file(
    schema: &Arc<Schema>,
    worlds: &Path,
    file: &ScenarioFile,
) -> Result<Vec<Outcome>, String> {
    let path = worlds.join(format!("{}.json", file.world));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let facts = Facts::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = Snapshot::build(Arc::clone(schema), &facts)
        .map_err(|e| format!("world `{}` does not load: {} {e}", file.world, e.code))?;
    Ok(file
        .case
        .iter()
        .map(|case| {
            let outcome = if case.write.is_some() {
                case.run_write(schema, &facts, &base)
            } else {
                case.snapshot(schema, &facts, &base).and_then(|s| match s {
                    Some(s) => case.run(&s),
                    None => Ok(()),
                })
            };
            (case.name.clone(), outcome)
        })
        .collect())
}

impl Case {
    /// The check request of the case, if it is a check.
    pub fn request(&self) -> Option<Request> {
        Some(Request {
            principal: self.principal.clone()?,
            action: self.action.clone()?,
            resource: self.resource.clone()?,
            target: self.target.clone(),
            now: self.now.clone()?,
        })
    }

    /// Runs a write case: may `author` make the case's deltas? `Err` says how the outcome
    /// differs from the expectation.
    pub fn run_write(
        &self,
        schema: &Arc<Schema>,
        facts: &Facts,
        base: &Snapshot,
    ) -> Result<(), String> {
        let expect = self.write.as_deref().ok_or("not a write case")?;
        let author = self
            .author
            .as_deref()
            .ok_or("a write case needs `author`")?;
        let now = self.now.clone().ok_or("a write case needs `now`")?;
        let after = facts
            .apply(&self.deltas)
            .and_then(|f| Snapshot::build(Arc::clone(schema), &f))
            .map_err(|e| format!("the deltas do not apply: {} {e}", e.code))?;
        let got =
            clearance_core::writes::authorize_writes(base, &after, author, &self.deltas, &now);
        match (expect, got) {
            ("allow", Ok(())) => Ok(()),
            ("refuse", Err(r)) => {
                let mut codes = vec![r.code.clone()];
                codes.extend(
                    r.decision
                        .iter()
                        .flat_map(|d| d.reasons.iter().map(|x| x.code.clone())),
                );
                match &self.codes {
                    Some(c) if *c != codes => Err(format!(
                        "expected codes {c:?}, got {codes:?} ({})",
                        r.message
                    )),
                    _ => Ok(()),
                }
            }
            ("allow", Err(r)) => Err(format!(
                "expected the write allowed, refused: {} {}",
                r.code, r.message
            )),
            ("refuse", Ok(())) => Err("expected the write refused, it was allowed".into()),
            (other, _) => Err(format!(
                "`write` is `{other}`, expected `allow` or `refuse`"
            )),
        }
    }

    /// The snapshot the case runs against: the world's, or with the case's deltas applied.
    /// `Ok(None)` when the deltas were refused as the case expects.
    pub fn snapshot(
        &self,
        schema: &Arc<Schema>,
        facts: &Facts,
        base: &Snapshot,
    ) -> Result<Option<Snapshot>, String> {
        if self.deltas.is_empty() {
            if self.delta_error.is_some() {
                return Err("`delta_error` without `deltas`".into());
            }
            return Ok(Some(base.clone()));
        }
        let applied = facts
            .apply(&self.deltas)
            .and_then(|f| Snapshot::build(Arc::clone(schema), &f));
        match (applied, &self.delta_error) {
            (Ok(s), None) => Ok(Some(s)),
            (Ok(_), Some(code)) => Err(format!(
                "deltas were applied, expected them refused with `{code}`"
            )),
            (Err(e), Some(code)) if e.code.as_str() == code.as_str() => Ok(None),
            (Err(e), _) => Err(format!("deltas refused: {} {e}", e.code)),
        }
    }

    /// Runs the case against `snap`; `Err` says how the outcome differs from the expectation.
    pub fn run(&self, snap: &Snapshot) -> Result<(), String> {
        let now = self.now.clone().ok_or("the case has no `now`")?;
        if let Some(expected) = &self.allowed_actions {
            let p = self
                .principal
                .as_deref()
                .ok_or("`allowed_actions` needs `principal`")?;
            let r = self
                .resource
                .as_deref()
                .ok_or("`allowed_actions` needs `resource`")?;
            let got = snap
                .allowed_actions(p, r, &now)
                .map_err(|d| format!("denied: {:?}", codes(snap, &d)))?;
            return same_set("allowed_actions", expected, &got);
        }
        if let Some(expected) = &self.resources {
            let p = self
                .principal
                .as_deref()
                .ok_or("`resources` needs `principal`")?;
            let a = self.action.as_deref().ok_or("`resources` needs `action`")?;
            let t = self
                .resource_type
                .as_deref()
                .ok_or("`resources` needs `resource_type`")?;
            let got = snap
                .list_resources(p, a, t, &now)
                .map_err(|e| e.to_string())?;
            return same_set("list_resources", expected, &got);
        }
        if let Some(expected) = &self.principals {
            let r = self
                .resource
                .as_deref()
                .ok_or("`principals` needs `resource`")?;
            let a = self
                .action
                .as_deref()
                .ok_or("`principals` needs `action`")?;
            let got = snap
                .list_principals(r, a, &now, self.account.as_deref())
                .map_err(|e| e.to_string())?;
            return same_set("list_principals", expected, &got);
        }
        let req = self
            .request()
            .ok_or("a check needs `principal`, `action`, `resource` and `now`")?;
        let d = snap.check(&req);
        let got_codes = codes(snap, &d);
        let expect = self.expect.as_deref().ok_or("a check needs `expect`")?;
        let allowed = match expect {
            "allow" => true,
            "deny" => false,
            other => return Err(format!("`expect` is `{other}`, expected `allow` or `deny`")),
        };
        if d.allowed != allowed {
            let view = snap.view(&d, &req);
            let why: Vec<String> = view
                .reasons
                .iter()
                .map(|r| format!("{} ({})", r.code, r.message))
                .collect();
            return Err(format!(
                "expected {expect}, got {}: {}",
                if d.allowed { "allow" } else { "deny" },
                why.join("; ")
            ));
        }
        if let Some(c) = &self.codes
            && *c != got_codes
        {
            return Err(format!("expected codes {c:?}, got {got_codes:?}"));
        }
        if let Some(want) = &self.explained {
            let ex = snap.explain(&req);
            if ex.decision.allowed != d.allowed {
                return Err("`explain` decided otherwise than `check`".into());
            }
            let got: Vec<String> = ex.decision.reasons.iter().map(|r| r.code.clone()).collect();
            if *want != got {
                return Err(format!("expected explained codes {want:?}, got {got:?}"));
            }
            if got.first() != got_codes.first() {
                return Err("`explain` does not start with the check's first reason".into());
            }
        }
        if let Some(v) = &self.valid_until {
            let got = d
                .valid_until
                .map(clearance_core::time::format)
                .unwrap_or_else(|| "none".into());
            let want = if v == "none" {
                v.clone()
            } else {
                clearance_core::time::parse(v).map(clearance_core::time::format)?
            };
            if got != want {
                return Err(format!("expected valid_until {want}, got {got}"));
            }
        }
        Ok(())
    }
}

/// The codes of a decision, in order.
pub fn codes(snap: &Snapshot, d: &clearance_core::Decision) -> Vec<String> {
    d.reasons.iter().map(|r| snap.code(r)).collect()
}

fn same_set(what: &str, expected: &[String], got: &[String]) -> Result<(), String> {
    let e: BTreeSet<&String> = expected.iter().collect();
    let g: BTreeSet<&String> = got.iter().collect();
    if e == g {
        Ok(())
    } else {
        let missing: Vec<_> = e.difference(&g).collect();
        let extra: Vec<_> = g.difference(&e).collect();
        Err(format!("{what}: missing {missing:?}, unexpected {extra:?}"))
    }
}
