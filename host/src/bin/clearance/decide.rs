//! `clearance check` and `clearance explain`: one request, decided through the module.

use crate::common::{loaded, now_text};
use crate::{Cli, RequestArgs};
use clearance_core::protocol::Call;
use clearance_core::{Request, TimeValue};
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
    Ok(print_decision(&answer, explain))
}

/// Prints a decision (or, with `explain`, an explanation) as `check` and `explain`
/// print it, locally or from a server: ALLOW or DENY, then each reason, the time it
/// holds until and, for an explanation, what was held. Exit 0 for an allow, 1 for a
/// deny.
pub fn print_decision(answer: &Value, explain: bool) -> ExitCode {
    let decision = if explain {
        answer.get("decision").cloned().unwrap_or(Value::Null)
    } else {
        answer.clone()
    };
    let allowed = decision.get("allowed") == Some(&Value::Bool(true));
    println!("{}", if allowed { "ALLOW" } else { "DENY" });
    for r in decision
        .get("reasons")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "  {:<26} {}",
            r.get("code").and_then(Value::as_str).unwrap_or(""),
            r.get("message").and_then(Value::as_str).unwrap_or("")
        );
    }
    if let Some(u) = decision.get("valid_until").and_then(Value::as_str) {
        println!("  valid until {u}");
    }
    for h in answer
        .get("held")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "  held: {} {}",
            h.get("rule").and_then(Value::as_str).unwrap_or(""),
            h.get("message").and_then(Value::as_str).unwrap_or("")
        );
    }
    if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
