//! Finding 5: limits that count work, not requests. A batch is charged its requests and a
//! write its deltas, refused or not; and one caller's maximal batches and writes leave
//! another caller its share of the instances and of the writer.

use crate::service::{NOW, runtime_with, serve_on, temp_db};
use crate::{ADMIN, add_key, block, client_with};
use clearance_host::RuntimeConfig;
use clearance_host::auth::Scope;
use clearance_host::service::ServiceConfig;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const GREEDY: &str = "clr_9e9e9e9e9e9e9e9e_service-key-of-skyways-sending-the-most-work";
const OTHER: &str = "clr_0b0b0b0b0b0b0b0b_service-key-of-blueair-sending-a-little-work";

/// A batch of `n` of the same check, for a principal of `skyways` (at [`NOW`] in
/// seconds, so that 10,000 fit in the body limit).
fn batch(n: usize) -> Value {
    let now = 1_777_629_600; // NOW
    let one = json!({ "principal": "user:occ_controller", "action": "view", "resource": "event:aog_lhr", "now": now });
    json!({ "requests": vec![one; n] })
}

/// A write of `n` deltas by `user:occ_controller`, which the policy allows (a title set
/// again and again).
fn allowed_write(n: usize) -> Value {
    let deltas: Vec<Value> = (0..n)
        .map(|i| json!({ "op": "set_attr", "entity": "event:aog_lhr", "attr": "title", "value": format!("t{i}") }))
        .collect();
    json!({ "author": "user:occ_controller", "deltas": deltas })
}

/// A write of `n` deltas the policy refuses: an event's title set again and again by a
/// contractor's technician, who may not update the event. (Not creations: those are
/// held to the creation quotas, 2,000 an hour per author, before they are judged.)
fn refused_write(n: usize) -> Value {
    let deltas: Vec<Value> = (0..n)
        .map(|i| json!({ "op": "set_attr", "entity": "event:aog_lhr", "attr": "title", "value": format!("t{i}") }))
        .collect();
    json!({ "author": "user:jetfix_tech", "deltas": deltas })
}

/// The report's reproduction, bounded: a batch of 300 requests and a refused write of 300
/// deltas each cost their size, so with a budget of 100 a second (and at most 500 at
/// once, the largest batch) the second of each is refused 429, naming what it costs and
/// the budget; another caller keeps its own budget.
#[test]
fn a_batch_costs_its_requests_and_a_write_its_deltas() {
    block(async {
        let db = temp_db("sec-cost");
        let config = ServiceConfig {
            work_limit: std::num::NonZeroU32::new(100),
            max_batch: 500,
            max_deltas: 500,
            ..ServiceConfig::default()
        };
        let rt = runtime_with(RuntimeConfig {
            instances: 2,
            ..RuntimeConfig::default()
        });
        let (base, service) = serve_on(&db, config, rt).await;
        add_key(&db, GREEDY, Scope::Service, &["skyways"]);
        service.refresh_keys().await.unwrap();
        let greedy = client_with(GREEDY);
        let send = |path: &'static str, body: Value| {
            let (c, base) = (greedy.clone(), base.clone());
            async move {
                let r = c
                    .post(format!("{base}{path}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let retry = r.headers().get("retry-after").cloned();
                (
                    status,
                    retry,
                    r.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
        };
        // 300 of the budget of 500 left 200: the next batch of 300 is refused.
        let (first, _, answer) = send("/v1/check/batch", batch(300)).await;
        assert_eq!(first, 200, "{answer}");
        let (second, retry, answer) = send("/v1/check/batch", batch(300)).await;
        assert_eq!(
            second, 429,
            "a second batch of 300 within the second, on a budget of 100 a second, was served"
        );
        assert_eq!(answer["error"]["code"], "auth.rate_limited", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("batch of 300") && message.contains("100 a second"),
            "the refusal names neither the cost nor the budget: {message}"
        );
        assert!(retry.is_some(), "no retry-after");
        // A write refused by the policy costs its deltas too.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (status, _, answer) = send("/v1/facts", refused_write(300)).await;
        assert_eq!(status, 403, "{answer}");
        let (status, _, answer) = send("/v1/facts", refused_write(300)).await;
        assert_eq!(
            status, 429,
            "a second write of 300 deltas within the second was judged: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("write of 300 deltas"), "{message}");
        // Another caller has its own budget.
        let (status, answer) = crate::service::post(
            &client_with(ADMIN),
            &format!("{base}/v1/check/batch"),
            batch(500),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    });
}

/// The second attack's second finding: requests the budget of work counts as one, but
/// whose work grows with the account (a principal's slice, a list of resources), sent by
/// one caller many at once, took every core (400 slices of a user with 10,000 guests in
/// its account raised another tenant's check from 1 ms to 2.4 s). They take their
/// caller's turns now, as large batches do: with two instances, one at a time, and past
/// the queue's timeout (none here, so that any wait shows) the rest are answered
/// `host.busy` naming the caller's turns, while another caller is served as before.
#[test]
fn one_callers_slices_and_lists_wait_for_its_own_turns() {
    block(async {
        let db = temp_db("sec-slice-turns");
        let rt = runtime_with(RuntimeConfig {
            instances: 2,
            queue_timeout: Duration::ZERO,
            ..RuntimeConfig::default()
        });
        let (base, service) = serve_on(&db, ServiceConfig::default(), rt).await;
        add_key(&db, GREEDY, Scope::Service, &["skyways"]);
        add_key(&db, OTHER, Scope::Service, &["blueair"]);
        service.refresh_keys().await.unwrap();
        let greedy = client_with(GREEDY);
        for (what, request) in [
            (
                "slice",
                greedy.get(format!("{base}/v1/slice/user:occ_controller")),
            ),
            (
                "list",
                greedy
                    .post(format!("{base}/v1/resources"))
                    .json(&json!({ "principal": "user:occ_controller", "action": "view", "type": "event", "now": NOW })),
            ),
        ] {
            let sent: Vec<_> = (0..40)
                .map(|_| {
                    let r = request.try_clone().unwrap();
                    tokio::spawn(async move {
                        let r = r.send().await.unwrap();
                        (r.status().as_u16(), r.text().await.unwrap())
                    })
                })
                .collect();
            let (mut served, mut turned_away) = (0, 0);
            for s in sent {
                let (status, text) = s.await.unwrap();
                match status {
                    200 => served += 1,
                    503 => {
                        assert!(text.contains("host.busy") && text.contains("turns"), "{text}");
                        turned_away += 1;
                    }
                    _ => panic!("{what}: {status} {text}"),
                }
            }
            assert!(served > 0, "no {what} was served");
            assert!(
                turned_away > 0,
                "40 {what}s of one caller at once were all served at once, none waiting for its turns"
            );
            // Another caller is served all along.
            let (status, answer) = crate::service::post(
                &client_with(OTHER),
                &format!("{base}/v1/check"),
                json!({ "principal": "user:blue_controller", "action": "view", "resource": "event:blue_aog_ams", "now": NOW }),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
        }
    });
}

/// Latencies in ms: (count, p50, p99, max), each the least sample at or above that share.
fn percentiles(mut ms: Vec<f64>) -> (usize, f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |per_cent: usize| {
        let rank = (ms.len() * per_cent).div_ceil(100);
        ms.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
    };
    (ms.len(), at(50), at(99), at(100))
}

/// What the other caller saw in one window: its checks' and writes' figures.
struct Window {
    checks: (usize, f64, f64, f64),
    writes: (usize, f64, f64, f64),
}

impl Window {
    /// Within the targets: check p99 under 20 ms, write p99 under 50 ms, on
    /// enough samples for a p99 to mean something.
    fn fair(&self) -> bool {
        self.checks.2 < 20.0 && self.writes.2 < 50.0 && self.checks.0 >= 100 && self.writes.0 >= 50
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ((nc, c50, c99, cmax), (nw, w50, w99, wmax)) = (self.checks, self.writes);
        write!(
            f,
            "checks n={nc} p50={c50:.2} p99={c99:.2} max={cmax:.2} ms; one-delta writes n={nw} p50={w50:.2} p99={w99:.2} max={wmax:.2} ms"
        )
    }
}

/// The fairness the issue asks for, bounded: one caller keeps 16 batches of 10,000
/// requests and four writes of 8,000 deltas (two the policy allows, two it refuses) in
/// flight, with no rate limit, while another caller sends a single check every 10 ms and
/// a one-delta write every 25 ms for a window of 4 s: its check p99 must stay under 20
/// ms and its write p99 under 50 ms (the targets). Other processes share a
/// 2-core machine and can spoil a window by themselves, so the test runs alone (ignored
/// in the suite; `cargo xtask test` runs it after the other tests, and it takes
/// [`crate::measured_load`] against the soak when run with them), and up to three
/// windows are measured in turn under the same load, the test passing on the first
/// within the targets. The code before the fix answered the other caller's first check
/// after 3.5 s. Each window's figures are printed; BENCHMARKS.md records them ("Fair share under
/// one greedy caller").
#[test]
#[ignore = "measures the machine: `cargo xtask test` runs it alone, after the other tests"]
fn one_greedy_caller_leaves_another_its_share() {
    let _alone = crate::measured_load();
    block(async {
        let db = temp_db("sec-fairness");
        let rt = runtime_with(RuntimeConfig {
            instances: 2,
            ..RuntimeConfig::default()
        });
        let (base, service) = serve_on(&db, ServiceConfig::default(), rt).await;
        add_key(&db, GREEDY, Scope::Service, &["skyways"]);
        add_key(&db, OTHER, Scope::Service, &["blueair"]);
        service.refresh_keys().await.unwrap();
        // The greedy caller on a thread of its own, the other caller on another, so that
        // the figures are the server's and not the clients'.
        let stop = Arc::new(AtomicBool::new(false));
        let greedy = greedy_load(
            &base,
            &[
                ("batch", "/v1/check/batch", 16),
                ("allowed write", "/v1/facts", 2),
                ("refused write", "/v1/facts", 2),
            ],
            Arc::clone(&stop),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut windows = Vec::new();
        for _ in 0..3 {
            let base = base.clone();
            let (checks, writes) = tokio::task::spawn_blocking(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(other_caller(&base, Duration::from_secs(4)))
            })
            .await
            .unwrap();
            let window = Window {
                checks: percentiles(checks),
                writes: percentiles(writes),
            };
            println!("fairness: window {}: {window}", windows.len() + 1);
            let fair = window.fair();
            windows.push(window);
            if fair {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let greedy_done = tokio::task::spawn_blocking(move || greedy.join().unwrap())
            .await
            .unwrap();
        println!("fairness: the greedy caller's answers {greedy_done:?}");
        // The greedy caller was served too: the load was real.
        for kind in [
            ("batch", 200),
            ("allowed write", 200),
            ("refused write", 403),
        ] {
            assert!(
                greedy_done.get(&kind).copied().unwrap_or(0) > 0,
                "no greedy {} was answered {}: {greedy_done:?}",
                kind.0,
                kind.1
            );
        }
        let said: Vec<String> = windows.iter().map(ToString::to_string).collect();
        assert!(
            windows.iter().any(Window::fair),
            "in no window of 4 s did the other caller keep its check p99 under 20 ms and its write p99 under 50 ms: {said:#?}"
        );
    });
}

/// The greedy caller, on a thread and a runtime of its own until `stop`: for each
/// `(what, path, senders)`, that many loops sending its maximal body (a batch of 10,000,
/// an allowed or a refused write of 8,000 deltas) again and again. Gives how many answers
/// of each status each kind got.
fn greedy_load(
    base: &str,
    loads: &[(&'static str, &'static str, usize)],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<std::collections::BTreeMap<(&'static str, u16), usize>> {
    let (base, loads) = (base.to_string(), loads.to_vec());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let greedy = client_with(GREEDY);
            let mut senders = Vec::new();
            for (what, path, n) in loads {
                let body = match what {
                    "batch" => batch(10_000),
                    "allowed write" => allowed_write(8_000),
                    _ => refused_write(8_000),
                };
                let body = serde_json::to_vec(&body).unwrap();
                assert!(body.len() < 1 << 20, "{what} is past the body limit");
                for _ in 0..n {
                    let (c, url, body, stop) = (
                        greedy.clone(),
                        format!("{base}{path}"),
                        body.clone(),
                        Arc::clone(&stop),
                    );
                    senders.push(tokio::spawn(async move {
                        let mut statuses = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let r = c
                                .post(&url)
                                .header("content-type", "application/json")
                                .body(body.clone())
                                .send()
                                .await;
                            statuses.push(match r {
                                Ok(r) => {
                                    let s = r.status().as_u16();
                                    let _ = r.bytes().await;
                                    s
                                }
                                Err(_) => 0,
                            });
                        }
                        (what, statuses)
                    }));
                }
            }
            let mut done = std::collections::BTreeMap::new();
            for s in senders {
                let (what, statuses) = s.await.unwrap();
                for status in statuses {
                    *done.entry((what, status)).or_default() += 1;
                }
            }
            done
        })
    })
}

/// The other caller, for `window`: a single check every 10 ms and a one-delta write every
/// 25 ms, each timed; every one must be answered as when alone.
async fn other_caller(base: &str, window: Duration) -> (Vec<f64>, Vec<f64>) {
    let c = client_with(OTHER);
    let check = json!({ "principal": "user:blue_controller", "action": "view", "resource": "event:blue_aog_ams", "now": NOW });
    let started = Instant::now();
    let (mut checks, mut writes) = (Vec::new(), Vec::new());
    let mut i = 0u64;
    let mut next_write = started;
    while started.elapsed() < window {
        let t = Instant::now();
        let r = c
            .post(format!("{base}/v1/check"))
            .json(&check)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        checks.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["allowed"], true, "{answer}");
        if Instant::now() >= next_write {
            i += 1;
            let write = json!({ "author": "user:blue_controller", "deltas": [
                { "op": "set_attr", "entity": "event:blue_aog_ams", "attr": "title", "value": format!("title {i}") }
            ] });
            let t = Instant::now();
            let r = c
                .post(format!("{base}/v1/facts"))
                .json(&write)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let answer: Value = r.json().await.unwrap();
            writes.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(status, 200, "{answer}");
            next_write = Instant::now() + Duration::from_millis(25);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (checks, writes)
}
