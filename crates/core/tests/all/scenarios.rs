//! Runs every scenario file against the default policies, and checks that every
//! requirement has a scenario.

use crate::{default_schema, requirement_ids, root, scenario_files};
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn every_scenario_decides_as_expected() {
    let schema = default_schema().unwrap_or_else(|e| panic!("default policies do not load:\n{e}"));
    let files = scenario_files().unwrap_or_else(|e| panic!("{e}"));
    let known: BTreeSet<String> = requirement_ids()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .collect();
    let mut failures = Vec::new();
    let mut names = BTreeMap::new();
    let mut count = 0;
    for (file, scenario) in &files {
        for case in &scenario.case {
            count += 1;
            if let Some(other) = names.insert(case.name.clone(), file.clone()) {
                failures.push(format!(
                    "{file}: case `{}` has the name of a case in {other}",
                    case.name
                ));
            }
            if case.requirements.is_empty() {
                failures.push(format!("{file}: case `{}` names no requirement", case.name));
            }
            for r in &case.requirements {
                if !known.contains(r) {
                    failures.push(format!(
                        "{file}: case `{}` names unknown requirement `{r}`",
                        case.name
                    ));
                }
            }
        }
        match clearance_scenarios::run_file(&schema, &root().join("tests/worlds"), scenario) {
            Ok(outcomes) => failures.extend(
                outcomes
                    .into_iter()
                    .filter_map(|(name, o)| o.err().map(|e| format!("{file}: {name}: {e}"))),
            ),
            Err(e) => failures.push(format!("{file}: {e}")),
        }
    }
    println!("{count} scenario cases in {} files", files.len());
    assert!(
        failures.is_empty(),
        "{} of {count} scenario cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_requirement_has_a_scenario_and_there_are_enough() {
    let ids = requirement_ids().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ids.len() >= 38,
        "docs/requirements.md lists {} requirements, expected 38",
        ids.len()
    );
    let files = scenario_files().unwrap_or_else(|e| panic!("{e}"));
    let covered: BTreeSet<&String> = files
        .iter()
        .flat_map(|(_, f)| f.case.iter())
        .flat_map(|c| c.requirements.iter())
        .collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !covered.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "requirements without a scenario: {missing:?}"
    );
    let count: usize = files.iter().map(|(_, f)| f.case.len()).sum();
    assert!(
        count >= 200,
        "{count} scenario cases, expected at least 200"
    );
}
