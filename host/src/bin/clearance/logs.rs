//! Where the host's log goes: standard error, as one JSON object a line (for a log
//! collector) or as text (for a person at a terminal), through `tracing`.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// One JSON object a line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields (a request's `route`, `status`, `duration_us`, `principal`, `revision`,
    /// `decision`).
    Json,
    /// Text, one line an event.
    Text,
}

/// The filter of `level`: a level (`info`) or `tracing` directives
/// (`info,clearance::request=warn`).
fn filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder().parse(level).map_err(|e| {
        format!(
            "--log-level `{level}`: expected a level (error, warn, info, debug, trace) or directives such as `info,clearance::request=warn` ({e})"
        )
    })
}

/// Sends the server's log to standard error in `format`, filtered by `level`.
pub fn serve(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = filter(level)?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let set = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    set.map_err(|e| format!("setting up the log: {e}"))
}

/// The log of a one-off command: each message as a line of text, at `info` and above.
pub fn command() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::new("info"))
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_ansi(false)
        .try_init();
}
