//! Roles: the policy's roles and each account's custom roles (resolving `extends`, in
//! dependency order, refusing cycles) compiled into the grant set of every principal.

use super::{
    AccountRole, Column, GrantSet, MAX_EXTENDS, MatrixGrant, NONE_STR, REMOVED, ScopedGrant,
    Snapshot, bad, id16, id32,
};
use crate::error::ErrorCode;
use crate::error::FactsError;
use crate::policy::{CellDef, RoleCells, Schema, TypeId, parse_cell};
use std::collections::BTreeMap;
use std::sync::Arc;

impl Snapshot {
    /// Resolves custom roles and every principal's roles into shared grant sets.
    /// The account of entity `id`, which `build` gave every entity it holds.
    pub(crate) fn account_or_err(&self, id: u32, at: &str) -> Result<u32, FactsError> {
        self.account_of(id).ok_or_else(|| {
            bad(
                ErrorCode::FactsInternal,
                at,
                "an entity without an account".into(),
            )
        })
    }

    pub(crate) fn compile_roles(&mut self) -> Result<(), FactsError> {
        let schema = Arc::clone(&self.schema);
        let mut roles: Vec<AccountRole> = schema
            .roles
            .iter()
            .map(|r| AccountRole {
                name: r.name.clone(),
                account: None,
                matrix: r.matrix,
                cells: r.cells.clone(),
            })
            .collect();
        // Custom roles, per account: name -> index in `roles`.
        let mut custom: BTreeMap<(u32, String), usize> = BTreeMap::new();
        let role_ty = schema.builtins.role;
        if schema.ty(role_ty).is_none() {
            return Err(bad(
                ErrorCode::FactsUnknownType,
                "role",
                "no role type".into(),
            ));
        }
        let a_matrix = schema.builtins.role_attrs.matrix;
        // In name order (the order of ids a build gives), without those removed since.
        let mut entities: Vec<(usize, u32)> = self
            .types
            .get(role_ty as usize)
            .map(|t| t.entities.iter().copied().enumerate().collect())
            .unwrap_or_default();
        entities.retain(|&(_, id)| self.type_of(id) == Some(role_ty));
        if entities.iter().any(|&(_, id)| id >= self.built) {
            entities.sort_by(|a, b| self.name(a.1).cmp(self.name(b.1)));
        }
        // Two passes so a custom role may extend another custom role declared later.
        let mut pending: Vec<(u32, usize)> = Vec::new();
        for &(local, id) in &entities {
            let name = self.names.get(id as usize).cloned().unwrap_or_default();
            let at = format!("entity `{name}`");
            let role_name = self.custom_role_name(id);
            let matrix_name = self.str_attr(role_ty, a_matrix, local).unwrap_or_default();
            let Some(&matrix) = schema.matrix_index.get(&matrix_name) else {
                let known: Vec<&str> = schema.matrix_index.keys().map(String::as_str).collect();
                return Err(bad(
                    ErrorCode::FactsInvalidRole,
                    &at,
                    format!(
                        "unknown matrix `{matrix_name}`: expected one of {}",
                        known.join(", ")
                    ),
                ));
            };
            let account = self.account_or_err(id, &at)?;
            let idx = roles.len();
            roles.push(AccountRole {
                name: role_name.clone(),
                account: Some(account),
                matrix,
                cells: Vec::new(),
            });
            if custom.insert((account, role_name.clone()), idx).is_some() {
                return Err(bad(
                    ErrorCode::FactsInvalidRole,
                    &at,
                    format!("another custom role of the account is named `{role_name}`"),
                ));
            }
            pending.push((id, local));
        }
        // Resolve `extends` in dependency order with a visiting set to refuse cycles.
        let mut done = vec![false; roles.len()];
        for (id, local) in pending.clone() {
            let mut stack = Vec::new();
            self.resolve_custom(
                id, local, &pending, &custom, &mut roles, &mut done, &mut stack,
            )?;
        }
        // Principals.
        let mut sets: Vec<GrantSet> = Vec::new();
        let mut set_index: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
        for (t, def) in schema.types.iter().enumerate() {
            if !def.principal {
                continue;
            }
            let Some(roles_attr) = def.attr("roles") else {
                continue;
            };
            let ids = self
                .types
                .get(t)
                .map(|x| x.entities.clone())
                .unwrap_or_default();
            let mut grants = Vec::with_capacity(ids.len());
            for (local, &id) in ids.iter().enumerate() {
                if self.type_of(id) == Some(REMOVED) {
                    grants.push(0);
                    continue;
                }
                let account = self.account_or_err(id, "roles")?;
                let names = self.set_attr_strings(id16(t), roles_attr, local);
                let mut held = Vec::new();
                for rn in &names {
                    let r = custom
                        .get(&(account, rn.clone()))
                        .copied()
                        .or_else(|| schema.role_index.get(rn).map(|i| *i as usize));
                    match r {
                        Some(r) => held.push(r),
                        None => return Err(self.unknown_role(id, account, rn)),
                    }
                }
                held.sort_unstable();
                held.dedup();
                let gid = match set_index.get(&held) {
                    Some(g) => *g,
                    None => {
                        let g = id32(sets.len());
                        sets.push(grant_set(&schema, &roles, &held));
                        set_index.insert(held, g);
                        g
                    }
                };
                grants.push(gid);
            }
            if let Some(td) = self.types.get_mut(t) {
                td.grants = grants;
            }
        }
        self.grant_sets = sets;
        self.roles = roles;
        Ok(())
    }

    /// The name custom role `id` is held by: its id, less its account's id and a dot when
    /// it begins with them (`role:mro_north.shift_lead` is `shift_lead` of `mro_north`),
    /// so every account has its own role names and none can take another's.
    pub(crate) fn custom_role_name(&self, id: u32) -> String {
        let name = self.name(id);
        let bare = name.strip_prefix("role:").unwrap_or(name);
        let own = self
            .account_of(id)
            .map(|a| self.name(a))
            .and_then(|a| a.strip_prefix("account:"))
            .and_then(|a| bare.strip_prefix(a))
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|rest| !rest.is_empty());
        own.unwrap_or(bare).to_string()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn resolve_custom(
        &self,
        id: u32,
        local: usize,
        pending: &[(u32, usize)],
        custom: &BTreeMap<(u32, String), usize>,
        roles: &mut [AccountRole],
        done: &mut [bool],
        stack: &mut Vec<u32>,
    ) -> Result<usize, FactsError> {
        let role_ty = self.schema.builtins.role;
        let attrs = self.schema.builtins.role_attrs;
        let name = self.names.get(id as usize).cloned().unwrap_or_default();
        let at = format!("entity `{name}`");
        let account = self.account_or_err(id, &at)?;
        let role_name = self.custom_role_name(id);
        let idx = *custom
            .get(&(account, role_name.clone()))
            .ok_or_else(|| bad(ErrorCode::FactsInvalidRole, &at, String::new()))?;
        if done.get(idx).copied().unwrap_or(false) {
            return Ok(idx);
        }
        if stack.len() >= MAX_EXTENDS {
            return Err(bad(
                ErrorCode::FactsInvalidRole,
                &at,
                format!("role `{role_name}` extends a chain of more than {MAX_EXTENDS} roles"),
            ));
        }
        if stack.contains(&id) {
            return Err(bad(
                ErrorCode::FactsInvalidRole,
                &at,
                format!("role `{role_name}` extends itself through a cycle"),
            ));
        }
        stack.push(id);
        let matrix = roles.get(idx).map(|r| r.matrix).ok_or_else(|| {
            bad(
                ErrorCode::FactsInternal,
                &at,
                "a custom role out of range".into(),
            )
        })?;
        let mut inherited: Vec<CellDef> = Vec::new();
        if let Some(base) = self.str_attr(role_ty, attrs.extends, local) {
            // A custom role extends another custom role of its account, or a policy role.
            let base_idx = if base != role_name {
                match custom.get(&(account, base.clone())) {
                    Some(_) => {
                        let (bid, blocal) = pending
                            .iter()
                            .copied()
                            .find(|&(i, _)| {
                                self.account_of(i) == Some(account)
                                    && self.custom_role_name(i) == base
                            })
                            .ok_or_else(|| bad(ErrorCode::FactsInvalidRole, &at, String::new()))?;
                        Some(self.resolve_custom(bid, blocal, pending, custom, roles, done, stack)?)
                    }
                    None => None,
                }
            } else {
                None
            };
            let base_role = match base_idx {
                Some(b) => roles.get(b).cloned(),
                None => self
                    .schema
                    .role_index
                    .get(&base)
                    .and_then(|i| roles.get(*i as usize))
                    .cloned(),
            };
            let Some(b) = base_role else {
                return Err(bad(
                    ErrorCode::FactsInvalidRole,
                    &format!("{at} attribute `extends`"),
                    format!("unknown role `{base}` to extend"),
                ));
            };
            if b.matrix != matrix {
                return Err(bad(
                    ErrorCode::FactsInvalidRole,
                    &format!("{at} attribute `extends`"),
                    format!("role `{base}` is of another matrix"),
                ));
            }
            inherited = b.cells;
        }
        // Without `extends`, a custom role starts from no cells; one with a policy role's
        // name replaces that role for its account.
        let written = self.set_attr_strings(role_ty, attrs.cells, local);
        let mut cells = RoleCells::extending(inherited);
        for text in &written {
            let cat = format!("{at} cell `{text}`");
            let decl = parse_cell(&cat, text)
                .map_err(|e| bad(ErrorCode::FactsInvalidRole, &cat, e.message))?;
            let cell = self
                .schema
                .compile_cell(matrix, &decl)
                .map_err(|e| bad(ErrorCode::FactsInvalidRole, &cat, e.message))?;
            if cells.write(cell).is_err() {
                return Err(bad(
                    ErrorCode::FactsInvalidRole,
                    &cat,
                    "the row appears twice in the role".into(),
                ));
            }
        }
        if let Some(r) = roles.get_mut(idx) {
            r.cells = cells.into_cells();
        }
        if let Some(d) = done.get_mut(idx) {
            *d = true;
        }
        stack.pop();
        Ok(idx)
    }

    /// The error for principal `id` holding role `name`, unknown in `account`: it names
    /// every principal of the account that holds it (a custom role removed while held is
    /// refused so, naming whose roles to change first).
    pub(crate) fn unknown_role(&self, id: u32, account: u32, name: &str) -> FactsError {
        let mut holders = Vec::new();
        for (t, def) in self.schema.types.iter().enumerate() {
            let Some(attr) = def.attr("roles").filter(|_| def.principal) else {
                continue;
            };
            let ids = self.types.get(t).map_or(&[][..], |x| x.entities.as_slice());
            for (local, &e) in ids.iter().enumerate() {
                if self.type_of(e) != Some(REMOVED)
                    && self.account_of(e) == Some(account)
                    && self
                        .set_attr_strings(id16(t), attr, local)
                        .iter()
                        .any(|r| r == name)
                {
                    holders.push(self.name(e));
                }
            }
        }
        const LISTED: usize = 20;
        let mut who = holders
            .iter()
            .take(LISTED)
            .map(|h| format!("`{h}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if holders.len() > LISTED {
            who.push_str(&format!(" and {} more", holders.len() - LISTED));
        }
        bad(
            ErrorCode::FactsUnknownRole,
            &format!("entity `{}` attribute `roles`", self.name(id)),
            format!(
                "unknown role `{name}`, held by {who}: expected a role of the policy or a custom role of the account (a custom role still held cannot be removed: change the holders' roles first)"
            ),
        )
    }

    /// The strings of set attribute `a` of entity `local` of type `t` (none when it is
    /// not a set), sorted: what an error names first must not depend on the order in which
    /// the facts' strings were interned, which another account's strings change.
    pub(crate) fn set_attr_strings(&self, t: TypeId, a: u16, local: usize) -> Vec<String> {
        let mut out = self.set_attr_interned(t, a, local);
        out.sort_unstable();
        out
    }

    /// The strings of a set attribute in the order of their interning, which depends on
    /// every string of the facts (another account's too): not for an answer.
    pub(crate) fn set_attr_interned(&self, t: TypeId, a: u16, local: usize) -> Vec<String> {
        match self
            .types
            .get(t as usize)
            .and_then(|x| x.columns.get(a as usize))
        {
            Some(Column::Set(v)) => v
                .get(local)
                .map(|s| {
                    s.iter()
                        .filter_map(|i| self.strings.get(*i as usize).cloned())
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn str_attr(&self, t: TypeId, a: u16, local: usize) -> Option<String> {
        match self.types.get(t as usize)?.columns.get(a as usize)? {
            Column::Str(v) => {
                let s = *v.get(local)?;
                if s == NONE_STR {
                    None
                } else {
                    self.strings.get(s as usize).cloned()
                }
            }
            _ => None,
        }
    }
}

pub(crate) fn grant_set(schema: &Schema, roles: &[AccountRole], held: &[usize]) -> GrantSet {
    let mut matrices: Vec<MatrixGrant> = schema
        .matrices
        .iter()
        .map(|m| MatrixGrant {
            has_role: false,
            record: vec![0; m.rows.len()],
            page: vec![0; m.rows.len()],
            scoped: Vec::new(),
        })
        .collect();
    for &r in held {
        let Some(role) = roles.get(r) else { continue };
        let Some(g) = matrices.get_mut(role.matrix as usize) else {
            continue;
        };
        g.has_role = true;
        for c in &role.cells {
            if let Some(p) = g.page.get_mut(c.row as usize) {
                *p |= c.page;
            }
            if c.scopes.is_empty() {
                if let Some(x) = g.record.get_mut(c.row as usize) {
                    *x |= c.record;
                }
            } else {
                g.scoped.push(ScopedGrant {
                    row: c.row,
                    record: c.record,
                    scopes: c.scopes.clone(),
                });
            }
        }
    }
    GrantSet { matrices }
}
