//! The operations both faces of the module expose, over one engine: every call takes and
//! gives JSON (or the compact binary batch format of `clearance_core::wire`), and every
//! error comes back as data with `"allowed": false`, never as a panic or an allow.

use clearance_core::facts::check_fields;
use clearance_core::wire::{QUERY_LEN, decode_query, encode_decision};
use clearance_core::{
    Delta, ErrorData, Facts, FactsJson, Request, Schema, Snapshot, Source, TimeValue,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The most requests one batch may carry.
pub const MAX_BATCH: usize = 1 << 20;

/// A policy source as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceJson {
    /// The file name its errors are reported under.
    pub name: String,
    /// The policy text.
    pub text: String,
}

/// A JSON call: `{"op": "...", ...}`; the fields are those of the matching core API.
///
/// Read in two steps, the `op` first and then the fields of that op, instead of through
/// serde's internally tagged enums: those buffer every call into an intermediate tree and
/// give every field type a second deserializer, which made this one parser the largest
/// function of the module.
#[allow(missing_docs)]
#[derive(Debug)]
pub enum Call {
    /// Compiles a policy set; the facts loaded so far are rebuilt under it.
    LoadPolicy { sources: Vec<SourceJson> },
    /// Loads facts and builds the snapshot.
    LoadFacts { facts: FactsJson },
    /// Applies deltas, all or nothing.
    ApplyDeltas { deltas: Vec<Delta> },
    /// Decides one request.
    Check { request: Request },
    /// Decides many requests.
    CheckBatch { requests: Vec<Request> },
    /// The actions a principal may take on a resource.
    AllowedActions {
        principal: String,
        resource: String,
        now: TimeValue,
    },
    /// The resources of a type a principal may act on.
    ListResources {
        principal: String,
        action: String,
        ty: String,
        now: TimeValue,
    },
    /// The principals who may act on a resource.
    ListPrincipals {
        resource: String,
        action: String,
        now: TimeValue,
        account: Option<String>,
    },
    /// Decides and explains.
    Explain { request: Request },
    /// The access-rights matrix.
    Matrix {
        matrix: String,
        account: Option<String>,
    },
    /// Requests resolved to the 24-byte binary queries, as lists of bytes; unresolvable
    /// requests give their denial instead.
    Resolve { requests: Vec<Request> },
    /// Whether `author` may make `deltas` (X4), without applying them.
    AuthorizeDeltas {
        author: String,
        now: TimeValue,
        deltas: Vec<Delta>,
    },
    /// Applies `deltas` if `author` may make them: all or nothing.
    Write {
        author: String,
        now: TimeValue,
        deltas: Vec<Delta>,
    },
    /// What is loaded.
    Info,
    /// What the loaded policy declares: types, actions, write rules, matrices.
    Schema,
}

/// The names of the ops, in the order the help text lists them.
const OPS: &[&str] = &[
    "load_policy",
    "load_facts",
    "apply_deltas",
    "check",
    "check_batch",
    "allowed_actions",
    "list_resources",
    "list_principals",
    "explain",
    "matrix",
    "resolve",
    "authorize_deltas",
    "write",
    "info",
    "schema",
];

/// The fields every op may carry, each read only when its op names it. `op` itself is
/// read here too, so an unknown field is still an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    op: String,
    sources: Option<Vec<SourceJson>>,
    facts: Option<FactsJson>,
    deltas: Option<Vec<Delta>>,
    request: Option<Request>,
    requests: Option<Vec<Request>>,
    principal: Option<String>,
    resource: Option<String>,
    action: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    now: Option<TimeValue>,
    account: Option<String>,
    matrix: Option<String>,
    author: Option<String>,
}

impl Call {
    /// Reads a call; what is wrong (an unknown op, a field missing or not of that op)
    /// is an error that names it.
    pub fn parse(input: &str) -> Result<Call, String> {
        let f: Fields = serde_json::from_str(input).map_err(|e| {
            if e.line() == 0 {
                format!("malformed call: {e}")
            } else {
                format!(
                    "malformed call at line {} column {}: {e}",
                    e.line(),
                    e.column()
                )
            }
        })?;
        let op = f.op.as_str();
        // The fields present, by name, so a field of another op is refused.
        let present: [(&str, bool); 13] = [
            ("sources", f.sources.is_some()),
            ("facts", f.facts.is_some()),
            ("deltas", f.deltas.is_some()),
            ("request", f.request.is_some()),
            ("requests", f.requests.is_some()),
            ("principal", f.principal.is_some()),
            ("resource", f.resource.is_some()),
            ("action", f.action.is_some()),
            ("type", f.ty.is_some()),
            ("now", f.now.is_some()),
            ("account", f.account.is_some()),
            ("matrix", f.matrix.is_some()),
            ("author", f.author.is_some()),
        ];
        let (required, optional): (&[&str], &[&str]) = match op {
            "load_policy" => (&["sources"], &[]),
            "load_facts" => (&["facts"], &[]),
            "apply_deltas" => (&["deltas"], &[]),
            "check" | "explain" => (&["request"], &[]),
            "check_batch" | "resolve" => (&["requests"], &[]),
            "allowed_actions" => (&["principal", "resource", "now"], &[]),
            "list_resources" => (&["principal", "action", "type", "now"], &[]),
            "list_principals" => (&["resource", "action", "now"], &["account"]),
            "matrix" => (&["matrix"], &["account"]),
            "authorize_deltas" | "write" => (&["author", "now", "deltas"], &[]),
            "info" | "schema" => (&[], &[]),
            _ => {
                return Err(format!(
                    "unknown op `{op}`, expected one of {}",
                    OPS.join(", ")
                ));
            }
        };
        check_fields(&format!("`{op}`"), &present, required, optional)
            .map_err(|e| format!("malformed call: {e}"))?;
        // Every required field was checked present above, so the defaults below are
        // never used.
        Ok(match op {
            "load_policy" => Call::LoadPolicy {
                sources: f.sources.unwrap_or_default(),
            },
            "load_facts" => Call::LoadFacts {
                facts: f.facts.unwrap_or_default(),
            },
            "apply_deltas" => Call::ApplyDeltas {
                deltas: f.deltas.unwrap_or_default(),
            },
            "check" | "explain" => {
                let Some(request) = f.request else {
                    return Err("malformed call: no request".into());
                };
                if op == "check" {
                    Call::Check { request }
                } else {
                    Call::Explain { request }
                }
            }
            "check_batch" => Call::CheckBatch {
                requests: f.requests.unwrap_or_default(),
            },
            "resolve" => Call::Resolve {
                requests: f.requests.unwrap_or_default(),
            },
            "allowed_actions" => Call::AllowedActions {
                principal: f.principal.unwrap_or_default(),
                resource: f.resource.unwrap_or_default(),
                now: now(f.now)?,
            },
            "list_resources" => Call::ListResources {
                principal: f.principal.unwrap_or_default(),
                action: f.action.unwrap_or_default(),
                ty: f.ty.unwrap_or_default(),
                now: now(f.now)?,
            },
            "list_principals" => Call::ListPrincipals {
                resource: f.resource.unwrap_or_default(),
                action: f.action.unwrap_or_default(),
                now: now(f.now)?,
                account: f.account,
            },
            "matrix" => Call::Matrix {
                matrix: f.matrix.unwrap_or_default(),
                account: f.account,
            },
            "authorize_deltas" => Call::AuthorizeDeltas {
                author: f.author.unwrap_or_default(),
                now: now(f.now)?,
                deltas: f.deltas.unwrap_or_default(),
            },
            "write" => Call::Write {
                author: f.author.unwrap_or_default(),
                now: now(f.now)?,
                deltas: f.deltas.unwrap_or_default(),
            },
            "info" => Call::Info,
            _ => Call::Schema,
        })
    }
}

fn now(t: Option<TimeValue>) -> Result<TimeValue, String> {
    t.ok_or_else(|| "malformed call: no `now`".to_string())
}

/// The engine of one module instance.
#[derive(Default)]
pub struct Engine {
    schema: Option<Arc<Schema>>,
    facts: Option<Facts>,
    snapshot: Option<Snapshot>,
}

fn error(code: &str, message: impl Into<String>, help: &str) -> ErrorData {
    ErrorData {
        code: code.into(),
        message: message.into(),
        help: help.into(),
    }
}

fn not_loaded() -> ErrorData {
    error(
        "engine.not_loaded",
        "no snapshot is loaded",
        "load a policy and facts, or a snapshot, first",
    )
}

/// An answer as JSON text. Answers are written straight from their types, not through
/// `serde_json::Value`, which would give every answer type a second serializer.
fn text<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// `{"ok": answer}`, from the answer's JSON text.
pub fn ok(answer: &str) -> String {
    format!("{{\"ok\":{answer}}}")
}

/// `{"allowed": false, "error": {code, message, help}}`.
pub fn err(e: &ErrorData) -> String {
    #[derive(Serialize)]
    struct Refused<'a> {
        allowed: bool,
        error: &'a ErrorData,
    }
    text(&Refused {
        allowed: false,
        error: e,
    })
}

/// What loading a policy answers.
#[derive(Serialize)]
struct PolicyLoaded {
    policy_hash: String,
}

/// What is loaded.
#[derive(Serialize)]
struct Info {
    core_version: &'static str,
    entities: usize,
    policy_hash: String,
    revision: u64,
    tuples: usize,
}

/// The actions a principal may take, or none with the denial that says why.
#[derive(Serialize)]
struct Actions {
    actions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    denied: Option<clearance_core::DecisionView>,
}

/// A request resolved to its binary query, or its denial.
#[derive(Serialize)]
#[serde(untagged)]
enum Resolved {
    Query {
        query: Vec<u8>,
    },
    Denied {
        denied: clearance_core::DecisionView,
    },
}

/// Whether a write may be made: the revision it makes (and what it derives), or why not.
#[derive(Serialize)]
struct WriteAnswer {
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    derived: Option<Vec<Delta>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<clearance_core::writes::WriteRefusal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
}

impl WriteAnswer {
    fn refused(refusal: clearance_core::writes::WriteRefusal) -> String {
        text(&WriteAnswer {
            allowed: false,
            derived: None,
            refusal: Some(refusal),
            revision: None,
        })
    }
}

impl Engine {
    /// Runs a JSON call and gives the JSON answer.
    pub fn call(&mut self, input: &str) -> String {
        let call = match Call::parse(input) {
            Ok(c) => c,
            Err(message) => {
                return err(&error(
                    "request.malformed",
                    message,
                    "a call is a JSON object with an `op` (load_policy, load_facts, apply_deltas, check, check_batch, allowed_actions, list_resources, list_principals, explain, matrix, resolve, authorize_deltas, write, info, schema) and its fields",
                ));
            }
        };
        self.answer(call)
    }

    /// Runs a call already read: `{"ok": ...}` or the error.
    pub fn answer(&mut self, call: Call) -> String {
        match self.run(call) {
            Ok(v) => ok(&v),
            Err(e) => err(&e),
        }
    }

    fn snapshot(&self) -> Result<&Snapshot, ErrorData> {
        self.snapshot.as_ref().ok_or_else(not_loaded)
    }

    fn run(&mut self, call: Call) -> Result<String, ErrorData> {
        Ok(match call {
            Call::LoadPolicy { sources } => {
                let sources: Vec<Source> = sources
                    .into_iter()
                    .map(|s| Source::new(s.name, s.text))
                    .collect();
                let schema = Arc::new(Schema::compile(&sources).map_err(ErrorData::from)?);
                let rebuilt = match &self.facts {
                    Some(f) => {
                        Some(Snapshot::build(Arc::clone(&schema), f).map_err(ErrorData::from)?)
                    }
                    None => None,
                };
                let hash = schema.hash_hex();
                self.schema = Some(schema);
                if rebuilt.is_some() {
                    self.snapshot = rebuilt;
                }
                text(&PolicyLoaded { policy_hash: hash })
            }
            Call::LoadFacts { facts } => {
                let schema = self.schema.clone().ok_or_else(|| {
                    error(
                        "engine.no_policy",
                        "no policy is loaded",
                        "load a policy before facts",
                    )
                })?;
                let facts = Facts::from_doc(facts).map_err(ErrorData::from)?;
                let snap = Snapshot::build(schema, &facts).map_err(ErrorData::from)?;
                let info = info(&snap);
                self.facts = Some(facts);
                self.snapshot = Some(snap);
                info
            }
            Call::ApplyDeltas { deltas } => {
                let (next, snap) = self.next(&deltas)?;
                let info = info(&snap);
                self.facts = Some(next);
                self.snapshot = Some(snap);
                info
            }
            Call::Check { request } => {
                let s = self.snapshot()?;
                text(&s.view(&s.check(&request), &request))
            }
            Call::CheckBatch { requests } => {
                let s = self.snapshot()?;
                if requests.len() > MAX_BATCH {
                    return Err(too_large(requests.len()));
                }
                let views: Vec<_> = requests.iter().map(|r| s.view(&s.check(r), r)).collect();
                text(&views)
            }
            Call::AllowedActions {
                principal,
                resource,
                now,
            } => {
                let s = self.snapshot()?;
                match s.allowed_actions(&principal, &resource, &now) {
                    Ok(actions) => text(&Actions {
                        actions,
                        denied: None,
                    }),
                    Err(d) => {
                        let req = Request {
                            principal,
                            action: String::new(),
                            resource,
                            target: None,
                            now,
                        };
                        text(&Actions {
                            actions: Vec::new(),
                            denied: Some(s.view(&d, &req)),
                        })
                    }
                }
            }
            Call::ListResources {
                principal,
                action,
                ty,
                now,
            } => text(
                &self
                    .snapshot()?
                    .list_resources(&principal, &action, &ty, &now)?,
            ),
            Call::ListPrincipals {
                resource,
                action,
                now,
                account,
            } => text(&self.snapshot()?.list_principals(
                &resource,
                &action,
                &now,
                account.as_deref(),
            )?),
            Call::Explain { request } => text(&self.snapshot()?.explain(&request)),
            Call::Matrix { matrix, account } => {
                text(&self.snapshot()?.matrix(&matrix, account.as_deref())?)
            }
            Call::Resolve { requests } => {
                let s = self.snapshot()?;
                if requests.len() > MAX_BATCH {
                    return Err(too_large(requests.len()));
                }
                let resolved: Vec<Resolved> = requests
                    .iter()
                    .map(|r| match s.resolve(r) {
                        Ok(q) => {
                            let mut query = Vec::with_capacity(QUERY_LEN);
                            clearance_core::wire::encode_query(&q, &mut query);
                            Resolved::Query { query }
                        }
                        Err(d) => Resolved::Denied {
                            denied: s.view(&d, r),
                        },
                    })
                    .collect();
                text(&resolved)
            }
            Call::AuthorizeDeltas {
                author,
                now,
                deltas,
            } => self.write(&author, &now, &deltas, false)?,
            Call::Write {
                author,
                now,
                deltas,
            } => self.write(&author, &now, &deltas, true)?,
            Call::Info => info(self.snapshot()?),
            Call::Schema => match &self.schema {
                Some(schema) => text(&schema.outline()),
                None => {
                    return Err(error(
                        "engine.no_policy",
                        "no policy is loaded",
                        "load a policy first",
                    ));
                }
            },
        })
    }

    /// The facts and snapshot after `deltas`, all or nothing, from the loaded facts.
    fn next(&self, deltas: &[Delta]) -> Result<(Facts, Snapshot), ErrorData> {
        let schema = self.schema.clone().ok_or_else(|| {
            error(
                "engine.no_policy",
                "no policy is loaded",
                "load a policy and facts first",
            )
        })?;
        let facts = self.facts.as_ref().ok_or_else(|| {
            error(
                "engine.no_facts",
                "no facts are loaded (a snapshot loaded from bytes takes no deltas or writes)",
                "load facts first",
            )
        })?;
        let next = facts.apply(deltas).map_err(ErrorData::from)?;
        let snap = Snapshot::build(schema, &next).map_err(ErrorData::from)?;
        Ok((next, snap))
    }

    /// Checks (and with `commit`, applies) a list of deltas made by `author`. A refusal is
    /// an answer (`{"allowed": false, "refusal": ...}`), not an error.
    fn write(
        &mut self,
        author: &str,
        now: &TimeValue,
        deltas: &[Delta],
        commit: bool,
    ) -> Result<String, ErrorData> {
        let before = self.snapshot()?;
        let (next, after) = self.next(deltas)?;
        if let Err(refusal) =
            clearance_core::writes::authorize_writes(before, &after, author, deltas, now)
        {
            return Ok(WriteAnswer::refused(refusal));
        }
        let revision = after.revision;
        if commit {
            self.facts = Some(next);
            self.snapshot = Some(after);
        }
        Ok(text(&WriteAnswer {
            allowed: true,
            derived: None,
            refusal: None,
            revision: Some(revision),
        }))
    }

    /// Checks a write (X4) against a snapshot of the facts after it, for hosts that keep
    /// facts themselves: `input` is a little-endian `u32` length, that many bytes of JSON
    /// `{"author", "now", "deltas"}`, then the after-snapshot's bytes. The loaded snapshot
    /// is the before. A refusal is an answer, not an error.
    pub fn authorize_against(&self, input: &[u8]) -> String {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct WriteJson {
            author: String,
            now: TimeValue,
            deltas: Vec<Delta>,
        }
        let result = (|| {
            let before = self.snapshot()?;
            let malformed = |m: String| {
                error(
                    "request.malformed",
                    m,
                    "a length-prefixed JSON write, then the after-snapshot's bytes",
                )
            };
            let (len, rest) = input
                .split_first_chunk::<4>()
                .ok_or_else(|| malformed("too short".into()))?;
            let (json, after) = rest
                .split_at_checked(u32::from_le_bytes(*len) as usize)
                .ok_or_else(|| malformed("the JSON length is past the end".into()))?;
            // As text, so the one JSON reader of calls reads writes too.
            let json = std::str::from_utf8(json)
                .map_err(|e| malformed(format!("malformed write: {e}")))?;
            let w: WriteJson = serde_json::from_str(json)
                .map_err(|e| malformed(format!("malformed write: {e}")))?;
            let after = Snapshot::from_bytes(after).map_err(ErrorData::from)?;
            Ok::<String, ErrorData>(
                match clearance_core::writes::authorize_writes(
                    before, &after, &w.author, &w.deltas, &w.now,
                ) {
                    Ok(()) => {
                        let derived = clearance_core::writes::derive_on_create(
                            &after, &w.author, &w.deltas, &w.now,
                        );
                        text(&WriteAnswer {
                            allowed: true,
                            derived: Some(derived),
                            refusal: None,
                            revision: Some(after.revision),
                        })
                    }
                    Err(r) => WriteAnswer::refused(r),
                },
            )
        })();
        match result {
            Ok(v) => ok(&v),
            Err(e) => err(&e),
        }
    }

    /// Decides a batch of binary queries (`clearance_core::wire`), each query checked for
    /// ids that exist first: `0` then the decisions, or `1` then the error as JSON. The
    /// frame byte is written first, so the decisions are never moved to make room for it.
    pub fn check_ids(&self, input: &[u8]) -> Vec<u8> {
        let checked = (|| {
            let s = self.snapshot()?;
            if !input.len().is_multiple_of(QUERY_LEN) {
                return Err(error(
                    "request.malformed",
                    format!(
                        "a batch is a multiple of {QUERY_LEN} bytes, got {}",
                        input.len()
                    ),
                    "encode each query with clearance_core::wire::encode_query",
                ));
            }
            let n = input.len() / QUERY_LEN;
            if n > MAX_BATCH {
                return Err(too_large(n));
            }
            Ok(s)
        })();
        let s = match checked {
            Ok(s) => s,
            Err(e) => return framed_error(&e),
        };
        // A decision is at least 10 bytes, 15 with one reason.
        let mut out = Vec::with_capacity(1 + input.len() / QUERY_LEN * 16);
        out.push(0);
        for chunk in input.chunks_exact(QUERY_LEN) {
            match decode_query(chunk) {
                Some(q) => encode_decision(&s.decide_checked(&q), &mut out),
                None => {
                    return framed_error(&error("request.malformed", "unreadable query", ""));
                }
            }
        }
        out
    }

    /// Loads a snapshot from its bytes (policy included).
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> String {
        match Snapshot::from_bytes(bytes) {
            Ok(s) => {
                let v = info(&s);
                self.schema = Some(Arc::clone(&s.schema));
                self.facts = None;
                self.snapshot = Some(s);
                ok(&v)
            }
            Err(e) => err(&ErrorData::from(e)),
        }
    }

    /// The loaded snapshot's bytes.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, ErrorData> {
        self.snapshot()?.to_bytes().map_err(ErrorData::from)
    }
}

/// `1` then the error as JSON.
pub fn framed_error(e: &ErrorData) -> Vec<u8> {
    let mut b = vec![1];
    b.extend_from_slice(err(e).as_bytes());
    b
}

fn too_large(n: usize) -> ErrorData {
    error(
        "request.too_large",
        format!("a batch of {n} requests is more than {MAX_BATCH}"),
        "split the batch",
    )
}

fn info(s: &Snapshot) -> String {
    text(&Info {
        core_version: env!("CARGO_PKG_VERSION"),
        entities: s.names.len(),
        policy_hash: s.schema.hash_hex(),
        revision: s.revision,
        tuples: s.tuple_count(),
    })
}
