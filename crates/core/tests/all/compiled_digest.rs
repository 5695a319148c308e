//! A guard for refactors of the compiler and the snapshot: the shipped policies compiled,
//! the demo worlds (`tests/worlds/*.json`, merged) built into one snapshot, and the
//! SHA-256 of the snapshot's bytes and of every rule (its id, owner, text and place)
//! pinned. A change that alters either changes what a decision names or what a snapshot
//! holds, so it is not a refactor: update the digests only with a change of behaviour.

use clearance_core::facts::FactsJson;
use clearance_core::{Facts, Schema, Snapshot, Source};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The policy hash of `policies/`, as `clearance validate` prints it.
const POLICY_HASH: &str = "a94af34f69ec0c03d437173c93806a7d7166b1b07c77fce89807385bb4a334a7";
/// The SHA-256 of the merged demo worlds' snapshot bytes.
const SNAPSHOT_DIGEST: &str = "34e9f4a88fa518a0b6d953013d83a22209783f58262ec22a1ada5a0d01f109bf";
/// The SHA-256 of the rules, in id order.
const RULES_DIGEST: &str = "d8ed5a1a47c82e27a96be830cd3e1c89e44d8405212aba02d26f9eaf86f672d2";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// The policies as the CLI and the test suite name them (`policies/<file>`).
fn schema() -> Arc<Schema> {
    let sources: Vec<Source> = files("policies", "policy")
        .iter()
        .map(|p| {
            let name = format!("policies/{}", p.file_name().unwrap().to_string_lossy());
            Source::new(name, std::fs::read_to_string(p).unwrap())
        })
        .collect();
    Arc::new(Schema::compile(&sources).unwrap())
}

/// Every world's entities and tuples, in file order (the worlds share no entity).
fn merged_worlds() -> Facts {
    let mut doc = FactsJson::default();
    for p in files("tests/worlds", "json") {
        let w: FactsJson = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        doc.revision = doc.revision.max(w.revision);
        doc.entities.extend(w.entities);
        doc.tuples.extend(w.tuples);
    }
    Facts::from_doc(doc).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_demo_snapshot_and_the_rules_are_unchanged() {
    let schema = schema();
    let snapshot = Snapshot::build(Arc::clone(&schema), &merged_worlds()).unwrap();
    let bytes = snapshot.to_bytes().unwrap();
    let snapshot_digest = hex(&Sha256::digest(&bytes));
    let mut rules = Sha256::new();
    for (id, r) in schema.rules.iter().enumerate() {
        rules.update(format!("{id}\t{}\t{}\t{}\n", r.owner, r.text, r.span).as_bytes());
    }
    let rules_digest = hex(&rules.finalize());
    println!("policy hash {}", schema.hash_hex());
    println!("snapshot digest {snapshot_digest} ({} bytes)", bytes.len());
    println!("rules digest {rules_digest} ({} rules)", schema.rules.len());
    assert_eq!(schema.hash_hex(), POLICY_HASH);
    assert_eq!(snapshot_digest, SNAPSHOT_DIGEST);
    assert_eq!(rules_digest, RULES_DIGEST);
}
