//! Finding 7 of the review: `/pkg` served every file of the module's directory, without
//! credentials, so a store or a log beside the module could be downloaded. `/lib`, the JS
//! package's modules, is served the same way: by name only.

use crate::{block, root, scratch};
use clearance_host::api::{ConsoleFiles, PACKAGE_MODULES, serve_with_limits, with_console};

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
            "--console".into(),
            "--web".into(),
            root().join("web").into(),
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

#[test]
fn only_the_packages_own_modules_are_served_under_lib() {
    let dir = scratch("security-lib");
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    for name in PACKAGE_MODULES {
        std::fs::copy(root().join("web/lib").join(name), lib.join(name)).unwrap();
    }
    // Beside the modules: what a directory listing or a name not on the list would give.
    std::fs::write(lib.join("notes.txt"), "not part of the package").unwrap();
    std::fs::write(lib.join("draft.js"), "export const draft = 1;").unwrap();
    let files = ConsoleFiles {
        web: dir.clone(),
        pkg: root().join("web/pkg"),
    };
    // The console's routes alone: nothing else of a host is needed to serve them.
    let app = with_console(axum::Router::new(), &files);
    block(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve_with_limits(
            listener,
            app,
            Default::default(),
            std::future::pending(),
        ));
        let c = reqwest::Client::new();
        let status = |path: String| {
            let c = c.clone();
            async move { c.get(path).send().await.unwrap().status().as_u16() }
        };
        for name in PACKAGE_MODULES {
            assert_eq!(status(format!("{base}/lib/{name}")).await, 200, "{name}");
        }
        for other in ["notes.txt", "draft.js", "", "../index.js"] {
            let got = status(format!("{base}/lib/{other}")).await;
            assert_eq!(got, 404, "/lib/{other} answered {got}");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
