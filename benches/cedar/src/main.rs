//! Clearance and Cedar side by side on the same generated world and the same requests.
//!
//! The rules of the default policies are written in Cedar (`policies/base.cedar`, as a
//! Cedar user would: entity hierarchies for memberships and per-aircraft grants, `forbid`
//! for gates and tenancy), and the access-rights matrices become Cedar data (roles and
//! grants as entities, pages naming their grants) with one policy per page action and per
//! record permission, generated from the compiled matrices (`matrices.cedar`, written to
//! the target directory). Every request is decided by both engines; the run fails unless every decision
//! is the same. Then both are timed per check, Cedar twice: with one policy set, and with
//! the policies split by action (the faster way to use Cedar's authorizer).
//!
//! `cargo run --release --manifest-path benches/cedar/Cargo.toml -- [small|medium] [requests] [--decisions-only]`
//!
//! `--decisions-only` compares the decisions and skips the timings (what `cargo xtask
//! test` runs, on the small world, in a debug build).

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Entities, EntityUid, PolicySet,
    Request as CedarRequest, RestrictedExpression,
};
use clearance_benches::{MEDIUM, SMALL, default_schema, percentiles, snapshot, world};
use clearance_core::facts::FactsJson;
use clearance_core::policy::{Expr, LEVEL_ACTIONS, Schema};
use clearance_core::{Request, TimeValue};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

/// Clearance type → Cedar entity type, for the types the comparison covers.
const TYPES: &[(&str, &str)] = &[
    ("account", "Account"),
    ("user", "User"),
    ("invitee", "Invitee"),
    ("organization", "Organization"),
    ("event", "Event"),
    ("aircraft", "Aircraft"),
    ("squawk", "Squawk"),
    ("maintenance_entry", "MaintenanceEntry"),
    ("flight", "Flight"),
    ("ops_aircraft", "OpsAircraft"),
    ("operator", "Operator"),
    ("person", "Person"),
];

/// The per-aircraft grant groups: each grant role and the derived groups it belongs to
/// (`scope`s and `read` of policies/aircraft.policy as a hierarchy).
const GRANT_PARENTS: &[(&str, &[&str])] = &[
    ("owner", &["any_record"]),
    ("co_owner", &["any_record"]),
    ("mechanic_full", &["any_record"]),
    ("pilot_all_squawks", &["any_squawk"]),
    ("pilot_own_records", &["own_record"]),
    ("mechanic_own_records", &["own_record"]),
    ("pilot_own_squawks", &["own_squawk"]),
    ("mechanic_read", &["reader"]),
    ("visitor", &["reader"]),
    ("any_record", &["any_squawk"]),
    ("any_squawk", &["reader"]),
    ("own_record", &["own_squawk"]),
    ("own_squawk", &["reader"]),
    ("reader", &[]),
];

/// Record scopes of the operations policy as Cedar conditions.
fn scope_condition(ty: &str, scope: &str) -> Option<&'static str> {
    Some(match (ty, scope) {
        ("flight", "crew") => "resource.crew_members.contains(principal)",
        ("flight", "owner") => "resource.aircraft.owned_by == principal",
        ("flight", "operator") => "resource.operated_by.dispatchers.contains(principal)",
        ("ops_aircraft", "owner") => "resource.owned_by == principal",
        ("ops_aircraft", "operator") => "resource.operated_by.dispatchers.contains(principal)",
        ("person", "self") => "resource.linked_user == principal",
        ("person", "owned_crew") => "resource.assigned_aircraft.owned_by == principal",
        _ => return None,
    })
}

fn cedar_type(ty: &str) -> Option<&'static str> {
    TYPES.iter().find(|(t, _)| *t == ty).map(|(_, c)| *c)
}

fn uid_json(ty: &str, id: &str) -> Value {
    json!({ "__entity": { "type": ty, "id": id } })
}

fn split_name(name: &str) -> (&str, &str) {
    name.split_once(':').unwrap_or((name, ""))
}

/// A `type:id` name as a Cedar entity reference, if its type is covered.
fn ref_of(name: &str) -> Option<Value> {
    let (ty, id) = split_name(name);
    cedar_type(ty).map(|c| uid_json(c, id))
}

/// The generated world's facts as Cedar entities (JSON).
fn entities_json(doc: &FactsJson) -> Value {
    let mut rels: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    let mut member_of: HashMap<&str, Vec<Value>> = HashMap::new();
    let mut groups = Vec::new();
    for t in &doc.tuples {
        rels.entry((t.resource.as_str(), t.relation.as_str()))
            .or_default()
            .push(t.subject.as_str());
        let (rty, rid) = split_name(&t.resource);
        if rty == "organization" && t.relation == "member" {
            member_of
                .entry(t.subject.as_str())
                .or_default()
                .push(uid_json("Organization", rid));
        }
        if rty == "aircraft" && GRANT_PARENTS.iter().any(|(g, _)| *g == t.relation) {
            member_of
                .entry(t.subject.as_str())
                .or_default()
                .push(uid_json("AircraftGroup", &format!("{rid}#{}", t.relation)));
        }
    }
    let one = |name: &str, rel: &str| -> Option<Value> {
        rels.get(&(name, rel))
            .and_then(|v| v.first())
            .and_then(|s| ref_of(s))
    };
    let set = |name: &str, rel: &str| -> Value {
        Value::Array(
            rels.get(&(name, rel))
                .map(|v| v.iter().filter_map(|s| ref_of(s)).collect())
                .unwrap_or_default(),
        )
    };
    let mut out = Vec::new();
    for e in &doc.entities {
        let Some(cty) = cedar_type(&e.ty) else {
            continue;
        };
        let name = format!("{}:{}", e.ty, e.id);
        let mut attrs = serde_json::Map::new();
        let mut parents = Vec::new();
        if let Some(a) = &e.account {
            attrs.insert("account".into(), uid_json("Account", a));
        }
        let attr = |k: &str| e.attrs.get(k).cloned();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                attrs.insert(k.into(), v);
            }
        };
        match e.ty.as_str() {
            "account" => {
                put("features", attr("features").or(Some(json!([]))));
                put("setup_mode", attr("setup_mode").or(Some(json!(false))));
            }
            "user" => {
                put("status", attr("status"));
                put("invitation", attr("invitation"));
                if let Some(Value::Array(roles)) = attr("roles") {
                    for r in roles.iter().filter_map(Value::as_str) {
                        parents.push(uid_json("Role", r));
                    }
                }
                parents.extend(member_of.get(name.as_str()).cloned().unwrap_or_default());
            }
            "invitee" => put("revoked", Some(attr("revoked").unwrap_or(json!(false)))),
            "organization" => put("kind", attr("kind")),
            "event" => {
                put("owner_org", one(&name, "owner_org"));
                put("assigned", Some(set(&name, "assigned")));
                put("guests", Some(set(&name, "guest")));
                put("ends_at", attr("ends_at"));
            }
            "aircraft" => {
                for (g, ps) in GRANT_PARENTS {
                    let gid = format!("{}#{g}", e.id);
                    groups.push(json!({
                        "uid": { "type": "AircraftGroup", "id": gid },
                        "attrs": {},
                        "parents": ps.iter().map(|p| json!({ "type": "AircraftGroup", "id": format!("{}#{p}", e.id) })).collect::<Vec<_>>(),
                    }));
                    put(g, Some(uid_json("AircraftGroup", &gid)));
                }
            }
            "squawk" | "maintenance_entry" => {
                put("aircraft", one(&name, "aircraft"));
                put("created_by", one(&name, "created_by"));
            }
            "flight" => {
                put("crew_members", Some(set(&name, "crew_member")));
                put("aircraft", one(&name, "aircraft"));
                put("operated_by", one(&name, "operated_by"));
            }
            "ops_aircraft" => {
                put("owned_by", one(&name, "owned_by"));
                put("operated_by", one(&name, "operated_by"));
            }
            "operator" => put("dispatchers", Some(set(&name, "dispatcher"))),
            "person" => {
                put("linked_user", one(&name, "linked_user"));
                put("assigned_aircraft", one(&name, "assigned_aircraft"));
            }
            _ => {}
        }
        out.push(json!({ "uid": { "type": cty, "id": e.id }, "attrs": attrs, "parents": parents }));
    }
    out.extend(groups);
    Value::Array(out)
}

/// The access-rights matrices as Cedar data and policies, the way Cedar's documentation
/// does role-based access: permissions are entities (`Grant::"<matrix>:<row>:<action>"`
/// for a page, `...@all` for every record, `...@<scope>` for records where a scope holds),
/// each role is an entity whose parents are the grants of its cells, and users are members
/// of their roles; pages are entities naming the grant of each action. Then one policy per
/// page action and one per record permission decide everything by `in` tests. Controlled
/// (row, action) pairs are left out: their requests are not compared.
struct Rbac {
    policies: String,
    entities: Vec<Value>,
    controlled: BTreeSet<(String, String)>,
}

fn rbac(schema: &Schema) -> Rbac {
    let mut policies = String::new();
    let mut grants: BTreeSet<String> = BTreeSet::new();
    let mut entities = Vec::new();
    let mut controlled = BTreeSet::new();
    let mut page_actions: BTreeSet<String> = BTreeSet::new();
    let guard = |row: &clearance_core::policy::RowDef| -> (Option<String>, bool) {
        let feature = row
            .feature
            .and_then(|f| schema.literals.get(f as usize).cloned());
        (feature, row.setup_only)
    };
    for (mi, m) in schema.matrices.iter().enumerate() {
        for c in &m.controls {
            if let Some(row) = m.rows.get(c.row as usize) {
                controlled.insert((
                    format!("{}:{}", m.name, row.name),
                    action_name(m.levels, &m.actions, c.action),
                ));
            }
        }
        // Pages: each names the grant of every action it takes.
        for (ri, row) in m.rows.iter().enumerate() {
            let page = format!("{}:{}", m.name, row.name);
            let mut attrs = serde_json::Map::new();
            let bits = m.row_actions(ri as u16);
            for b in (0..32u8).filter(|b| bits & (1 << b) != 0) {
                let a = action_name(m.levels, &m.actions, b);
                if controlled.contains(&(page.clone(), a.clone())) {
                    continue;
                }
                let g = format!("{page}:{a}");
                attrs.insert(a.clone(), uid_json("Grant", &g));
                grants.insert(g);
                page_actions.insert(a);
            }
            let (feature, setup_only) = guard(row);
            if let Some(f) = feature {
                attrs.insert("feature".into(), json!(f));
            }
            attrs.insert("setup_only".into(), json!(setup_only));
            entities.push(
                json!({ "uid": { "type": "Page", "id": page }, "attrs": attrs, "parents": [] }),
            );
        }
        // Roles: their cells as grants.
        for role in schema.roles.iter().filter(|r| r.matrix as usize == mi) {
            let mut parents = Vec::new();
            for cell in &role.cells {
                let Some(row) = m.rows.get(cell.row as usize) else {
                    continue;
                };
                for b in 0..32u8 {
                    let a = action_name(m.levels, &m.actions, b);
                    let base = format!("{}:{}:{a}", m.name, row.name);
                    if cell.page & (1 << b) != 0 {
                        parents.push(base.clone());
                    }
                    if cell.record & (1 << b) != 0 {
                        if cell.scopes.is_empty() {
                            parents.push(format!("{base}@all"));
                        }
                        for si in &cell.scopes {
                            if let Some(scope) = row.scopes.get(*si as usize) {
                                parents.push(format!("{base}@{scope}"));
                            }
                        }
                    }
                }
            }
            grants.extend(parents.iter().cloned());
            entities.push(json!({
                "uid": { "type": "Role", "id": role.name },
                "attrs": {},
                "parents": parents.iter().map(|g| json!({ "type": "Grant", "id": g })).collect::<Vec<_>>(),
            }));
        }
        // Record permissions that are one cell check: one policy each.
        for t in &schema.types {
            let Some(cty) = cedar_type(&t.name) else {
                continue;
            };
            for p in &t.perms {
                let Expr::Matrix {
                    matrix,
                    row,
                    action,
                    scopes,
                    ..
                } = &p.expr
                else {
                    continue;
                };
                if *matrix as usize != mi {
                    continue;
                }
                let Some(rd) = m.rows.get(*row as usize) else {
                    continue;
                };
                let a = action_name(m.levels, &m.actions, *action);
                let base = format!("{}:{}:{a}", m.name, rd.name);
                let mut ways = vec![format!("principal in Grant::\"{base}@all\"")];
                grants.insert(format!("{base}@all"));
                for (si, ti) in scopes.iter().enumerate() {
                    let (Some(scope), Some(sc)) = (rd.scopes.get(si), t.scopes.get(*ti as usize))
                    else {
                        continue;
                    };
                    if let Some(cond) = scope_condition(&t.name, &sc.name) {
                        grants.insert(format!("{base}@{scope}"));
                        ways.push(format!(
                            "(principal in Grant::\"{base}@{scope}\" && {cond})"
                        ));
                    }
                }
                let (feature, setup_only) = guard(rd);
                let mut when = format!("({})", ways.join(" || "));
                if let Some(f) = feature {
                    when += &format!(" && principal.account.features.contains(\"{f}\")");
                }
                if setup_only {
                    when += " && principal.account.setup_mode";
                }
                policies += &format!(
                    "permit (principal, action == Action::\"{}.{}\", resource is {cty})\nwhen {{ {when} }};\n\n",
                    t.name, p.name
                );
            }
        }
    }
    for a in &page_actions {
        policies += &format!(
            "permit (principal, action == Action::\"page.{a}\", resource is Page)\nwhen {{\n  resource has {a} && principal in resource.{a} &&\n  (!(resource has feature) || principal.account.features.contains(resource.feature)) &&\n  (!resource.setup_only || principal.account.setup_mode)\n}};\n\n"
        );
    }
    for g in grants {
        entities.push(json!({ "uid": { "type": "Grant", "id": g }, "attrs": {}, "parents": [] }));
    }
    Rbac {
        policies,
        entities,
        controlled,
    }
}

fn action_name(levels: bool, actions: &[String], bit: u8) -> String {
    if levels {
        LEVEL_ACTIONS
            .get(bit as usize)
            .map(|s| s.to_string())
            .unwrap_or_default()
    } else {
        actions.get(bit as usize).cloned().unwrap_or_default()
    }
}

/// A request in Cedar's terms, or why it is not compared.
fn cedar_request(
    schema: &Schema,
    controlled: &BTreeSet<(String, String)>,
    r: &Request,
) -> Result<CedarRequest, &'static str> {
    let (pty, pid) = split_name(&r.principal);
    let principal = cedar_type(pty).ok_or("principal type not covered")?;
    let (rty, rid) = split_name(&r.resource);
    let (action, resource) = if schema.matrix_index.contains_key(rty) {
        if controlled.contains(&(r.resource.clone(), r.action.clone())) {
            return Err("controlled action (needs a personnel authorisation)");
        }
        (
            format!("page.{}", r.action),
            format!("Page::{:?}", r.resource),
        )
    } else {
        let c = cedar_type(rty).ok_or("resource type not covered (work orders, tasks)")?;
        (format!("{rty}.{}", r.action), format!("{c}::{rid:?}"))
    };
    let uid = |s: String| EntityUid::from_str(&s).map_err(|_| "unparsable name");
    let now = match &r.now {
        TimeValue::Seconds(s) => *s,
        _ => return Err("time not in seconds"),
    };
    let context = Context::from_pairs([("now".to_string(), RestrictedExpression::new_long(now))])
        .map_err(|_| "context")?;
    CedarRequest::new(
        uid(format!("{principal}::{pid:?}"))?,
        uid(format!("Action::{action:?}"))?,
        uid(resource)?,
        context,
        None,
    )
    .map_err(|_| "request")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scale = match args.first().map(String::as_str) {
        Some("small") => SMALL,
        Some("medium") | None => MEDIUM,
        Some(other) => {
            eprintln!("unknown scale `{other}`: small or medium");
            return ExitCode::from(2);
        }
    };
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let schema = default_schema();
    let w = world(scale, 42);
    let snap = snapshot(&schema, &w);
    let Rbac {
        policies: roles,
        entities: rbac_entities,
        controlled,
    } = rbac(&schema);
    let base = include_str!("../policies/base.cedar");
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("cedar");
    let _ = std::fs::create_dir_all(&out_dir);
    let _ = std::fs::write(out_dir.join("matrices.cedar"), &roles);
    println!(
        "cedar policies for the matrices: {}",
        out_dir.join("matrices.cedar").display()
    );
    let policies = match PolicySet::from_str(&format!("{base}\n{roles}")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("the Cedar policies do not parse: {e:?}");
            return ExitCode::FAILURE;
        }
    };
    let t = Instant::now();
    let mut all = match entities_json(&w.facts.to_doc()) {
        Value::Array(v) => v,
        _ => Vec::new(),
    };
    all.extend(rbac_entities);
    let entities = match Entities::from_json_value(Value::Array(all), None) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("the Cedar entities do not load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cedar_load = t.elapsed();
    // The faster way: one policy set per action, each with the policies that can apply.
    let mut split: HashMap<EntityUid, PolicySet> = HashMap::new();
    let mut any = Vec::new();
    let mut by_action: HashMap<EntityUid, Vec<cedar_policy::Policy>> = HashMap::new();
    for p in policies.policies() {
        match p.action_constraint() {
            ActionConstraint::Any => any.push(p.clone()),
            ActionConstraint::Eq(a) => by_action.entry(a).or_default().push(p.clone()),
            ActionConstraint::In(list) => {
                for a in list {
                    by_action.entry(a).or_default().push(p.clone());
                }
            }
        }
    }
    for (a, list) in by_action {
        let mut set = PolicySet::new();
        for p in any.iter().chain(list.iter()) {
            let _ = set.add(p.clone());
        }
        split.insert(a, set);
    }
    let empty_with_forbids = {
        let mut set = PolicySet::new();
        for p in &any {
            let _ = set.add(p.clone());
        }
        set
    };
    let requests = w.requests(n, 7);
    let mut excluded: BTreeMap<&str, usize> = BTreeMap::new();
    let mut pairs = Vec::new();
    for r in &requests {
        match cedar_request(&schema, &controlled, r) {
            Ok(c) => pairs.push((r, c)),
            Err(why) => *excluded.entry(why).or_default() += 1,
        }
    }
    let authorizer = Authorizer::new();
    let split_for = |c: &CedarRequest| {
        c.action()
            .and_then(|a| split.get(a))
            .unwrap_or(&empty_with_forbids)
    };
    let mut mismatches = Vec::new();
    let mut allowed = 0usize;
    for (r, c) in &pairs {
        let ours = snap.check(r).allowed;
        let theirs =
            authorizer.is_authorized(c, &policies, &entities).decision() == Decision::Allow;
        let theirs_split = authorizer
            .is_authorized(c, split_for(c), &entities)
            .decision()
            == Decision::Allow;
        allowed += usize::from(ours);
        if ours != theirs || ours != theirs_split {
            mismatches.push(format!(
                "{} {} {}: clearance {ours}, cedar {theirs}, cedar split {theirs_split}",
                r.principal, r.action, r.resource
            ));
        }
    }
    println!(
        "cedar scale={} world: {} entities, {} tuples; Cedar: {} entities loaded in {:.0} ms, {} policies ({} for the matrices), split by action into {} sets",
        scale.name,
        snap.names.len(),
        snap.tuple_count(),
        entities.iter().count(),
        cedar_load.as_secs_f64() * 1e3,
        policies.policies().count(),
        roles.matches("permit").count(),
        split.len()
    );
    println!(
        "cedar requests={} compared={} allowed={:.1}% identical={} mismatches={} not compared: {:?}",
        requests.len(),
        pairs.len(),
        allowed as f64 * 100.0 / pairs.len().max(1) as f64,
        pairs.len() - mismatches.len(),
        mismatches.len(),
        excluded
    );
    for m in mismatches.iter().take(20) {
        println!("cedar mismatch: {m}");
    }
    if !mismatches.is_empty() {
        return ExitCode::FAILURE;
    }
    if args.iter().any(|a| a == "--decisions-only") {
        return ExitCode::SUCCESS;
    }
    let pairs: Vec<_> = pairs
        .into_iter()
        .filter(|(r, _)| snap.resolve(r).is_ok())
        .collect();
    let queries: Vec<_> = pairs
        .iter()
        .filter_map(|(r, _)| snap.resolve(r).ok())
        .collect();
    // Interleaved per request (Clearance resolved, by name, Cedar one set, Cedar split),
    // so a noisy machine slows every engine alike; percentiles over the requests.
    let mut times: [Vec<f64>; 4] = Default::default();
    let time = |reps: u32, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(reps)
    };
    for ((r, c), q) in pairs.iter().zip(&queries) {
        times[0].push(time(32, &mut || {
            std::hint::black_box(snap.decide(q));
        }));
        times[1].push(time(16, &mut || {
            std::hint::black_box(snap.check(r));
        }));
        times[2].push(time(2, &mut || {
            std::hint::black_box(authorizer.is_authorized(c, &policies, &entities));
        }));
        times[3].push(time(4, &mut || {
            std::hint::black_box(authorizer.is_authorized(c, split_for(c), &entities));
        }));
    }
    let [t0, t1, t2, t3] = times;
    let (ours_p50, ours_p99) = percentiles(t0);
    let (named_p50, named_p99) = percentiles(t1);
    let (cedar_p50, cedar_p99) = percentiles(t2);
    let (split_p50, split_p99) = percentiles(t3);
    println!(
        "cedar per check p50/p99: clearance resolved {ours_p50:.0}/{ours_p99:.0} ns, by name {named_p50:.0}/{named_p99:.0} ns; cedar one set {cedar_p50:.0}/{cedar_p99:.0} ns, split by action {split_p50:.0}/{split_p99:.0} ns"
    );
    println!(
        "cedar ratio (p50, cedar / clearance): one set {:.0}x resolved, {:.0}x by name; split by action {:.0}x resolved, {:.0}x by name",
        cedar_p50 / ours_p50,
        cedar_p50 / named_p50,
        split_p50 / ours_p50,
        split_p50 / named_p50
    );
    ExitCode::SUCCESS
}
