//! Faults, against the real `clearance serve` process on loopback: killed with SIGKILL in
//! the middle of writes, its store changed behind its back or stripped of its
//! write-ahead log, a compiled module planted in its cache. Each must end in the truth:
//! every acknowledged write present and whole, nothing refused stored, a changed store
//! refused with the revision named, a lost log never re-seeded, a planted module never
//! run.

use super::{artifact, block, create_event, root};
use clearance_host::{Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const NOW: &str = "2026-05-01T10:00:00Z";

/// A `clearance serve` process on a loopback port.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    super::scratch(&format!("faults-{name}"))
}

/// Starts the server on `db`; `Err` with everything it printed if it exits instead.
pub(crate) fn start(db: &Path, extra: &[&str]) -> Result<Server, String> {
    let mut args: Vec<std::ffi::OsString> = vec!["--data".into(), db.into()];
    args.extend(extra.iter().map(Into::into));
    // The test's admin key joins the store; the server reads it within a second.
    start_with(&args, &|| {
        super::add_key(db, super::ADMIN, clearance_host::auth::Scope::Admin, &[])
    })
}

/// Starts `clearance serve` with `args` on a loopback port, calls `ready` once it
/// listens, and waits until the admin key is accepted; `Err` with everything it printed
/// if it exits instead.
pub(crate) fn start_with(args: &[std::ffi::OsString], ready: &dyn Fn()) -> Result<Server, String> {
    // `CLEARANCE_BIN` runs these faults against another build of the server.
    let bin = std::env::var_os("CLEARANCE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_clearance")));
    // The demo's facts seed a new store (a later `--seed` wins).
    let mut seeded: Vec<std::ffi::OsString> = vec!["--seed".into(), "tests/worlds".into()];
    seeded.extend(args.iter().cloned());
    start_in(&bin, &root(), &seeded, ready)
}

/// [`start_with`] for the binary `bin` run in `dir`, with only `args` after
/// `serve --addr 127.0.0.1:0`.
pub(crate) fn start_in(
    bin: &Path,
    dir: &Path,
    args: &[std::ffi::OsString],
    ready: &dyn Fn(),
) -> Result<Server, String> {
    let mut child = Command::new(bin)
        .current_dir(dir)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&format!("{line}\n"));
            // `API at http://ADDR/v1 …`, or `https://` with TLS.
            if let Some(rest) = line.split("API at ").nth(1) {
                let base = rest.split("/v1").next().unwrap_or_default().to_string();
                let _ = tx.send(base);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(base) = rx.recv_timeout(Duration::from_millis(50)) {
            ready();
            block(async {
                // Whether it is up, not whom it proves to be: a TLS test checks that.
                let c = super::bearer(super::ADMIN)
                    .danger_accept_invalid_certs(true)
                    .build()
                    .unwrap();
                for _ in 0..100 {
                    let r = c.get(format!("{base}/v1/revision")).send().await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("the server never accepted the admin key");
            });
            return Ok(Server { child, base, log });
        }
        if let Ok(Some(_)) = child.try_wait() {
            std::thread::sleep(Duration::from_millis(100));
            return Err(log.lock().unwrap().clone());
        }
        assert!(Instant::now() < deadline, "the server did not start");
    }
}

async fn facts(base: &str) -> Value {
    super::admin()
        .get(format!("{base}/v1/facts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Event id -> the relations of the tuples that name it as their resource.
fn events(facts: &Value) -> std::collections::HashMap<String, Vec<String>> {
    let mut out: std::collections::HashMap<String, Vec<String>> = facts["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "event")
        .map(|e| (e["id"].as_str().unwrap().to_string(), Vec::new()))
        .collect();
    for t in facts["tuples"].as_array().unwrap() {
        if let Some(id) = t["resource"].as_str().unwrap().strip_prefix("event:")
            && let Some(rels) = out.get_mut(id)
        {
            rels.push(t["relation"].as_str().unwrap().to_string());
        }
    }
    out
}

/// Whether an event created by [`create_event`] is whole: its entity and its three
/// tuples (the policy may derive more, EV5).
fn whole(relations: Option<&Vec<String>>) -> bool {
    relations.is_some_and(|r| {
        ["station", "owner_org", "created_by"]
            .iter()
            .all(|x| r.iter().any(|y| y == x))
    })
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_write_and_stores_no_refused_one() {
    let dir = temp_dir("sigkill");
    let db = dir.join("facts.db");
    let mut acked: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let mut in_flight: Vec<String> = Vec::new();
    // Checkpoints every 25 changes, so that some are written, and some killed, within
    // the rounds, and start-up begins from one.
    let checkpointing = ["--checkpoint-changes", "25", "--checkpoint-gap", "0"];
    for round in 0..20u64 {
        let server =
            start(&db, &checkpointing).unwrap_or_else(|log| panic!("round {round}: {log}"));
        let base = server.base.clone();
        let before = block(facts(&base));
        let present = events(&before);
        // Every acknowledged write so far is there, whole; nothing refused is.
        for id in &acked {
            assert!(
                whole(present.get(id)),
                "round {round}: acknowledged {id} is missing or half-applied"
            );
        }
        for id in &refused {
            assert!(
                !present.contains_key(id),
                "round {round}: refused {id} is stored"
            );
        }
        for id in &in_flight {
            assert!(
                !present.contains_key(id) || whole(present.get(id)),
                "round {round}: {id} is half-applied"
            );
        }
        in_flight.clear();
        // Two writers and four checkers, until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let outcome = Arc::new(Mutex::new((Vec::new(), Vec::new(), Vec::new())));
        let kill_after = Duration::from_millis(150 + (round * 137) % 500);
        let pid = server.child.id();
        block(async {
            let c = super::admin();
            let mut tasks = Vec::new();
            for w in 0..2 {
                let (c, base, stop, outcome) = (
                    c.clone(),
                    base.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&outcome),
                );
                tasks.push(tokio::spawn(async move {
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        let id = format!("kill_{round}_{w}_{k}");
                        outcome.lock().unwrap().2.push(id.clone());
                        let sent = c
                            .post(format!("{base}/v1/facts"))
                            .json(&json!({ "author": "user:occ_controller", "now": NOW, "deltas": create_event(&id) }))
                            .send()
                            .await;
                        let Ok(r) = sent else { break };
                        let status = r.status().as_u16();
                        let Ok(body) = r.json::<Value>().await else {
                            break;
                        };
                        let mut o = outcome.lock().unwrap();
                        o.2.retain(|x| x != &id);
                        match status {
                            200 => o.0.push(id),
                            _ if body["error"]["code"] == "store.unknown" => o.2.push(id),
                            _ => o.1.push(id),
                        }
                    }
                }));
            }
            for k in 0..4 {
                let (c, base, stop) = (c.clone(), base.clone(), Arc::clone(&stop));
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = c
                            .post(format!("{base}/v1/check"))
                            .json(&json!({ "principal": "user:aeroserv_tech", "action": "view", "resource": "event:aog_lhr", "now": NOW, "k": k }))
                            .send()
                            .await;
                        if r.is_err() {
                            break;
                        }
                    }
                }));
            }
            tokio::time::sleep(kill_after).await;
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
        });
        drop(server);
        let (a, r, f) = std::mem::take(&mut *outcome.lock().unwrap());
        acked.extend(a);
        refused.extend(r);
        in_flight.extend(f);
    }
    let server = start(&db, &[]).unwrap();
    let present = events(&block(facts(&server.base)));
    for id in &acked {
        assert!(whole(present.get(id)), "acknowledged {id}");
    }
    let checkpoints = {
        clearance_host::store::SqliteFile::open(&db)
            .unwrap()
            .checkpoints()
            .unwrap()
    };
    assert!(!checkpoints.is_empty(), "no checkpoint was written");
    for id in &refused {
        assert!(!present.contains_key(id), "refused {id} is stored");
    }
    eprintln!(
        "sigkill: 20 rounds, {} writes acknowledged and present, {} refused and absent, checkpoints at {checkpoints:?}",
        acked.len(),
        refused.len()
    );
    assert!(acked.len() >= 20, "too few writes to tell");
}

fn write_some(base: &str, n: usize) {
    block(async {
        let c = super::admin();
        for k in 0..n {
            let r = c
                .post(format!("{base}/v1/facts"))
                .json(&json!({ "author": "user:occ_controller", "now": NOW, "deltas": create_event(&format!("w{k}")) }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    });
}

#[test]
fn a_store_changed_behind_the_hosts_back_refuses_to_start_naming_the_revision() {
    let dir = temp_dir("tamper");
    let db = dir.join("facts.db");
    let server = start(&db, &[]).unwrap();
    write_some(&server.base, 3);
    drop(server);
    let conn = rusqlite::Connection::open(&db).unwrap();
    // One changed character in a stored change.
    let n = conn
        .execute(
            "UPDATE changes SET deltas = replace(deltas, 'station:lhr', 'station:lhx') WHERE revision = 2",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let log = start(&db, &[]).err().expect("a changed change was served");
    assert!(log.contains("revision 2"), "{log}");

    // One changed digit in the base facts: an expiry moved by years.
    let dir = temp_dir("tamper-base");
    let db = dir.join("facts.db");
    drop(start(&db, &[]).unwrap());
    damage_base(&db);
    let log = start(&db, &[])
        .err()
        .expect("changed base facts were served");
    assert!(log.contains("base facts (revision 0)"), "{log}");
}

/// Changes one digit of a timestamp in the base facts of the store at `db`.
fn damage_base(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let facts: String = conn
        .query_row("SELECT facts FROM base", [], |r| r.get(0))
        .unwrap();
    let i = facts.find("\"2026-").expect("a timestamp in the facts") + 1;
    let mut changed = facts.clone();
    changed.replace_range(i..i + 4, "2058");
    conn.execute("UPDATE base SET facts = ?1", [changed])
        .unwrap();
}

#[test]
fn a_damaged_base_behind_a_checkpoint_is_reported_after_start_up_and_refused_without_it() {
    let dir = temp_dir("tamper-behind");
    let db = dir.join("facts.db");
    let cp = dir.join("facts.db.checkpoints");
    let server = start(&db, &["--checkpoint-changes", "1", "--checkpoint-gap", "0"]).unwrap();
    write_some(&server.base, 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoints = || -> i64 {
        rusqlite::Connection::open(&cp)
            .and_then(|c| c.query_row("SELECT count(*) FROM checkpoints", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    while checkpoints() == 0 {
        assert!(Instant::now() < deadline, "no checkpoint was written");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    damage_base(&db);
    // Start-up from the checkpoint does not read the base; the check after it does.
    let server = start(&db, &[]).expect("the checkpoint verifies");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server
        .log
        .lock()
        .unwrap()
        .contains("base facts (revision 0)")
    {
        assert!(
            Instant::now() < deadline,
            "the damaged base was never reported: {}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .contains("checking the store's base"),
        "{}",
        server.log.lock().unwrap()
    );
    drop(server);
    // Without the checkpoint, start-up reads the base and refuses it.
    std::fs::remove_file(&cp).unwrap();
    let log = start(&db, &[]).err().expect("a damaged base was served");
    assert!(log.contains("base facts (revision 0)"), "{log}");
}

#[test]
fn a_store_that_lost_its_log_is_never_seeded_again() {
    let dir = temp_dir("wal");
    let db = dir.join("facts.db");
    let server = start(&db, &[]).unwrap();
    write_some(&server.base, 2);
    // A crash: no checkpoint, then the log is lost.
    drop(server);
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let _ = std::fs::remove_file(&wal);
    match start(&db, &[]) {
        Ok(server) => {
            let log = server.log.lock().unwrap().clone();
            assert!(
                !log.contains("seeding") && !log.contains("created the store"),
                "the store was seeded again: {log}"
            );
        }
        Err(log) => assert!(log.contains("never seeded again"), "{log}"),
    }
    // A store file that holds nothing at all is refused, not seeded.
    let empty = dir.join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let log = start(&empty, &[])
        .err()
        .expect("an empty store file was seeded");
    assert!(log.contains("never seeded again"), "{log}");
}

#[test]
fn a_planted_compiled_module_is_refused_and_compiled_again() {
    let (wasm, hash) = artifact();
    let cache = temp_dir("cwasm");
    let config = || RuntimeConfig {
        instances: 1,
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };
    drop(Runtime::new(&wasm, &hash, config()).unwrap());
    let genuine = cache.join(format!("{hash}.cwasm"));
    assert!(genuine.exists(), "the host caches its compilation");
    // Another module (the smallest valid one), compiled by the same engine settings,
    // planted under the artifact's name.
    let other = b"\0asm\x01\0\0\0".to_vec();
    let other_hash = clearance_host::runtime::sha256_hex(&other);
    drop(Runtime::new(&other, &other_hash, config()).unwrap());
    std::fs::copy(cache.join(format!("{other_hash}.cwasm")), &genuine).unwrap();
    let rt = Arc::new(Runtime::new(&wasm, &hash, config()).unwrap());
    let snap = super::snapshot();
    block(async {
        rt.load_snapshot(snap.to_bytes().unwrap())
            .await
            .expect("the genuine module runs");
        let d = rt
            .call(json!({ "op": "check", "request": { "principal": "user:aeroserv_tech", "action": "view", "resource": "event:aog_lhr", "now": NOW } }).to_string())
            .await
            .unwrap();
        assert_eq!(d["allowed"], true);
    });
    let recompiled = std::fs::read(&genuine).unwrap();
    let planted = std::fs::read(cache.join(format!("{other_hash}.cwasm"))).unwrap();
    assert_ne!(recompiled, planted, "the planted file was kept");
}

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Sets the title of an event to `size` copies of one character: a change whose event
/// is `size` bytes.
fn big_writes(base: &str, from: usize, n: usize, size: usize) {
    block(async {
        let c = super::admin();
        for k in from..from + n {
            let title = char::from(b"abcdefghijklmnopqrstuvwxyz"[k % 26])
                .to_string()
                .repeat(size);
            let r = c
                .post(format!("{base}/v1/facts"))
                .json(&json!({ "author": "user:occ_controller", "now": NOW, "deltas": [{ "op": "set_attr", "entity": "event:aog_lhr", "attr": "title", "value": title }] }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    });
}

/// Opens the change feed from `since` over HTTP/1.0 (a body ended by the close, no
/// chunks) and reads nothing yet.
fn open_feed(base: &str, since: u64) -> std::net::TcpStream {
    open_feed_with(base, &format!("?since={since}"), "")
}

/// Opens the change feed with a query and extra header lines (each ending in CRLF).
fn open_feed_with(base: &str, query: &str, headers: &str) -> std::net::TcpStream {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /v1/changes{query} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{headers}\r\n",
        super::ADMIN
    )
    .unwrap();
    s
}

/// Reads a feed until it has been quiet for `quiet`: (event kind, id) in order.
fn read_feed(mut s: std::net::TcpStream, quiet: Duration) -> Vec<(String, u64)> {
    use std::io::Read;
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut text = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    let mut out = Vec::new();
    for event in text.split("\n\n") {
        let kind = event.lines().find_map(|l| l.strip_prefix("event: "));
        let id = event.lines().find_map(|l| l.strip_prefix("id: "));
        if let (Some(kind), Some(id)) = (kind, id) {
            out.push((kind.to_string(), id.trim().parse().unwrap()));
        }
    }
    out
}

#[test]
fn the_change_feed_pages_its_history_and_tells_a_follower_that_fell_behind() {
    let dir = temp_dir("feed");
    let db = dir.join("facts.db");
    let server = start(&db, &["--feed-buffer", "4"]).unwrap();
    let base = server.base.clone();
    let pid = server.child.id();
    // A history of 60 changes of 256 KB each (15 MB).
    big_writes(&base, 0, 60, 256 << 10);
    // Five followers from revision 0 that read nothing: each is served a page at a time,
    // not the whole history at once.
    let before = rss(pid);
    let idle: Vec<_> = (0..5).map(|_| open_feed(&base, 0)).collect();
    std::thread::sleep(Duration::from_secs(3));
    let grown = rss(pid).saturating_sub(before);
    eprintln!(
        "feed: five followers from revision 0 grew the server by {} MB",
        grown >> 20
    );
    assert!(
        grown < 40 << 20,
        "five followers of a 15 MB history took {} MB",
        grown >> 20
    );
    drop(idle);
    // A follower from revision 60 that does not read while 60 more big changes are
    // made: once its socket is full it falls behind the live buffer (4 changes), and it
    // is told so with a `reset` before anything is skipped.
    let slow = open_feed(&base, 60);
    std::thread::sleep(Duration::from_millis(300));
    big_writes(&base, 60, 60, 256 << 10);
    let events = read_feed(slow, Duration::from_secs(3));
    assert!(
        events.iter().any(|(k, _)| k == "reset"),
        "no reset in {} events",
        events.len()
    );
    let mut last = 60;
    for (kind, id) in &events {
        match kind.as_str() {
            "change" => assert_eq!(*id, last + 1, "a change was skipped without a reset"),
            "reset" => assert!(*id >= last),
            other => panic!("unexpected event {other}"),
        }
        last = *id;
    }
    // Resuming from the last id seen, as an EventSource does with `Last-Event-ID` (which
    // wins over the query), gives exactly what came after.
    let resumed = read_feed(
        open_feed_with(&base, "?since=3", "Last-Event-ID: 100\r\n"),
        Duration::from_secs(2),
    );
    assert_eq!(
        resumed.iter().map(|e| e.1).collect::<Vec<_>>(),
        (101..=120).collect::<Vec<_>>()
    );
}

#[test]
fn sigterm_with_a_change_feed_attached_ends_the_feed_and_exits_0() {
    use std::io::Read;
    let dir = temp_dir("sigterm");
    let db = dir.join("s.db");
    let mut server = start(&db, &[]).unwrap();
    write_some(&server.base, 2);
    let mut feed = open_feed(&server.base, 0);
    // The feed has sent the stored changes and waits for live ones.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // The stream ends (end of file, not a read timeout) with the reason.
    feed.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut text = Vec::new();
    let ended = feed.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).to_string();
    assert!(ended.is_ok(), "the feed did not end: {ended:?}: {text}");
    assert!(text.contains("host.shutdown"), "{text}");
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("SIGTERM to exit: {:?}", t.elapsed());
    assert!(
        status.success(),
        "{status:?}: {}",
        server.log.lock().unwrap()
    );
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains(r#""message":"stopped""#),
        "{log}"
    );
}

/// The state a SQLite store holds at `upto` (its last revision when `None`).
fn stored_state(db: &Path, upto: Option<u64>) -> clearance_core::Facts {
    let file = clearance_host::store::SqliteFile::open(db).unwrap();
    clearance_host::store::checkpoint::recover_with(file.latest(upto).unwrap(), &|_| {})
        .unwrap()
        .facts
}

#[test]
fn a_backup_taken_while_writes_go_on_restores_to_one_revision_on_sqlite_and_postgres() {
    let dir = temp_dir("backup");
    let live = dir.join("live.db");
    let server = start(&live, &[]).unwrap();
    write_some(&server.base, 3);
    let clearance = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_clearance"));
        c.current_dir(root());
        c
    };
    // A writer goes on while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (base, stop) = (server.base.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            block(async {
                let c = super::admin();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = c
                        .post(format!("{base}/v1/facts"))
                        .json(&json!({ "author": "user:occ_controller", "now": NOW, "deltas": create_event(&format!("b{k}")) }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                    k += 1;
                }
                k
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let backup = dir.join("backup.db");
    let out = clearance()
        .args(["backup", "--data"])
        .arg(&live)
        .arg("--out")
        .arg(&backup)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    let revision: u64 = said
        .split("backed up revision ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);
    // The backup is the live store's state at that one revision.
    let expected = stored_state(&live, Some(revision));
    assert_eq!(stored_state(&backup, None), expected);
    assert!(
        stored_state(&live, None).revision > revision,
        "no write after the backup"
    );

    // Restored into a new SQLite store, a host serves that revision and those facts.
    let restored = dir.join("restored.db");
    let out = clearance()
        .args(["restore", "--from"])
        .arg(&backup)
        .arg("--data")
        .arg(&restored)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // With a checkpoint of the restored revision, snapshot and all: a host loads it
    // rather than building one.
    assert!(
        said.contains(&format!("a checkpoint at revision {revision}")),
        "{said}"
    );
    let latest = clearance_host::store::SqliteFile::open(&restored)
        .unwrap()
        .latest(None)
        .unwrap();
    assert_eq!(latest.revision, revision);
    assert!(
        latest.snapshot.is_some_and(|s| !s.is_empty()),
        "no snapshot was kept"
    );
    let again = start(&restored, &[]).unwrap();
    let served = block(facts(&again.base));
    assert_eq!(served["revision"].as_u64(), Some(revision));
    assert_eq!(stored_state(&restored, None), expected);
    drop(again);
    // Never over a store.
    let out = clearance()
        .args(["restore", "--from"])
        .arg(&backup)
        .arg("--data")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never writes over a store"));

    // Restored into PostgreSQL alike.
    let pg = super::pg::Pg::start("backup");
    let url = pg.database("restored");
    let migrated = clearance()
        .args(["migrate", "--store", &url])
        .status()
        .unwrap();
    assert!(migrated.success());
    let out = clearance()
        .args(["restore", "--from"])
        .arg(&backup)
        .args(["--store", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recovered = block(async {
        let store = clearance_host::store::postgres::PgStore::connect(&url)
            .await
            .unwrap();
        clearance_host::store::checkpoint::recover(&store, None)
            .await
            .unwrap()
    });
    assert_eq!(recovered.facts, expected);
    assert!(
        recovered.snapshot.is_some(),
        "the restore into PostgreSQL left no checkpoint with a snapshot"
    );
}
