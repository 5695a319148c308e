//! Writes are judged as the policy says (X4): what a new entity is given at creation is
//! held to the rules that would hold it later.

use crate::{default_schema, world};
use clearance_core::writes::authorize_writes;
use clearance_core::{Delta, Snapshot, TimeValue};

fn guest(roles: serde_json::Value) -> Vec<Delta> {
    serde_json::from_value(serde_json::json!([
        { "op": "add_entity", "entity": { "type": "invitee", "id": "new_guest", "account": "skyways",
          "attrs": { "channel": "sms", "address": "+15550000", "roles": roles } } }
    ]))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn judge(deltas: &[Delta]) -> Result<(), String> {
    let schema = default_schema().unwrap_or_else(|e| panic!("{e}"));
    let before_facts = world("airline").unwrap_or_else(|e| panic!("{e}"));
    let after_facts = before_facts.apply(deltas).unwrap_or_else(|e| panic!("{e}"));
    let before = Snapshot::build(schema.clone(), &before_facts).unwrap_or_else(|e| panic!("{e}"));
    let after = Snapshot::build(schema, &after_facts).unwrap_or_else(|e| panic!("{e}"));
    let now = TimeValue::Text("2026-05-01T10:00:00Z".into());
    authorize_writes(&before, &after, "user:engineer", deltas, &now).map_err(|r| r.code)
}

/// Anyone may register a guest (`on create = register`), but roles grant access: a new
/// principal given roles at creation needs the rule that setting them needs
/// (`on set roles`), which guests do not have.
#[test]
fn a_new_principal_cannot_be_given_roles_without_the_rule_for_roles() {
    assert_eq!(judge(&guest(serde_json::json!([]))), Ok(()));
    assert_eq!(
        judge(&guest(serde_json::json!(["administrator"]))),
        Err("write.no_rule".to_string())
    );
}
