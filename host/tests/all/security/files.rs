//! Finding 7 of the review: `/pkg` served every file of the module's directory, without
//! credentials, so a store or a log beside the module could be downloaded.

use crate::{block, root, scratch};

#[test]
fn only_the_modules_own_files_are_served_beside_it() {
    let dir = scratch("security-pkg");
    for name in [
        "clearance_bg.wasm",
        "clearance_bg.wasm.sha256",
        "clearance.js",
    ] {
        std::fs::copy(root().join("web/pkg").join(name), dir.join(name)).unwrap();
    }
    std::fs::write(
        dir.join("serve.log"),
        "created an admin key (shown once): clr_x",
    )
    .unwrap();
    let wasm = dir.join("clearance_bg.wasm");
    let db = dir.join("clearance.db");
    let wasm_arg = wasm.to_string_lossy().to_string();
    let server = crate::faults::start_with(
        &[
            "--wasm".into(),
            wasm_arg.into(),
            "--data".into(),
            db.clone().into(),
        ],
        &|| crate::add_key(&db, crate::ADMIN, clearance_host::auth::Scope::Admin, &[]),
    );
    let server = server.unwrap();
    let base = server.base.clone();
    block(async {
        let c = reqwest::Client::new();
        let status = |path: String| {
            let c = c.clone();
            async move { c.get(path).send().await.unwrap().status().as_u16() }
        };
        assert_eq!(status(format!("{base}/pkg/clearance_bg.wasm")).await, 200);
        assert_eq!(status(format!("{base}/pkg/clearance.js")).await, 200);
        for other in [
            "clearance.db",
            "serve.log",
            "clearance.db-wal",
            "",
            "../Cargo.toml",
        ] {
            let got = status(format!("{base}/pkg/{other}")).await;
            assert_eq!(got, 404, "/pkg/{other} answered {got}");
        }
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
