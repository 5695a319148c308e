//! The command line: exit codes and output people rely on.

use super::root;
use std::process::Command;

/// Runs the binary with `args`: exit code and standard output.
fn clearance(args: &[&str]) -> (i32, String) {
    let (code, out, _) = clearance_all(args);
    (code, out)
}

#[test]
fn validate_reports_every_error_with_its_position() {
    let (code, out) = clearance(&["validate"]);
    assert_eq!(code, 0, "{out}");
    let dir = super::scratch("cli");
    std::fs::write(
        dir.join("bad.policy"),
        "type a {\n  b: nosuch\n  permission p = missing\n}\n",
    )
    .unwrap();
    let (code, out) = clearance(&["--policies", dir.to_str().unwrap(), "validate"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("policies/bad.policy:2:6: unknown type `nosuch`")
            && out.contains("policies/bad.policy:3:18")
            && out.contains("2 error(s)"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn test_runs_scenario_files_and_fails_on_a_wrong_expectation() {
    let (code, out) = clearance(&["test"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(" passed, 0 failed, in "), "{out}");
    let dir = super::scratch("cli-test");
    let wrong = dir.join("wrong.toml");
    std::fs::write(&wrong, "world = \"airline\"\n[[case]]\nname = \"wrong\"\nrequirements = [\"EV3\"]\nprincipal = \"user:jetfix_tech\"\naction = \"view\"\nresource = \"event:aog_lhr\"\nnow = \"2026-05-01T10:00:00Z\"\nexpect = \"allow\"\n").unwrap();
    let (code, out) = clearance(&["test", wrong.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL wrong: expected allow, got deny") && out.contains("0 passed, 1 failed"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_and_matrix_decide_through_the_module() {
    let (code, out) = clearance(&[
        "check",
        "user:aeroserv_tech",
        "view",
        "event:aog_lhr",
        "--now",
        "2026-05-01T10:00:00Z",
    ]);
    assert_eq!((code, out.lines().next()), (0, Some("ALLOW")));
    let (code, out) = clearance(&[
        "explain",
        "user:jetfix_tech",
        "view",
        "event:aog_lhr",
        "--now",
        "2026-05-01T10:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("DENY") && out.contains("relation.missing"),
        "{out}"
    );
    let (code, out) = clearance(&["matrix", "operations", "--format", "csv"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("role,dispatch,timeline,") && out.lines().count() == 28,
        "{out}"
    );
    let (_, html) = clearance(&["matrix", "operations", "--format", "html"]);
    assert!(html.contains("<td class=\"write\">write</td>"));
}

/// An account's own roles come from facts, so their names are outside input: the HTML
/// matrix escapes them and the CSV matrix quotes them (doubling their quotes).
#[test]
fn matrix_output_escapes_role_names_from_facts() {
    let dir = super::scratch("cli-escape");
    let mut doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/worlds/operations.json")).unwrap(),
    )
    .unwrap();
    let name = "x<script>alert(1)</script>\"q,r";
    doc["entities"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "type": "role", "id": name, "account": "skyline_charter",
            "attrs": { "matrix": "operations", "cells": ["timeline:read"] }
        }));
    let facts = dir.join("facts.json");
    std::fs::write(&facts, doc.to_string()).unwrap();
    let args = |format: &str| {
        vec![
            "matrix".to_string(),
            "operations".into(),
            "--account".into(),
            "skyline_charter".into(),
            "--format".into(),
            format.into(),
            "--facts".into(),
            facts.display().to_string(),
        ]
    };
    let run = |format: &str| {
        let a = args(format);
        clearance(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, html) = run("html");
    assert_eq!(code, 0, "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("x&lt;script&gt;alert(1)&lt;/script&gt;&quot;q,r"),
        "{html}"
    );
    let (code, csv) = run("csv");
    assert_eq!(code, 0, "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("\"x<script>alert(1)</script>\"\"q,r\",")),
        "{csv}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_are_created_once_listed_without_secrets_and_revoked() {
    let dir = super::scratch("cli-keys");
    let db = dir.join("facts.db");
    let sources = clearance_host::policy_dir::read_policies(&root().join("policies")).unwrap();
    let policy = clearance_host::store::StoredPolicy::of(&sources).unwrap();
    clearance_host::store::SqliteFile::open_or_create(&db, || {
        Ok((clearance_core::Facts::default(), policy))
    })
    .unwrap();
    let data = db.to_str().unwrap();
    let (code, token) = clearance(&[
        "keys",
        "--data",
        data,
        "create",
        "--scope",
        "service",
        "--account",
        "skyways",
        "--label",
        "the app",
    ]);
    assert_eq!(code, 0);
    let token = token.trim().to_string();
    assert!(token.starts_with("clr_"), "{token}");
    let id = token
        .trim_start_matches("clr_")
        .split('_')
        .next()
        .unwrap()
        .to_string();
    let secret = token.rsplit('_').next().unwrap().to_string();
    let (code, list) = clearance(&["keys", "--data", data, "list"]);
    assert_eq!(code, 0);
    assert!(
        list.contains(&id)
            && list.contains("service")
            && list.contains("account:skyways")
            && list.contains("live")
            && list.contains("the app"),
        "{list}"
    );
    assert!(!list.contains(&secret), "the list shows a secret");
    // An admin key names no account; a service key names some.
    assert_ne!(
        clearance(&[
            "keys",
            "--data",
            data,
            "create",
            "--scope",
            "admin",
            "--account",
            "skyways"
        ])
        .0,
        0
    );
    assert_ne!(
        clearance(&["keys", "--data", data, "create", "--scope", "service"]).0,
        0
    );
    assert_ne!(
        clearance(&["keys", "--data", data, "create", "--scope", "root"]).0,
        0
    );
    assert_eq!(clearance(&["keys", "--data", data, "revoke", &id]).0, 0);
    assert!(
        clearance(&["keys", "--data", data, "list"])
            .1
            .contains("revoked")
    );
    assert_ne!(
        clearance(&["keys", "--data", data, "revoke", &id]).0,
        0,
        "revoked twice"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `clearance serve --config FILE` with `env` set and `args` after: the exit code and
/// what it printed. The module path is one that does not exist, so a start that gets
/// past its settings stops there, saying so.
fn serve_with(config: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let dir = super::scratch("cli-config");
    let file = dir.join("clearance.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clearance"))
        .args(["--wasm", "/nonexistent/module.wasm", "serve", "--config"])
        .arg(&file)
        .args(["--data"])
        .arg(dir.join("s.db"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("CLEARANCE_CONFIG")
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn serve_settings_come_from_flags_then_the_environment_then_a_config_file() {
    let past_settings = |said: &str| said.contains("/nonexistent/module.wasm");
    // A bad value in the file stops start-up naming the setting.
    let (code, said) = serve_with("checkpoint-gap = \"soon\"\n", &[], &[]);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("--checkpoint-gap") && said.contains("--config file"),
        "{said}"
    );
    // The environment beats the file: the file's bad value is never read.
    let (_, said) = serve_with(
        "checkpoint-gap = \"soon\"\n",
        &[("CLEARANCE_CHECKPOINT_GAP", "5")],
        &[],
    );
    assert!(past_settings(&said), "{said}");
    // ... and its own bad value is reported.
    let (code, said) = serve_with(
        "checkpoint-gap = 5\n",
        &[("CLEARANCE_CHECKPOINT_GAP", "soon")],
        &[],
    );
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("--checkpoint-gap") && said.contains("soon"),
        "{said}"
    );
    // A flag beats both.
    let (_, said) = serve_with(
        "checkpoint-gap = \"soon\"\n",
        &[("CLEARANCE_CHECKPOINT_GAP", "soon")],
        &["--checkpoint-gap", "7"],
    );
    assert!(past_settings(&said), "{said}");
    // A flag beats the file's value for it.
    let (_, said) = serve_with("instances = \"many\"\n", &[], &["--instances", "1"]);
    assert!(past_settings(&said), "{said}");
    // An unknown setting, and a value of the wrong kind, are named with the file.
    let (code, said) = serve_with("adress = \"127.0.0.1:1\"\n", &[], &[]);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("setting `adress`: no such setting") && said.contains("addr,"),
        "{said}"
    );
    let (code, said) = serve_with("demo = \"yes\"\n", &[], &[]);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("setting `demo`: expected true or false"),
        "{said}"
    );
}

#[test]
fn every_serve_setting_is_documented() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let (_, help) = clearance(&["serve", "--help"]);
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '-'))
        .collect();
    assert!(flags.len() > 20, "{help}");
    for flag in flags {
        let setting = flag.trim_start_matches("--");
        if setting == "help" {
            continue;
        }
        let env = format!("CLEARANCE_{}", setting.replace('-', "_").to_uppercase());
        assert!(
            doc.contains(&format!("`{setting}`")) && doc.contains(&env),
            "docs/configuration.md does not describe `{setting}` ({env})"
        );
    }
}

/// Runs the binary with `args`: exit code, standard output and standard error.
fn clearance_all(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clearance"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `clearance --server URL --key KEY`: `check` and `explain` print what the local
/// commands print for the same request; `resources`, `principals`, `write` and `watch`
/// ask the server; a wrong key is refused without being printed; the server-only
/// commands need `--server`.
#[test]
fn the_command_line_asks_a_running_server() {
    use std::io::BufRead;
    const NOW: &str = "2026-05-01T10:00:00Z";
    let dir = super::scratch("cli-remote");
    let server = super::faults::start(&dir.join("facts.db"), &[]).unwrap();
    let base = server.base.clone();
    let on = |args: &[&str]| {
        let mut all = vec!["--server", base.as_str(), "--key", super::ADMIN];
        all.extend_from_slice(args);
        clearance_all(&all)
    };
    for (verb, principal, code) in [
        ("check", "user:aeroserv_tech", 0),
        ("check", "user:jetfix_tech", 1),
        ("explain", "user:jetfix_tech", 1),
    ] {
        let request = [verb, principal, "view", "event:aog_lhr", "--now", NOW];
        let (remote_code, remote, said) = on(&request);
        let (local_code, local) = clearance(&request);
        assert_eq!((remote_code, local_code), (code, code), "{said}");
        assert_eq!(remote, local, "{verb} {principal}");
    }
    let (code, out, _) = on(&[
        "resources",
        "user:aeroserv_tech",
        "view",
        "event",
        "--now",
        NOW,
    ]);
    assert_eq!((code, out.as_str()), (0, "event:aog_lhr\n"));
    let (code, out, _) = on(&["principals", "event:aog_lhr", "view", "--now", NOW]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == "user:aeroserv_tech"), "{out}");
    assert!(!out.lines().any(|l| l == "user:jetfix_tech"), "{out}");

    // A watcher sees the write.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_clearance"))
        .args(["--server", &base, "--key", super::ADMIN, "watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let deltas = dir.join("deltas.json");
    std::fs::write(
        &deltas,
        serde_json::json!({ "now": NOW, "deltas": super::create_event("cli1") }).to_string(),
    )
    .unwrap();
    let deltas = deltas.to_str().unwrap();
    let (code, out, said) = on(&[
        "write",
        "--author",
        "user:occ_controller",
        "--deltas",
        deltas,
    ]);
    assert_eq!((code, out.as_str()), (0, "written: revision 1\n"), "{said}");
    let mut first = String::new();
    std::io::BufReader::new(watch.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        first.starts_with("revision 1 by user:occ_controller: event:cli1"),
        "{first}"
    );
    // Refused: exit 1, the reasons, nothing written.
    let other = dir.join("other.json");
    std::fs::write(
        &other,
        serde_json::json!({ "now": NOW, "deltas": super::create_event("cli2") }).to_string(),
    )
    .unwrap();
    let other = other.to_str().unwrap();
    let (code, out, said) = on(&["write", "--author", "user:jetfix_tech", "--deltas", other]);
    assert_eq!(code, 1, "{out}{said}");
    assert!(
        out.starts_with("REFUSED: nothing was written\nDENY\n"),
        "{out}"
    );
    let (_, out, _) = on(&[
        "check",
        "user:occ_controller",
        "view",
        "event:cli1",
        "--now",
        NOW,
    ]);
    assert!(
        out.starts_with("ALLOW"),
        "the allowed write is served: {out}"
    );
    let (code, out, _) = on(&[
        "resources",
        "user:occ_controller",
        "view",
        "event",
        "--now",
        NOW,
    ]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == "event:cli1"), "{out}");
    assert!(
        !out.lines().any(|l| l == "event:cli2"),
        "a refused write was stored: {out}"
    );

    // A wrong key: exit 2, the server's code, the key not echoed.
    let wrong = "clr_0123456789abcdef_not-a-key-of-this-server";
    let (code, _, said) = clearance_all(&[
        "--server", &base, "--key", wrong, "check", "user:a", "view", "event:b", "--now", NOW,
    ]);
    assert_eq!(code, 2);
    assert!(
        said.contains("auth.invalid") && !said.contains(wrong),
        "{said}"
    );
    // Without --server.
    let (code, _, said) = clearance_all(&["watch"]);
    assert_eq!(code, 2);
    assert!(said.contains("--server"), "{said}");
}

/// `clearance watch --format json` prints each change as the server sends it, and an
/// `error` event (here: its key revoked) ends it with exit 2 and the error's code, the
/// key not printed.
#[test]
fn watch_stops_on_an_error_event() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    const NOW: &str = "2026-05-01T10:00:00Z";
    const WATCHER: &str = "clr_00000000000000ae_test-watcher-secret-not-for-production-use";
    let dir = super::scratch("cli-watch");
    let db = dir.join("facts.db");
    let server = super::faults::start(&db, &[]).unwrap();
    let base = server.base.clone();
    let with = |key: &str, args: &[&str]| {
        let mut all = vec!["--server", base.as_str(), "--key", key];
        all.extend_from_slice(args);
        clearance_all(&all)
    };
    let revision = ["check", "user:a", "view", "event:b", "--now", NOW];
    // Until the server has read the key (or, revoked, has read that), within seconds.
    let until_code = |key: &str, accepted: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (code, _, said) = with(key, &revision);
            if (code != 2) == accepted {
                return said;
            }
            assert!(Instant::now() < deadline, "{said}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    super::add_key(&db, WATCHER, clearance_host::auth::Scope::Admin, &[]);
    until_code(WATCHER, true);

    let mut watch = Command::new(env!("CARGO_BIN_EXE_clearance"))
        .args([
            "--server", &base, "--key", WATCHER, "watch", "--format", "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let write = |id: &str| {
        let file = dir.join(format!("{id}.json"));
        let body = serde_json::json!({ "now": NOW, "deltas": super::create_event(id) });
        std::fs::write(&file, body.to_string()).unwrap();
        let file = file.to_str().unwrap().to_string();
        let (code, out, said) = with(
            super::ADMIN,
            &[
                "write",
                "--author",
                "user:occ_controller",
                "--deltas",
                &file,
            ],
        );
        assert_eq!(code, 0, "{out}{said}");
    };
    write("watched");
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "change", "{first}");
    assert_eq!(first["data"]["revision"], 1, "{first}");
    assert_eq!(first["data"]["author"], "user:occ_controller", "{first}");

    {
        let mut store = clearance_host::store::SqliteFile::open(&db).unwrap();
        let at = clearance_host::clock::now_seconds();
        assert!(store.revoke_key("00000000000000ae", at).unwrap());
    }
    let said = until_code(WATCHER, false);
    assert!(said.contains("auth.invalid"), "{said}");
    // The next change ends the revoked key's feed with an `error` event.
    write("unwatched");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = watch.kill();
            panic!("watch went on after an error event");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut said).unwrap();
    assert_eq!(status.code(), Some(2), "{rest:?} {said}");
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(
        rest[0].contains("\"error\"") && !rest[0].contains("unwatched"),
        "{rest:?}"
    );
    assert!(
        said.contains("clearance: auth.invalid: ") && !said.contains(WATCHER),
        "{said}"
    );
}
