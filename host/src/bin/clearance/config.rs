//! `serve`'s settings from a TOML file (`--config FILE` or `CLEARANCE_CONFIG`): each
//! setting named as its flag becomes that flag, placed before the command line's own; a
//! setting the command line gives, or whose environment variable (`CLEARANCE_<SETTING>`)
//! is set, is left to them, so a flag beats the environment, which beats the file. An unknown setting, or a
//! value of the wrong kind, stops start-up naming the setting and the file.

use clap::CommandFactory;
use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable of a setting: `CLEARANCE_` and its name in capitals.
fn env_name(setting: &str) -> String {
    format!("CLEARANCE_{}", setting.replace('-', "_").to_uppercase())
}

/// `argv` with the settings of `serve`'s config file, if one is named, placed after
/// `serve`.
pub fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(at) = argv.iter().position(|a| a == "serve") else {
        return Ok(argv);
    };
    let rest = argv.get(at + 1..).unwrap_or_default();
    let named = rest.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        if a == "--config" {
            rest.get(i + 1).map(PathBuf::from)
        } else {
            a.strip_prefix("--config=").map(PathBuf::from)
        }
    });
    let Some(file) = named.or_else(|| std::env::var_os("CLEARANCE_CONFIG").map(PathBuf::from))
    else {
        return Ok(argv);
    };
    let text =
        std::fs::read_to_string(&file).map_err(|e| format!("--config {}: {e}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("--config {}: {e}", file.display()))?;
    let command = crate::Cli::command();
    let serve = command.find_subcommand("serve").ok_or("no serve command")?;
    // `serve`'s own flags, and the global ones (`policies`, `wasm`).
    let mut known: Vec<(String, bool)> = serve
        .get_arguments()
        .chain(command.get_arguments().filter(|a| a.is_global_set()))
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            Some((long, a.get_action().takes_values()))
        })
        .filter(|(l, _)| l != "config" && l != "help")
        .collect();
    known.sort();
    let mut settings = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        let at_file = || format!("--config {}: setting `{key}`", file.display());
        let Some((_, takes_value)) = known.iter().find(|(l, _)| *l == name) else {
            let all: Vec<&str> = known.iter().map(|(l, _)| l.as_str()).collect();
            return Err(format!(
                "{}: no such setting; the settings are {}",
                at_file(),
                all.join(", ")
            ));
        };
        // The command line's own flag, or the environment, beats the file: the file's
        // value is not even read.
        let flag_given = rest.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == format!("--{name}") || a.starts_with(&format!("--{name}=")))
        });
        if flag_given || std::env::var_os(env_name(&name)).is_some() {
            continue;
        }
        let flag = OsString::from(format!("--{name}"));
        match (value, takes_value) {
            (toml::Value::Boolean(on), false) => {
                if *on {
                    settings.push(flag);
                }
            }
            (toml::Value::String(v), true) => settings.extend([flag, v.into()]),
            (toml::Value::Integer(v), true) => settings.extend([flag, v.to_string().into()]),
            (toml::Value::Float(v), true) => settings.extend([flag, v.to_string().into()]),
            (other, false) => {
                return Err(format!(
                    "{}: expected true or false, found {other}",
                    at_file()
                ));
            }
            (other, true) => {
                return Err(format!(
                    "{}: expected a string or a number, found {other}",
                    at_file()
                ));
            }
        }
    }
    let mut out: Vec<OsString> = argv.get(..=at).unwrap_or_default().to_vec();
    out.extend(settings);
    out.extend(rest.iter().cloned());
    Ok(out)
}
