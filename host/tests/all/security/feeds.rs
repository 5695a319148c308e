//! Finding 3 of the review: an import touching two accounts reached every touched
//! account's followers whole, live and on replay from `since=0`.

use super::writes::{demo_host, token};
use crate::{ADMIN, add_key, block, client_with};
use clearance_host::auth::Scope;
use serde_json::json;
use std::time::{Duration, Instant};

const SERVICE_SKYWAYS: &str = "clr_00000000000005c1_test-service-skyways-feed-secret-0001";
const SERVICE_SKYWAYS_LATER: &str = "clr_00000000000005c2_test-service-skyways-later-secret-002";

/// What another account's part of the import holds: none of it may reach a follower of
/// `skyways`.
const BLUEAIR_PART: &[&str] = &[
    "private.address@blueair.example",
    "+353870000000",
    "blue_vip",
    "blue_controller",
    "blue_aog_ams",
];

/// Reads an SSE stream for up to `wait`, or until `until` is in what it read.
async fn read_feed(mut r: reqwest::Response, wait: Duration, until: &str) -> String {
    let deadline = Instant::now() + wait;
    let mut seen = String::new();
    while Instant::now() < deadline && !seen.contains(until) {
        match tokio::time::timeout_at(deadline.into(), r.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    seen
}

#[test]
fn an_import_of_two_accounts_reaches_each_follower_only_as_its_own() {
    let (server, dir) = demo_host("feeds", &["--follow-interval-ms", "100"]);
    let base = server.base.clone();
    let db = dir.join("facts.db");
    add_key(&db, SERVICE_SKYWAYS, Scope::Service, &["skyways"]);
    let import = dir.join("two-accounts.jsonl");
    let lines = [
        json!({"op":"set_attr","entity":"event:aog_lhr","attr":"title","value":"AOG G-SKYD (import)"}),
        json!({"op":"set_attr","entity":"user:blue_controller","attr":"email","value":"private.address@blueair.example"}),
        json!({"op":"add_entity","entity":{"type":"invitee","id":"blue_vip","account":"blueair","attrs":{"channel":"sms","address":"+353870000000"}}}),
        json!({"op":"add_tuple","tuple":{"resource":"event:blue_aog_ams","relation":"guest","subject":"invitee:blue_vip"}}),
    ];
    std::fs::write(
        &import,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    block(async {
        // The service key is read within a second of joining the store.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let service = client_with(SERVICE_SKYWAYS);
        let user = client_with(&token(&base, "user:lhr_tech").await);
        let admin = client_with(ADMIN);
        let open = |c: &reqwest::Client| c.get(format!("{base}/v1/changes")).send();
        let (svc_feed, user_feed, admin_feed) = (
            open(&service).await.unwrap(),
            open(&user).await.unwrap(),
            open(&admin).await.unwrap(),
        );
        assert_eq!(svc_feed.status().as_u16(), 200);
        assert_eq!(user_feed.status().as_u16(), 200);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_clearance"))
            .current_dir(crate::root())
            .args(["import", "--data"])
            .arg(&db)
            .arg("--from")
            .arg(&import)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wait = Duration::from_secs(8);
        let (svc, usr, all) = tokio::join!(
            read_feed(svc_feed, wait, "event: "),
            read_feed(user_feed, wait, "event: "),
            read_feed(admin_feed, wait, "blue_vip"),
        );
        // The operator sees the whole import.
        assert!(all.contains("+353870000000"), "{all}");
        for (who, text) in [("service key", &svc), ("user", &usr)] {
            assert!(text.contains("event: "), "{who} was told nothing: {text}");
            for secret in BLUEAIR_PART {
                assert!(!text.contains(secret), "{who} received `{secret}`: {text}");
            }
        }
        // And on replay from the start, by a key made afterwards.
        add_key(&db, SERVICE_SKYWAYS_LATER, Scope::Service, &["skyways"]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let later = client_with(SERVICE_SKYWAYS_LATER)
            .get(format!("{base}/v1/changes?since=0"))
            .send()
            .await
            .unwrap();
        let replay = read_feed(later, Duration::from_secs(4), "two accounts never").await;
        assert!(replay.contains("event: "), "{replay}");
        for secret in BLUEAIR_PART {
            assert!(!replay.contains(secret), "replay gave `{secret}`: {replay}");
        }
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
