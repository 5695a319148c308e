//! JS values built and kept for the `Clearance` class, with js-sys: decisions as plain
//! objects (through the package's builder), failures as `Error` objects with `code`,
//! `message` and `help`, and `now` read from a JS value.
//!
//! Every string that crosses into JS costs a UTF-8 decode in the glue, which was most of a
//! check's time (BENCHMARKS.md, "The JS face"). So what repeats is made once and kept in
//! a [`Cache`]: the property names, the policy hash, and per reason (code and rule) its
//! code, rule and place, and its message when the message names nothing of the request.
//! Properties are set with plain indexing, not `Reflect.set`, whose glue wraps every call
//! in an exception handler.

use clearance_core::ErrorCode;
use clearance_core::{Decision, ErrorData, Reason, Request, Snapshot, TimeValue};
use js_sys::{Array, Object};
use rustc_hash::FxHashMap;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// An object whose properties are read and set by plain indexing.
    #[wasm_bindgen(extends = Object)]
    type Plain;
    #[wasm_bindgen(method, indexing_setter)]
    fn set(this: &Plain, key: &JsValue, value: &JsValue);

    /// The package's builder of answers (`index.js`): plain objects made by object
    /// literals in JS, one call each, instead of a call per property from here.
    pub type Builder;
    #[wasm_bindgen(method)]
    fn decision(
        this: &Builder,
        allowed: bool,
        reasons: &Array,
        revision: f64,
        policy_hash: &JsValue,
        valid_until: &JsValue,
    ) -> JsValue;
    /// A decision of one reason: its list made in JS, two calls fewer from here.
    #[wasm_bindgen(method)]
    fn decision1(
        this: &Builder,
        allowed: bool,
        reason: &JsValue,
        revision: f64,
        policy_hash: &JsValue,
        valid_until: &JsValue,
    ) -> JsValue;
    #[wasm_bindgen(method)]
    fn reason(
        this: &Builder,
        code: &JsValue,
        rule: &JsValue,
        message: &JsValue,
        at: &JsValue,
    ) -> JsValue;
    /// The message of `template` with the fields of the request being answered, which
    /// the package gave the builder before the call.
    #[wasm_bindgen(method)]
    fn fill(this: &Builder, template: &JsValue) -> JsValue;
    #[wasm_bindgen(method)]
    fn actions(this: &Builder, actions: &Array, denied: &JsValue) -> JsValue;
}

/// A JS `Error` with the error's message, and its `code` and `help` as properties.
pub fn js_error(e: &ErrorData) -> JsValue {
    let err: Plain = js_sys::Error::new(&e.message).unchecked_into();
    err.set(&"code".into(), &e.code.as_str().into());
    err.set(&"help".into(), &e.help.as_str().into());
    err.into()
}

/// A thrown `request.malformed`.
pub fn malformed(message: String, help: &str) -> JsValue {
    js_error(&ErrorData {
        code: ErrorCode::RequestMalformed.into(),
        message,
        help: help.into(),
    })
}

/// How a reason's message is kept.
enum Kept {
    /// The same for every request: kept whole.
    Fixed(JsValue),
    /// The request's fields put into a kept template ([`Snapshot::reason_template`]).
    Template(JsValue),
    /// Written anew for each request.
    Computed,
}

/// A reason's strings as JS values.
struct ReasonJs {
    code: JsValue,
    rule: JsValue,
    at: JsValue,
    message: Kept,
}

/// JS values kept across calls, for one policy: they are dropped when the policy changes.
pub struct Cache {
    builder: Builder,
    policy: [u8; 32],
    /// Whether `policy_hash` is that of `policy` (and not the first call's placeholder).
    hashed: bool,
    policy_hash: JsValue,
    reasons: FxHashMap<(u8, u32), ReasonJs>,
    names: FxHashMap<String, JsValue>,
}

/// Bounds on what a cache keeps: reasons are bounded by the policy's rules, names by its
/// actions; these only stop a pathological policy from growing it without end.
const MAX_KEPT: usize = 4096;

impl Cache {
    /// A cache building answers with `builder`.
    pub fn new(builder: Builder) -> Cache {
        Cache {
            builder,
            policy: [0; 32],
            hashed: false,
            policy_hash: JsValue::UNDEFINED,
            reasons: FxHashMap::default(),
            names: FxHashMap::default(),
        }
    }

    /// Makes the cache the one of `s`'s policy.
    fn follow(&mut self, s: &Snapshot) {
        // Whether the hash is kept is a flag here: asking JS whether the kept value is
        // undefined was a call into the glue on every decision.
        if self.policy != s.schema.hash || !self.hashed {
            self.hashed = true;
            self.policy = s.schema.hash;
            self.policy_hash = JsValue::from_str(&s.schema.hash_hex());
            self.reasons.clear();
            self.names.clear();
        }
    }

    fn reason(&mut self, s: &Snapshot, x: &Reason, r: &Request) -> JsValue {
        let key = (x.code as u8, x.rule);
        if let Some(kept) = self.reasons.get(&key) {
            let b = &self.builder;
            // A kept message passes by reference: a clone of a JS value is a call into the
            // glue, and so is dropping it.
            return match &kept.message {
                Kept::Fixed(m) => b.reason(&kept.code, &kept.rule, m, &kept.at),
                Kept::Template(t) => b.reason(&kept.code, &kept.rule, &b.fill(t), &kept.at),
                Kept::Computed => b.reason(
                    &kept.code,
                    &kept.rule,
                    &JsValue::from_str(&s.reason_message(x, r)),
                    &kept.at,
                ),
            };
        }
        if self.reasons.len() < MAX_KEPT {
            let view = s.reason_view(x, r);
            let message = if Snapshot::message_is_fixed(x.code) {
                Kept::Fixed(JsValue::from_str(&view.message))
            } else {
                match s.reason_template(x) {
                    Some(t) => Kept::Template(JsValue::from_str(&t)),
                    None => Kept::Computed,
                }
            };
            self.reasons.insert(
                key,
                ReasonJs {
                    code: JsValue::from_str(&view.code),
                    rule: JsValue::from_str(&view.rule),
                    at: view
                        .at
                        .as_deref()
                        .map_or(JsValue::UNDEFINED, JsValue::from_str),
                    message,
                },
            );
            // Kept now: answered as above.
            return self.reason(s, x, r);
        }
        let view = s.reason_view(x, r);
        self.builder.reason(
            &JsValue::from_str(&view.code),
            &JsValue::from_str(&view.rule),
            &JsValue::from_str(&view.message),
            &view
                .at
                .as_deref()
                .map_or(JsValue::UNDEFINED, JsValue::from_str),
        )
    }

    /// A decision as a plain object: `{allowed, reasons, revision, policy_hash,
    /// valid_until?}`, the fields of `DecisionView`.
    pub fn decision(&mut self, s: &Snapshot, d: &Decision, r: &Request) -> JsValue {
        self.follow(s);
        let until = d.valid_until.map_or(JsValue::UNDEFINED, |u| {
            JsValue::from_str(&clearance_core::time::format(u))
        });
        // A revision is far below 2^53.
        #[allow(clippy::cast_precision_loss)]
        let revision = d.revision as f64;
        if let [x] = d.reasons.as_slice() {
            let reason = self.reason(s, x, r);
            return self
                .builder
                .decision1(d.allowed, &reason, revision, &self.policy_hash, &until);
        }
        let reasons = Array::new();
        for x in &d.reasons {
            reasons.push(&self.reason(s, x, r));
        }
        self.builder
            .decision(d.allowed, &reasons, revision, &self.policy_hash, &until)
    }

    /// `{actions, denied?}`: the actions, or none and the denial that says why.
    pub fn actions(
        &mut self,
        s: &Snapshot,
        got: Result<Vec<String>, Decision>,
        r: &Request,
    ) -> JsValue {
        self.follow(s);
        let list = Array::new();
        let denied = match got {
            Ok(names) => {
                for n in &names {
                    match self.names.get(n) {
                        Some(v) => list.push(v),
                        None => {
                            let v = JsValue::from_str(n);
                            if self.names.len() < MAX_KEPT {
                                self.names.insert(n.clone(), v.clone());
                            }
                            list.push(&v)
                        }
                    };
                }
                JsValue::UNDEFINED
            }
            Err(d) => self.decision(s, &d, r),
        };
        self.builder.actions(&list, &denied)
    }
}

const TIME_HELP: &str = "pass a Date, whole seconds since the epoch, or RFC 3339 text";

/// Whole seconds a JS number holds exactly, or a thrown `request.malformed`.
pub fn seconds_of(n: f64) -> Result<TimeValue, JsValue> {
    if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_991.0 {
        #[allow(clippy::cast_possible_truncation)]
        return Ok(TimeValue::Seconds(n as i64));
    }
    Err(malformed(
        format!("`now` is {n}, not whole seconds"),
        TIME_HELP,
    ))
}

/// `now` as a JS value: a `Date`, whole seconds, or RFC 3339 text.
pub fn time_value(v: &JsValue) -> Result<TimeValue, JsValue> {
    if let Some(n) = v.as_f64() {
        return seconds_of(n);
    }
    if let Some(s) = v.as_string() {
        return Ok(TimeValue::Text(s));
    }
    if let Some(d) = v.dyn_ref::<js_sys::Date>() {
        let ms = d.get_time();
        if ms.is_finite() {
            #[allow(clippy::cast_possible_truncation)]
            return Ok(TimeValue::Seconds((ms / 1000.0).floor() as i64));
        }
        return Err(malformed("`now` is an invalid Date".into(), TIME_HELP));
    }
    Err(malformed(
        "`now` is neither a Date, a number nor text".into(),
        TIME_HELP,
    ))
}
