//! A recursive-descent parser from tokens to the syntax tree, with errors that say what
//! was expected and where.

use super::ast::*;
use super::lexer::{Tok, Token, lex};
use crate::error::{PolicyError, Span};

/// Parses one policy file.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Decl>, PolicyError> {
    let tokens = lex(file, text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let mut decls = Vec::new();
    while !p.at_eof() {
        decls.push(p.decl()?);
    }
    Ok(decls)
}

/// Parses a custom role cell written as data, such as `work_orders:view+edit` or
/// `dispatch:write(owner)`.
pub fn parse_cell(origin: &str, text: &str) -> Result<CellDecl, PolicyError> {
    let tokens = lex(origin, text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let cell = p.cell()?;
    if !p.at_eof() {
        return Err(p.unexpected("the end of the cell"));
    }
    Ok(cell)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// How deeply the expression being read nests.
    depth: usize,
}

/// How deeply an expression may nest (parentheses, `!`, and `-` chains), so every later
/// pass over it (compiling, printing, evaluating, loading a snapshot) stays shallow.
pub const MAX_NESTING: usize = 64;

const KEYWORDS: [&str; 7] = [
    "permission",
    "scope",
    "gate",
    "invariant",
    "type",
    "matrix",
    "role",
];

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        self.tokens.get(self.pos + n).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn span(&self) -> Span {
        match self.tokens.get(self.pos).or(self.tokens.last()) {
            Some(t) => t.span.clone(),
            None => Span {
                file: String::new(),
                line: 1,
                col: 1,
            },
        }
    }

    fn at_eof(&self) -> bool {
        matches!(self.peek(), Tok::Eof)
    }

    fn bump(&mut self) {
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
    }

    fn unexpected(&self, expected: &str) -> PolicyError {
        PolicyError::new(
            self.span(),
            format!("expected {expected}, found {}", self.peek().describe()),
        )
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if self.is_punct(p) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, p: &str) -> Result<(), PolicyError> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{p}`")))
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), PolicyError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{kw}`")))
        }
    }

    fn name(&mut self, what: &str) -> Result<Name, PolicyError> {
        let span = self.span();
        match self.peek() {
            Tok::Ident(s) => {
                let text = s.clone();
                self.bump();
                Ok(Name { text, span })
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, PolicyError> {
        match self.peek() {
            Tok::Str(s) => {
                let s = s.clone();
                self.bump();
                Ok(s)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn name_list(&mut self, what: &str) -> Result<Vec<Name>, PolicyError> {
        let mut v = vec![self.name(what)?];
        while self.eat_punct(",") {
            v.push(self.name(what)?);
        }
        Ok(v)
    }

    fn decl(&mut self) -> Result<Decl, PolicyError> {
        if self.eat_kw("type") {
            let name = self.name("a type name")?;
            let principal = self.eat_kw("principal");
            self.expect_punct("{")?;
            let mut members = Vec::new();
            while !self.eat_punct("}") {
                members.push(self.member()?);
            }
            Ok(Decl::Type(TypeDecl {
                name,
                principal,
                members,
            }))
        } else if self.eat_kw("matrix") {
            self.matrix().map(Decl::Matrix)
        } else if self.eat_kw("role") {
            self.role().map(Decl::Role)
        } else {
            Err(self.unexpected("`type`, `matrix` or `role`"))
        }
    }

    fn member(&mut self) -> Result<Member, PolicyError> {
        if self.is_kw("permission") && matches!(self.peek_at(1), Tok::Ident(_)) {
            self.bump();
            let name = self.name("a permission name")?;
            let target = if self.eat_punct("(") {
                let pname = self.name("a parameter name")?;
                if pname.text != "target" {
                    return Err(PolicyError::new(
                        pname.span,
                        format!("expected the parameter `target`, found `{}`", pname.text),
                    ));
                }
                self.expect_punct(":")?;
                let ty = self.name("the target's type")?;
                self.expect_punct(")")?;
                Some((pname, ty))
            } else {
                None
            };
            self.expect_punct("=")?;
            let expr = self.expr()?;
            return Ok(Member::Permission { name, target, expr });
        }
        if self.is_kw("scope") && matches!(self.peek_at(1), Tok::Ident(_)) {
            self.bump();
            let name = self.name("a scope name")?;
            self.expect_punct("=")?;
            let expr = self.expr()?;
            return Ok(Member::Scope { name, expr });
        }
        if self.is_kw("auto") && matches!(self.peek_at(1), Tok::Ident(s) if s == "add") {
            self.bump();
            self.bump();
            let rel = self.name("the relation filled in on creation")?;
            self.expect_punct("=")?;
            let perm = self.name("the permission that picks its subjects")?;
            return Ok(Member::Auto { rel, perm });
        }
        if self.is_kw("on") && matches!(self.peek_at(1), Tok::Ident(_)) {
            self.bump();
            let kind = self.name("`add`, `remove`, `set`, `create` or `delete`")?;
            let event = match kind.text.as_str() {
                "add" => WriteEvent::Add,
                "remove" => WriteEvent::Remove,
                "set" => WriteEvent::Set,
                "create" => WriteEvent::Create,
                "delete" => WriteEvent::Delete,
                other => {
                    return Err(PolicyError::new(
                        kind.span,
                        format!(
                            "expected `add`, `remove`, `set`, `create` or `delete` after `on`, found `{other}`"
                        ),
                    ));
                }
            };
            let member = match event {
                WriteEvent::Add | WriteEvent::Remove | WriteEvent::Set => {
                    Some(self.name("the relation or attribute changed")?)
                }
                _ => None,
            };
            self.expect_punct("=")?;
            let perm = self.name("the permission that authorises the change")?;
            return Ok(Member::On {
                event,
                member,
                perm,
            });
        }
        if (self.is_kw("gate") || self.is_kw("invariant"))
            && matches!(self.peek_at(1), Tok::Ident(_))
        {
            let invariant = self.is_kw("invariant");
            let what = if invariant { "invariant" } else { "gate" };
            self.bump();
            let name = self.name(&format!("a name for the {what}"))?;
            self.expect_punct("=")?;
            let expr = self.expr()?;
            self.expect_kw("else")?;
            let message = self.string(&format!("the {what}'s failure message, a quoted string"))?;
            return Ok(Member::Gate {
                name,
                expr,
                message,
                invariant,
            });
        }
        let name = self
            .name("a member: a field `name: type`, `permission`, `scope`, `gate` or `invariant`")?;
        if KEYWORDS.contains(&name.text.as_str()) && !self.is_punct(":") {
            return Err(PolicyError::new(
                name.span,
                format!("expected a name after `{}`", name.text),
            ));
        }
        self.expect_punct(":")?;
        let ty = self.field_type()?;
        let optional = self.eat_punct("?");
        let until = if self.eat_kw("until") {
            Some(self.name("a timestamp attribute")?)
        } else {
            None
        };
        Ok(Member::Field {
            name,
            ty,
            optional,
            until,
        })
    }

    fn field_type(&mut self) -> Result<FieldType, PolicyError> {
        let first = self.name(
            "a type: bool, int, string, timestamp, set<string>, enum{...} or an entity type",
        )?;
        Ok(match first.text.as_str() {
            "bool" => FieldType::Bool,
            "int" => FieldType::Int,
            "string" => FieldType::Str,
            "timestamp" => FieldType::Time,
            "set" => {
                self.expect_punct("<")?;
                let inner = self.name("`string`")?;
                if inner.text != "string" {
                    return Err(PolicyError::new(
                        inner.span,
                        format!(
                            "expected `string`, found `{}`: sets hold strings",
                            inner.text
                        ),
                    ));
                }
                self.expect_punct(">")?;
                FieldType::StrSet
            }
            "enum" => {
                self.expect_punct("{")?;
                let values = self.name_list("an enum value")?;
                self.expect_punct("}")?;
                FieldType::Enum(values)
            }
            _ => {
                let mut v = vec![first];
                while self.eat_punct("|") {
                    v.push(self.name("an entity type")?);
                }
                FieldType::Entities(v)
            }
        })
    }

    fn expr(&mut self) -> Result<Expr, PolicyError> {
        let mut v = vec![self.and()?];
        while self.eat_punct("|") {
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::Or(v)
        })
    }

    /// Goes one level deeper, or refuses past [`MAX_NESTING`].
    fn enter(&mut self, levels: usize) -> Result<(), PolicyError> {
        if self.depth + levels > MAX_NESTING {
            return Err(PolicyError::new(
                self.span(),
                format!(
                    "this expression nests deeper than {MAX_NESTING} levels: split it into named permissions or scopes"
                ),
            ));
        }
        Ok(())
    }

    fn and(&mut self) -> Result<Expr, PolicyError> {
        let mut acc = self.unary()?;
        // Each `-`, and each `&` after one, wraps what came before one level deeper.
        let mut wraps = 0;
        loop {
            if self.eat_punct("&") {
                let rhs = self.unary()?;
                acc = match acc {
                    Expr::And(mut v) => {
                        v.push(rhs);
                        Expr::And(v)
                    }
                    other => {
                        wraps += 1;
                        self.enter(wraps)?;
                        Expr::And(vec![other, rhs])
                    }
                };
            } else if self.eat_punct("-") {
                wraps += 1;
                self.enter(wraps)?;
                let rhs = self.unary()?;
                acc = Expr::Minus(Box::new(acc), Box::new(rhs));
            } else {
                return Ok(acc);
            }
        }
    }

    fn unary(&mut self) -> Result<Expr, PolicyError> {
        let span = self.span();
        if self.eat_punct("!") {
            self.enter(1)?;
            self.depth += 1;
            let inner = self.unary();
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner?), span));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, PolicyError> {
        if self.eat_punct("(") {
            self.enter(1)?;
            self.depth += 1;
            let e = self.expr();
            self.depth -= 1;
            let e = e?;
            self.expect_punct(")")?;
            return Ok(e);
        }
        if self.is_kw("role") && matches!(self.peek_at(1), Tok::Punct("(")) {
            self.bump();
            self.bump();
            let matrix = self.name("a matrix name")?;
            self.expect_punct(".")?;
            let row = self.name("a row name")?;
            self.expect_punct(".")?;
            let action = self.name("an action or level")?;
            self.expect_punct(")")?;
            return Ok(Expr::Role {
                matrix,
                row,
                action,
            });
        }
        if self.is_kw("separate") && matches!(self.peek_at(1), Tok::Punct("(")) {
            self.bump();
            self.bump();
            let path = match self.operand()? {
                Operand::Path(p) => p,
                other => {
                    return Err(PolicyError::new(
                        other.span().clone(),
                        "expected a relation path in `separate(...)`: whose subjects the principal must not be",
                    ));
                }
            };
            self.expect_punct(")")?;
            return Ok(Expr::Separate(path));
        }
        if self.is_kw("authorized") && matches!(self.peek_at(1), Tok::Punct("(")) {
            self.bump();
            self.bump();
            let kind = self.name("an authorisation kind")?;
            let mut scope = None;
            let mut limits = Vec::new();
            while self.eat_punct(",") {
                // `name: operand` is a named limit; anything else is the scope.
                if matches!(self.peek(), Tok::Ident(_))
                    && matches!(self.peek_at(1), Tok::Punct(":"))
                {
                    let name = self.name("a limit: `category`, `chapter` or `task_kind`")?;
                    self.expect_punct(":")?;
                    limits.push((name, self.operand()?));
                } else if scope.is_none() && limits.is_empty() {
                    scope = Some(self.operand()?);
                } else {
                    return Err(PolicyError::new(
                        self.span(),
                        "expected a named limit (`category: ...`, `chapter: ...`, `task_kind: ...`) after the scope",
                    ));
                }
            }
            self.expect_punct(")")?;
            return Ok(Expr::Authorized {
                kind,
                scope,
                limits,
            });
        }
        let lhs = self.operand()?;
        let op = match self.peek() {
            Tok::Punct("==") => Some(CmpOp::Eq),
            Tok::Punct("!=") => Some(CmpOp::Ne),
            Tok::Punct("<") => Some(CmpOp::Lt),
            Tok::Punct("<=") => Some(CmpOp::Le),
            Tok::Punct(">") => Some(CmpOp::Gt),
            Tok::Punct(">=") => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let rhs = self.operand()?;
            return Ok(Expr::Cmp { op, lhs, rhs });
        }
        if self.eat_kw("in") {
            let rhs = self.operand()?;
            return Ok(Expr::In { lhs, rhs });
        }
        match lhs {
            Operand::Path(p) => Ok(Expr::Path(p)),
            Operand::Bool(b, s) => Ok(Expr::Const(b, s)),
            other => Err(PolicyError::new(
                other.span().clone(),
                format!("expected a comparison or `in` after `{other}`"),
            )),
        }
    }

    fn operand(&mut self) -> Result<Operand, PolicyError> {
        let span = self.span();
        match self.peek().clone() {
            Tok::Int(i) => {
                self.bump();
                Ok(Operand::Int(i, span))
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Operand::Str(s, span))
            }
            Tok::Ident(s) if s == "now" => {
                self.bump();
                Ok(Operand::Now(span))
            }
            Tok::Ident(s) if s == "true" || s == "false" => {
                self.bump();
                Ok(Operand::Bool(s == "true", span))
            }
            Tok::Ident(s) if s == "count" && matches!(self.peek_at(1), Tok::Punct("(")) => {
                self.bump();
                self.bump();
                let mut v = vec![self.path()?];
                while self.eat_punct("|") {
                    v.push(self.path()?);
                }
                self.expect_punct(")")?;
                Ok(Operand::Count(v, span))
            }
            Tok::Ident(_) => Ok(Operand::Path(self.path()?)),
            _ => Err(self.unexpected(
                "an expression: a relation, a comparison, `role(...)`, `authorized(...)` or `(`",
            )),
        }
    }

    fn path(&mut self) -> Result<Path, PolicyError> {
        let head = self.name("a name")?;
        let mut rest = Vec::new();
        loop {
            let sep = if self.eat_punct(".") {
                Sep::Dot
            } else if self.eat_punct("->") {
                Sep::Arrow
            } else {
                break;
            };
            rest.push((sep, self.name("a name after `.` or `->`")?));
        }
        Ok(Path { head, rest })
    }

    fn matrix(&mut self) -> Result<MatrixDecl, PolicyError> {
        let name = self.name("a matrix name")?;
        self.expect_punct("{")?;
        let mut actions = None;
        let mut kind_set = false;
        let mut rows = Vec::new();
        let mut controls = Vec::new();
        while !self.eat_punct("}") {
            let span = self.span();
            if self.eat_kw("actions") || self.eat_kw("levels") {
                if kind_set {
                    return Err(PolicyError::new(
                        span,
                        "the matrix already says `actions` or `levels`",
                    ));
                }
                kind_set = true;
                let was_actions = matches!(self.tokens.get(self.pos.saturating_sub(1)), Some(Token { tok: Tok::Ident(s), .. }) if s == "actions");
                if was_actions {
                    actions = Some(self.name_list("an action name")?);
                }
            } else if self.is_kw("row") || self.is_kw("operation") {
                let operation = self.is_kw("operation");
                self.bump();
                let rname = self.name("a row name")?;
                let mut row = RowDecl {
                    name: rname,
                    operation,
                    feature: None,
                    setup_only: false,
                    scopes: Vec::new(),
                };
                loop {
                    if self.eat_kw("feature") {
                        row.feature = Some(self.name("a feature name")?);
                    } else if self.eat_kw("setup_only") {
                        row.setup_only = true;
                    } else if self.eat_kw("scopes") {
                        row.scopes = self.name_list("a scope name")?;
                    } else {
                        break;
                    }
                }
                rows.push(row);
            } else if self.eat_kw("control") {
                let row = self.name("a row name")?;
                self.expect_punct(".")?;
                let action = self.name("an action")?;
                self.expect_kw("requires")?;
                let kind = self.name("an authorisation kind")?;
                controls.push(ControlDecl { row, action, kind });
            } else {
                return Err(
                    self.unexpected("`actions`, `levels`, `row`, `operation`, `control` or `}`")
                );
            }
        }
        if !kind_set {
            return Err(PolicyError::new(
                name.span.clone(),
                format!("matrix `{name}` says neither `actions ...` nor `levels`"),
            ));
        }
        Ok(MatrixDecl {
            name,
            actions,
            rows,
            controls,
        })
    }

    fn role(&mut self) -> Result<RoleDecl, PolicyError> {
        let name = self.name("a role name")?;
        self.expect_punct(":")?;
        let matrix = self.name("the role's matrix")?;
        let extends = if self.eat_kw("extends") {
            Some(self.name("the base role")?)
        } else {
            None
        };
        self.expect_punct("{")?;
        let mut cells = Vec::new();
        while !self.eat_punct("}") {
            cells.push(self.cell()?);
        }
        Ok(RoleDecl {
            name,
            matrix,
            extends,
            cells,
        })
    }

    fn cell(&mut self) -> Result<CellDecl, PolicyError> {
        let row = self.name("a row name")?;
        self.expect_punct(":")?;
        let mut values = vec![self.name("an action, a level, `allow` or `none`")?];
        let mut scopes = Vec::new();
        loop {
            if self.eat_punct("(") {
                scopes = self.name_list("a scope name")?;
                self.expect_punct(")")?;
            }
            // A comma or `+` continues the list; a comma before `name:` starts nothing new.
            if (self.is_punct(",") || self.is_punct("+"))
                && !matches!(self.peek_at(2), Tok::Punct(":"))
            {
                self.bump();
                values.push(self.name("an action")?);
            } else {
                break;
            }
        }
        Ok(CellDecl {
            row,
            values,
            scopes,
        })
    }
}
