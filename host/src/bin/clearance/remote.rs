//! The command line against a running server (`clearance --server URL --key KEY …`):
//! `check` and `explain` print what the local commands print, from the server's
//! decision; `resources`, `principals`, `write` and `watch` call the API's routes of the
//! same names. The key is sent as a bearer credential and never printed.

use crate::decide::{print_decision, read_decision};
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The most an answer may hold; a bigger one is refused, not read.
const MAX_ANSWER: usize = 64 << 20;

/// How an answer is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For a person: a line an item.
    Text,
    /// The server's answer as it is (a JSON object a line for `watch`).
    Json,
}

/// A server and the credential to call it with.
pub struct Remote {
    base: String,
    key: String,
    client: reqwest::Client,
}

/// Why a call failed: exit 1 for a refusal the server decided (a deny, a refused
/// write), 2 for everything else.
pub struct Failed(pub u8, pub String);

impl From<String> for Failed {
    fn from(m: String) -> Failed {
        Failed(2, m)
    }
}

impl Remote {
    /// A client of the server at `server` (`http://host:port`) with `key`.
    pub fn new(server: &str, key: Option<&str>, ca_cert: Option<&Path>) -> Result<Remote, String> {
        let key = key.filter(|k| !k.is_empty()).ok_or(
            "--server needs a credential: --key (or CLEARANCE_KEY), a service key or a user token",
        )?;
        let base = server.trim_end_matches('/');
        let uri: axum::http::Uri = base.parse().map_err(|_| {
            format!("--server `{server}`: expected a URL such as http://127.0.0.1:8080")
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "--server `{server}`: expected a URL such as http://127.0.0.1:8080"
            ));
        }
        let mut client = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        for root in clearance_host::tls::extra_roots(ca_cert)? {
            client = client.add_root_certificate(root);
        }
        let client = client.build().map_err(|e| e.to_string())?;
        Ok(Remote {
            base: base.to_string(),
            key: key.to_string(),
            client,
        })
    }

    /// Whether the credential is a service key (`clr_…`), which names the time of a
    /// request, rather than a user token, which is decided at the server's clock.
    fn is_key(&self) -> bool {
        self.key.starts_with("clr_")
    }

    /// `now` for a request body: the one given; or, for a service key, this machine's
    /// time; a user token sends none.
    fn now(&self, given: Option<&String>) -> Option<Value> {
        match given {
            Some(t) => Some(Value::from(t.clone())),
            None if self.is_key() => Some(Value::from(crate::common::now_text())),
            None => None,
        }
    }

    /// Sends `request` and reads its JSON answer: the status and the value.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        let r = request
            .bearer_auth(&self.key)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| format!("{}: {}", self.base, why(e)))?;
        let status = r.status().as_u16();
        let body = read_bounded(r).await?;
        let value = serde_json::from_slice(&body)
            .map_err(|e| format!("the server's answer ({status}) is not JSON: {e}"))?;
        Ok((status, value))
    }

    /// POSTs `body` to `path`: the answer, or the server's error as a message.
    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}

/// A failed call, with its causes (`connection refused`, a timeout), without its URL.
fn why(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(&format!(": {more}"));
        }
        source = s.source();
    }
    text
}

/// The body of an answer, refused past [`MAX_ANSWER`] bytes.
async fn read_bounded(mut r: reqwest::Response) -> Result<Vec<u8>, String> {
    let too_big = || format!("the answer is larger than {MAX_ANSWER} bytes; not read");
    if r.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(why)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            return Err(too_big());
        }
    }
    Ok(body)
}

/// Sets `key` of the object `body` (a request body, always an object).
fn set(body: &mut Value, key: &str, value: Value) {
    if let Some(obj) = body.as_object_mut() {
        obj.insert(key.to_string(), value);
    }
}

/// The server's error in an answer, as a line: `code: message (help)`.
fn error_line(status: u16, answer: &Value) -> String {
    let e = &answer["error"];
    let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    if e.is_object() {
        let help = text("help");
        let help = if help.is_empty() {
            String::new()
        } else {
            format!(" ({help})")
        };
        format!("{}: {}{help}", text("code"), text("message"))
    } else {
        format!("the server answered {status}")
    }
}

/// The answer of a route, or its error.
fn ok(status: u16, answer: Value) -> Result<Value, String> {
    if status == 200 {
        Ok(answer)
    } else {
        Err(error_line(status, &answer))
    }
}

/// `check` or `explain` on the server: printed as the local commands print.
pub async fn decide(
    remote: &Remote,
    args: &crate::RequestArgs,
    explain: bool,
) -> Result<ExitCode, String> {
    let mut body = json!({
        "principal": args.principal,
        "action": args.action,
        "resource": args.resource,
    });
    if let Some(t) = &args.target {
        set(&mut body, "target", Value::from(t.clone()));
    }
    if let Some(now) = remote.now(args.now.as_ref()) {
        set(&mut body, "now", now);
    }
    let path = if explain { "/v1/explain" } else { "/v1/check" };
    let (status, answer) = remote.post(path, &body).await?;
    let answer = ok(status, answer)?;
    Ok(print_decision(&read_decision(answer, explain)?))
}

/// `resources`: the resources of a type a principal may act on, one a line.
pub async fn resources(
    remote: &Remote,
    args: &ResourcesArgs,
    output: Output,
) -> Result<ExitCode, String> {
    let mut body = json!({ "principal": args.principal, "action": args.action, "type": args.ty });
    if let Some(now) = remote.now(args.now.as_ref()) {
        set(&mut body, "now", now);
    }
    let (status, answer) = remote.post("/v1/resources", &body).await?;
    list(ok(status, answer)?, output)
}

/// `principals`: the principals that may act on a resource, one a line.
pub async fn principals(
    remote: &Remote,
    args: &PrincipalsArgs,
    output: Output,
) -> Result<ExitCode, String> {
    let mut body = json!({ "resource": args.resource, "action": args.action });
    if let Some(now) = remote.now(args.now.as_ref()) {
        set(&mut body, "now", now);
    }
    if let Some(a) = &args.account {
        set(&mut body, "account", Value::from(a.clone()));
    }
    let (status, answer) = remote.post("/v1/principals", &body).await?;
    list(ok(status, answer)?, output)
}

/// Prints a list answer.
fn list(answer: Value, output: Output) -> Result<ExitCode, String> {
    match output {
        Output::Json => println!("{answer}"),
        Output::Text => {
            for item in answer.as_array().into_iter().flatten() {
                println!("{}", item.as_str().unwrap_or_default());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `write`: the deltas of a file (or standard input) written as `author`; prints the
/// revision, or the refusal and its reasons (exit 1).
pub async fn write(remote: &Remote, args: &WriteArgs, output: Output) -> Result<ExitCode, Failed> {
    let name = args.deltas.display();
    let input: Box<dyn std::io::Read> = if args.deltas.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&args.deltas).map_err(|e| format!("{name}: {e}"))?)
    };
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(input, MAX_ANSWER as u64 + 1),
        &mut text,
    )
    .map_err(|e| format!("{name}: {e}"))?;
    if text.len() > MAX_ANSWER {
        return Err(Failed(
            2,
            format!("{name}: larger than {MAX_ANSWER} bytes; nothing was sent"),
        ));
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        format!("{name}: not JSON ({e}): a list of deltas, or a write {{author?, deltas}}")
    })?;
    let mut body = match value {
        Value::Array(_) => json!({ "deltas": value }),
        Value::Object(_) => value,
        _ => {
            return Err(Failed(
                2,
                format!("{name}: a list of deltas, or a write {{author?, deltas}}"),
            ));
        }
    };
    if let Some(a) = &args.author {
        set(&mut body, "author", Value::from(a.clone()));
    }
    let (status, answer) = remote.post("/v1/facts", &body).await?;
    if output == Output::Json {
        println!("{answer}");
    }
    if status == 200 {
        if output == Output::Text {
            println!(
                "written: revision {}",
                answer.get("revision").and_then(Value::as_u64).unwrap_or(0)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let refusal = answer.pointer("/refusal/decision");
    match (status, refusal) {
        (403, Some(decision)) => {
            if output == Output::Text {
                println!("REFUSED: nothing was written");
                match read_decision(decision.clone(), false) {
                    Ok(decision) => {
                        print_decision(&decision);
                    }
                    Err(e) => println!("  {e}"),
                }
            }
            Err(Failed(1, error_line(status, &answer)))
        }
        _ => Err(Failed(2, error_line(status, &answer))),
    }
}

/// `watch`: follows the change feed, a line an event, until the server ends it (an
/// `error` event is printed and exits 2) or the process is stopped.
pub async fn watch(
    remote: &Remote,
    since: Option<u64>,
    output: Output,
) -> Result<ExitCode, String> {
    let mut url = format!("{}/v1/changes", remote.base);
    if let Some(s) = since {
        url.push_str(&format!("?since={s}"));
    }
    // No timeout past connecting: the feed stays open as long as the server keeps it.
    let r = remote
        .client
        .get(url)
        .bearer_auth(&remote.key)
        .send()
        .await
        .map_err(|e| format!("{}: {}", remote.base, why(e)))?;
    let status = r.status().as_u16();
    if status != 200 {
        let body = read_bounded(r).await?;
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return Err(error_line(status, &answer));
    }
    let mut r = r;
    // Bytes, not text, until a line is whole: a chunk may end inside a character.
    let mut pending: Vec<u8> = Vec::new();
    let (mut event, mut data) = (String::new(), String::new());
    while let Some(chunk) = r.chunk().await.map_err(why)? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !data.is_empty() {
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    print_event(&event, &value, output);
                    if event == "error" {
                        return Err(error_line(0, &json!({ "error": value })));
                    }
                }
                event.clear();
                data = String::new();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if pending.len() + data.len() > MAX_ANSWER {
            return Err(format!("an event larger than {MAX_ANSWER} bytes; stopped"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The entities a change's deltas touch, in order, each once: an entity added, removed
/// or set, and a tuple's resource and subject.
fn touched_by(deltas: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    for d in deltas.and_then(Value::as_array).into_iter().flatten() {
        let names = match d.get("op").and_then(Value::as_str) {
            Some("add_entity") => {
                let e = &d["entity"];
                vec![format!("{}:{}", text(&e["type"]), text(&e["id"]))]
            }
            Some("add_tuple" | "remove_tuple") => {
                let tuple = |k: &str| text(d.pointer(k).unwrap_or(&Value::Null));
                vec![tuple("/tuple/resource"), tuple("/tuple/subject")]
            }
            _ => vec![text(&d["entity"])],
        };
        for name in names {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// One event of the feed, as `watch` prints it. In text, a change is `revision N by
/// AUTHOR: ENTITY, …`; an `error` is left to the caller, which prints it as an error.
fn print_event(event: &str, data: &Value, output: Output) {
    if output == Output::Json {
        println!("{}", json!({ "event": event, "data": data }));
        return;
    }
    let text = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("");
    let revision = data.get("revision").and_then(Value::as_u64).unwrap_or(0);
    match event {
        "error" => {}
        "change" if data.is_object() => {
            // A user's feed names the entities; an admin's or a key's carries the deltas.
            let touched: Vec<String> = match data.get("entities").and_then(Value::as_array) {
                Some(list) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                None => touched_by(data.get("deltas")),
            };
            let mut line = format!(
                "revision {revision} by {}: {}",
                text("author"),
                touched.join(", ")
            );
            if data.get("policy_hash").is_some() {
                line.push_str(" (the policy changed)");
            }
            if let Some(why) = data.get("refetch").and_then(Value::as_str) {
                line.push_str(&format!(" (fetch again: {why})"));
            }
            println!("{line}");
        }
        "reset" if data.is_object() => println!("reset at revision {revision}: {}", text("reason")),
        other => match data {
            Value::String(raw) => println!("{other}: {raw}"),
            _ => println!("{other}: {data}"),
        },
    }
}

/// `resources PRINCIPAL ACTION TYPE`.
#[derive(clap::Args)]
pub struct ResourcesArgs {
    /// The principal, `type:id`.
    pub principal: String,
    /// The action.
    pub action: String,
    /// The entity type (or a matrix, whose rows are listed).
    #[arg(value_name = "TYPE")]
    pub ty: String,
    /// The time of the request (RFC 3339); with a service key, now if not given; a user
    /// token is decided at the server's clock.
    #[arg(long)]
    pub now: Option<String>,
}

/// `principals RESOURCE ACTION`.
#[derive(clap::Args)]
pub struct PrincipalsArgs {
    /// The resource, `type:id`, or a page `matrix:row`.
    pub resource: String,
    /// The action.
    pub action: String,
    /// The time of the request (as for `resources`).
    #[arg(long)]
    pub now: Option<String>,
    /// For a page: only this account's principals.
    #[arg(long)]
    pub account: Option<String>,
}

/// `write --deltas FILE`.
#[derive(clap::Args)]
pub struct WriteArgs {
    /// A JSON file (`-`: standard input): a list of deltas, or a write `{author?, deltas}`.
    #[arg(long)]
    pub deltas: std::path::PathBuf,
    /// Who the write is by (a service key writes on an author's behalf).
    #[arg(long)]
    pub author: Option<String>,
}
