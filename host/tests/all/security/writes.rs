//! Findings 1, 2, 6 and 9 of the review, against the built `clearance` binary serving the
//! demo on loopback, with the demo's user tokens: no write makes anyone what the policy
//! did not make them, and no answer to a write or a decision depends on another
//! account's facts.

use crate::faults::{Server, start};
use crate::service::NOW;
use crate::{ADMIN, block, client_with, scratch};
use serde_json::{Value, json};

/// A demo host (`--demo`, at the demo's time) on a fresh store, with `extra` arguments.
pub(crate) fn demo_host(name: &str, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let dir = scratch(&format!("security-{name}"));
    let mut args = vec!["--demo", "--demo-time", NOW];
    args.extend_from_slice(extra);
    let server = start(&dir.join("facts.db"), &args).unwrap();
    (server, dir)
}

/// A demo token for `principal`.
pub(crate) async fn token(base: &str, principal: &str) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/demo/token"))
        .json(&json!({ "principal": principal }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["token"].as_str().unwrap().to_string()
}

/// POSTs `body` to `path` with `c`: the status, and the answer as text.
pub(crate) async fn post_text(c: &reqwest::Client, url: &str, body: &Value) -> (u16, String) {
    let r = c.post(url).json(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn revision(base: &str) -> u64 {
    crate::get_json(&client_with(ADMIN), &format!("{base}/v1/revision")).await["revision"]
        .as_u64()
        .unwrap()
}

/// Finding 1, the reproduction: a contractor's technician with no roles created a guest
/// and gave it `administrator` by a second delta of the same write (200), then acted as
/// it. Now: both writes are refused, by any author, and nothing is written.
#[test]
fn no_user_makes_a_new_principal_an_administrator() {
    let (server, dir) = demo_host("admin", &[]);
    let base = server.base.clone();
    block(async {
        let evil = |roles_in_creation: bool| {
            let mut attrs = json!({ "channel": "sms", "address": "+15550100" });
            if roles_in_creation {
                attrs["roles"] = json!(["administrator"]);
            }
            let mut deltas = vec![
                json!({ "op": "add_entity", "entity": { "type": "invitee", "id": "evil", "account": "skyways", "attrs": attrs } }),
                json!({ "op": "add_tuple", "tuple": { "resource": "invitee:evil", "relation": "registered_by", "subject": "organization:skyways_occ" } }),
            ];
            if !roles_in_creation {
                deltas.push(json!({ "op": "set_attr", "entity": "invitee:evil", "attr": "roles", "value": ["administrator"] }));
            }
            json!({ "deltas": deltas })
        };
        let before = revision(&base).await;
        for author in ["user:jetfix_tech", "user:occ_controller"] {
            let c = client_with(&token(&base, author).await);
            for in_creation in [true, false] {
                let (status, text) =
                    post_text(&c, &format!("{base}/v1/facts"), &evil(in_creation)).await;
                assert_eq!(status, 403, "{author} in_creation={in_creation}: {text}");
                let answer: Value = serde_json::from_str(&text).unwrap();
                assert!(
                    answer["error"]["code"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("write.")),
                    "{text}"
                );
            }
        }
        assert_eq!(revision(&base).await, before, "a refused write was stored");
        let (status, _) = post_text(
            &reqwest::Client::new(),
            &format!("{base}/demo/token"),
            &json!({ "principal": "invitee:evil" }),
        )
        .await;
        assert_eq!(status, 404, "the guest exists");
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every name of the other tenants' facts the review read through write errors.
const OTHER_TENANTS: &[&str] = &[
    "a_night_dispatch",
    "n_lead_crs",
    "2027-03-31",
    "squawk:blue",
    "maintenance_entry:blue",
    "tracking_item:blue",
    "user:blue",
    "invitee:blue",
    "station:ams",
    "organization:blue",
    "event:blue",
];

/// Finding 2, the reproductions: a technician of `skyways` read other accounts' entities,
/// custom-role holders, authorisation dates and whether tuples exist from the errors of
/// refused writes. Now every such write answers 403 `write.outside_account` with the
/// text it gets for an id that does not exist (the ids it sent aside), names nothing of
/// another tenant, and writes nothing.
#[test]
fn refused_writes_tell_nothing_of_another_account() {
    let (server, dir) = demo_host("leaks", &[]);
    let base = server.base.clone();
    block(async {
        let before = revision(&base).await;
        // Each probe with an id of another account, and the same probe with ids that
        // exist nowhere.
        let tuple = |op: &str, r: &str, rel: &str, s: &str| json!({ "op": op, "tuple": { "resource": r, "relation": rel, "subject": s } });
        let probes: Vec<(Vec<Value>, Vec<Value>)> = vec![
            (
                vec![json!({ "op": "remove_entity", "entity": "role:night_dispatch" })],
                vec![json!({ "op": "remove_entity", "entity": "role:nobody_has" })],
            ),
            (
                vec![
                    json!({ "op": "set_attr", "entity": "licence:n_lead_aml", "attr": "valid_until", "value": "2026-01-01T00:00:00Z" }),
                ],
                vec![
                    json!({ "op": "set_attr", "entity": "licence:no_licence", "attr": "valid_until", "value": "2026-01-01T00:00:00Z" }),
                ],
            ),
            (
                vec![json!({ "op": "remove_entity", "entity": "account:blueair" })],
                vec![json!({ "op": "remove_entity", "entity": "account:no_account" })],
            ),
            (
                vec![
                    json!({ "op": "remove_entity", "entity": "account:blueair" }),
                    json!({ "op": "remove_entity", "entity": "aircraft:ei_blu" }),
                ],
                vec![
                    json!({ "op": "remove_entity", "entity": "account:no_account" }),
                    json!({ "op": "remove_entity", "entity": "aircraft:no_aircraft" }),
                ],
            ),
            (
                vec![tuple(
                    "remove_tuple",
                    "aircraft:ei_blu",
                    "owner",
                    "user:blue_pilot",
                )],
                vec![tuple(
                    "remove_tuple",
                    "aircraft:no_aircraft",
                    "owner",
                    "user:no_pilot",
                )],
            ),
            (
                vec![tuple(
                    "remove_tuple",
                    "aircraft:ei_blu",
                    "pilot_own_records",
                    "user:blue_pilot",
                )],
                vec![tuple(
                    "remove_tuple",
                    "aircraft:no_aircraft",
                    "pilot_own_records",
                    "user:no_pilot",
                )],
            ),
            (
                vec![tuple(
                    "add_tuple",
                    "event:blue_aog_ams",
                    "assigned",
                    "organization:jetfix",
                )],
                vec![tuple(
                    "add_tuple",
                    "event:no_event",
                    "assigned",
                    "organization:jetfix",
                )],
            ),
            (
                vec![
                    json!({ "op": "add_entity", "entity": { "type": "station", "id": "probe", "account": "blueair", "attrs": { "code": "PRB" } } }),
                ],
                vec![
                    json!({ "op": "add_entity", "entity": { "type": "station", "id": "probe", "account": "no_account", "attrs": { "code": "PRB" } } }),
                ],
            ),
        ];
        let sent_ids = |deltas: &[Value]| -> Vec<String> {
            let mut ids = Vec::new();
            for d in deltas {
                for k in [
                    &d["entity"],
                    &d["tuple"]["resource"],
                    &d["tuple"]["subject"],
                ] {
                    if let Some(s) = k.as_str() {
                        ids.push(s.to_string());
                    }
                }
                if let Some(id) = d["entity"]["id"].as_str() {
                    ids.push(format!("{}:{id}", d["entity"]["type"].as_str().unwrap()));
                    ids.push(d["entity"]["account"].as_str().unwrap().to_string());
                }
            }
            ids
        };
        let masked = |text: &str, ids: &[String]| {
            let mut text = text.to_string();
            for id in ids {
                text = text.replace(id.as_str(), "<id>");
            }
            text
        };
        // A user of the account, a deactivated one and a pending one alike.
        for who in [
            "user:lhr_tech",
            "user:former_controller",
            "user:new_planner",
        ] {
            let c = client_with(&token(&base, who).await);
            for (there, nowhere) in &probes {
                let (status, text) =
                    post_text(&c, &format!("{base}/v1/facts"), &json!({ "deltas": there })).await;
                let (status_n, text_n) = post_text(
                    &c,
                    &format!("{base}/v1/facts"),
                    &json!({ "deltas": nowhere }),
                )
                .await;
                assert_eq!((status, status_n), (403, 403), "{who}: {text} / {text_n}");
                // An active user is told the write is outside its account; a gated one
                // is refused by its gate first. Either way the same for both probes.
                let answer: Value = serde_json::from_str(&text).unwrap();
                if who == "user:lhr_tech" {
                    assert_eq!(answer["error"]["code"], "write.outside_account", "{text}");
                }
                assert_eq!(
                    masked(&text, &sent_ids(there)),
                    masked(&text_n, &sent_ids(nowhere)),
                    "{who}: the answer depends on what exists in another account"
                );
                let without_sent = masked(&text, &sent_ids(there));
                for name in OTHER_TENANTS {
                    assert!(
                        !without_sent.contains(name),
                        "{who}: `{name}` of another account in {text}"
                    );
                }
            }
        }
        assert_eq!(revision(&base).await, before, "a refused write was stored");
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding 9: a user checking or explaining a resource or target of another account got
/// `account.mismatch`, and `entity.unknown` for an id in use nowhere: which ids exist in
/// another tenant. Now the two answers are the same but for the id sent.
#[test]
fn a_decision_on_another_accounts_entity_answers_as_for_one_that_does_not_exist() {
    let (server, dir) = demo_host("oracle", &[]);
    let base = server.base.clone();
    block(async {
        let c = client_with(&token(&base, "user:occ_controller").await);
        let pairs = [
            (
                json!({ "principal": "user:occ_controller", "action": "view", "resource": "event:blue_aog_ams" }),
                json!({ "principal": "user:occ_controller", "action": "view", "resource": "event:no_event" }),
                ["event:blue_aog_ams", "event:no_event"],
            ),
            (
                json!({ "principal": "user:occ_controller", "action": "assign", "resource": "event:aog_lhr", "target": "organization:blue_ams_mx" }),
                json!({ "principal": "user:occ_controller", "action": "assign", "resource": "event:aog_lhr", "target": "organization:no_org" }),
                ["organization:blue_ams_mx", "organization:no_org"],
            ),
        ];
        for route in ["check", "explain"] {
            for (there, nowhere, [a, b]) in &pairs {
                let (s1, t1) = post_text(&c, &format!("{base}/v1/{route}"), there).await;
                let (s2, t2) = post_text(&c, &format!("{base}/v1/{route}"), nowhere).await;
                assert_eq!(s1, s2, "{t1} / {t2}");
                assert_eq!(t1.replace(a, "<id>"), t2.replace(b, "<id>"), "{route}");
                assert!(!t1.contains("account.mismatch"), "{t1}");
            }
        }
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finding 6: a contractor's technician with no role registered 24,000 guests in three
/// writes, with ids of any length and character. Now a guest is registered only by an
/// internal user, new ids are plain and bounded, and the entities an author creates an
/// hour are bounded (`--author-creations-per-hour`).
#[test]
fn guests_are_registered_by_who_may_invite_with_plain_ids_and_a_quota() {
    let (server, dir) = demo_host("quota", &["--author-creations-per-hour", "5"]);
    let base = server.base.clone();
    block(async {
        let guest = |id: &str| {
            vec![
                json!({ "op": "add_entity", "entity": { "type": "invitee", "id": id, "account": "skyways", "attrs": { "channel": "sms", "address": "1" } } }),
                json!({ "op": "add_tuple", "tuple": { "resource": format!("invitee:{id}"), "relation": "registered_by", "subject": "organization:skyways_occ" } }),
            ]
        };
        let url = format!("{base}/v1/facts");
        let tech = client_with(&token(&base, "user:jetfix_tech").await);
        let (status, text) = post_text(&tech, &url, &json!({ "deltas": guest("spam0") })).await;
        assert_eq!(
            status, 403,
            "a contractor's technician registered a guest: {text}"
        );
        let occ = client_with(&token(&base, "user:occ_controller").await);
        let long = "x".repeat(900);
        for id in [
            "a\nb",
            "x#guest@user:ops_manager",
            "g_sms\u{200b}",
            long.as_str(),
        ] {
            let (status, text) = post_text(&occ, &url, &json!({ "deltas": guest(id) })).await;
            assert_eq!(status, 400, "{id:?}: {text}");
            assert!(text.contains("facts.invalid_id"), "{text}");
        }
        // The four refused creations were given back: a refused write does not use up a
        // quota (or users with no role could use up their account's). Six creations in
        // one write are past a quota of five an hour; five pass, then one more does not.
        let six: Vec<Value> = (0..6).flat_map(|i| guest(&format!("q{i}"))).collect();
        let (status, text) = post_text(&occ, &url, &json!({ "deltas": six })).await;
        assert_eq!(status, 429, "{text}");
        assert!(text.contains("write.quota"), "{text}");
        let five: Vec<Value> = (0..5).flat_map(|i| guest(&format!("q{i}"))).collect();
        let (status, text) = post_text(&occ, &url, &json!({ "deltas": five })).await;
        assert_eq!(status, 200, "{text}");
        let (status, text) = post_text(&occ, &url, &json!({ "deltas": guest("q5") })).await;
        assert_eq!(status, 429, "{text}");
        // Another author of the account still has its own quota.
        let other = client_with(&token(&base, "user:planner").await);
        let (status, text) = post_text(&other, &url, &json!({ "deltas": guest("p0") })).await;
        assert_eq!(status, 200, "{text}");
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The second attack's first finding: a write whose client hangs up while it waits for
/// the writer is still stored (the writer, not the request, carries it through), and
/// what it took of the creation quotas must stay taken. Each round keeps the writer busy
/// with three large writes of the same author, queues a write creating four guests behind
/// them and resets its connection at once. However the rounds fall (a reset may also come
/// before the write is queued, and then nothing is stored), the guests stored and the
/// creations still allowed after them add up to the quota, never more.
#[test]
fn a_write_whose_client_hangs_up_keeps_what_it_took_of_the_quota() {
    const QUOTA: usize = 8;
    let (server, dir) = demo_host(
        "hang-up",
        &["--author-creations-per-hour", "8", "--work-limit", "0"],
    );
    let base = server.base.clone();
    let addr = base.trim_start_matches("http://").to_string();
    block(async {
        let token = token(&base, "user:occ_controller").await;
        let occ = client_with(&token);
        let url = format!("{base}/v1/facts");
        let guests = |ids: &[String]| -> Vec<Value> {
            ids.iter()
                .flat_map(|id| {
                    [
                        json!({ "op": "add_entity", "entity": { "type": "invitee", "id": id, "account": "skyways", "attrs": { "channel": "sms", "address": "1" } } }),
                        json!({ "op": "add_tuple", "tuple": { "resource": format!("invitee:{id}"), "relation": "registered_by", "subject": "organization:skyways_occ" } }),
                    ]
                })
                .collect()
        };
        let titles: Vec<Value> = (0..8_000)
            .map(|i| json!({ "op": "set_attr", "entity": "event:aog_lhr", "attr": "title", "value": format!("t{i}") }))
            .collect();
        let large = json!({ "deltas": titles });
        for round in 0..6 {
            let fillers: Vec<_> = (0..3)
                .map(|_| {
                    let (occ, url, large) = (occ.clone(), url.clone(), large.clone());
                    tokio::spawn(async move { post_text(&occ, &url, &large).await })
                })
                .collect();
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
            let ids: Vec<String> = (0..4).map(|i| format!("hu{round}_{i}")).collect();
            let body = json!({ "deltas": guests(&ids) }).to_string();
            {
                use tokio::io::AsyncWriteExt;
                let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                let head = format!(
                    "POST /v1/facts HTTP/1.1\r\nHost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                s.write_all(head.as_bytes()).await.unwrap();
                s.write_all(body.as_bytes()).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                // A reset, not a graceful close.
                s.set_zero_linger().unwrap();
                drop(s);
            }
            for f in fillers {
                let (status, text) = f.await.unwrap();
                assert_eq!(status, 200, "{text}");
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let facts = crate::get_json(
            &client_with(ADMIN),
            &format!("{base}/v1/facts?account=skyways"),
        )
        .await;
        let stored = facts["entities"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "invitee" && e["id"].as_str().unwrap_or("").starts_with("hu"))
            .count();
        assert!(
            stored <= QUOTA,
            "{stored} guests stored on a quota of {QUOTA}"
        );
        // What is left of the quota, one creation at a time.
        let mut left = 0;
        loop {
            let (status, text) = post_text(
                &occ,
                &url,
                &json!({ "deltas": guests(&[format!("left{left}")]) }),
            )
            .await;
            if status == 429 {
                assert!(text.contains("write.quota"), "{text}");
                break;
            }
            assert_eq!(status, 200, "{text}");
            left += 1;
            assert!(
                left <= QUOTA,
                "more than the quota was allowed after the rounds"
            );
        }
        assert_eq!(
            stored + left,
            QUOTA,
            "{stored} guests were stored by writes whose client hung up, and {left} creations were still allowed after them: the quota of {QUOTA} was given back for stored writes"
        );
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
