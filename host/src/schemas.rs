//! The JSON the host answers itself (the module's answers are the core's types), with
//! their JSON Schemas for the OpenAPI document: the answers of the routes that do not
//! decide, the error shape, change events, signed slices and their keys, and the
//! adjustments a decision route makes to the body it reads.
//!
//! Some are written by the handlers through these types; the rest (errors, events,
//! slices, keys) mirror JSON built in place, and the tests validate real answers of a
//! running server against their schemas, so neither can change without the other.

use clearance_core::{Delta, ErrorData, FactsJson};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::marker::PhantomData;

/// `GET /v1/revision`: what the host serves.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Revision {
    /// The revision of the facts.
    pub revision: u64,
    /// The hash of the policy (hex SHA-256).
    pub policy_hash: String,
    /// The hash of the module deciding (hex SHA-256).
    pub module_hash: String,
}

/// `GET /healthz`: the process answers.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Alive {
    /// Always `true`.
    pub alive: bool,
}

/// `GET /readyz`: the host is ready to serve.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Ready {
    /// Always `true`: a host that is not ready answers 503 `host.not_ready`.
    pub ready: bool,
    /// How many revisions the host is behind the store's last (when it last answered).
    /// Not the revisions themselves: this route answers anyone, and the global revision
    /// would tell every tenant how often the others write.
    pub behind: u64,
    /// How long ago the store last answered, in milliseconds.
    pub store_answered_ms_ago: u64,
}

/// `POST /v1/facts`: a write made.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Written {
    /// Always `true`: a refused write is an error (403 with the refusal).
    #[schemars(extend("const" = true))]
    pub allowed: bool,
    /// The revision the write made.
    pub revision: u64,
}

/// `POST /v1/policy/validate`: a policy set that compiles.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Validated {
    /// Always `true`: a policy set with errors is a 400 with them.
    #[schemars(extend("const" = true))]
    pub valid: bool,
    /// Its hash (hex SHA-256).
    pub policy_hash: String,
}

/// `POST /v1/policy/reload`: the policy now served.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Reloaded {
    /// Always `true`: a refused policy is a 400 with its errors.
    #[schemars(extend("const" = true))]
    pub reloaded: bool,
    /// Its hash (hex SHA-256).
    pub policy_hash: String,
    /// The revision that made it current.
    pub revision: u64,
}

/// `POST /demo/token`: a token for a user of the demo data.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DemoToken {
    /// The token (a JWT), sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// The principal it names, `user:<id>`.
    pub principal: String,
    /// When it expires, in seconds since the epoch.
    pub expires: i64,
}

/// Every error answer: `{error: {code, message, help}, allowed: false}`, with the write's
/// refusal or the policy's errors where there are some.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorAnswer {
    /// What went wrong, and what to do.
    pub error: ErrorData,
    /// Always `false`: an error never allows.
    #[schemars(extend("const" = false))]
    pub allowed: bool,
    /// A write the policy refused (403): which delta, why, and the denial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<clearance_core::writes::WriteRefusal>,
    /// A policy set that does not compile (400): every error with where it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<PolicyErrorAt>>,
}

/// One error of a policy set, where it is.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PolicyErrorAt {
    /// The source's name.
    pub file: String,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1, in characters.
    pub col: u32,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A `change` event of `GET /v1/changes`: one revision.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChangeEvent {
    /// The revision the change made (also the event's id).
    pub revision: u64,
    /// Who made it: a principal, or `operator` for a policy.
    pub author: String,
    /// When it was stored, in seconds since the epoch.
    pub at: i64,
    /// The deltas, with those the policy derived.
    pub deltas: Vec<Delta>,
    /// The hash of the policy a reload made current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// The key it was made through, for a write made with a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// A `change` event: the whole change for a key, what changed for a user.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Changed {
    /// For a key: the change with its deltas.
    Change(ChangeEvent),
    /// For a user: what changed in its slice.
    Account(AccountChangeEvent),
}

/// A `change` event as a user's feed gives it: the deltas cut to the user's slice (only
/// what the slice keeps, so no value it leaves out), not the key that made it. The user
/// applies them to its slice; a change it cannot follow so says `refetch` instead, and
/// the user fetches its slice again.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AccountChangeEvent {
    /// The revision the change made (also the event's id).
    pub revision: u64,
    /// Who made it: a principal, or `operator` for a policy.
    pub author: String,
    /// When it was stored, in seconds since the epoch.
    pub at: i64,
    /// The entities the change touched, `type:id`.
    pub entities: Vec<String>,
    /// The hash of the policy a reload made current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// The deltas as they apply to the user's slice (perhaps none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deltas: Option<Vec<clearance_core::Delta>>,
    /// Why the change cannot be followed by deltas (a policy change, the authorisations
    /// the user holds moved): fetch the slice again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refetch: Option<String>,
}

/// A `reset` event of `GET /v1/changes`: changes were skipped.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ResetEvent {
    /// The revision to fetch the state at; the feed goes on from it.
    pub revision: u64,
    /// The last revision the follower had.
    pub last_sent: u64,
    /// Why changes were skipped.
    pub reason: String,
    /// What to do.
    pub help: String,
}

/// `GET /v1/slice/{principal}`: a slice, signed by the host.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SignedSlice {
    /// The `Slice` as JSON text: the signature is over these bytes.
    #[schemars(schema_with = "slice_text")]
    pub slice: String,
    /// `EdDSA`.
    pub alg: String,
    /// The id of the key that signed, in `GET /v1/slice-keys`.
    pub key_id: String,
    /// The Ed25519 signature of `clearance.slice.v2\n` followed by `slice`, base64url
    /// without padding.
    pub signature: String,
}

fn slice_text(generator: &mut SchemaGenerator) -> Schema {
    let slice = generator.subschema_for::<Slice>();
    json_schema!({
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": slice,
    })
}

/// The facts that can influence a principal's decisions, with the policy to load them
/// under: the text a `SignedSlice` signs.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Slice {
    /// The principal, `type:id`.
    pub principal: String,
    /// Its account's id.
    pub account: String,
    /// The revision of the facts.
    pub revision: u64,
    /// The hash of the policy (hex SHA-256).
    pub policy_hash: String,
    /// When it was issued, in seconds since the epoch.
    pub issued: i64,
    /// When it may no longer be loaded, in seconds since the epoch.
    pub expires: i64,
    /// The policy's sources.
    pub policy: Vec<SliceSource>,
    /// The account's entities and the tuples on them.
    pub facts: FactsJson,
}

/// A policy source of a slice.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SliceSource {
    /// The file name its errors are reported under.
    pub name: String,
    /// The policy text.
    pub text: String,
}

/// `GET /v1/slice-keys`: the public keys that verify slices, as a JWKS.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SliceKeys {
    /// The keys.
    pub keys: Vec<SliceKey>,
}

/// An Ed25519 public key as a JWK.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SliceKey {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// Its id, as signed slices name it.
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub usage: String,
}

/// `GET /v1/openapi.json`: an OpenAPI 3.1 document.
pub struct OpenApiDocument;

impl JsonSchema for OpenApiDocument {
    fn schema_name() -> Cow<'static, str> {
        "OpenApiDocument".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "an OpenAPI 3.1 document",
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": { "openapi": { "type": "string", "pattern": "^3\\.1\\." } },
            "additionalProperties": true,
        })
    }
}

/// A decision route's body `T` with `now` optional: a user token leaves it out and is
/// decided at the server's clock; a key may give it, or leave it to the server's clock.
pub struct ServerClock<T>(PhantomData<T>);

impl<T: JsonSchema> JsonSchema for ServerClock<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("ServerClock{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = T::json_schema(generator);
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|name| name != "now");
        }
        if let Some(Value::Object(now)) =
            schema.get_mut("properties").and_then(|p| p.get_mut("now"))
        {
            now.insert(
                "description".into(),
                Value::from(
                    "The time of the request: a key may give it (without it, the server's clock); a user token leaves it out and is decided at the server's clock.",
                ),
            );
        }
        schema
    }
}

/// A decision route's body `T` with `min_revision`: the host waits up to 2 s for that
/// revision before deciding (503 `revision.unavailable` if it does not come).
pub struct MinRevision<T>(PhantomData<T>);

impl<T: JsonSchema> JsonSchema for MinRevision<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("MinRevision{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = T::json_schema(generator);
        let min = json_schema!({
            "description": "Decide at this revision or a later one: wait up to 2 s for it.",
            "type": "integer",
            "format": "uint64",
            "minimum": 0,
        });
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            properties.insert("min_revision".into(), min.to_value());
        } else if let Some(object) = schema.as_object_mut() {
            let mut properties = Map::new();
            properties.insert("min_revision".into(), min.to_value());
            object.insert("properties".into(), Value::Object(properties));
        }
        schema
    }
}
