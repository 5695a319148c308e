//! The call protocol of the module, in one place: the calls (read from JSON with one table
//! of ops and their fields, and written to JSON by hosts that build them typed), the
//! answers, and a [`Session`]: the state of one module instance (nothing, a policy,
//! facts, or a snapshot) and the calls run on it. Every call takes and gives JSON (or the
//! compact binary batch format of [`crate::wire`]), and every error comes back as data
//! with `"allowed": false`, never as a panic or an allow.
//!
//! The module's two faces (`crates/wasm`: a wasm-bindgen class and a raw ABI) only adapt
//! this to their calling conventions.

mod answer;
use crate::error::ErrorCode;
use crate::facts::check_fields;
use crate::wire::{QUERY_LEN, decode_query, encode_decision};
use crate::{Delta, ErrorData, Facts, FactsJson, Request, Schema, Snapshot, Source, TimeValue};
pub use answer::{Actions, Answer, Info, PolicyLoaded, Resolved, WriteAnswer};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// The most requests one batch may carry.
pub const MAX_BATCH: usize = 1 << 20;

/// A policy source as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone)]
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
    /// Whether a principal passes its gates.
    Gates { principal: String, now: TimeValue },
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
    /// The loaded facts, as a facts document: what writes left behind.
    Facts,
    /// What the loaded policy declares: types, actions, write rules, matrices.
    Schema,
}

/// An op: the name a call gives in `"op"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `load_policy`
    LoadPolicy,
    /// `load_facts`
    LoadFacts,
    /// `apply_deltas`
    ApplyDeltas,
    /// `check`
    Check,
    /// `check_batch`
    CheckBatch,
    /// `gates`
    Gates,
    /// `allowed_actions`
    AllowedActions,
    /// `list_resources`
    ListResources,
    /// `list_principals`
    ListPrincipals,
    /// `explain`
    Explain,
    /// `matrix`
    Matrix,
    /// `resolve`
    Resolve,
    /// `authorize_deltas`
    AuthorizeDeltas,
    /// `write`
    Write,
    /// `info`
    Info,
    /// `facts`
    Facts,
    /// `schema`
    Schema,
}

/// An op's name and fields: what it requires and what it may carry besides.
#[derive(Debug)]
pub struct OpSpec {
    /// The op.
    pub op: Op,
    /// Its name in JSON.
    pub name: &'static str,
    /// The fields it requires.
    pub required: &'static [&'static str],
    /// The fields it may carry.
    pub optional: &'static [&'static str],
}

/// Every op with its fields, in the order the help text lists them: the one table the
/// reader, the writer and the help text use.
pub const OPS: &[OpSpec] = &[
    OpSpec {
        op: Op::LoadPolicy,
        name: "load_policy",
        required: &["sources"],
        optional: &[],
    },
    OpSpec {
        op: Op::LoadFacts,
        name: "load_facts",
        required: &["facts"],
        optional: &[],
    },
    OpSpec {
        op: Op::ApplyDeltas,
        name: "apply_deltas",
        required: &["deltas"],
        optional: &[],
    },
    OpSpec {
        op: Op::Check,
        name: "check",
        required: &["request"],
        optional: &[],
    },
    OpSpec {
        op: Op::CheckBatch,
        name: "check_batch",
        required: &["requests"],
        optional: &[],
    },
    OpSpec {
        op: Op::Gates,
        name: "gates",
        required: &["principal", "now"],
        optional: &[],
    },
    OpSpec {
        op: Op::AllowedActions,
        name: "allowed_actions",
        required: &["principal", "resource", "now"],
        optional: &[],
    },
    OpSpec {
        op: Op::ListResources,
        name: "list_resources",
        required: &["principal", "action", "type", "now"],
        optional: &[],
    },
    OpSpec {
        op: Op::ListPrincipals,
        name: "list_principals",
        required: &["resource", "action", "now"],
        optional: &["account"],
    },
    OpSpec {
        op: Op::Explain,
        name: "explain",
        required: &["request"],
        optional: &[],
    },
    OpSpec {
        op: Op::Matrix,
        name: "matrix",
        required: &["matrix"],
        optional: &["account"],
    },
    OpSpec {
        op: Op::Resolve,
        name: "resolve",
        required: &["requests"],
        optional: &[],
    },
    OpSpec {
        op: Op::AuthorizeDeltas,
        name: "authorize_deltas",
        required: &["author", "now", "deltas"],
        optional: &[],
    },
    OpSpec {
        op: Op::Write,
        name: "write",
        required: &["author", "now", "deltas"],
        optional: &[],
    },
    OpSpec {
        op: Op::Info,
        name: "info",
        required: &[],
        optional: &[],
    },
    OpSpec {
        op: Op::Facts,
        name: "facts",
        required: &[],
        optional: &[],
    },
    OpSpec {
        op: Op::Schema,
        name: "schema",
        required: &[],
        optional: &[],
    },
];

impl Op {
    /// The op's row in [`OPS`] (every op has one; a test checks it).
    pub fn spec(self) -> Option<&'static OpSpec> {
        OPS.iter().find(|s| s.op == self)
    }

    /// The row of the op named `name`.
    pub fn named(name: &str) -> Option<&'static OpSpec> {
        OPS.iter().find(|s| s.name == name)
    }
}

/// The ops' names, comma-separated, for help texts.
pub fn op_names() -> String {
    OPS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

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

/// A required field that [`check_fields`] has seen present.
fn present<T>(v: Option<T>, name: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("malformed call: no `{name}`"))
}

impl Call {
    /// The call's op.
    pub fn op(&self) -> Op {
        match self {
            Call::LoadPolicy { .. } => Op::LoadPolicy,
            Call::LoadFacts { .. } => Op::LoadFacts,
            Call::ApplyDeltas { .. } => Op::ApplyDeltas,
            Call::Check { .. } => Op::Check,
            Call::CheckBatch { .. } => Op::CheckBatch,
            Call::Gates { .. } => Op::Gates,
            Call::AllowedActions { .. } => Op::AllowedActions,
            Call::ListResources { .. } => Op::ListResources,
            Call::ListPrincipals { .. } => Op::ListPrincipals,
            Call::Explain { .. } => Op::Explain,
            Call::Matrix { .. } => Op::Matrix,
            Call::Resolve { .. } => Op::Resolve,
            Call::AuthorizeDeltas { .. } => Op::AuthorizeDeltas,
            Call::Write { .. } => Op::Write,
            Call::Info => Op::Info,
            Call::Facts => Op::Facts,
            Call::Schema => Op::Schema,
        }
    }

    /// The call as JSON text, as [`Call::parse`] reads it.
    pub fn to_json(&self) -> Result<String, ErrorData> {
        serde_json::to_string(self).map_err(|e| {
            error(
                ErrorCode::RequestMalformed,
                format!("the call cannot be written: {e}"),
                "",
            )
        })
    }

    /// Reads the one JSON argument of a one-argument op (`load_policy`, `load_facts`,
    /// `apply_deltas`, `check`, `check_batch`, `explain`, `resolve`) as that op's call.
    ///
    /// Not generic on purpose: the JSON readers of the core's types are compiled once,
    /// here, for [`Call::parse`] and for every face of the module. A face that called
    /// `serde_json::from_str::<T>` itself would compile its own copy of each reader
    /// (generics are instantiated per crate, and LTO does not merge the copies).
    pub fn from_arg(op: Op, arg: &str) -> Result<Call, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(arg);
        let call = Call::read_arg(op, &mut de)?;
        de.end()?;
        Ok(call)
    }

    /// Reads the one argument of a one-argument op from any serde data: JSON text
    /// ([`Call::from_arg`]), or a face's own values (the module reads JS values so).
    pub fn read_arg<'de, D: Deserializer<'de>>(op: Op, d: D) -> Result<Call, D::Error> {
        Ok(match op {
            Op::LoadPolicy => Call::LoadPolicy {
                sources: Deserialize::deserialize(d)?,
            },
            Op::LoadFacts => Call::LoadFacts {
                facts: Deserialize::deserialize(d)?,
            },
            Op::ApplyDeltas => Call::ApplyDeltas {
                deltas: Deserialize::deserialize(d)?,
            },
            Op::Check => Call::Check {
                request: Deserialize::deserialize(d)?,
            },
            Op::Explain => Call::Explain {
                request: Deserialize::deserialize(d)?,
            },
            Op::CheckBatch => Call::CheckBatch {
                requests: Deserialize::deserialize(d)?,
            },
            Op::Resolve => Call::Resolve {
                requests: Deserialize::deserialize(d)?,
            },
            Op::Gates
            | Op::AllowedActions
            | Op::ListResources
            | Op::ListPrincipals
            | Op::Matrix
            | Op::AuthorizeDeltas
            | Op::Write
            | Op::Info
            | Op::Facts
            | Op::Schema => {
                return Err(serde::de::Error::custom(format!(
                    "`{}` does not take one JSON argument",
                    op.spec().map_or("?", |s| s.name)
                )));
            }
        })
    }

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
        Call::from_fields(f)
    }

    /// Reads a call from any serde data, as [`Call::parse`] reads JSON text: a face's own
    /// values (the module reads JS values so). Its errors carry no place in a text.
    pub fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Call, String> {
        let f = Fields::deserialize(d).map_err(|e| format!("malformed call: {e}"))?;
        Call::from_fields(f)
    }

    /// The call of the fields read: what is wrong (an unknown op, a field missing or not
    /// of that op) is an error that names it.
    fn from_fields(f: Fields) -> Result<Call, String> {
        let Some(spec) = Op::named(&f.op) else {
            return Err(format!(
                "unknown op `{}`, expected one of {}",
                f.op,
                op_names()
            ));
        };
        // The fields present, by name, so a field of another op is refused.
        let given: [(&str, bool); 13] = [
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
        check_fields(
            &format!("`{}`", spec.name),
            &given,
            spec.required,
            spec.optional,
        )
        .map_err(|e| format!("malformed call: {e}"))?;
        Ok(match spec.op {
            Op::LoadPolicy => Call::LoadPolicy {
                sources: present(f.sources, "sources")?,
            },
            Op::LoadFacts => Call::LoadFacts {
                facts: present(f.facts, "facts")?,
            },
            Op::ApplyDeltas => Call::ApplyDeltas {
                deltas: present(f.deltas, "deltas")?,
            },
            Op::Check => Call::Check {
                request: present(f.request, "request")?,
            },
            Op::Explain => Call::Explain {
                request: present(f.request, "request")?,
            },
            Op::CheckBatch => Call::CheckBatch {
                requests: present(f.requests, "requests")?,
            },
            Op::Resolve => Call::Resolve {
                requests: present(f.requests, "requests")?,
            },
            Op::Gates => Call::Gates {
                principal: present(f.principal, "principal")?,
                now: present(f.now, "now")?,
            },
            Op::AllowedActions => Call::AllowedActions {
                principal: present(f.principal, "principal")?,
                resource: present(f.resource, "resource")?,
                now: present(f.now, "now")?,
            },
            Op::ListResources => Call::ListResources {
                principal: present(f.principal, "principal")?,
                action: present(f.action, "action")?,
                ty: present(f.ty, "type")?,
                now: present(f.now, "now")?,
            },
            Op::ListPrincipals => Call::ListPrincipals {
                resource: present(f.resource, "resource")?,
                action: present(f.action, "action")?,
                now: present(f.now, "now")?,
                account: f.account,
            },
            Op::Matrix => Call::Matrix {
                matrix: present(f.matrix, "matrix")?,
                account: f.account,
            },
            Op::AuthorizeDeltas => Call::AuthorizeDeltas {
                author: present(f.author, "author")?,
                now: present(f.now, "now")?,
                deltas: present(f.deltas, "deltas")?,
            },
            Op::Write => Call::Write {
                author: present(f.author, "author")?,
                now: present(f.now, "now")?,
                deltas: present(f.deltas, "deltas")?,
            },
            Op::Info => Call::Info,
            Op::Facts => Call::Facts,
            Op::Schema => Call::Schema,
        })
    }
}

/// Written as `{"op": name, field: value, ...}`: what [`Call::parse`] reads.
impl Serialize for Call {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let spec = self
            .op()
            .spec()
            .ok_or_else(|| serde::ser::Error::custom("an op without its row in OPS"))?;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("op", spec.name)?;
        match self {
            Call::LoadPolicy { sources } => m.serialize_entry("sources", sources)?,
            Call::LoadFacts { facts } => m.serialize_entry("facts", facts)?,
            Call::ApplyDeltas { deltas } => m.serialize_entry("deltas", deltas)?,
            Call::Check { request } | Call::Explain { request } => {
                m.serialize_entry("request", request)?
            }
            Call::CheckBatch { requests } | Call::Resolve { requests } => {
                m.serialize_entry("requests", requests)?
            }
            Call::Gates { principal, now } => {
                m.serialize_entry("principal", principal)?;
                m.serialize_entry("now", now)?;
            }
            Call::AllowedActions {
                principal,
                resource,
                now,
            } => {
                m.serialize_entry("principal", principal)?;
                m.serialize_entry("resource", resource)?;
                m.serialize_entry("now", now)?;
            }
            Call::ListResources {
                principal,
                action,
                ty,
                now,
            } => {
                m.serialize_entry("principal", principal)?;
                m.serialize_entry("action", action)?;
                m.serialize_entry("type", ty)?;
                m.serialize_entry("now", now)?;
            }
            Call::ListPrincipals {
                resource,
                action,
                now,
                account,
            } => {
                m.serialize_entry("resource", resource)?;
                m.serialize_entry("action", action)?;
                m.serialize_entry("now", now)?;
                if let Some(a) = account {
                    m.serialize_entry("account", a)?;
                }
            }
            Call::Matrix { matrix, account } => {
                m.serialize_entry("matrix", matrix)?;
                if let Some(a) = account {
                    m.serialize_entry("account", a)?;
                }
            }
            Call::AuthorizeDeltas {
                author,
                now,
                deltas,
            }
            | Call::Write {
                author,
                now,
                deltas,
            } => {
                m.serialize_entry("author", author)?;
                m.serialize_entry("now", now)?;
                m.serialize_entry("deltas", deltas)?;
            }
            Call::Info | Call::Facts | Call::Schema => {}
        }
        m.end()
    }
}

/// What one module instance holds.
#[derive(Default)]
enum State {
    /// Nothing yet.
    #[default]
    Empty,
    /// A policy, no facts yet.
    Policy(Arc<Schema>),
    /// Facts under a policy, and their snapshot (which holds the policy).
    Facts(Facts, Snapshot),
    /// A snapshot loaded from its bytes: it decides, but holds no facts to apply deltas
    /// to.
    Snapshot(Snapshot),
}

/// One module instance's session: its state and the calls run on it. (A module
/// instance has one; the wasm-bindgen class and the raw ABI each drive one.)
#[derive(Default)]
pub struct Session {
    state: State,
}

fn error(code: ErrorCode, message: impl Into<String>, help: &str) -> ErrorData {
    ErrorData {
        code: code.into(),
        message: message.into(),
        help: help.into(),
    }
}

fn not_loaded() -> ErrorData {
    error(
        ErrorCode::SessionNotLoaded,
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

/// How many changed rows a snapshot holding facts carries before it is built again from
/// them: an eighth of its entities, and at least 4,096, so the rebuild's cost spreads
/// over at least that many changes.
fn rebuild_after(snap: &Snapshot) -> usize {
    (snap.names.len() / 8).max(4096)
}

impl Session {
    /// Runs a JSON call and gives the JSON answer.
    pub fn call(&mut self, input: &str) -> String {
        let call = match Call::parse(input) {
            Ok(c) => c,
            Err(message) => {
                return err(&error(
                    ErrorCode::RequestMalformed,
                    message,
                    &format!(
                        "a call is a JSON object with an `op` ({}) and its fields",
                        op_names()
                    ),
                ));
            }
        };
        self.answer(call)
    }

    /// Runs a call already read: `{"ok": ...}` or the error.
    pub fn answer(&mut self, call: Call) -> String {
        match self.run(call) {
            Ok(v) => ok(&text(&v)),
            Err(e) => err(&e),
        }
    }

    /// The loaded snapshot, or `session.not_loaded`.
    pub fn snapshot(&self) -> Result<&Snapshot, ErrorData> {
        match &self.state {
            State::Facts(_, s) | State::Snapshot(s) => Ok(s),
            State::Empty | State::Policy(_) => Err(not_loaded()),
        }
    }

    fn schema(&self) -> Option<&Arc<Schema>> {
        match &self.state {
            State::Empty => None,
            State::Policy(schema) => Some(schema),
            State::Facts(_, s) | State::Snapshot(s) => Some(&s.schema),
        }
    }

    /// Runs a call already read: its answer, or the error.
    pub fn run(&mut self, call: Call) -> Result<Answer, ErrorData> {
        Ok(match call {
            Call::LoadPolicy { sources } => {
                let sources: Vec<Source> = sources
                    .into_iter()
                    .map(|s| Source::new(s.name, s.text))
                    .collect();
                let schema = Arc::new(Schema::compile(&sources).map_err(ErrorData::from)?);
                let hash = schema.hash_hex();
                // Facts are rebuilt under the new policy. A snapshot loaded from bytes has
                // no facts to rebuild: it goes, so nothing decides under the old policy
                // while the session reports the new one.
                self.state = match std::mem::take(&mut self.state) {
                    State::Facts(facts, old) => {
                        match Snapshot::build(Arc::clone(&schema), &facts) {
                            Ok(snapshot) => State::Facts(facts, snapshot),
                            Err(e) => {
                                self.state = State::Facts(facts, old);
                                return Err(ErrorData::from(e));
                            }
                        }
                    }
                    State::Empty | State::Policy(_) | State::Snapshot(_) => State::Policy(schema),
                };
                Answer::PolicyLoaded(PolicyLoaded { policy_hash: hash })
            }
            Call::LoadFacts { facts } => {
                let schema = self.schema().cloned().ok_or_else(|| {
                    error(
                        ErrorCode::SessionNoPolicy,
                        "no policy is loaded",
                        "load a policy before facts",
                    )
                })?;
                let facts = Facts::from_doc(facts).map_err(ErrorData::from)?;
                let snap = Snapshot::build(schema, &facts).map_err(ErrorData::from)?;
                let info = info(&snap);
                self.state = State::Facts(facts, snap);
                Answer::Info(info)
            }
            Call::ApplyDeltas { deltas } => Answer::Info(self.apply_deltas(&deltas)?),
            Call::Check { request } => {
                let s = self.snapshot()?;
                Answer::Decision(s.view(&s.check(&request), &request))
            }
            Call::CheckBatch { requests } => {
                let s = self.snapshot()?;
                if requests.len() > MAX_BATCH {
                    return Err(too_large(requests.len()));
                }
                Answer::Decisions(requests.iter().map(|r| s.view(&s.check(r), r)).collect())
            }
            Call::Gates { principal, now } => {
                let s = self.snapshot()?;
                let d = s.gates(&principal, &now);
                let req = Request {
                    resource: principal.clone(),
                    principal,
                    action: String::new(),
                    target: None,
                    now,
                };
                Answer::Decision(s.view(&d, &req))
            }
            Call::AllowedActions {
                principal,
                resource,
                now,
            } => {
                let s = self.snapshot()?;
                match s.allowed_actions(&principal, &resource, &now) {
                    Ok(actions) => Answer::Actions(Actions {
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
                        Answer::Actions(Actions {
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
            } => Answer::Names(
                self.snapshot()?
                    .list_resources(&principal, &action, &ty, &now)?,
            ),
            Call::ListPrincipals {
                resource,
                action,
                now,
                account,
            } => Answer::Names(self.snapshot()?.list_principals(
                &resource,
                &action,
                &now,
                account.as_deref(),
            )?),
            Call::Explain { request } => Answer::Explanation(self.snapshot()?.explain(&request)),
            Call::Matrix { matrix, account } => {
                Answer::Matrix(self.snapshot()?.matrix(&matrix, account.as_deref())?)
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
                            crate::wire::encode_query(&q, &mut query);
                            Resolved::Query { query }
                        }
                        Err(d) => Resolved::Denied {
                            denied: s.view(&d, r),
                        },
                    })
                    .collect();
                Answer::Resolved(resolved)
            }
            Call::AuthorizeDeltas {
                author,
                now,
                deltas,
            } => Answer::Write(self.write(&author, &now, &deltas, false)?),
            Call::Write {
                author,
                now,
                deltas,
            } => Answer::Write(self.write(&author, &now, &deltas, true)?),
            Call::Info => Answer::Info(info(self.snapshot()?)),
            Call::Facts => Answer::Facts(self.facts()?.0.to_doc()),
            Call::Schema => match self.schema() {
                Some(schema) => Answer::Outline(schema.outline()),
                None => {
                    return Err(error(
                        ErrorCode::SessionNoPolicy,
                        "no policy is loaded",
                        "load a policy first",
                    ));
                }
            },
        })
    }

    /// The loaded facts and their snapshot.
    fn facts(&self) -> Result<(&Facts, &Snapshot), ErrorData> {
        match &self.state {
            State::Facts(facts, snapshot) => Ok((facts, snapshot)),
            State::Snapshot(_) => Err(error(
                ErrorCode::SessionNoFacts,
                "no facts are loaded (a snapshot loaded from bytes takes no writes)",
                "load facts first",
            )),
            State::Policy(_) | State::Empty => Err(self.nothing_to_change()),
        }
    }

    /// Why a session with no snapshot takes no deltas: no facts, or no policy either.
    fn nothing_to_change(&self) -> ErrorData {
        match &self.state {
            State::Policy(_) => error(
                ErrorCode::SessionNoFacts,
                "no facts are loaded",
                "load facts first",
            ),
            _ => error(
                ErrorCode::SessionNoPolicy,
                "no policy is loaded",
                "load a policy and facts first",
            ),
        }
    }

    /// Applies `deltas` in place, all or nothing ([`Snapshot::apply`]): to the snapshot,
    /// and to the facts when the session holds them.
    fn apply_deltas(&mut self, deltas: &[Delta]) -> Result<Info, ErrorData> {
        let snap = self.snapshot_mut()?;
        snap.apply(deltas).map_err(ErrorData::from)?;
        self.follow(deltas)
    }

    /// The snapshot deltas apply to, with facts or without.
    fn snapshot_mut(&mut self) -> Result<&mut Snapshot, ErrorData> {
        if matches!(self.state, State::Policy(_) | State::Empty) {
            return Err(self.nothing_to_change());
        }
        match &mut self.state {
            State::Snapshot(snap) | State::Facts(_, snap) => Ok(snap),
            State::Policy(_) | State::Empty => Err(error(
                ErrorCode::SessionNoPolicy,
                "no policy is loaded",
                "load a policy and facts first",
            )),
        }
    }

    /// After the snapshot took `deltas`: the facts, when the session holds them, take them
    /// too, and the snapshot is built again from them once its changed rows pass
    /// [`rebuild_after`]. A snapshot loaded from bytes keeps its changes until the next
    /// snapshot is loaded. The answer is the snapshot's `info`.
    fn follow(&mut self, deltas: &[Delta]) -> Result<Info, ErrorData> {
        let fail_closed = |m: String| {
            error(
                ErrorCode::SessionInternal,
                m,
                "load the policy and the facts again; nothing is loaded meanwhile",
            )
        };
        match &mut self.state {
            State::Snapshot(snap) => Ok(info(snap)),
            State::Facts(facts, snap) => {
                // The snapshot checks each delta as it applies it, and the facts check
                // only what is left at the end, so the facts take what it took; if not,
                // nothing is left loaded rather than two states that disagree.
                if let Err(e) = facts.extend(deltas) {
                    self.state = State::Empty;
                    return Err(fail_closed(format!(
                        "the facts refused deltas the snapshot took: {e}"
                    )));
                }
                facts.revision = snap.revision;
                if snap.patched_rows() > rebuild_after(snap) {
                    match Snapshot::build(Arc::clone(&snap.schema), facts) {
                        Ok(built) => *snap = built,
                        Err(e) => {
                            self.state = State::Empty;
                            return Err(fail_closed(format!(
                                "the facts no longer build a snapshot: {e}"
                            )));
                        }
                    }
                }
                Ok(info(snap))
            }
            State::Policy(_) | State::Empty => Err(self.nothing_to_change()),
        }
    }

    /// Checks (and with `commit`, applies) a list of deltas made by `author`, through the
    /// one write pipeline ([`crate::writes::write`]): the tuples the policy derives join
    /// the change, as on a host. A refusal is an answer (`{"allowed": false, "refusal":
    /// ...}`), not an error. Without `commit` the state is left exactly as it was.
    fn write(
        &mut self,
        author: &str,
        now: &TimeValue,
        deltas: &[Delta],
        commit: bool,
    ) -> Result<WriteAnswer, ErrorData> {
        let snap = self.snapshot_mut()?;
        let (pending, derived) = match crate::writes::write(snap, author, now, deltas) {
            Ok(w) => w,
            Err(crate::writes::WriteError::Refused(refusal)) => {
                return Ok(WriteAnswer::refused(refusal));
            }
            Err(crate::writes::WriteError::Invalid(e)) => return Err(e),
        };
        let revision = snap.revision;
        if commit {
            snap.commit(pending);
            let all: Vec<Delta> = deltas.iter().chain(&derived).cloned().collect();
            self.follow(&all)?;
        } else {
            snap.rollback(pending);
        }
        Ok(WriteAnswer {
            allowed: true,
            derived: Some(derived),
            refusal: None,
            revision: Some(revision),
        })
    }

    /// Decides a batch of binary queries (`clearance_core::wire`), each query checked for
    /// ids that exist first: `0` then the decisions, or `1` then the error as JSON. The
    /// frame byte is written first, so the decisions are never moved to make room for it.
    pub fn check_ids(&self, input: &[u8]) -> Vec<u8> {
        // A decision is at least 10 bytes, 15 with one reason.
        let mut out = Vec::with_capacity(1 + input.len() / QUERY_LEN * 16);
        out.push(0);
        match self.check_ids_into(input, &mut out) {
            Ok(()) => out,
            Err(e) => framed_error(&e),
        }
    }

    /// Decides a batch of binary queries as [`Session::check_ids`] does, appending the
    /// decisions to `out` unframed; on an error, what `out` holds is no answer.
    pub fn check_ids_into(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), ErrorData> {
        let s = self.snapshot()?;
        if !input.len().is_multiple_of(QUERY_LEN) {
            return Err(error(
                ErrorCode::RequestMalformed,
                format!(
                    "a batch is a multiple of {QUERY_LEN} bytes, got {}",
                    input.len()
                ),
                "encode each query with crate::wire::encode_query",
            ));
        }
        let n = input.len() / QUERY_LEN;
        if n > MAX_BATCH {
            return Err(too_large(n));
        }
        for chunk in input.chunks_exact(QUERY_LEN) {
            match decode_query(chunk) {
                Some(q) => encode_decision(&s.decide_checked(&q), out),
                None => return Err(error(ErrorCode::RequestMalformed, "unreadable query", "")),
            }
        }
        Ok(())
    }

    /// Loads a snapshot from its bytes (policy included): its `info` as JSON, or the
    /// error.
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> String {
        match self.load_snapshot_info(bytes) {
            Ok(v) => ok(&text(&v)),
            Err(e) => err(&e),
        }
    }

    /// Loads a snapshot from its bytes (policy included): its `info`, or the error.
    pub fn load_snapshot_info(&mut self, bytes: &[u8]) -> Result<Info, ErrorData> {
        let s = Snapshot::from_bytes(bytes).map_err(ErrorData::from)?;
        let v = info(&s);
        self.state = State::Snapshot(s);
        Ok(v)
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
        ErrorCode::RequestTooLarge,
        format!("a batch of {n} requests is more than {MAX_BATCH}"),
        "split the batch",
    )
}

fn info(s: &Snapshot) -> Info {
    Info {
        core_version: env!("CARGO_PKG_VERSION").to_string(),
        entities: s.names.len(),
        policy_hash: s.schema.hash_hex(),
        revision: s.revision,
        tuples: s.tuple_count(),
    }
}
