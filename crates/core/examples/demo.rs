//! A tour of the engine on the demo data: the access-rights matrix produced from the
//! default policies, then decisions with their explanations.
//!
//! `cargo run --release -p clearance-core --example demo`

use clearance_core::{Facts, Request, Schema, Snapshot, Source, TimeValue};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<_> = std::fs::read_dir(root.join("policies"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.retain(|p| p.extension().is_some_and(|x| x == "policy"));
    files.sort();
    let sources = files
        .iter()
        .map(|p| {
            Ok(Source::new(
                format!(
                    "policies/{}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                ),
                std::fs::read_to_string(p).map_err(|e| e.to_string())?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let schema = Arc::new(Schema::compile(&sources).map_err(|e| e.to_string())?);
    println!(
        "policy set {} ({} files, {} types, {} roles)\n",
        &schema.hash_hex()[..16],
        sources.len(),
        schema.types.len(),
        schema.roles.len()
    );

    let ops = load(&root, &schema, "operations")?;
    let m = ops.matrix("operations", None).map_err(|e| e.to_string())?;
    println!("The operations access-rights matrix (roles x pages):\n");
    let width = m.rows.iter().map(|r| r.len()).max().unwrap_or(8).max(10);
    print!("{:<24}", "");
    for r in &m.rows {
        print!("{:<w$}", &r[..r.len().min(width)], w = width + 1);
    }
    println!();
    for role in &m.roles {
        print!("{:<24}", role.name);
        for c in &role.cells {
            let short: String = c.chars().take(width).collect();
            print!("{:<w$}", short, w = width + 1);
        }
        println!();
    }

    let airline = load(&root, &schema, "airline")?;
    println!("\nDecisions on the airline world, explained:\n");
    let now = TimeValue::Text("2026-05-01T10:00:00Z".into());
    for (p, a, r) in [
        ("user:aeroserv_tech", "view", "event:aog_lhr"),
        ("user:jetfix_tech", "view", "event:aog_lhr"),
        ("invitee:g_sms", "view", "event:aog_lhr"),
        ("user:former_controller", "view", "event:aog_lhr"),
    ] {
        let req = Request {
            principal: p.into(),
            action: a.into(),
            resource: r.into(),
            target: None,
            now: now.clone(),
        };
        let ex = airline.explain(&req);
        let d = &ex.decision;
        println!(
            "{p} {a} {r}: {}{}",
            if d.allowed { "ALLOW" } else { "DENY" },
            d.valid_until
                .as_ref()
                .map(|v| format!(" (until {v})"))
                .unwrap_or_default()
        );
        for reason in &d.reasons {
            println!("    {:<22} {}", reason.code, reason.message);
        }
    }
    Ok(())
}

fn load(root: &Path, schema: &Arc<Schema>, world: &str) -> Result<Snapshot, String> {
    let text = std::fs::read_to_string(root.join(format!("tests/worlds/{world}.json")))
        .map_err(|e| e.to_string())?;
    let facts = Facts::from_json(&text).map_err(|e| e.to_string())?;
    Snapshot::build(Arc::clone(schema), &facts).map_err(|e| e.to_string())
}
