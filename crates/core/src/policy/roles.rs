//! Roles and their cells: a cell of a role matrix compiled to the action bits it grants
//! on the page and on records (with the row's scopes that limit those records), the
//! policy's roles compiled with `extends` resolved, and [`RoleCells`], the one rule by
//! which a role's cells are written over those of the role it extends, for the policy's
//! roles here and for custom roles in the snapshot.

use super::ast::{self, Decl};
use super::resolve::{Compiler, list, next_id};
use super::types::{CellDef, LEVELS, MatrixDef, RoleDef, RowDef, USE_BIT};
use crate::error::PolicyError;
use std::collections::BTreeMap;

/// A role's cells, written over the cells of the role it extends: a cell replaces the
/// inherited cell of its row, a cell that grants nothing on the page (`none`) takes the
/// row away, and a role writes each row once.
#[derive(Debug, Default)]
pub(crate) struct RoleCells {
    cells: Vec<CellDef>,
    written: Vec<u16>,
}

impl RoleCells {
    /// Starts from the cells of the role extended (none for a role that extends none).
    pub(crate) fn extending(inherited: Vec<CellDef>) -> RoleCells {
        RoleCells {
            cells: inherited,
            written: Vec::new(),
        }
    }

    /// Writes one cell of the role. `Err` with its row, the cells unchanged, if the role
    /// has written that row already.
    pub(crate) fn write(&mut self, cell: CellDef) -> Result<(), u16> {
        if self.written.contains(&cell.row) {
            return Err(cell.row);
        }
        self.written.push(cell.row);
        self.cells.retain(|x| x.row != cell.row);
        if cell.page != 0 {
            self.cells.push(cell);
        }
        Ok(())
    }

    /// The cells, in row order.
    pub(crate) fn into_cells(mut self) -> Vec<CellDef> {
        self.cells.sort_by_key(|c| c.row);
        self.cells
    }
}

/// Compiles a cell of a role of matrix `m`: its row, the action bits it grants on the
/// page and on records, and the row's scopes that limit the records.
pub(super) fn compile_cell(m: &MatrixDef, cell: &ast::CellDecl) -> Result<CellDef, PolicyError> {
    let row = *m.row_index.get(&cell.row.text).ok_or_else(|| {
        PolicyError::new(
            cell.row.span.clone(),
            format!(
                "unknown row `{}` of matrix `{}`: expected one of {}",
                cell.row,
                m.name,
                list(m.row_index.keys())
            ),
        )
    })?;
    let r = m
        .rows
        .get(row as usize)
        .ok_or_else(|| PolicyError::new(cell.row.span.clone(), "unknown row"))?;
    let mut scopes = Vec::new();
    for s in &cell.scopes {
        match scope_index(r, &s.text) {
            Some(i) => scopes.push(i),
            None => {
                return Err(PolicyError::new(
                    s.span.clone(),
                    format!(
                        "row `{}` takes no scope `{}`: expected one of {}",
                        r.name,
                        s,
                        list(r.scopes.iter())
                    ),
                ));
            }
        }
    }
    let first = cell
        .values
        .first()
        .map(|n| n.text.as_str())
        .unwrap_or("none");
    let label_scopes = if cell.scopes.is_empty() {
        String::new()
    } else {
        format!(
            "({})",
            cell.scopes
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if m.levels {
        if cell.values.len() != 1 {
            return Err(PolicyError::new(
                cell.row.span.clone(),
                format!(
                    "a cell of level matrix `{}` takes one level, found {}",
                    m.name,
                    cell.values.len()
                ),
            ));
        }
        if r.operation {
            if !cell.scopes.is_empty() {
                return Err(PolicyError::new(
                    cell.row.span.clone(),
                    "an operation cell takes no scopes",
                ));
            }
            let page = match first {
                "allow" => 1 << USE_BIT,
                "none" => 0,
                other => {
                    return Err(PolicyError::new(
                        cell.row.span.clone(),
                        format!(
                            "operation `{}` takes `allow` or `none`, found `{other}`",
                            r.name
                        ),
                    ));
                }
            };
            return Ok(CellDef {
                row,
                page,
                record: page,
                scopes,
                label: first.to_string(),
            });
        }
        let level = LEVELS.iter().position(|l| *l == first).ok_or_else(|| {
            PolicyError::new(
                cell.row.span.clone(),
                format!("expected a level (none, own, limited, read, write), found `{first}`"),
            )
        })?;
        if level == 1 && scopes.is_empty() {
            match scope_index(r, "self") {
                Some(i) => scopes.push(i),
                None => {
                    return Err(PolicyError::new(
                        cell.row.span.clone(),
                        format!(
                            "`own` means `own(self)` but row `{}` declares no scope `self`: name a scope, e.g. `own({})`",
                            r.name,
                            r.scopes.first().map(String::as_str).unwrap_or("...")
                        ),
                    ));
                }
            }
        }
        let page: u32 = (1u32 << level) - 1;
        let record = if level == 1 { 0b111 } else { page };
        let label = if level == 1 && cell.scopes.is_empty() {
            "own(self)".to_string()
        } else {
            format!("{first}{label_scopes}")
        };
        Ok(CellDef {
            row,
            page,
            record,
            scopes,
            label,
        })
    } else {
        if !cell.scopes.is_empty() {
            return Err(PolicyError::new(
                cell.row.span.clone(),
                format!("cells of action matrix `{}` take no scopes", m.name),
            ));
        }
        let mut bits = 0u32;
        for v in &cell.values {
            if v.text == "none" {
                continue;
            }
            // A matrix has at most 31 actions (compiling refuses more), so each has a bit.
            match m
                .actions
                .iter()
                .position(|a| *a == v.text)
                .and_then(|i| u32::try_from(i).ok())
                .and_then(|i| 1u32.checked_shl(i))
            {
                Some(bit) => bits |= bit,
                None => {
                    return Err(PolicyError::new(
                        v.span.clone(),
                        format!(
                            "unknown action `{}` of matrix `{}`: expected one of {}",
                            v,
                            m.name,
                            list(m.actions.iter())
                        ),
                    ));
                }
            }
        }
        let label = cell
            .values
            .iter()
            .map(|v| v.text.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(CellDef {
            row,
            page: bits,
            record: bits,
            scopes,
            label,
        })
    }
}

/// The index of scope `name` among a row's scopes. A row has at most 255 scopes
/// (compiling refuses more), so the index is a `u8`.
fn scope_index(r: &RowDef, name: &str) -> Option<u8> {
    r.scopes
        .iter()
        .position(|x| x == name)
        .and_then(|i| u8::try_from(i).ok())
}

impl Compiler {
    /// The roles of the policy files, each with the cells of the role it extends and its
    /// own written over them, and the roles by name.
    pub(super) fn roles(&mut self, decls: &[Decl]) -> (Vec<RoleDef>, BTreeMap<String, u32>) {
        let decls: Vec<&ast::RoleDecl> = decls
            .iter()
            .filter_map(|d| if let Decl::Role(r) = d { Some(r) } else { None })
            .collect();
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (i, r) in decls.iter().enumerate() {
            if by_name.insert(r.name.text.clone(), i).is_some() {
                self.err(&r.name.span, format!("role `{}` is declared twice", r.name));
            }
        }
        let mut done: Vec<Option<RoleDef>> = vec![None; decls.len()];
        for i in 0..decls.len() {
            let mut stack = Vec::new();
            self.role(i, &decls, &by_name, &mut done, &mut stack);
        }
        let mut roles = Vec::new();
        let mut index = BTreeMap::new();
        for (r, d) in done.into_iter().zip(&decls) {
            let Some(r) = r else { continue };
            let Some(id) = next_id(roles.len(), u32::MAX) else {
                self.too_many(
                    &d.name.span,
                    "a policy set",
                    u32::MAX.into(),
                    "roles",
                    &d.name.text,
                );
                break;
            };
            index.insert(r.name.clone(), id);
            roles.push(r);
        }
        (roles, index)
    }

    /// Role `i` of `decls`, compiled once (into `done`) after the role it extends;
    /// `stack` holds the roles being compiled, to refuse a cycle.
    fn role(
        &mut self,
        i: usize,
        decls: &[&ast::RoleDecl],
        by_name: &BTreeMap<String, usize>,
        done: &mut Vec<Option<RoleDef>>,
        stack: &mut Vec<usize>,
    ) -> Option<RoleDef> {
        if let Some(Some(r)) = done.get(i) {
            return Some(r.clone());
        }
        let d = *decls.get(i)?;
        if stack.contains(&i) {
            self.err(
                &d.name.span,
                format!("role `{}` extends itself through a cycle", d.name),
            );
            return None;
        }
        let Some(&matrix) = self.matrix_index.get(&d.matrix.text) else {
            let known = list(self.matrix_index.keys());
            self.err(
                &d.matrix.span,
                format!("unknown matrix `{}`: expected one of {known}", d.matrix),
            );
            return None;
        };
        let mut inherited = Vec::new();
        if let Some(base) = &d.extends {
            let Some(&bi) = by_name.get(&base.text) else {
                self.err(&base.span, format!("unknown role `{base}` to extend"));
                return None;
            };
            stack.push(i);
            let b = self.role(bi, decls, by_name, done, stack);
            stack.pop();
            let b = b?;
            if b.matrix != matrix {
                self.err(&base.span, format!("role `{base}` is of another matrix"));
                return None;
            }
            inherited = b.cells;
        }
        let m = self.matrices.get(matrix as usize)?.clone();
        let mut cells = RoleCells::extending(inherited);
        for c in &d.cells {
            match compile_cell(&m, c) {
                Ok(cell) => {
                    if cells.write(cell).is_err() {
                        self.err(
                            &c.row.span,
                            format!("row `{}` appears twice in role `{}`", c.row, d.name),
                        );
                    }
                }
                Err(e) => self.errors.push(e),
            }
        }
        let r = RoleDef {
            name: d.name.text.clone(),
            matrix,
            cells: cells.into_cells(),
        };
        if let Some(slot) = done.get_mut(i) {
            *slot = Some(r.clone());
        }
        Some(r)
    }
}
