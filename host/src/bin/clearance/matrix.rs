//! `clearance matrix`: the access-rights matrix (roles x rows) as a table, CSV, JSON or
//! HTML.

use crate::common::loaded;
use crate::{Cli, Format};
use clearance_core::AccessMatrix;
use clearance_core::protocol::Call;
use std::path::Path;
use std::process::ExitCode;

/// Prints `matrix` as `account` sees it.
pub async fn run(
    cli: &Cli,
    matrix: &str,
    account: Option<&str>,
    format: Format,
    facts: &Path,
) -> Result<ExitCode, String> {
    let rt = loaded(cli, facts).await?;
    let call = Call::Matrix {
        matrix: matrix.to_string(),
        account: account.map(str::to_string),
    };
    let m = rt.run(&call).await.map_err(|e| e.to_string())?;
    let text = match format {
        // As the module answered it.
        Format::Json => format!("{m:#}\n"),
        Format::Csv | Format::Html | Format::Table => {
            let m: AccessMatrix =
                serde_json::from_value(m).map_err(|e| format!("an unreadable matrix: {e}"))?;
            render_matrix(&m, format)
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The matrix as a table, CSV or HTML (JSON is printed as the module answers it).
fn render_matrix(m: &AccessMatrix, format: Format) -> String {
    let rows: Vec<&str> = m.rows.iter().map(String::as_str).collect();
    let roles: Vec<(&str, Vec<&str>)> = m
        .roles
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.cells.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    match format {
        Format::Csv => {
            let line = |first: &str, rest: &[&str]| {
                std::iter::once(first)
                    .chain(rest.iter().copied())
                    .map(csv)
                    .collect::<Vec<_>>()
                    .join(",")
                    + "\n"
            };
            let mut out = line("role", &rows);
            for (name, cells) in &roles {
                out.push_str(&line(name, cells));
            }
            out
        }
        Format::Html => {
            let mut out = String::from("<table class=\"matrix\">\n<tr><th>role</th>");
            for r in &rows {
                out.push_str(&format!("<th>{}</th>", html(r)));
            }
            out.push_str("</tr>\n");
            for (name, cells) in &roles {
                out.push_str(&format!("<tr><th>{}</th>", html(name)));
                for c in cells {
                    let level = c.split('(').next().unwrap_or(c);
                    out.push_str(&format!("<td class=\"{}\">{}</td>", html(level), html(c)));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
            out
        }
        Format::Table | Format::Json => {
            let width = rows
                .iter()
                .map(|r| r.len())
                .chain(roles.iter().flat_map(|(_, c)| c.iter().map(|x| x.len())))
                .max()
                .unwrap_or(8);
            let name_width = roles.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
            let mut out = format!("{:<name_width$}", "role");
            for r in &rows {
                out.push_str(&format!(" {r:<width$}"));
            }
            out.push('\n');
            for (name, cells) in &roles {
                out.push_str(&format!("{name:<name_width$}"));
                for c in cells {
                    out.push_str(&format!(" {c:<width$}"));
                }
                out.push('\n');
            }
            out
        }
    }
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break, with
/// its quotes doubled.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Text for HTML content or a quoted attribute. Role names come from facts (an account's
/// own roles), so they are escaped like any outside input.
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
