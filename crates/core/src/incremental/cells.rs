//! One cell of a column and the steps on columns and relations that applying a change
//! in place takes and undoes: a value taken and put back, a row added, a column cut.

use super::*;

/// One cell's value, to put back.
#[derive(Debug, Clone)]
pub(super) enum Cell {
    Bool(u8),
    Int(i64),
    Str(u32),
    Time(i64),
    Enum(u8),
    Set(Box<[u32]>),
}

/// A new, empty row at the end of a relation.
pub(super) fn add_row(c: &mut Csr) {
    let last = c.offsets.last().copied().unwrap_or(0);
    if c.offsets.is_empty() {
        c.offsets.push(0);
    }
    c.offsets.push(last);
    if !c.patch_slot.is_empty() {
        c.patch_slot.push(NO_PATCH);
    }
}

pub(super) fn push_none(col: &mut Column) {
    match col {
        Column::Bool(v) | Column::Enum(v) => v.push(NONE_U8),
        Column::Int(v) | Column::Time(v) => v.push(NONE_I64),
        Column::Str(v) => v.push(NONE_STR),
        Column::Set(v) => v.push(Box::from([])),
    }
}

pub(super) fn truncate_column(col: &mut Column, len: usize) {
    match col {
        Column::Bool(v) | Column::Enum(v) => v.truncate(len),
        Column::Int(v) | Column::Time(v) => v.truncate(len),
        Column::Str(v) => v.truncate(len),
        Column::Set(v) => v.truncate(len),
    }
}

pub(super) fn take_cell(col: &Column, i: usize) -> Cell {
    match col {
        Column::Bool(v) => Cell::Bool(v.get(i).copied().unwrap_or(NONE_U8)),
        Column::Enum(v) => Cell::Enum(v.get(i).copied().unwrap_or(NONE_U8)),
        Column::Int(v) => Cell::Int(v.get(i).copied().unwrap_or(NONE_I64)),
        Column::Time(v) => Cell::Time(v.get(i).copied().unwrap_or(NONE_I64)),
        Column::Str(v) => Cell::Str(v.get(i).copied().unwrap_or(NONE_STR)),
        Column::Set(v) => Cell::Set(v.get(i).cloned().unwrap_or_default()),
    }
}

pub(super) fn put_cell(col: &mut Column, i: usize, cell: Cell) {
    match (col, cell) {
        (Column::Bool(v), Cell::Bool(x)) | (Column::Enum(v), Cell::Enum(x)) => {
            if let Some(c) = v.get_mut(i) {
                *c = x;
            }
        }
        (Column::Int(v), Cell::Int(x)) | (Column::Time(v), Cell::Time(x)) => {
            if let Some(c) = v.get_mut(i) {
                *c = x;
            }
        }
        (Column::Str(v), Cell::Str(x)) => {
            if let Some(c) = v.get_mut(i) {
                *c = x;
            }
        }
        (Column::Set(v), Cell::Set(x)) => {
            if let Some(c) = v.get_mut(i) {
                *c = x;
            }
        }
        _ => {}
    }
}

/// Makes cell `i` absent, as a build leaves an attribute the facts do not give.
pub(super) fn clear_cell(col: &mut Column, i: usize) {
    let none = match col {
        Column::Bool(_) => Cell::Bool(NONE_U8),
        Column::Enum(_) => Cell::Enum(NONE_U8),
        Column::Int(_) => Cell::Int(NONE_I64),
        Column::Time(_) => Cell::Time(NONE_I64),
        Column::Str(_) => Cell::Str(NONE_STR),
        Column::Set(_) => Cell::Set(Box::from([])),
    };
    put_cell(col, i, none);
}

pub(super) fn is_none(col: &Column, i: usize) -> bool {
    match col {
        Column::Bool(v) | Column::Enum(v) => v.get(i).is_none_or(|x| *x == NONE_U8),
        Column::Int(v) | Column::Time(v) => v.get(i).is_none_or(|x| *x == NONE_I64),
        Column::Str(v) => v.get(i).is_none_or(|x| *x == NONE_STR),
        Column::Set(_) => false,
    }
}
