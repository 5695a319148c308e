//! Finding 10: every slice of an account held every aircraft's grant holders, because the
//! seat count of an aircraft (`count(...)` in its invitation rule and its invariant) read
//! the grant relations whole. A count needs the number, not the names.

use super::writes::{demo_host, token};
use crate::service::{get, post, verified_slice};
use crate::{block, client_with};
use serde_json::{Value, json};

/// A contractor's technician, refused `read` on every aircraft of its account, fetches
/// its own signed slice: it names no one else holding a grant on an aircraft, and carries
/// in their place how many hold a seat of each.
#[test]
fn a_slice_names_no_grant_holder_of_an_aircraft_its_principal_cannot_read() {
    let (server, _dir) = demo_host("slice-counts", &[]);
    let base = server.base.clone();
    block(async {
        let principal = "user:aeroserv_tech";
        let me = client_with(&token(&base, principal).await);
        let (status, signed) = get(&me, &format!("{base}/v1/slice/{principal}")).await;
        assert_eq!(status, 200, "{signed}");
        let slice = verified_slice(&me, &base, &signed).await;
        let aircraft: Vec<String> = slice["facts"]["entities"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "aircraft")
            .map(|e| format!("aircraft:{}", e["id"].as_str().unwrap()))
            .collect();
        assert_eq!(aircraft.len(), 3, "{aircraft:?}");
        for a in &aircraft {
            let (status, d) = post(
                &me,
                &format!("{base}/v1/check"),
                json!({ "principal": principal, "action": "read", "resource": a }),
            )
            .await;
            assert_eq!((status, &d["allowed"]), (200, &json!(false)), "{a}: {d}");
        }
        let named: Vec<String> = slice["facts"]["tuples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| aircraft.iter().any(|a| t["resource"] == a.as_str()))
            .filter(|t| t["subject"] != principal)
            .map(|t| {
                let at = |f: &str| t[f].as_str().unwrap_or_default().to_string();
                format!("{}#{}@{}", at("resource"), at("relation"), at("subject"))
            })
            .collect();
        assert!(named.is_empty(), "the technician's slice names {named:?}");
        let seats: Vec<(String, u64)> = slice["facts"]["counts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|c| c["type"] == "aircraft")
            .flat_map(|c| c["of"].as_array().cloned().unwrap_or_default())
            .map(|n: Value| {
                (
                    n["id"].as_str().unwrap().to_string(),
                    n["subjects"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seats,
            [
                ("g_skya".into(), 9),
                ("g_skyb".into(), 3),
                ("g_skyc".into(), 2)
            ],
            "{}",
            slice["facts"]["counts"]
        );
    });
}
