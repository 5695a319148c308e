//! Writes are judged as the policy says (X4): what a new entity is given at creation is
//! held to the rules that would hold it later.

use crate::{default_schema, world};
use clearance_core::writes::authorize_writes;
use clearance_core::{Delta, Snapshot, TimeValue};

fn deltas(v: serde_json::Value) -> Vec<Delta> {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
}

/// A new guest record registered for the airline organisation, with `roles` at creation.
fn guest(roles: serde_json::Value) -> Vec<Delta> {
    deltas(serde_json::json!([
        { "op": "add_entity", "entity": { "type": "invitee", "id": "new_guest", "account": "skyways",
          "attrs": { "channel": "sms", "address": "+15550000", "roles": roles } } },
        { "op": "add_tuple", "tuple": { "resource": "invitee:new_guest", "relation": "registered_by", "subject": "organization:skyways_occ" } }
    ]))
}

fn judge(deltas: &[Delta]) -> Result<(), String> {
    judge_as("user:engineer", deltas)
}

fn judge_as(author: &str, deltas: &[Delta]) -> Result<(), String> {
    let schema = default_schema().unwrap_or_else(|e| panic!("{e}"));
    let before_facts = world("airline").unwrap_or_else(|e| panic!("{e}"));
    let after_facts = before_facts.apply(deltas).unwrap_or_else(|e| panic!("{e}"));
    let before = Snapshot::build(schema.clone(), &before_facts).unwrap_or_else(|e| panic!("{e}"));
    let after = Snapshot::build(schema, &after_facts).unwrap_or_else(|e| panic!("{e}"));
    let now = TimeValue::Text("2026-05-01T10:00:00Z".into());
    authorize_writes(&before, &after, author, deltas, &now).map_err(|r| r.code)
}

/// The one write pipeline on the airline world, in place: its answer (the refusal's code
/// and message, or the apply error's) and whether the snapshot was left as it was.
fn write_in_place(author: &str, list: &[Delta]) -> (Result<(), (String, String)>, bool) {
    let schema = default_schema().unwrap_or_else(|e| panic!("{e}"));
    let facts = world("airline").unwrap_or_else(|e| panic!("{e}"));
    let mut snap = Snapshot::build(schema, &facts).unwrap_or_else(|e| panic!("{e}"));
    let before = snap.to_bytes().unwrap_or_else(|e| panic!("{e}"));
    let now = TimeValue::Text("2026-05-01T10:00:00Z".into());
    let answer = match clearance_core::writes::write(&mut snap, author, &now, list) {
        Ok((pending, _)) => {
            snap.rollback(pending);
            Ok(())
        }
        Err(clearance_core::writes::WriteError::Refused(r)) => Err((r.code, r.message)),
        Err(clearance_core::writes::WriteError::Invalid(e)) => Err((e.code, e.message)),
    };
    let same = snap.to_bytes().unwrap_or_else(|e| panic!("{e}")) == before;
    (answer, same)
}

/// An internal user may register a guest (`on create = register`), but roles grant
/// access: a new principal given roles at creation needs the rule that setting them
/// needs (`on set roles`), which guests do not have.
#[test]
fn a_new_principal_cannot_be_given_roles_without_the_rule_for_roles() {
    assert_eq!(judge(&guest(serde_json::json!([]))), Ok(()));
    assert_eq!(
        judge(&guest(serde_json::json!(["administrator"]))),
        Err("write.no_rule".to_string())
    );
}

/// Security review, finding 1: roles given to a principal created in the same write by a
/// second delta (`set_attr roles`) are held to `on set roles` as roles given at creation
/// are; before the fix the second delta was "covered by the creation" and any user made
/// an administrator of its own.
#[test]
fn roles_set_on_a_principal_created_in_the_same_write_need_the_rule_for_roles() {
    let mut list = guest(serde_json::json!([]));
    list.extend(deltas(serde_json::json!([
        { "op": "set_attr", "entity": "invitee:new_guest", "attr": "roles", "value": ["administrator"] }
    ])));
    assert_eq!(judge(&list), Err("write.no_rule".to_string()));
    let (answer, unchanged) = write_in_place("user:engineer", &list);
    assert_eq!(
        answer.map_err(|(code, _)| code),
        Err("write.no_rule".into())
    );
    assert!(unchanged);
    // Setting no role is giving none.
    let mut none = guest(serde_json::json!([]));
    none.extend(deltas(serde_json::json!([
        { "op": "set_attr", "entity": "invitee:new_guest", "attr": "roles", "value": [] }
    ])));
    assert_eq!(judge(&none), Ok(()));
}

/// Security review, finding 6: a guest record is registered only by whoever may invite (an
/// internal user of the organisation it names); a contractor's technician with no role
/// registered any number before.
#[test]
fn only_an_internal_user_registers_a_guest() {
    assert_eq!(
        judge_as("user:occ_controller", &guest(serde_json::json!([]))),
        Ok(())
    );
    assert_eq!(
        judge_as("user:jetfix_tech", &guest(serde_json::json!([]))),
        Err("write.denied".to_string())
    );
    let bare = deltas(serde_json::json!([
        { "op": "add_entity", "entity": { "type": "invitee", "id": "bare", "account": "skyways",
          "attrs": { "channel": "sms", "address": "+15550000" } } }
    ]));
    assert_eq!(
        judge_as("user:occ_controller", &bare),
        Err("write.denied".to_string())
    );
}

/// Security review, finding 2: a write naming an entity of another account is refused
/// before anything is applied, with the answer it gets for an entity that does not
/// exist; before the fix the deltas were applied and the error of applying them named the
/// other tenant's entities, role holders and dates.
#[test]
fn a_write_naming_another_accounts_entity_answers_as_for_one_that_does_not_exist() {
    let cases = [
        // blueair's account, aircraft, a tuple between its entities, and an attribute.
        (
            serde_json::json!([{ "op": "remove_entity", "entity": "account:blueair" }]),
            serde_json::json!([{ "op": "remove_entity", "entity": "account:nowhere" }]),
        ),
        (
            serde_json::json!([{ "op": "remove_entity", "entity": "user:blue_tech" }]),
            serde_json::json!([{ "op": "remove_entity", "entity": "user:no_such_tech" }]),
        ),
        (
            serde_json::json!([{ "op": "set_attr", "entity": "user:blue_owner", "attr": "email", "value": "x@y.example" }]),
            serde_json::json!([{ "op": "set_attr", "entity": "user:no_such_owner", "attr": "email", "value": "x@y.example" }]),
        ),
        (
            serde_json::json!([{ "op": "add_tuple", "tuple": { "resource": "organization:blueair_occ", "relation": "member", "subject": "user:lhr_tech" } }]),
            serde_json::json!([{ "op": "add_tuple", "tuple": { "resource": "organization:no_such_occ", "relation": "member", "subject": "user:lhr_tech" } }]),
        ),
        (
            serde_json::json!([{ "op": "remove_tuple", "tuple": { "resource": "organization:blueair_occ", "relation": "member", "subject": "user:blue_controller" } }]),
            serde_json::json!([{ "op": "remove_tuple", "tuple": { "resource": "organization:no_such_occ", "relation": "member", "subject": "user:blue_controller" } }]),
        ),
        // A creation in another account.
        (
            serde_json::json!([{ "op": "add_entity", "entity": { "type": "station", "id": "x1", "account": "blueair", "attrs": { "code": "X" } } }]),
            serde_json::json!([{ "op": "add_entity", "entity": { "type": "station", "id": "x1", "account": "nowhere", "attrs": { "code": "X" } } }]),
        ),
    ];
    for (there, nowhere) in cases {
        let (a, unchanged) = write_in_place("user:lhr_tech", &deltas(there.clone()));
        let (b, _) = write_in_place("user:lhr_tech", &deltas(nowhere.clone()));
        assert!(unchanged, "{there}");
        let (code, message) = a.expect_err("refused");
        let (code_b, message_b) = b.expect_err("refused");
        assert_eq!(code, "write.outside_account", "{there}: {message}");
        assert_eq!(code_b, code);
        // The messages differ only by the id the caller sent.
        let strip = |m: &str, v: &serde_json::Value| {
            let mut m = m.to_string();
            for id in [
                "account:blueair",
                "user:blue_tech",
                "user:blue_owner",
                "organization:blueair_occ",
                "user:blue_controller",
                "station:x1",
                "account:nowhere",
                "user:no_such_tech",
                "user:no_such_owner",
                "organization:no_such_occ",
            ] {
                m = m.replace(id, "ID");
            }
            assert!(
                !m.contains("blueair") || v.to_string().contains("blueair"),
                "{m}"
            );
            m
        };
        assert_eq!(strip(&message, &there), strip(&message_b, &nowhere));
        assert!(
            !message.contains("blue_aog") && !message.contains("squawk"),
            "{message}"
        );
    }
}

/// Security review, finding 2: a refused write answers with its refusal, even when its
/// deltas would not apply: nothing is applied to find out.
#[test]
fn a_refused_write_answers_with_the_refusal_alone() {
    // The technician may not remove the assignment; the tuple after it does not exist.
    let list = deltas(serde_json::json!([
        { "op": "remove_tuple", "tuple": { "resource": "event:aog_lhr", "relation": "owner_org", "subject": "organization:skyways_occ" } },
        { "op": "remove_tuple", "tuple": { "resource": "event:aog_lhr", "relation": "guest", "subject": "invitee:g_sms" } },
        { "op": "remove_tuple", "tuple": { "resource": "event:aog_lhr", "relation": "guest", "subject": "invitee:g_sms" } }
    ]));
    let (answer, unchanged) = write_in_place("user:lhr_tech", &list);
    assert!(unchanged);
    let (code, message) = answer.expect_err("refused");
    assert!(code.starts_with("write."), "{code}: {message}");
}

/// Security review, finding 6: a new entity's id is 1 to 128 ASCII letters, digits, `_`,
/// `-` or `.`; a 900 KB id, a line break, the `#@:` of tuples and a zero-width space were
/// accepted before.
#[test]
fn a_new_entity_needs_an_id_of_plain_characters() {
    let long = "x".repeat(129);
    for id in ["a\nb", "x#guest@user:ops_manager", "g_sms\u{200b}", &long] {
        let list = deltas(serde_json::json!([
            { "op": "add_entity", "entity": { "type": "invitee", "id": id, "account": "skyways",
              "attrs": { "channel": "sms", "address": "+15550000" } } },
            { "op": "add_tuple", "tuple": { "resource": format!("invitee:{id}"), "relation": "registered_by", "subject": "organization:skyways_occ" } }
        ]));
        let (answer, unchanged) = write_in_place("user:occ_controller", &list);
        assert!(unchanged);
        assert_eq!(
            answer.map_err(|(code, _)| code),
            Err("facts.invalid_id".into()),
            "{id:?}"
        );
    }
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
