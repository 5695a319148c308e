//! The value calls of the `Clearance` class: a request's fields as arguments, decisions
//! as plain objects built through the [`Cache`](crate::js::Cache) of [`crate::js`].

use crate::bindgen::Clearance;
use crate::js::{js_error, seconds_of, time_value};
use clearance_core::{Request, TimeValue};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
impl Clearance {
    /// Decides one request given as its fields; gives the decision as an object. The
    /// builder holds the same fields (for messages that show them).
    #[wasm_bindgen(js_name = checkValue)]
    pub fn check_value(
        &mut self,
        principal: String,
        action: String,
        resource: String,
        target: Option<String>,
        now: JsValue,
    ) -> Result<JsValue, JsValue> {
        let now = time_value(&now)?;
        self.decide(principal, action, resource, target, now)
    }

    /// [`Clearance::check_value`] at `seconds` since the epoch (a whole number): `now`
    /// as a number, without asking JS what the value is.
    #[wasm_bindgen(js_name = checkAt)]
    pub fn check_at(
        &mut self,
        principal: String,
        action: String,
        resource: String,
        target: Option<String>,
        seconds: f64,
    ) -> Result<JsValue, JsValue> {
        let now = seconds_of(seconds)?;
        self.decide(principal, action, resource, target, now)
    }

    /// The actions `principal` may take on `resource` at `now`, as `{actions, denied?}`.
    /// The builder holds the same fields, with an empty action.
    #[wasm_bindgen(js_name = allowedActionsValue)]
    pub fn allowed_actions_value(
        &mut self,
        principal: String,
        resource: String,
        now: JsValue,
    ) -> Result<JsValue, JsValue> {
        let now = time_value(&now)?;
        let s = self.session.snapshot().map_err(|e| js_error(&e))?;
        let got = s.allowed_actions(&principal, &resource, &now);
        let r = Request {
            principal,
            action: String::new(),
            resource,
            target: None,
            now,
        };
        Ok(self.cache.actions(s, got, &r))
    }
}

impl Clearance {
    /// Decides a request of these fields; the decision as an object.
    fn decide(
        &mut self,
        principal: String,
        action: String,
        resource: String,
        target: Option<String>,
        now: TimeValue,
    ) -> Result<JsValue, JsValue> {
        let r = Request {
            principal,
            action,
            resource,
            target,
            now,
        };
        let s = self.session.snapshot().map_err(|e| js_error(&e))?;
        Ok(self.cache.decision(s, &s.check(&r), &r))
    }
}
