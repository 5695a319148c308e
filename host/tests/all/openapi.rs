//! The OpenAPI document against the route table and a running server: the document is
//! snapshotted (a change to the API's description is a reviewed diff of
//! `snapshots/all__openapi__document.snap`), is structurally OpenAPI 3.1 with every
//! reference resolving, and says what the server does: every route of the table answers
//! and nothing else is routed, every status the document lists is one a probe of the
//! running server gets, and every answer, success or error, validates against the schema
//! the document gives for it. A field renamed in a Rust type changes the schema with it;
//! one renamed in JSON built by hand fails here.

use super::service::{NOW, serve_config, temp_db};
use super::{ADMIN, add_key, block, client_with, create_event, root};
use clearance_host::api::ROUTES;
use clearance_host::auth::{DemoIssuer, Scope, TokenVerifier};
use clearance_host::clock::now_seconds;
use clearance_host::openapi::document;
use clearance_host::policy_dir::read_policies;
use clearance_host::routes::{Answer, Callers, Deployment, Input, Method};
use clearance_host::service::ServiceConfig;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;

const READ_SKYWAYS: &str = "clr_4e4e4e4e4e4e4e4e_read-key-of-skyways-for-the-tests-only-xx";

#[test]
fn openapi_document() {
    insta::assert_json_snapshot!("document", document(ROUTES, Deployment::default()));
}

/// Every `$ref` of `value`, with where it is.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(o) => {
            for (k, v) in o {
                if k == "$ref" {
                    out.push((at.to_string(), v.as_str().unwrap_or_default().to_string()));
                }
                refs(v, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A validator for `schema`, one of the document's (its references resolve in `doc`).
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("not a JSON Schema 2020-12: {e}\n{schema}"))
}

/// The statuses the document's `ErrorCode` lists for `code` (a gate's by its pattern).
fn code_statuses(doc: &Value, code: &str) -> Vec<u16> {
    let entries = doc["components"]["schemas"]["ErrorCode"]["oneOf"]
        .as_array()
        .expect("the document lists the error codes");
    let entry = entries.iter().find(|e| e["const"] == code).or_else(|| {
        code.starts_with("gate.")
            .then(|| entries.iter().find(|e| e["pattern"].is_string()))
            .flatten()
    });
    let Some(description) = entry.and_then(|e| e["description"].as_str()) else {
        return Vec::new();
    };
    let statuses = description.split(':').next().unwrap_or_default();
    statuses
        .split(", ")
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn path_of(route_path: &str) -> String {
    route_path
        .replace("{matrix}", "operations")
        .replace("{principal}", "user:occ_controller")
}

#[test]
fn the_document_is_openapi_3_1_and_says_what_the_table_says() {
    for deployment in [
        Deployment::default(),
        Deployment {
            rate_limited: true,
            demo: true,
        },
    ] {
        let doc = document(ROUTES, deployment);
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        // Every reference resolves, and every shared schema is a JSON Schema.
        let mut found = Vec::new();
        refs(&doc, "", &mut found);
        assert!(!found.is_empty());
        for (at, target) in &found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: `{target}` is not local"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{at}: `{target}` resolves to nothing"
            );
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (name, schema) in schemas {
            assert!(
                jsonschema::meta::is_valid(schema),
                "components/schemas/{name} is not a JSON Schema: {schema}"
            );
            validator(&doc, schema);
        }
        // Exactly the routes served, each once.
        let mut listed = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for (method, op) in methods.as_object().unwrap() {
                listed.insert((method.clone(), path.clone()));
                assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()));
            }
        }
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .filter(|r| r.is_served(deployment))
            .map(|r| (r.method.as_str().to_string(), r.path.to_string()))
            .collect();
        assert_eq!(listed, served);
        assert_eq!(
            served.iter().any(|(_, p)| p == "/demo/token"),
            deployment.demo
        );
        for route in ROUTES.iter().filter(|r| r.is_served(deployment)) {
            let name = format!("{} {}", route.method.as_str(), route.path);
            let op = &doc["paths"][route.path][route.method.as_str()];
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}"
            );
            assert!(
                op["description"].as_str().unwrap().contains(route.who),
                "{name}: who may call it"
            );
            // Security as the table's access, and the access as the words say.
            let open = route.callers == Callers::Anyone;
            assert_eq!(
                op["security"],
                if open {
                    json!([])
                } else {
                    json!([{ "bearer": [] }])
                },
                "{name}"
            );
            assert_eq!(
                route.who.starts_with("anyone, without credentials"),
                open,
                "{name}: its words and its access differ"
            );
            // Each path parameter is declared.
            for param in route.path.split('/').filter(|p| p.starts_with('{')) {
                let param = param.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    op["parameters"].as_array().is_some_and(|ps| ps
                        .iter()
                        .any(|p| p["name"] == param && p["in"] == "path")),
                    "{name}: {param}"
                );
            }
            assert_eq!(
                op.get("requestBody").is_some(),
                matches!(route.input, Input::Body(_)),
                "{name}"
            );
            // The statuses are 200 and the errors of the route: 401 exactly when it needs
            // a credential, 429 when a rate limit is set too, 413 and 415 only with a body.
            let statuses: BTreeSet<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            let mut expected: BTreeSet<u16> =
                route.errors(deployment).iter().map(|f| f.status).collect();
            expected.insert(200);
            assert_eq!(statuses, expected, "{name}");
            assert_eq!(statuses.contains(&401), !open, "{name}");
            // 429 past a rate limit on every authenticated route, and past the feeds
            // one caller may hold on the change feed.
            assert_eq!(
                statuses.contains(&429),
                !open && (deployment.rate_limited || route.path == "/v1/changes"),
                "{name}"
            );
            let body = matches!(route.input, Input::Body(_));
            assert_eq!(statuses.contains(&415), body, "{name}");
            assert!(body || !statuses.contains(&413), "{name}");
            for (status, response) in op["responses"].as_object().unwrap() {
                assert!(response["description"].is_string(), "{name} {status}");
                let content = response["content"].as_object().unwrap();
                match (status.as_str(), route.answer) {
                    ("200", Answer::Events(events)) => {
                        let data = &content["text/event-stream"]["x-event-data"];
                        for (event, _) in events {
                            assert!(data[event].is_object(), "{name}: event {event}");
                        }
                    }
                    ("200", Answer::Text(media)) => {
                        assert_eq!(content[media]["schema"]["type"], "string", "{name}");
                    }
                    _ => assert!(
                        content["application/json"]["schema"].is_object(),
                        "{name} {status}"
                    ),
                }
            }
        }
    }
}

/// Who sends a probe.
#[derive(Clone, Copy)]
enum Who {
    Nobody,
    Admin,
    Reader,
    User,
}

/// A server with everything the document can describe: the demo issuer (and its user
/// tokens, at the demo's clock), small limits to reach, and a read key for `skyways`.
struct Fixture {
    base: String,
    clients: [reqwest::Client; 4],
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Fixture {
    async fn start(name: &str, rate_limit: Option<u32>) -> Fixture {
        let issuer = Arc::new(DemoIssuer::new().unwrap());
        let tokens = TokenVerifier::new(&issuer.jwks, issuer.rules.clone()).unwrap();
        let clock_offset = clearance_core::time::parse(NOW).unwrap() - now_seconds();
        let config = ServiceConfig {
            tokens: Some(Arc::new(tokens)),
            demo: Some(Arc::clone(&issuer)),
            clock_offset,
            body_limit: 64 << 10,
            max_batch: 3,
            max_deltas: 5,
            max_subscribers: 1,
            max_feeds_per_caller: 1,
            rate_limit: rate_limit.and_then(std::num::NonZeroU32::new),
            ..ServiceConfig::default()
        };
        let db = temp_db(name);
        let (base, service) = serve_config(&db, config).await;
        add_key(&db, READ_SKYWAYS, Scope::Read, &["skyways"]);
        service.refresh_keys().await.unwrap();
        let token = issuer
            .token("user:occ_controller", now_seconds(), 3600)
            .unwrap();
        let clients = [
            reqwest::Client::new(),
            client_with(ADMIN),
            client_with(READ_SKYWAYS),
            client_with(&token),
        ];
        let doc = clients[0]
            .get(format!("{base}/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Fixture {
            base,
            clients,
            doc,
            seen: BTreeSet::new(),
        }
    }

    fn client(&self, who: Who) -> &reqwest::Client {
        &self.clients[who as usize]
    }

    /// Sends a probe of the route `method path`, at `url` (the path with its parameters
    /// and query), expects `status`, and validates the answer against the schema the
    /// document gives for that status of that route.
    async fn probe(
        &mut self,
        who: Who,
        route: (Method, &str),
        url: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let c = self.client(who);
        let u = format!("{}{url}", self.base);
        let r = match (route.0, body) {
            (Method::Get, _) => c.get(&u).send().await.unwrap(),
            (Method::Post, Some(b)) => c.post(&u).json(&b).send().await.unwrap(),
            (Method::Post, None) => c.post(&u).json(&json!({})).send().await.unwrap(),
        };
        self.answer(route, r, status).await
    }

    /// Checks an answer to the route `route`: its status, and its body against the
    /// document's schema for that status.
    async fn answer(&mut self, route: (Method, &str), r: reqwest::Response, status: u16) -> Value {
        let name = format!("{} {}", route.0.as_str(), route.1);
        let got = r.status().as_u16();
        // Change feeds and text (the metrics) have no JSON schema to validate against.
        let events = r.headers().get("content-type").is_some_and(|t| {
            let t = t.to_str().unwrap();
            t.starts_with("text/event-stream") || t.starts_with("application/openmetrics-text")
        });
        let body: Value = if events {
            Value::Null
        } else {
            r.json().await.unwrap_or(Value::Null)
        };
        assert_eq!(got, status, "{name}: {body}");
        let response =
            &self.doc["paths"][route.1][route.0.as_str()]["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{name} answered {status}, which its document does not list"
        );
        if !events {
            let schema = &response["content"]["application/json"]["schema"];
            let v = validator(&self.doc, schema);
            let errors: Vec<String> = v
                .iter_errors(&body)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{name} {status}: the answer does not validate against its schema: {errors:?}\n{}",
                body.to_string().chars().take(2000).collect::<String>()
            );
        }
        // An error's status is one its code is listed with, in the table of codes.
        if let Some(code) = body["error"]["code"].as_str() {
            let listed = code_statuses(&self.doc, code);
            assert!(
                listed.contains(&status),
                "{name}: `{code}` answered {status}; the document lists it with {listed:?}"
            );
        }
        self.seen
            .insert((route.0.as_str().to_string(), route.1.to_string(), status));
        body
    }

    /// Validates an event's data against the document's schema for that event.
    fn event(&self, name: &str, data: &Value) {
        let schema = &self.doc["paths"]["/v1/changes"]["get"]["responses"]["200"]["content"]["text/event-stream"]
            ["x-event-data"][name];
        assert!(schema.is_object(), "event `{name}` is not in the document");
        let v = validator(&self.doc, schema);
        let errors: Vec<String> = v.iter_errors(data).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "event `{name}`: {errors:?}\n{data}");
    }
}

/// The first `count` events of a stream, as (name, data).
async fn events(r: reqwest::Response, count: usize) -> Vec<(String, Value)> {
    use futures_util::StreamExt;
    let mut stream = r.bytes_stream();
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while out.len() < count {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events within 10 s")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if !data.is_empty() {
                out.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

fn request(principal: &str) -> Value {
    json!({ "principal": principal, "action": "view", "resource": "event:aog_lhr", "now": NOW })
}

/// Every route of the table answers on a live server, and the router serves nothing the
/// table lacks: every other method of a table path is 405 (HEAD follows GET, as HTTP
/// has it), and other paths are 404.
#[test]
fn every_route_of_the_table_answers_and_nothing_else_is_routed() {
    block(async {
        let f = Fixture::start("openapi-routes", None).await;
        let deployment = Deployment {
            rate_limited: false,
            demo: true,
        };
        let admin = f.client(Who::Admin);
        let paths: BTreeSet<&str> = ROUTES.iter().map(|r| r.path).collect();
        for path in paths {
            let url = format!("{}{}", f.base, path_of(path));
            for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
                let in_table = ROUTES.iter().any(|r| {
                    r.path == path
                        && r.is_served(deployment)
                        && (r.method.as_str().eq_ignore_ascii_case(method)
                            || (method == "HEAD" && r.method == Method::Get))
                });
                let mut rb = admin.request(method.parse().unwrap(), &url);
                if method == "POST" {
                    rb = rb.json(&json!({}));
                }
                let r = rb.send().await.unwrap();
                let status = r.status().as_u16();
                if in_table {
                    assert!(
                        status != 404 && status != 405,
                        "{method} {path} is in the table and answered {status}"
                    );
                } else {
                    assert_eq!(status, 405, "{method} {path} is not in the table");
                    if method != "HEAD" {
                        let body: Value = r.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "route.method");
                    }
                }
            }
        }
        for path in ["/v1/no/such/route", "/v1", "/v1/check/", "/v1/slice"] {
            let r = admin.get(format!("{}{path}", f.base)).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 404, "{path}");
        }
        // An open route needs no credential; every other one does.
        for route in ROUTES.iter().filter(|r| r.is_served(deployment)) {
            let url = format!("{}{}", f.base, path_of(route.path));
            let anonymous = f.client(Who::Nobody);
            let r = match route.method {
                Method::Get => anonymous.get(&url).send().await.unwrap(),
                Method::Post => anonymous
                    .post(&url)
                    .json(&json!({ "principal": "user:occ_controller" }))
                    .send()
                    .await
                    .unwrap(),
            };
            let status = r.status().as_u16();
            match route.callers {
                Callers::Anyone => {
                    assert_eq!(status, 200, "{} {}", route.method.as_str(), route.path)
                }
                Callers::Authenticated | Callers::Admin => {
                    assert_eq!(status, 401, "{} {}", route.method.as_str(), route.path)
                }
            }
        }
    });
}

/// Every status the document lists for a route is one a probe of the running server
/// gets (but 500, 408, and a 503 that only a busy host or a failing store gives), and every
/// answer validates against the document's schema for it.
#[test]
fn real_answers_validate_against_the_document_and_every_listed_status_is_reached() {
    use Method::{Get, Post};
    use Who::{Admin, Nobody, Reader, User};
    block(async {
        let mut f = Fixture::start("openapi-answers", None).await;
        let policies = read_policies(&root().join("policies")).unwrap();
        let sources: Vec<Value> = policies
            .iter()
            .map(|s| json!({ "name": s.name, "text": s.text }))
            .collect();
        let bad_policy = json!({ "sources": [{ "name": "bad.policy", "text": "type {" }] });

        // Each route's answer, and its own errors.
        f.probe(Admin, (Get, "/v1/revision"), "/v1/revision", None, 200)
            .await;
        f.probe(Nobody, (Get, "/healthz"), "/healthz", None, 200)
            .await;
        f.probe(Nobody, (Get, "/readyz"), "/readyz", None, 200)
            .await;
        let metrics = (Get, "/metrics");
        f.probe(Admin, metrics, "/metrics", None, 200).await;
        f.probe(Reader, metrics, "/metrics", None, 403).await;
        f.probe(User, metrics, "/metrics", None, 403).await;

        let check = (Post, "/v1/check");
        f.probe(
            Admin,
            check,
            "/v1/check",
            Some(request("user:occ_controller")),
            200,
        )
        .await;
        f.probe(
            User,
            check,
            "/v1/check",
            Some(request("user:occ_controller")),
            400,
        )
        .await;
        f.probe(
            Reader,
            check,
            "/v1/check",
            Some(request("user:blue_controller")),
            403,
        )
        .await;
        let explain = (Post, "/v1/explain");
        f.probe(
            Admin,
            explain,
            "/v1/explain",
            Some(request("user:blue_controller")),
            200,
        )
        .await;
        f.probe(
            User,
            explain,
            "/v1/explain",
            Some(request("user:occ_controller")),
            400,
        )
        .await;
        f.probe(
            Reader,
            explain,
            "/v1/explain",
            Some(request("user:blue_controller")),
            403,
        )
        .await;

        let batch = (Post, "/v1/check/batch");
        let two = json!({ "requests": [request("user:occ_controller"), request("user:blue_controller")] });
        f.probe(Admin, batch, "/v1/check/batch", Some(two), 200)
            .await;
        let four = json!({ "requests": vec![request("user:occ_controller"); 4] });
        f.probe(Admin, batch, "/v1/check/batch", Some(four), 413)
            .await;
        f.probe(
            Admin,
            batch,
            "/v1/check/batch",
            Some(json!({ "requests": [], "min_revision": "one" })),
            400,
        )
        .await;
        f.probe(
            Reader,
            batch,
            "/v1/check/batch",
            Some(json!({ "requests": [request("user:blue_controller")] })),
            403,
        )
        .await;

        let actions = (Post, "/v1/allowed-actions");
        let on = |p: &str| json!({ "principal": p, "resource": "event:aog_lhr", "now": NOW });
        f.probe(
            Admin,
            actions,
            "/v1/allowed-actions",
            Some(on("user:occ_controller")),
            200,
        )
        .await;
        f.probe(
            User,
            actions,
            "/v1/allowed-actions",
            Some(on("user:occ_controller")),
            400,
        )
        .await;
        f.probe(
            Reader,
            actions,
            "/v1/allowed-actions",
            Some(on("user:blue_controller")),
            403,
        )
        .await;

        let resources = (Post, "/v1/resources");
        let of =
            |p: &str, t: &str| json!({ "principal": p, "action": "view", "type": t, "now": NOW });
        f.probe(
            Admin,
            resources,
            "/v1/resources",
            Some(of("user:occ_controller", "event")),
            200,
        )
        .await;
        f.probe(
            Admin,
            resources,
            "/v1/resources",
            Some(of("user:occ_controller", "no_such_type")),
            400,
        )
        .await;
        f.probe(
            Reader,
            resources,
            "/v1/resources",
            Some(of("user:blue_controller", "event")),
            403,
        )
        .await;

        let principals = (Post, "/v1/principals");
        let who = json!({ "resource": "event:aog_lhr", "action": "view", "now": NOW });
        f.probe(Admin, principals, "/v1/principals", Some(who.clone()), 200)
            .await;
        f.probe(
            Admin,
            principals,
            "/v1/principals",
            Some(json!({ "resource": "event:aog_lhr", "action": "no_such_action", "now": NOW })),
            400,
        )
        .await;
        f.probe(User, principals, "/v1/principals", Some(who), 403)
            .await;

        let matrix = (Get, "/v1/matrix/{matrix}");
        f.probe(
            Admin,
            matrix,
            "/v1/matrix/operations?account=skyways",
            None,
            200,
        )
        .await;
        f.probe(Admin, matrix, "/v1/matrix/no_such_matrix", None, 400)
            .await;
        f.probe(
            Admin,
            matrix,
            "/v1/matrix/operations?account=a&account=b",
            None,
            400,
        )
        .await;
        f.probe(
            User,
            matrix,
            "/v1/matrix/operations?account=blueair",
            None,
            403,
        )
        .await;

        let facts = (Get, "/v1/facts");
        f.probe(Admin, facts, "/v1/facts", None, 200).await;
        f.probe(Admin, facts, "/v1/facts?account=skyways", None, 200)
            .await;
        f.probe(Admin, facts, "/v1/facts?account=a&account=b", None, 400)
            .await;
        f.probe(User, facts, "/v1/facts", None, 403).await;

        // A change to follow: the feed is opened before the write, from the revision
        // before it, and holds the host's one follower place and the admin's one feed (a
        // second feed of the admin is told 429, a user 503).
        let revision = f
            .probe(Admin, (Get, "/v1/revision"), "/v1/revision", None, 200)
            .await["revision"]
            .as_u64()
            .unwrap();
        let changes = (Get, "/v1/changes");
        let feed = f
            .client(Admin)
            .get(format!("{}/v1/changes?since={revision}", f.base))
            .send()
            .await
            .unwrap();
        let feed_status = feed.status().as_u16();
        assert_eq!(feed_status, 200);
        f.seen.insert(("get".into(), "/v1/changes".into(), 200));
        f.probe(Admin, changes, "/v1/changes", None, 429).await;
        f.probe(User, changes, "/v1/changes", None, 503).await;

        let write = (Post, "/v1/facts");
        let by_admin = |deltas: Value| json!({ "author": "user:occ_controller", "deltas": deltas });
        f.probe(
            Admin,
            write,
            "/v1/facts",
            Some(by_admin(create_event("openapi_probe"))),
            200,
        )
        .await;
        let first = events(feed, 1).await;
        assert_eq!(first[0].0, "change");
        f.event("change", &first[0].1);
        f.probe(Admin, write, "/v1/facts", Some(by_admin(json!([]))), 400)
            .await;
        let refused = json!({ "author": "user:occ_controller", "deltas": [{ "op": "add_tuple", "tuple": { "resource": "event:aog_lhr", "relation": "assigned", "subject": "organization:jetfix" } }] });
        let refusal = f.probe(Admin, write, "/v1/facts", Some(refused), 403).await;
        assert!(refusal["refusal"].is_object(), "{refusal}");
        let stale = json!({ "author": "user:occ_controller", "deltas": create_event("openapi_stale"), "parity": { "module_hash": "0", "policy_hash": "0", "revision": 0 } });
        f.probe(Admin, write, "/v1/facts", Some(stale), 409).await;
        let many = json!({ "author": "user:occ_controller", "deltas": vec![json!({ "op": "remove_entity", "entity": "event:openapi_probe" }); 6] });
        f.probe(Admin, write, "/v1/facts", Some(many), 413).await;

        // The feed's own errors, each found before the count of followers.
        f.probe(Admin, changes, "/v1/changes?since=minus", None, 400)
            .await;
        f.probe(Reader, changes, "/v1/changes", None, 403).await;
        f.probe(Admin, changes, "/v1/changes?since=999999999", None, 409)
            .await;

        let slice = (Get, "/v1/slice/{principal}");
        let signed = f
            .probe(Admin, slice, "/v1/slice/user:occ_controller", None, 200)
            .await;
        // The slice text is JSON of the schema the document gives for it.
        let text: Value = serde_json::from_str(signed["slice"].as_str().unwrap()).unwrap();
        let slice_schema = &f.doc["components"]["schemas"]["Slice"];
        let errors: Vec<String> = validator(&f.doc, slice_schema)
            .iter_errors(&text)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "the slice: {errors:?}");
        f.probe(Admin, slice, "/v1/slice/%FF", None, 400).await;
        f.probe(Reader, slice, "/v1/slice/user:occ_controller", None, 403)
            .await;
        f.probe(Admin, slice, "/v1/slice/user:nobody", None, 404)
            .await;

        f.probe(Nobody, (Get, "/v1/slice-keys"), "/v1/slice-keys", None, 200)
            .await;
        f.probe(
            Nobody,
            (Get, "/v1/openapi.json"),
            "/v1/openapi.json",
            None,
            200,
        )
        .await;

        let validate = (Post, "/v1/policy/validate");
        f.probe(
            Admin,
            validate,
            "/v1/policy/validate",
            Some(json!({ "sources": sources })),
            200,
        )
        .await;
        let errors = f
            .probe(
                Admin,
                validate,
                "/v1/policy/validate",
                Some(bad_policy.clone()),
                400,
            )
            .await;
        assert!(errors["errors"].is_array(), "{errors}");
        f.probe(
            Reader,
            validate,
            "/v1/policy/validate",
            Some(json!({ "sources": sources })),
            403,
        )
        .await;
        let reload = (Post, "/v1/policy/reload");
        f.probe(Admin, reload, "/v1/policy/reload", Some(json!({})), 200)
            .await;
        f.probe(Admin, reload, "/v1/policy/reload", Some(bad_policy), 400)
            .await;
        f.probe(User, reload, "/v1/policy/reload", Some(json!({})), 403)
            .await;

        let token = (Post, "/demo/token");
        f.probe(
            Nobody,
            token,
            "/demo/token",
            Some(json!({ "principal": "user:occ_controller" })),
            200,
        )
        .await;
        f.probe(
            Nobody,
            token,
            "/demo/token",
            Some(json!({ "principal": "account:skyways" })),
            404,
        )
        .await;

        // What every route of a kind answers: 401 without a credential; for a body, 400
        // when it is not JSON, 415 when it is not sent as JSON, 413 past the limit; the
        // deciding routes 503 when `min_revision` does not come.
        let deployment = Deployment {
            rate_limited: false,
            demo: true,
        };
        for route in ROUTES.iter().filter(|r| r.is_served(deployment)) {
            let key = (route.method, route.path);
            let url = path_of(route.path);
            if route.callers != Callers::Anyone {
                f.probe(Nobody, key, &url, None, 401).await;
            }
            if let Input::Body(_) = route.input {
                let who = if route.callers == Callers::Anyone {
                    Nobody
                } else {
                    Admin
                };
                let u = format!("{}{url}", f.base);
                let c = f.client(who).clone();
                let not_json = c
                    .post(&u)
                    .header("content-type", "application/json")
                    .body("{")
                    .send()
                    .await
                    .unwrap();
                f.answer(key, not_json, 400).await;
                let untyped = c.post(&u).body("{}").send().await.unwrap();
                f.answer(key, untyped, 415).await;
                let large = c
                    .post(&u)
                    .json(&json!({ "pad": "x".repeat(70 << 10) }))
                    .send()
                    .await
                    .unwrap();
                f.answer(key, large, 413).await;
            }
        }
        let waits: Vec<_> = [
            ("/v1/check", request("user:occ_controller")),
            ("/v1/explain", request("user:occ_controller")),
            ("/v1/check/batch", json!({ "requests": [] })),
            ("/v1/allowed-actions", on("user:occ_controller")),
            ("/v1/resources", of("user:occ_controller", "event")),
            (
                "/v1/principals",
                json!({ "resource": "event:aog_lhr", "action": "view", "now": NOW }),
            ),
        ]
        .into_iter()
        .map(|(path, mut body)| {
            body["min_revision"] = json!(999_999_999);
            let c = f.client(Admin).clone();
            let u = format!("{}{path}", f.base);
            async move { (path, c.post(u).json(&body).send().await.unwrap()) }
        })
        .collect();
        for (path, r) in futures_util::future::join_all(waits).await {
            f.answer((Post, path), r, 503).await;
        }

        // Past the rate limit, on a server that sets one.
        let mut limited = Fixture::start("openapi-limited", Some(1)).await;
        assert!(limited.doc["paths"]["/v1/revision"]["get"]["responses"]["429"].is_object());
        for route in ROUTES
            .iter()
            .filter(|r| r.is_served(deployment) && r.callers != Callers::Anyone)
        {
            let key = (route.method, route.path);
            let url = path_of(route.path);
            let _ = limited
                .client(Admin)
                .get(format!("{}/v1/revision", limited.base))
                .send()
                .await
                .unwrap();
            limited.probe(Admin, key, &url, Some(json!({})), 429).await;
        }

        // Every listed status was reached, but 500 (a failing host: the fault tests), 408
        // (a body slower than its deadline: the security tests) and a 503 that only a busy
        // host or a failing store gives.
        let reached: BTreeSet<_> = f.seen.union(&limited.seen).cloned().collect();
        let busy_only = [
            "/v1/matrix/{matrix}",
            "/v1/facts",
            "/v1/slice/{principal}",
            "/v1/policy/reload",
            // Not ready: the store not answering (the multihost tests) or a host behind.
            "/readyz",
        ];
        let mut missing = Vec::new();
        for doc in [&f.doc, &limited.doc] {
            for (path, methods) in doc["paths"].as_object().unwrap() {
                for (method, op) in methods.as_object().unwrap() {
                    for status in op["responses"].as_object().unwrap().keys() {
                        let status: u16 = status.parse().unwrap();
                        let exempt = status == 500
                            || status == 408
                            || (status == 503 && busy_only.contains(&path.as_str()));
                        if !exempt && !reached.contains(&(method.clone(), path.clone(), status)) {
                            missing.push(format!("{method} {path} {status}"));
                        }
                    }
                }
            }
        }
        assert!(missing.is_empty(), "listed but never reached: {missing:?}");
    });
}

/// The answers' schemas are closed: an answer with a field its type does not have, or
/// without one it always has, does not validate. This is what fails when a field is
/// renamed in JSON built by hand (slices, keys, events, errors) but not in its type.
#[test]
fn a_renamed_field_does_not_validate() {
    let doc = document(ROUTES, Deployment::default());
    let schema = &doc["paths"]["/v1/revision"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    let v = validator(&doc, schema);
    let good = json!({ "revision": 1, "policy_hash": "ab", "module_hash": "cd" });
    assert!(v.is_valid(&good));
    let renamed = json!({ "rev": 1, "policy_hash": "ab", "module_hash": "cd" });
    assert!(!v.is_valid(&renamed));
    let error = &doc["paths"]["/v1/check"]["post"]["responses"]["403"]["content"]["application/json"]
        ["schema"];
    let v = validator(&doc, error);
    assert!(v.is_valid(&json!({ "error": { "code": "auth.forbidden", "message": "m", "help": "h" }, "allowed": false })));
    assert!(!v.is_valid(&json!({ "error": { "code": "auth.forbidden", "message": "m", "hint": "h" }, "allowed": false })));
    assert!(!v.is_valid(&json!({ "error": { "code": "auth.forbidden", "message": "m", "help": "h" }, "allowed": true })));
}

/// A type read and written alike has one schema; one read otherwise than written (here a
/// field with a default, optional in a body and always in an answer) keeps its answer
/// schema under its name and its body schema as `<name>Input`, and the body points there.
#[test]
fn a_type_read_otherwise_than_written_has_two_schemas() {
    use clearance_host::routes::{Availability, Route, named};

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Counted {
        #[serde(default)]
        count: u32,
    }
    let routes: [Route<()>; 1] = [Route {
        method: Method::Post,
        path: "/counted",
        summary: "a route of a table made for this test",
        who: "anyone, without credentials",
        callers: Callers::Anyone,
        input: Input::Body(named::<Counted>),
        answer: Answer::Json(named::<Counted>),
        failures: &[],
        availability: Availability::Always,
        handler: |m| axum::routing::on(m, || async { "{}" }),
    }];
    let doc = document(&routes, Deployment::default());
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Counted"]["required"], json!(["count"]));
    assert!(schemas["CountedInput"]["required"].is_null(), "{schemas}");
    let op = &doc["paths"]["/counted"]["post"];
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CountedInput"
    );
    assert_eq!(
        op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Counted"
    );
}
