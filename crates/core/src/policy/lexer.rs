//! Splits policy text into tokens, each with its line and column.

use crate::error::{PolicyError, Span};

/// A token of the policy language.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name: letters, digits and `_`, not starting with a digit.
    Ident(String),
    /// A double-quoted string.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// Punctuation or an operator.
    Punct(&'static str),
    /// The end of the file.
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::Int(i) => format!("number `{i}`"),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::Eof => "the end of the file".to_string(),
        }
    }
}

/// A token with where it starts.
#[derive(Debug, Clone)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Where it starts.
    pub span: Span,
}

const PUNCT: [&str; 23] = [
    "->", "==", "!=", "<=", ">=", "{", "}", "(", ")", "[", "]", "<", ">", ":", ",", ".", "|", "&",
    "-", "!", "=", "+", "?",
];

/// Splits `text` (from `file`) into tokens.
pub fn lex(file: &str, text: &str) -> Result<Vec<Token>, PolicyError> {
    let mut out = Vec::new();
    let mut line = 1u32;
    let mut col = 1u32;
    let mut chars = text.char_indices().peekable();
    let span = |line, col| Span {
        file: file.to_string(),
        line,
        col,
    };
    while let Some(&(i, c)) = chars.peek() {
        if c == '\n' {
            chars.next();
            line += 1;
            col = 1;
            continue;
        }
        if c.is_whitespace() {
            chars.next();
            col += 1;
            continue;
        }
        if c == '#' {
            while let Some(&(_, c)) = chars.peek() {
                if c == '\n' {
                    break;
                }
                chars.next();
            }
            continue;
        }
        let start = span(line, col);
        if c.is_ascii_alphabetic() || c == '_' {
            let mut s = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    s.push(c);
                    chars.next();
                    col += 1;
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Ident(s),
                span: start,
            });
            continue;
        }
        if c.is_ascii_digit() {
            let mut s = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_digit() {
                    s.push(c);
                    chars.next();
                    col += 1;
                } else {
                    break;
                }
            }
            let n = s.parse::<i64>().map_err(|_| {
                PolicyError::new(start.clone(), format!("number `{s}` is too large"))
            })?;
            out.push(Token {
                tok: Tok::Int(n),
                span: start,
            });
            continue;
        }
        if c == '"' {
            chars.next();
            col += 1;
            let mut s = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                col += 1;
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) => {
                            col += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                        }
                        None => break,
                    },
                    '\n' => break,
                    c => s.push(c),
                }
            }
            if !closed {
                return Err(PolicyError::new(
                    start,
                    "unterminated string: expected a closing `\"` on the same line",
                ));
            }
            out.push(Token {
                tok: Tok::Str(s),
                span: start,
            });
            continue;
        }
        let rest = text.get(i..).unwrap_or("");
        match PUNCT.iter().find(|p| rest.starts_with(**p)) {
            Some(p) => {
                // Punctuation is ASCII: one char per byte, one column per char.
                for _ in 0..p.len() {
                    chars.next();
                    col += 1;
                }
                out.push(Token {
                    tok: Tok::Punct(p),
                    span: start,
                });
            }
            None => {
                return Err(PolicyError::new(
                    start,
                    format!(
                        "unexpected character `{c}`: expected a name, a number, a string or an operator"
                    ),
                ));
            }
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        span: span(line, col),
    });
    Ok(out)
}
