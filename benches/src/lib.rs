//! The generator of realistic worlds and request mixes for benchmarks, under the default
//! policies: airlines with operations and maintenance organisations at stations, events
//! with assignments and guests, aircraft with per-aircraft grants and their records,
//! operated flights with crews and owners, maintenance work with personnel
//! authorisations, and a request mix of about 60% allows.

// The generator indexes arrays it has just built, by indices it draws below their
// lengths; it reads no outside input, so a panic here is a bug of the benchmark, not a
// path an attacker can reach.
#![allow(clippy::indexing_slicing)]

use clearance_core::{
    EntityJson, Facts, FactsJson, Request, Schema, Snapshot, TimeValue, TupleJson,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The instant the generated world is set around (2026-05-01T00:00:00Z).
pub const EPOCH: i64 = 1_777_593_600;
const DAY: i64 = 86_400;

/// How large a world is.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// The scale's name.
    pub name: &'static str,
    /// Accounts (tenants).
    pub accounts: usize,
    /// Users per account.
    pub users: usize,
    /// Resources per account (events, aircraft, records, flights, work).
    pub resources: usize,
}

/// 1k users, 10k resources.
pub const SMALL: Scale = Scale {
    name: "small",
    accounts: 2,
    users: 500,
    resources: 5_000,
};
/// 10k users, 200k resources.
pub const MEDIUM: Scale = Scale {
    name: "medium",
    accounts: 10,
    users: 1_000,
    resources: 20_000,
};
/// 50k users, 1M resources.
pub const LARGE: Scale = Scale {
    name: "large",
    accounts: 25,
    users: 2_000,
    resources: 40_000,
};

/// The scales `CLEARANCE_BENCH_SCALES` names (a comma list of `small`, `medium`,
/// `large`); all three when it is unset or empty.
pub fn scales() -> Vec<Scale> {
    let wanted = std::env::var("CLEARANCE_BENCH_SCALES").unwrap_or_default();
    let all = [SMALL, MEDIUM, LARGE];
    if wanted.is_empty() {
        return all.to_vec();
    }
    all.into_iter()
        .filter(|s| wanted.split(',').any(|w| w.trim() == s.name))
        .collect()
}

/// Removes a SQLite store and the files beside it (its log, its shared memory, its
/// checkpoints' database and theirs).
pub fn remove_store(db: &std::path::Path) {
    let name = db.display().to_string();
    for suffix in [
        "",
        "-wal",
        "-shm",
        ".checkpoints",
        ".checkpoints-wal",
        ".checkpoints-shm",
    ] {
        let _ = std::fs::remove_file(format!("{name}{suffix}"));
    }
}

/// The repository's root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The built module (`web/pkg/clearance_bg.wasm`) and its recorded SHA-256; `None`, said
/// on stderr, when `cargo xtask wasm` has not built it.
pub fn built_module() -> Option<(Vec<u8>, String)> {
    let pkg = root().join("web/pkg");
    match (
        std::fs::read(pkg.join("clearance_bg.wasm")),
        std::fs::read_to_string(pkg.join("clearance_bg.wasm.sha256")),
    ) {
        (Ok(wasm), Ok(hash)) => Some((wasm, hash.trim().to_string())),
        _ => {
            eprintln!("web/pkg/clearance_bg.wasm is missing: run `cargo xtask wasm`");
            None
        }
    }
}

/// The median and the 99th percentile of `v`.
pub fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// The `p` quantile (0 to 1) of `sorted` by nearest rank below; 0 when it is empty.
// The rank is in `0..sorted.len()`: a float index into the samples.
#[allow(clippy::cast_possible_truncation)]
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The default policies of the repository, compiled.
pub fn default_schema() -> Arc<Schema> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let compiled = clearance_scenarios::policy_sources(&dir)
        .and_then(|sources| Schema::compile(&sources).map_err(|e| e.to_string()));
    match compiled {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("the default policies do not load:\n{e}");
            std::process::exit(1)
        }
    }
}

/// A generated world.
pub struct World {
    /// The facts.
    pub facts: Facts,
    /// Per account, what the request generator needs to know.
    accounts: Vec<AccountIndex>,
}

#[derive(Default)]
struct AccountIndex {
    users: Vec<String>,
    internal: Vec<String>,
    contractor_members: Vec<Vec<String>>,
    invitees: Vec<String>,
    events: Vec<Event>,
    aircraft: Vec<(String, Vec<String>)>,
    squawks: Vec<(String, usize, String)>,
    entries: Vec<(String, usize, String)>,
    flights: Vec<(String, Vec<String>, String)>,
    persons: Vec<(String, String)>,
    tasks: Vec<String>,
    /// Who performed each task, by task id.
    performers: BTreeMap<String, String>,
    mx_users: Vec<String>,
    technicians: Vec<String>,
    work_orders: Vec<String>,
    /// Owner of each ops aircraft, by id.
    ops_owner: BTreeMap<String, String>,
}

struct Event {
    id: String,
    assigned: Vec<usize>,
    guests: Vec<String>,
    ends_at: i64,
}

struct Builder {
    entities: Vec<EntityJson>,
    tuples: Vec<TupleJson>,
    rng: SmallRng,
}

impl Builder {
    fn entity(&mut self, ty: &str, id: &str, account: &str, attrs: Value) -> String {
        let attrs = match attrs {
            Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        let account = if ty == "account" {
            None
        } else {
            Some(account.to_string())
        };
        self.entities.push(EntityJson {
            ty: ty.into(),
            id: id.into(),
            account,
            attrs,
        });
        format!("{ty}:{id}")
    }

    fn tuple(&mut self, resource: &str, relation: &str, subject: &str) {
        self.tuples.push(TupleJson {
            resource: resource.into(),
            relation: relation.into(),
            subject: subject.into(),
            expires: None,
        });
    }

    fn pick<'a>(&mut self, v: &'a [String]) -> &'a String {
        let i = self.rng.gen_range(0..v.len().max(1));
        &v[i.min(v.len().saturating_sub(1))]
    }
}

/// Licence categories the generated certification authorisations and tasks name.
const CATEGORIES: [&str; 4] = ["B1", "B1.1", "B2", "B1.3"];

const OPS_ROLES: [&str; 27] = [
    "crew",
    "crew_fa",
    "crew_persons",
    "crew_plus",
    "crew_timeline",
    "crew_owner",
    "sales",
    "sales_read",
    "accounting",
    "dispatch_ops",
    "dispatch_external",
    "flight_ops",
    "flight_view",
    "maint",
    "owner_write",
    "owner_read",
    "hr",
    "hr_training",
    "office_staff",
    "accountable_manager",
    "guardian_kam",
    "manager",
    "administrator",
    "administrator_airports",
    "timeline_only",
    "post_holder",
    "training",
];
const MX_ROLES: [&str; 7] = [
    "planner",
    "technician",
    "stores",
    "purchasing",
    "compliance",
    "account_administrator",
    "viewer",
];
const GRANTS: [&str; 8] = [
    "co_owner",
    "pilot_own_records",
    "pilot_own_squawks",
    "pilot_all_squawks",
    "mechanic_read",
    "mechanic_full",
    "mechanic_own_records",
    "visitor",
];
const TYPES: [&str; 4] = ["B737", "A320", "E190", "ATR72"];

/// Generates the world of `scale` from `seed`.
pub fn world(scale: Scale, seed: u64) -> World {
    let mut b = Builder {
        entities: Vec::new(),
        tuples: Vec::new(),
        rng: SmallRng::seed_from_u64(seed),
    };
    let mut accounts = Vec::new();
    for a in 0..scale.accounts {
        accounts.push(account(&mut b, scale, a));
    }
    let doc = FactsJson {
        revision: 1,
        entities: b.entities,
        tuples: b.tuples,
        omitted: BTreeMap::new(),
        counts: Vec::new(),
    };
    let facts = match Facts::from_doc(doc) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("generated facts are invalid: {e}");
            std::process::exit(1)
        }
    };
    World { facts, accounts }
}

fn account(b: &mut Builder, scale: Scale, a: usize) -> AccountIndex {
    let acct = format!("a{a}");
    let mut ix = AccountIndex::default();
    b.entity(
        "account",
        &acct,
        &acct,
        json!({"features": ["inventory", "purchasing"], "setup_mode": a.is_multiple_of(5)}),
    );
    // Users: mostly active; a few pending or deactivated.
    for u in 0..scale.users {
        let invitation = if b.rng.gen_bool(0.03) {
            "pending"
        } else {
            "accepted"
        };
        let status = if b.rng.gen_bool(0.02) {
            "deactivated"
        } else {
            "active"
        };
        let mut roles = vec![OPS_ROLES[b.rng.gen_range(0..OPS_ROLES.len())]];
        let mx = b
            .rng
            .gen_bool(0.5)
            .then(|| MX_ROLES[b.rng.gen_range(0..MX_ROLES.len())]);
        roles.extend(mx);
        let id = b.entity(
            "user",
            &format!("{acct}u{u}"),
            &acct,
            json!({"invitation": invitation, "status": status, "roles": roles}),
        );
        if mx.is_some() {
            ix.mx_users.push(id.clone());
        }
        if mx == Some("technician") {
            ix.technicians.push(id.clone());
        }
        ix.users.push(id);
    }
    let r = scale.resources;
    // Stations and organisations.
    let stations: Vec<String> = (0..20)
        .map(|s| {
            b.entity(
                "station",
                &format!("{acct}s{s}"),
                &acct,
                json!({"code": format!("S{s:02}")}),
            )
        })
        .collect();
    let ops = b.entity(
        "organization",
        &format!("{acct}ops"),
        &acct,
        json!({"kind": "airline"}),
    );
    let n_internal = scale.users * 3 / 10;
    for u in 0..n_internal {
        let user = ix.users[u].clone();
        b.tuple(&ops, "member", &user);
        ix.internal.push(user);
    }
    let mut contractors = Vec::new();
    for m in 0..10 {
        let org = b.entity("organization", &format!("{acct}mro{m}"), &acct, json!({"kind": "maintenance", "operator": if m < 4 { "own_station" } else { "contractor" }}));
        let mut members = Vec::new();
        for k in 0..scale.users / 20 {
            let user = ix.users[(n_internal + m * (scale.users / 20) + k) % scale.users].clone();
            b.tuple(&org, "member", &user);
            members.push(user);
        }
        for s in 0..3 {
            b.tuple(&org, "serves", &stations[(m * 2 + s) % stations.len()]);
        }
        contractors.push(org);
        ix.contractor_members.push(members);
    }
    // Events with assignments and guests.
    for e in 0..r / 5 {
        let ends_at = EPOCH + b.rng.gen_range(-DAY..7 * DAY);
        let id = b.entity(
            "event",
            &format!("{acct}e{e}"),
            &acct,
            json!({"ends_at": ends_at}),
        );
        let st = stations[e % stations.len()].clone();
        b.tuple(&id, "station", &st);
        b.tuple(&id, "owner_org", &ops);
        let creator = b.pick(&ix.internal).clone();
        b.tuple(&id, "created_by", &creator);
        let mut assigned = Vec::new();
        for _ in 0..b.rng.gen_range(0..3) {
            let m = b.rng.gen_range(0..contractors.len());
            if !assigned.contains(&m) {
                assigned.push(m);
                let org = contractors[m].clone();
                b.tuple(&id, "assigned", &org);
            }
        }
        let mut guests = Vec::new();
        if e % 2 == 0 {
            let channel = ["email", "sms", "whatsapp"][e % 3];
            let g = b.entity(
                "invitee",
                &format!("{acct}g{e}"),
                &acct,
                json!({"channel": channel, "address": format!("guest{e}@example.org")}),
            );
            b.tuple(&id, "guest", &g);
            ix.invitees.push(g.clone());
            guests.push(g);
        }
        ix.events.push(Event {
            id,
            assigned,
            guests,
            ends_at,
        });
    }
    // Aircraft with grants, and their records.
    for k in 0..r / 40 {
        let id = b.entity(
            "aircraft",
            &format!("{acct}ac{k}"),
            &acct,
            json!({"registration": format!("N{k}{a}"), "seat_limit": 6}),
        );
        let owner = b.pick(&ix.users).clone();
        b.tuple(&id, "owner", &owner);
        let mut granted = vec![owner];
        for g in 0..b.rng.gen_range(2..5) {
            let user = b.pick(&ix.users).clone();
            if !granted.contains(&user) {
                let rel = GRANTS[(k + g) % GRANTS.len()];
                b.tuple(&id, rel, &user);
                granted.push(user);
            }
        }
        ix.aircraft.push((id, granted));
    }
    for s in 0..r / 5 {
        let k = b.rng.gen_range(0..ix.aircraft.len());
        let creator = {
            let g = ix.aircraft[k].1.clone();
            b.pick(&g).clone()
        };
        let id = b.entity("squawk", &format!("{acct}sq{s}"), &acct, json!({}));
        let ac = ix.aircraft[k].0.clone();
        b.tuple(&id, "aircraft", &ac);
        b.tuple(&id, "created_by", &creator);
        ix.squawks.push((id, k, creator));
    }
    for s in 0..r / 5 {
        let k = b.rng.gen_range(0..ix.aircraft.len());
        let creator = {
            let g = ix.aircraft[k].1.clone();
            b.pick(&g).clone()
        };
        let id = b.entity(
            "maintenance_entry",
            &format!("{acct}me{s}"),
            &acct,
            json!({}),
        );
        let ac = ix.aircraft[k].0.clone();
        b.tuple(&id, "aircraft", &ac);
        b.tuple(&id, "created_by", &creator);
        ix.entries.push((id, k, creator));
    }
    // Operated flights.
    let operators: Vec<String> = (0..5)
        .map(|o| {
            b.entity(
                "operator",
                &format!("{acct}op{o}"),
                &acct,
                json!({"name": format!("Operator {o}")}),
            )
        })
        .collect();
    for (o, op) in operators.iter().enumerate() {
        let d = ix.users[(o * 37) % scale.users].clone();
        b.tuple(op, "dispatcher", &d);
    }
    let mut ops_aircraft = Vec::new();
    for k in 0..r / 100 {
        let id = b.entity(
            "ops_aircraft",
            &format!("{acct}oa{k}"),
            &acct,
            json!({"registration": format!("OE-{k}")}),
        );
        let owner = b.pick(&ix.users).clone();
        b.tuple(&id, "owned_by", &owner);
        ix.ops_owner.insert(id.clone(), owner);
        b.tuple(&id, "operated_by", &operators[k % operators.len()]);
        ops_aircraft.push(id);
    }
    for f in 0..r / 5 {
        let id = b.entity(
            "flight",
            &format!("{acct}f{f}"),
            &acct,
            json!({"number": format!("CL{f}"), "departs_at": EPOCH + (f as i64 % 600) * 3_600}),
        );
        let ac = ops_aircraft[f % ops_aircraft.len()].clone();
        b.tuple(&id, "aircraft", &ac);
        b.tuple(&id, "operated_by", &operators[f % operators.len()]);
        let mut crew = Vec::new();
        for _ in 0..2 {
            let c = b.pick(&ix.users).clone();
            b.tuple(&id, "crew_member", &c);
            crew.push(c);
        }
        ix.flights.push((id, crew, ac));
    }
    for (p, user) in ix.users.clone().iter().enumerate() {
        let id = b.entity(
            "person",
            &format!("{acct}p{p}"),
            &acct,
            json!({"name": format!("Person {p}")}),
        );
        b.tuple(&id, "linked_user", user);
        let ac = ops_aircraft[p % ops_aircraft.len()].clone();
        b.tuple(&id, "assigned_aircraft", &ac);
        ix.persons.push((id, user.clone()));
    }
    // Maintenance work with personnel authorisations.
    for w in 0..r / 50 {
        let id = b.entity(
            "work_order",
            &format!("{acct}wo{w}"),
            &acct,
            json!({"number": format!("WO{w}"), "aircraft_type": TYPES[w % 4]}),
        );
        ix.work_orders.push(id);
    }
    for t in 0..(r - r / 5 * 4 - r / 40 - r / 100 - r / 50 - 60).min(r / 10) {
        // Every third task needs an independent inspection; most have a technician who
        // performed them (who may then not inspect them). Half state the licence
        // category certifying them needs.
        let mut attrs = json!({"title": format!("Task {t}"), "aircraft_type": TYPES[t % 4], "independent_inspection": t % 3 == 0});
        if t % 2 == 0 {
            attrs["category"] = json!(CATEGORIES[(t / 2) % CATEGORIES.len()]);
        }
        let id = b.entity("task", &format!("{acct}t{t}"), &acct, attrs);
        let wo = ix.work_orders[t % ix.work_orders.len()].clone();
        b.tuple(&id, "work_order", &wo);
        if t % 4 != 3
            && let Some(by) = ix.technicians.get(t % ix.technicians.len().max(1)).cloned()
        {
            b.tuple(&id, "performed_by", &by);
            ix.performers.insert(id.clone(), by);
        }
        ix.tasks.push(id);
    }
    let holders: Vec<String> = ix
        .technicians
        .iter()
        .chain(ix.users.iter().step_by(10))
        .cloned()
        .collect();
    for (u, user) in holders.into_iter().enumerate() {
        let until = EPOCH + b.rng.gen_range(-30 * DAY..365 * DAY);
        let scope: Vec<&str> = vec![TYPES[u % 4], TYPES[(u + 1) % 4]];
        // Certification authorisations (one in two) grant licence categories on a licence
        // of the holder's that lasts at least as long, revoked one time in twenty.
        let certifying = u % 2 == 0;
        let categories: Vec<&str> = if certifying {
            vec![CATEGORIES[u % CATEGORIES.len()]]
        } else {
            Vec::new()
        };
        let id = b.entity(
            "authorization",
            &format!("{acct}au{u}"),
            &acct,
            json!({"kind": "certifying_staff", "valid_until": until, "scope": scope, "categories": categories}),
        );
        b.tuple(&id, "holder", &user);
        if certifying {
            let licence = b.entity(
                "licence",
                &format!("{acct}lic{u}"),
                &acct,
                json!({"categories": ["B1", "B2"], "valid_until": until + 30 * DAY, "revoked": u % 40 == 0}),
            );
            b.tuple(&licence, "holder", &user);
            b.tuple(&id, "licence", &licence);
        }
    }
    ix
}

/// Representative principals and resources of one account, for listing benchmarks.
#[derive(Debug, Clone)]
pub struct Probes {
    /// A technician of a contractor maintenance organisation.
    pub contractor: String,
    /// The owner of an operated aircraft (sees its flights).
    pub owner: String,
    /// An internal user of the airline organisation.
    pub internal: String,
    /// An event.
    pub event: String,
    /// A flight.
    pub flight: String,
}

impl World {
    /// Accounts in the world.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Representative names of account `a` (wrapping), for listings.
    pub fn probes(&self, a: usize) -> Probes {
        let ix = &self.accounts[a % self.accounts.len()];
        let first = |v: &[String]| v.first().cloned().unwrap_or_default();
        Probes {
            contractor: ix
                .contractor_members
                .get(4)
                .map(|m| first(m))
                .unwrap_or_default(),
            // An owner whose access-right type scopes flights to the aircraft they own.
            owner: ix
                .ops_owner
                .values()
                .find(|u| {
                    self.facts.entities.get(u.as_str()).is_some_and(|e| {
                        e.attrs.get("roles").is_some_and(|r| {
                            r.as_array().is_some_and(|r| {
                                r.iter().any(|x| x == "owner_read" || x == "owner_write")
                            })
                        })
                    })
                })
                .or_else(|| ix.ops_owner.values().next())
                .cloned()
                .unwrap_or_default(),
            internal: first(&ix.internal),
            event: ix.events.first().map(|e| e.id.clone()).unwrap_or_default(),
            flight: ix.flights.first().map(|f| f.0.clone()).unwrap_or_default(),
        }
    }

    /// A seeded request mix over the world: event views by internal users, contractors and
    /// guests (some exactly at the event's end), aircraft record reads and writes, flights
    /// for crews, owners and dispatchers, person records, page access, controlled
    /// sign-offs, and cross-account attempts.
    pub fn requests(&self, n: usize, seed: u64) -> Vec<Request> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(n);
        let pick = |rng: &mut SmallRng, v: &[String]| v[rng.gen_range(0..v.len())].clone();
        while out.len() < n {
            let a = rng.gen_range(0..self.accounts.len());
            let ix = &self.accounts[a];
            let mut now = EPOCH + rng.gen_range(0..DAY);
            let kind = rng.gen_range(0..100);
            let (principal, action, resource) = match kind {
                0..=9 => {
                    let e = &ix.events[rng.gen_range(0..ix.events.len())];
                    (pick(&mut rng, &ix.internal), "view", e.id.clone())
                }
                10..=21 => {
                    let e = &ix.events[rng.gen_range(0..ix.events.len())];
                    let m = match e.assigned.first() {
                        Some(m) if rng.gen_bool(0.85) => *m,
                        _ => rng.gen_range(0..ix.contractor_members.len()),
                    };
                    (
                        pick(&mut rng, &ix.contractor_members[m]),
                        if rng.gen_bool(0.5) { "view" } else { "update" },
                        e.id.clone(),
                    )
                }
                22..=29 => {
                    let e = &ix.events[rng.gen_range(0..ix.events.len())];
                    let g = match e.guests.first() {
                        Some(g) if rng.gen_bool(0.8) => g.clone(),
                        _ => pick(&mut rng, &ix.invitees),
                    };
                    if rng.gen_bool(0.1) {
                        now = e.ends_at;
                    }
                    (g, "view", e.id.clone())
                }
                30..=44 => {
                    let (sq, k, creator) = &ix.squawks[rng.gen_range(0..ix.squawks.len())];
                    let granted = &ix.aircraft[*k].1;
                    let p = if rng.gen_bool(0.3) {
                        creator.clone()
                    } else if rng.gen_bool(0.8) {
                        pick(&mut rng, granted)
                    } else {
                        pick(&mut rng, &ix.users)
                    };
                    (
                        p,
                        ["read", "update", "delete"][rng.gen_range(0..3)],
                        sq.clone(),
                    )
                }
                45..=54 => {
                    let (me, k, creator) = &ix.entries[rng.gen_range(0..ix.entries.len())];
                    let granted = &ix.aircraft[*k].1;
                    let p = if rng.gen_bool(0.3) {
                        creator.clone()
                    } else {
                        pick(&mut rng, granted)
                    };
                    (p, ["read", "update"][rng.gen_range(0..2)], me.clone())
                }
                55..=69 => {
                    let (f, crew, ac) = &ix.flights[rng.gen_range(0..ix.flights.len())];
                    let p = match rng.gen_range(0..10) {
                        0..=4 => pick(&mut rng, crew),
                        5..=6 => ix
                            .ops_owner
                            .get(ac)
                            .cloned()
                            .unwrap_or_else(|| pick(&mut rng, &ix.users)),
                        _ => pick(&mut rng, &ix.users),
                    };
                    (
                        p,
                        ["view", "edit", "view_timeline"][rng.gen_range(0..3)],
                        f.clone(),
                    )
                }
                70..=76 => {
                    let (p, user) = &ix.persons[rng.gen_range(0..ix.persons.len())];
                    let who = if rng.gen_bool(0.5) {
                        user.clone()
                    } else {
                        pick(&mut rng, &ix.users)
                    };
                    (
                        who,
                        ["view", "view_roster", "edit_staff"][rng.gen_range(0..3)],
                        p.clone(),
                    )
                }
                77..=88 => {
                    let page = [
                        "operations:dispatch",
                        "operations:timeline",
                        "operations:roster",
                        "operations:settings",
                        "maintenance:work_orders",
                        "maintenance:inventory",
                        "maintenance:signoffs",
                        "maintenance:setup_tools",
                    ][rng.gen_range(0..8)];
                    let (action, who) = if page.starts_with("operations") {
                        (
                            ["read", "write", "own"][rng.gen_range(0..3)],
                            pick(&mut rng, &ix.users),
                        )
                    } else {
                        (
                            ["view", "view", "edit", "complete"][rng.gen_range(0..4)],
                            pick(&mut rng, &ix.mx_users),
                        )
                    };
                    (who, action, page.to_string())
                }
                89..=96 => {
                    let t = pick(&mut rng, &ix.tasks);
                    let p = if rng.gen_bool(0.7) {
                        pick(&mut rng, &ix.technicians)
                    } else {
                        pick(&mut rng, &ix.mx_users)
                    };
                    let action = ["signoff", "view", "complete", "inspect"][rng.gen_range(0..4)];
                    // Half the inspections are asked by whoever performed the task.
                    let p = match ix.performers.get(&t) {
                        Some(by) if action == "inspect" && rng.gen_bool(0.5) => by.clone(),
                        _ => p,
                    };
                    (p, action, t)
                }
                _ => {
                    let other = &self.accounts[(a + 1) % self.accounts.len()];
                    let e = &other.events[rng.gen_range(0..other.events.len())];
                    (pick(&mut rng, &ix.internal), "view", e.id.clone())
                }
            };
            out.push(Request {
                principal,
                action: action.to_string(),
                resource,
                target: None,
                now: TimeValue::Seconds(now),
            });
        }
        out
    }
}

/// Builds the snapshot of a world.
pub fn snapshot(schema: &Arc<Schema>, world: &World) -> Snapshot {
    match Snapshot::build(Arc::clone(schema), &world.facts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("the generated world does not build: {} {e}", e.code);
            std::process::exit(1)
        }
    }
}

/// The first `n` requests of the mix (seed `seed`) that resolve on `snap`, as queries and
/// as the binary batch (`clearance_core::wire`) the module decides.
pub fn query_batch(
    world: &World,
    snap: &Snapshot,
    n: usize,
    seed: u64,
) -> (Vec<clearance_core::Query>, Vec<u8>) {
    let queries: Vec<_> = world
        .requests(n, seed)
        .iter()
        .filter_map(|r| snap.resolve(r).ok())
        .collect();
    let mut encoded = Vec::with_capacity(queries.len() * clearance_core::wire::QUERY_LEN);
    for q in &queries {
        clearance_core::wire::encode_query(q, &mut encoded);
    }
    (queries, encoded)
}

/// Writes the inputs of the JS benchmarks (`web/bench/`) to `dir`: the medium world's
/// snapshot (`medium.snapshot`), its batch of resolved queries (`medium.queries`) and
/// 2,000 requests by names (`medium.requests.json`).
pub fn write_js_inputs(dir: &std::path::Path, world: &World, snap: &Snapshot, encoded: &[u8]) {
    let requests: Vec<_> = world.requests(2_000, 7);
    let written = std::fs::create_dir_all(dir)
        .and_then(|_| {
            std::fs::write(
                dir.join("medium.snapshot"),
                snap.to_bytes().unwrap_or_default(),
            )
        })
        .and_then(|_| std::fs::write(dir.join("medium.queries"), encoded))
        .and_then(|_| {
            std::fs::write(
                dir.join("medium.requests.json"),
                serde_json::to_vec(&requests).unwrap_or_default(),
            )
        });
    if let Err(e) = written {
        eprintln!("cannot write the JS bench inputs to {}: {e}", dir.display());
    }
}

/// Where the JS benchmarks read their inputs: `bench-js` in the target directory.
pub fn js_inputs_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("bench-js")
}

/// Writes the policy allows on `world`, for the write benchmarks: up to 256 (user,
/// event, time) triples where the user may update the event (`on set title = update`)
/// at that time.
pub fn title_writes(schema: &Arc<Schema>, world: &World) -> Vec<(String, String, i64)> {
    let snap = snapshot(schema, world);
    world
        .requests(200_000, 3)
        .into_iter()
        .filter(|r| r.action == "update" && r.resource.starts_with("event:"))
        .filter(|r| snap.check(r).allowed)
        .filter_map(|r| r.now.seconds().ok().map(|t| (r.principal, r.resource, t)))
        .take(256)
        .collect()
}

/// 10,000 requests of `world`'s mix as `POST /v1/check` bodies.
pub fn check_bodies(world: &World) -> Vec<Value> {
    world
        .requests(10_000, 5)
        .into_iter()
        .map(|r| json!({ "principal": r.principal, "action": r.action, "resource": r.resource, "target": r.target, "now": r.now }))
        .collect()
}
