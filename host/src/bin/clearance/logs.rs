//! Where the host's log and traces go: standard error, as one JSON object a line (for a
//! log collector) or as text (for a person at a terminal), through `tracing`; and, with
//! `--otel-endpoint` (the default feature `otel`), the spans of each request and module
//! call to an OpenTelemetry collector over OTLP/HTTP.

use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

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

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Sends traces on while it lives; dropped, it sends the spans still waiting (for up
/// to 5 s) and stops.
pub struct Traces {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Traces {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown_with_timeout(std::time::Duration::from_secs(5))
        {
            eprintln!("clearance: sending the last traces: {e}");
        }
    }
}

/// The client spans are sent with: reqwest's blocking client (the batch processor runs
/// on a thread of its own, with no async runtime), over http or https with rustls, the
/// web's roots and `--ca-cert`'s. Answers are read up to 4 MiB.
#[cfg(feature = "otel")]
#[derive(Debug)]
struct Collector(reqwest::blocking::Client);

#[cfg(feature = "otel")]
#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Collector {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        use std::io::Read as _;
        const MAX: u64 = 4 << 20;
        let (parts, body) = request.into_parts();
        let request = reqwest::blocking::Request::try_from(axum::http::Request::from_parts(
            parts,
            body.to_vec(),
        ))?;
        let mut response = self.0.execute(request)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut read = Vec::new();
        response.take(MAX + 1).read_to_end(&mut read)?;
        if read.len() as u64 > MAX {
            return Err("the collector's answer is longer than 4 MiB".into());
        }
        let mut answer = opentelemetry_http::Response::builder()
            .status(status)
            .body(opentelemetry_http::Bytes::from(read))?;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

/// The layer that sends spans to `endpoint` (the collector's OTLP/HTTP traces URL).
#[cfg(feature = "otel")]
fn otel(
    endpoint: &str,
    ca_cert: Option<&std::path::Path>,
) -> Result<(Boxed, opentelemetry_sdk::trace::SdkTracerProvider), String> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let url = endpoint
        .parse::<axum::http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .ok_or_else(|| {
            format!(
                "--otel-endpoint `{endpoint}`: expected the collector's OTLP/HTTP traces URL, such as http://127.0.0.1:4318/v1/traces"
            )
        })?;
    let mut client = reqwest::blocking::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10));
    for root in clearance_host::tls::extra_roots(ca_cert)? {
        client = client.add_root_certificate(root);
    }
    let client = client
        .build()
        .map_err(|e| format!("--otel-endpoint `{endpoint}`: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Collector(client))
        .with_endpoint(url.to_string())
        .build()
        .map_err(|e| format!("--otel-endpoint `{endpoint}`: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("clearance")
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("clearance"))
        .boxed();
    Ok((layer, provider))
}

/// Sends the server's log to standard error in `format`, filtered by `level`, and its
/// spans to `otel_endpoint` when one is given.
pub fn serve(
    format: LogFormat,
    level: &str,
    otel_endpoint: Option<&str>,
    ca_cert: Option<&std::path::Path>,
) -> Result<Traces, String> {
    let filter = filter(level)?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let lines: Boxed = if json {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed()
    };
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut layers: Vec<Boxed> = vec![lines];
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut traces = Traces {
        #[cfg(feature = "otel")]
        provider: None,
    };
    match otel_endpoint {
        None => {}
        #[cfg(feature = "otel")]
        Some(endpoint) => {
            let (layer, provider) = otel(endpoint, ca_cert)?;
            layers.push(layer);
            traces.provider = Some(provider);
        }
        #[cfg(not(feature = "otel"))]
        Some(_) => {
            let _ = ca_cert;
            return Err(
                "--otel-endpoint: this build has no OpenTelemetry (build with the feature `otel`)"
                    .into(),
            );
        }
    }
    tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init()
        .map_err(|e| format!("setting up the log: {e}"))?;
    Ok(traces)
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
