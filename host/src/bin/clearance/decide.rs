//! `clearance check` and `clearance explain`: one request, decided through the module.

use crate::common::{loaded, now_text};
use crate::{Cli, RequestArgs};
use clearance_core::protocol::Call;
use clearance_core::{DecisionView, Explanation, Request, TimeValue};
use serde_json::Value;
use std::process::ExitCode;

/// Decides (and with `explain`, explains) the request of `args`.
pub async fn run(cli: &Cli, args: &RequestArgs, explain: bool) -> Result<ExitCode, String> {
    let rt = loaded(cli, &args.facts).await?;
    let request = Request {
        principal: args.principal.clone(),
        action: args.action.clone(),
        resource: args.resource.clone(),
        target: args.target.clone(),
        now: TimeValue::Text(args.now.clone().unwrap_or_else(now_text)),
    };
    let call = if explain {
        Call::Explain { request }
    } else {
        Call::Check { request }
    };
    let answer = rt.run(&call).await.map_err(|e| e.to_string())?;
    Ok(print_decision(&read_decision(answer, explain)?))
}

/// An answer of `check` (a decision) or, with `explain`, of `explain` (a decision and
/// what held), read typed, locally or from a server.
pub fn read_decision(answer: Value, explain: bool) -> Result<Explanation, String> {
    let read = if explain {
        serde_json::from_value::<Explanation>(answer)
    } else {
        serde_json::from_value::<DecisionView>(answer).map(|decision| Explanation {
            decision,
            held: Vec::new(),
        })
    };
    read.map_err(|e| format!("an unreadable decision: {e}"))
}

/// Prints a decision as `check` and `explain` print it, locally or from a server: ALLOW
/// or DENY, then each reason, the time it holds until and what held (an explanation's).
/// Exit 0 for an allow, 1 for a deny.
pub fn print_decision(answer: &Explanation) -> ExitCode {
    let decision = &answer.decision;
    println!("{}", if decision.allowed { "ALLOW" } else { "DENY" });
    for r in &decision.reasons {
        println!("  {:<26} {}", r.code, r.message);
    }
    if let Some(u) = &decision.valid_until {
        println!("  valid until {u}");
    }
    for h in &answer.held {
        println!("  held: {} {}", h.rule, h.message);
    }
    if decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
