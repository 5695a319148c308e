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

/// OP6: removing a custom access-right type still held is refused, in place (the write
/// pipeline the host and the module run) and by a rebuild alike, naming every holder;
/// the snapshot is left as it was.
#[test]
fn removing_a_held_custom_type_names_every_holder() {
    let schema = default_schema().unwrap_or_else(|e| panic!("{e}"));
    let mut facts = world("operations").unwrap_or_else(|e| panic!("{e}"));
    // A second holder, so the message names more than the first one met.
    facts
        .extend(
            &serde_json::from_value::<Vec<Delta>>(serde_json::json!([
                { "op": "set_attr", "entity": "user:a_crew", "attr": "roles", "value": ["crew", "night_dispatch"] }
            ]))
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let remove: Vec<Delta> = serde_json::from_value(serde_json::json!([
        { "op": "remove_entity", "entity": "role:night_dispatch" }
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    let mut snap = Snapshot::build(schema.clone(), &facts).unwrap_or_else(|e| panic!("{e}"));
    let before = snap.to_bytes().unwrap_or_else(|e| panic!("{e}"));
    let now = TimeValue::Text("2026-05-01T10:00:00Z".into());
    let in_place =
        match clearance_core::writes::write(&mut snap, "user:a_administrator", &now, &remove) {
            Err(clearance_core::writes::WriteError::Invalid(e)) => e,
            other => panic!("expected the removal refused as invalid, got {other:?}"),
        };
    assert_eq!(in_place.code, "facts.unknown_role");
    for holder in ["user:a_night_dispatch", "user:a_crew"] {
        assert!(in_place.message.contains(holder), "{}", in_place.message);
    }
    assert_eq!(snap.to_bytes().unwrap_or_else(|e| panic!("{e}")), before);
    let rebuilt = facts
        .apply(&remove)
        .and_then(|f| Snapshot::build(schema, &f))
        .map(|_| ())
        .expect_err("a rebuild takes the removal");
    assert_eq!(rebuilt.code, "facts.unknown_role");
    for holder in ["user:a_night_dispatch", "user:a_crew"] {
        assert!(rebuilt.message.contains(holder), "{}", rebuilt.message);
    }
}

/// Separation of duties: the denial names the conflicting relation and the principal.
#[test]
fn a_duty_conflict_names_the_relation_and_the_principal() {
    let schema = default_schema().unwrap_or_else(|e| panic!("{e}"));
    let deltas: Vec<Delta> = serde_json::from_value(serde_json::json!([
        { "op": "set_attr", "entity": "task:t_n1", "attr": "independent_inspection", "value": true },
        { "op": "add_tuple", "tuple": { "resource": "task:t_n1", "relation": "performed_by", "subject": "user:n_technician" } }
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    let facts = world("maintenance")
        .unwrap_or_else(|e| panic!("{e}"))
        .apply(&deltas)
        .unwrap_or_else(|e| panic!("{e}"));
    let snap = Snapshot::build(schema, &facts).unwrap_or_else(|e| panic!("{e}"));
    let request = clearance_core::Request {
        principal: "user:n_technician".into(),
        action: "inspect".into(),
        resource: "task:t_n1".into(),
        target: None,
        now: TimeValue::Text("2026-05-01T10:00:00Z".into()),
    };
    let view = snap.explain(&request).decision;
    assert!(!view.allowed);
    let conflict = view
        .reasons
        .iter()
        .find(|r| r.code == "duty.conflict")
        .unwrap_or_else(|| panic!("{view:?}"));
    assert!(
        conflict.message.contains("performed_by"),
        "{}",
        conflict.message
    );
    assert!(
        conflict.message.contains("user:n_technician"),
        "{}",
        conflict.message
    );
    assert_eq!(conflict.rule, "task.inspect");
}
