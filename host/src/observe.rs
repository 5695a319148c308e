//! What an operator sees of a running host: the Prometheus metrics served at `/metrics`,
//! and one structured log line per request (route, status, duration, principal,
//! revision, decision), through `tracing`.
//!
//! Counters and histograms are kept as the host works ([`Metrics`]); what the host
//! already holds (its revision, hashes, change-feed followers, the module's traps and
//! instances) is read at each scrape, so it cannot drift from the truth.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The labels of a request: the route as the table names it (`/v1/slice/{principal}`,
/// never the path asked, so a caller cannot make new series), its method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's path template, or `unmatched`.
    pub route: String,
    /// The method.
    pub method: String,
    /// The status answered.
    pub status: u16,
}

/// The labels of a route's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route's path template, or `unmatched`.
    pub route: String,
}

/// The labels of a decision: the operation, allow or deny, and for a deny the code of its
/// first reason (for an allow, `granted`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `check`, `check_batch` or `explain`.
    pub op: &'static str,
    /// `allow` or `deny`.
    pub outcome: &'static str,
    /// The first reason's code.
    pub reason: String,
}

/// The labels of an operation of the module.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The operation (`check`, `check_batch`, `allowed_actions`, ...).
    pub op: &'static str,
}

/// The media type of `/metrics`: the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Seconds from 20 µs to about 10 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_02, 2.0, 20))
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The host's counters and histograms, updated as it works.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    decisions: Family<DecisionLabels, Counter>,
    op_seconds: Histograms<OpLabels>,
    write_seconds: Histogram,
    append_seconds: Histogram,
    writes: Family<OutcomeLabels, Counter>,
}

/// Whether a write was stored.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `stored` or `refused`.
    pub outcome: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The metrics, every one registered under the `clearance_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("clearance");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        let request_seconds: Histograms<RouteLabels> = Family::new_with_constructor(latency);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer's head (a change feed: to its first byte)",
            request_seconds.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions made, by operation, outcome and first reason code",
            decisions.clone(),
        );
        let op_seconds: Histograms<OpLabels> = Family::new_with_constructor(latency);
        registry.register(
            "decision_duration_seconds",
            "Time of one call into the module (waiting for an instance included), by operation",
            op_seconds.clone(),
        );
        let write_seconds = latency();
        registry.register(
            "write_duration_seconds",
            "Time of a write from its arrival to its answer: queued, judged, stored and applied",
            write_seconds.clone(),
        );
        let append_seconds = latency();
        registry.register(
            "store_append_duration_seconds",
            "Time to append a group of changes to the fact store (one transaction)",
            append_seconds.clone(),
        );
        let writes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "writes",
            "Writes answered, stored or refused",
            writes.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            decisions,
            op_seconds,
            write_seconds,
            append_seconds,
            writes,
        }
    }

    /// Counts a request answered.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Times one call into the module.
    pub fn op(&self, op: &'static str, took: Duration) {
        self.op_seconds
            .get_or_create(&OpLabels { op })
            .observe(took.as_secs_f64());
    }

    /// Counts the decisions of an answer of `op` ([`Decided::read`]).
    pub fn decisions(&self, op: &'static str, decided: &Decided) {
        for d in &decided.each {
            self.decisions
                .get_or_create(&DecisionLabels {
                    op,
                    outcome: if d.allowed { "allow" } else { "deny" },
                    reason: d.reason(),
                })
                .inc();
        }
    }

    /// Times a write and counts whether it was stored.
    pub fn write(&self, stored: bool, took: Duration) {
        self.write_seconds.observe(took.as_secs_f64());
        self.writes
            .get_or_create(&OutcomeLabels {
                outcome: if stored { "stored" } else { "refused" },
            })
            .inc();
    }

    /// Times an append to the store.
    pub fn append(&self, took: Duration) {
        self.append_seconds.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of these metrics and of `now`, what the host holds at this
    /// moment.
    pub fn render(&self, now: &Now) -> Result<String, std::fmt::Error> {
        let mut held = Registry::with_prefix("clearance");
        held.register(
            "build",
            "The module and policy served",
            Info::new(vec![
                ("module_hash".to_string(), now.module_hash.clone()),
                ("policy_hash".to_string(), now.policy_hash.clone()),
            ]),
        );
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        held.register("revision", "The revision served", gauge(now.revision));
        held.register(
            "store_revision",
            "The last revision the store reported to this host",
            gauge(now.store_revision),
        );
        held.register(
            "ready",
            "1 when /readyz answers 200",
            gauge(u64::from(now.ready)),
        );
        held.register(
            "change_feed_subscribers",
            "Change feeds open",
            gauge(now.subscribers),
        );
        held.register(
            "change_feed_lag_max_revisions",
            "Revisions the change feed furthest behind has still to send",
            gauge(now.feed_lag_max),
        );
        held.register(
            "change_feed_lagging",
            "Change feeds with revisions still to send",
            gauge(now.feed_lagging),
        );
        held.register(
            "module_traps",
            "Calls into the module that trapped (deadline, memory, fault); each was denied and its instance replaced",
            ConstCounter::new(now.traps),
        );
        held.register(
            "module_instances_created",
            "Instances of the module created: the first ones and every replacement",
            ConstCounter::new(now.instances_created),
        );
        held.register(
            "module_busy",
            "Callers answered busy because every instance and queue place was taken",
            ConstCounter::new(now.busy),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        prometheus_client::encoding::text::encode_registry(&mut out, &held)?;
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// What the host holds at a scrape.
#[derive(Debug, Clone, Default)]
pub struct Now {
    /// The module's SHA-256.
    pub module_hash: String,
    /// The policy's hash.
    pub policy_hash: String,
    /// The revision served.
    pub revision: u64,
    /// The store's last revision as last seen.
    pub store_revision: u64,
    /// Whether the host is ready.
    pub ready: bool,
    /// Change feeds open.
    pub subscribers: u64,
    /// The most revisions one feed is behind.
    pub feed_lag_max: u64,
    /// Feeds behind.
    pub feed_lagging: u64,
    /// Module traps.
    pub traps: u64,
    /// Instances created.
    pub instances_created: u64,
    /// Callers turned away busy.
    pub busy: u64,
}

/// What a handler learns of its request for the request's log line: who asked, and what
/// was decided.
#[derive(Debug, Default, Clone)]
pub struct Note {
    /// The caller, as [`crate::auth::Caller::name`] gives it.
    pub principal: Option<String>,
    /// The decision: `allow`, `deny:<code>`, or `n allowed of m` for a batch.
    pub decision: Option<String>,
}

tokio::task_local! {
    static NOTE: Arc<Mutex<Note>>;
}

/// Runs `f` on the note of the request being served, if there is one.
pub fn note(f: impl FnOnce(&mut Note)) {
    let _ = NOTE.try_with(|n| {
        let mut g = n.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g);
    });
}

/// Runs `fut`, the serving of one request, with a note its handlers can fill in; gives
/// its output and the note.
pub async fn noted<F: std::future::Future>(fut: F) -> (F::Output, Note) {
    let cell = Arc::new(Mutex::new(Note::default()));
    let out = NOTE.scope(Arc::clone(&cell), fut).await;
    let note = cell
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    (out, note)
}

/// What an answer of a deciding call decided, read from its JSON text without building
/// a JSON value: for the metrics and the request's log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decided {
    /// Each decision, in order.
    pub each: Vec<OneDecision>,
    /// Whether the answer is a list of decisions (a batch) rather than one.
    pub list: bool,
}

/// One decision: allowed or not, and the code of its first reason.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OneDecision {
    /// Whether it allows.
    pub allowed: bool,
    /// The code of its first reason, if it gives one.
    pub code: Option<String>,
}

impl OneDecision {
    /// The reason the metrics count it under: its first reason's code, else `granted`
    /// for an allow and `none` for a denial.
    fn reason(&self) -> String {
        self.code
            .clone()
            .unwrap_or_else(|| if self.allowed { "granted" } else { "none" }.to_string())
    }
}

#[derive(serde::Deserialize)]
struct SeenDecision<'a> {
    allowed: Option<bool>,
    #[serde(default, borrow)]
    reasons: Vec<SeenReason<'a>>,
    #[serde(default, borrow)]
    decision: Option<Box<SeenDecision<'a>>>,
}

#[derive(serde::Deserialize)]
struct SeenReason<'a> {
    #[serde(borrow)]
    code: std::borrow::Cow<'a, str>,
}

impl Decided {
    /// Reads an answer's JSON text: a decision, a list of them, or an explanation (its
    /// `decision`). Anything else decided nothing.
    pub fn read(json: &str) -> Decided {
        let one = |d: SeenDecision<'_>| -> Option<OneDecision> {
            let d = match d.decision {
                Some(inner) => *inner,
                None => d,
            };
            Some(OneDecision {
                allowed: d.allowed?,
                code: d.reasons.into_iter().next().map(|r| r.code.into_owned()),
            })
        };
        // Read as what it is, not as an untagged either-or (which buffers the whole
        // answer first).
        if json.trim_start().starts_with('[') {
            let list: Vec<SeenDecision<'_>> = serde_json::from_str(json).unwrap_or_default();
            Decided {
                each: list.into_iter().filter_map(one).collect(),
                list: true,
            }
        } else {
            let d: Option<SeenDecision<'_>> = serde_json::from_str(json).ok();
            Decided {
                each: d.and_then(one).into_iter().collect(),
                list: false,
            }
        }
    }

    /// The decision as a request's log line gives it: `allow`, `deny:<code>`, or for a
    /// batch `N allowed of M`.
    pub fn note(&self) -> Option<String> {
        if self.list {
            let allowed = self.each.iter().filter(|d| d.allowed).count();
            return Some(format!("{allowed} allowed of {}", self.each.len()));
        }
        let d = self.each.first()?;
        Some(if d.allowed {
            "allow".into()
        } else {
            format!("deny:{}", d.code.as_deref().unwrap_or("none"))
        })
    }
}
