//! Timestamps: seconds since the Unix epoch, read from RFC 3339 text or integers.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The end of time: the expiry of tuples that never expire.
pub const NEVER: i64 = i64::MAX;

/// A timestamp as written in JSON or TOML: RFC 3339 text or seconds since the epoch.
// Read by a visitor of its own rather than serde's untagged enums, which buffer the value
// first and cost the wasm module a second deserializer per format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum TimeValue {
    /// Seconds since the Unix epoch.
    Seconds(i64),
    /// RFC 3339 text, e.g. `2026-05-01T10:00:00Z`.
    Text(String),
}

impl<'de> Deserialize<'de> for TimeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TimeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("RFC 3339 text or seconds since the epoch")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TimeValue, E> {
                Ok(TimeValue::Seconds(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TimeValue, E> {
                i64::try_from(v)
                    .map(TimeValue::Seconds)
                    .map_err(|_| E::custom(format!("{v} seconds is past the last timestamp")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TimeValue, E> {
                Ok(TimeValue::Text(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<TimeValue, E> {
                Ok(TimeValue::Text(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl TimeValue {
    /// The seconds since the epoch, or what was wrong.
    pub fn seconds(&self) -> Result<i64, String> {
        match self {
            TimeValue::Seconds(s) => Ok(*s),
            TimeValue::Text(t) => parse(t),
        }
    }
}

/// Parses RFC 3339 text into seconds since the epoch (fractions are dropped).
pub fn parse(text: &str) -> Result<i64, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            format!("`{text}` is not an RFC 3339 timestamp such as `2026-05-01T10:00:00Z` ({e})")
        })
}

/// Formats seconds since the epoch as RFC 3339 in UTC.
pub fn format(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| seconds.to_string())
}
