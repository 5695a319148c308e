//! The OpenAPI 3.1 document of the service, made from the route table it is given: every
//! route with who may call it, its body and answer as JSON Schemas generated from the
//! Rust types (draft 2020-12, shared ones under `components/schemas`), and the error
//! statuses it can give.
//!
//! Bodies are described as the host reads them and answers as it writes them: answers
//! list every field they always carry as required, and no field besides.

use crate::codes::{Code, Kind};
use crate::routes::{Answer, Callers, Deployment, Input, Route};
use crate::schemas::ErrorAnswer;
use clearance_core::ErrorCode;
use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

const SCHEMAS: &str = "/components/schemas";
const REF_PREFIX: &str = "#/components/schemas/";

fn generator(settings: SchemaSettings) -> SchemaGenerator {
    settings
        .with(|s| {
            s.definitions_path = SCHEMAS.into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// The OpenAPI 3.1 document of `routes` as a server of `deployment` serves them.
pub fn document<S>(routes: &[Route<S>], deployment: Deployment) -> Value {
    // Bodies as serde reads them, answers as serde writes them: a field with a default is
    // optional in a body, and one always written is required in an answer.
    let mut bodies = generator(SchemaSettings::draft2020_12().for_deserialize());
    let mut answers = generator(SchemaSettings::draft2020_12().for_serialize());
    let error = closed(answers.subschema_for::<ErrorAnswer>().to_value());
    let mut paths = Map::new();
    for route in routes.iter().filter(|r| r.is_served(deployment)) {
        let operation = operation(route, deployment, &mut bodies, &mut answers, &error);
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        if let Some(methods) = entry.as_object_mut() {
            methods.insert(route.method.as_str().to_string(), operation);
        }
    }
    let answer_schemas: Map<String, Value> = answers
        .take_definitions(true)
        .into_iter()
        .map(|(name, schema)| (name, closed(schema)))
        .collect();
    let (mut schemas, renamed) = merge(answer_schemas, bodies.take_definitions(true));
    list_error_codes(&mut schemas);
    let mut paths = Value::Object(paths);
    rename_refs_in_bodies(&mut paths, &renamed);
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "Clearance",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Callers checks for aviation operations, decided by the one wasm module. Every error is {error: {code, message, help}, allowed: false}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a service key (clr_<id>_<secret>, from `clearance keys create`) or a user token (a JWT from the configured issuer)",
                },
            },
        },
    })
}

/// Every error code an answer can carry, as the schema `ErrorCode` that `ErrorData.code`
/// refers to: one entry per code's text with what it means and the statuses it is answered
/// with, from the host's table ([`crate::codes::Code`]) and the core's
/// ([`clearance_core::ErrorCode`]), and the gates' codes (`gate.<name>`) by their pattern.
fn list_error_codes(schemas: &mut Map<String, Value>) {
    let mut codes: std::collections::BTreeMap<&str, (String, std::collections::BTreeSet<u16>)> =
        std::collections::BTreeMap::new();
    for code in Code::ALL.iter().filter(|c| **c != Code::Gate) {
        let entry = codes
            .entry(code.as_str())
            .or_insert_with(|| (code.meaning().trim().to_string(), Default::default()));
        entry.1.insert(code.kind().http_status());
    }
    for code in ErrorCode::ALL {
        let entry = codes
            .entry(code.as_str())
            .or_insert_with(|| (code.meaning().trim().to_string(), Default::default()));
        entry.1.insert(Kind::of_module(code.as_str()).http_status());
    }
    let mut one_of: Vec<Value> = codes
        .into_iter()
        .map(|(code, (meaning, statuses))| {
            let statuses: Vec<String> = statuses.iter().map(u16::to_string).collect();
            json!({ "const": code, "description": format!("{}: {meaning}", statuses.join(", ")) })
        })
        .collect();
    one_of.push(json!({
        "type": "string",
        "pattern": "^gate\\.[a-z_]+$",
        "description": format!("{}: {}", Code::Gate.kind().http_status(), Code::Gate.meaning().trim()),
    }));
    schemas.insert(
        "ErrorCode".into(),
        json!({
            "description": "Every error code, with what it means and the HTTP statuses it is answered with.",
            "type": "string",
            "oneOf": one_of,
        }),
    );
    if let Some(code) = schemas
        .get_mut("ErrorData")
        .and_then(|d| d.get_mut("properties"))
        .and_then(|p| p.get_mut("code"))
    {
        *code = json!({ "$ref": format!("{REF_PREFIX}ErrorCode"), "description": "The stable code: one of `ErrorCode`." });
    }
}

/// One operation: summary, who, parameters, body, answer and errors.
fn operation<S>(
    route: &Route<S>,
    deployment: Deployment,
    bodies: &mut SchemaGenerator,
    answers: &mut SchemaGenerator,
    error: &Value,
) -> Value {
    let mut op = Map::new();
    op.insert(
        "operationId".into(),
        Value::from(operation_id(route.method.as_str(), route.path)),
    );
    op.insert("summary".into(), Value::from(route.summary));
    op.insert(
        "description".into(),
        Value::from(format!("Who may call it: {}.", route.who)),
    );
    op.insert(
        "security".into(),
        match route.callers {
            Callers::Anyone => json!([]),
            Callers::Authenticated | Callers::Admin => json!([{ "bearer": [] }]),
        },
    );
    let mut parameters: Vec<Value> = path_parameters(route.path)
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    match route.input {
        Input::Nothing => {}
        Input::Body(schema) => {
            op.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/json": { "schema": schema(bodies).to_value() } } }),
            );
        }
        Input::Query(schema) => parameters.extend(query_parameters(&schema(bodies))),
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    let mut responses = Map::new();
    let ok = match route.answer {
        Answer::Json(schema) => json!({
            "description": "the answer",
            "content": { "application/json": { "schema": closed(schema(answers).to_value()) } },
        }),
        Answer::Events(events) => {
            let data: Map<String, Value> = events
                .iter()
                .map(|(name, schema)| (name.to_string(), closed(schema(answers).to_value())))
                .collect();
            json!({
                "description": format!(
                    "server-sent events ({}); each event's data is JSON of the schema `x-event-data` gives for its name",
                    events.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
                "content": { "text/event-stream": { "schema": { "type": "string" }, "x-event-data": data } },
            })
        }
        Answer::Text(media) => json!({
            "description": "the answer, as text",
            "content": { media: { "schema": { "type": "string" } } },
        }),
    };
    responses.insert("200".into(), ok);
    for failure in route.errors(deployment) {
        let key = failure.status.to_string();
        match responses
            .get_mut(&key)
            .and_then(|r| r.get_mut("description"))
        {
            Some(Value::String(text)) => {
                text.push_str("; ");
                text.push_str(failure.when);
            }
            _ => {
                responses.insert(
                    key,
                    json!({ "description": failure.when, "content": { "application/json": { "schema": error } } }),
                );
            }
        }
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// `post /v1/check/batch` → `post_v1_check_batch`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !part.is_empty() {
            id.push('_');
            id.push_str(part);
        }
    }
    id
}

/// The `{names}` of a path.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
}

/// An object schema's properties as query parameters.
fn query_parameters(schema: &Schema) -> Vec<Value> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .map(|(name, property)| {
                    let mut parameter = json!({ "name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": property });
                    if let (Some(text), Some(p)) = (
                        property.get("description").cloned(),
                        parameter.as_object_mut(),
                    ) {
                        p.insert("description".into(), text);
                    }
                    parameter
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An answer's schema with no field besides those it lists: every object schema that
/// names its properties and says nothing of others gets `additionalProperties: false`.
fn closed(mut schema: Value) -> Value {
    close(&mut schema);
    schema
}

fn close(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.contains_key("properties") && !object.contains_key("additionalProperties") {
                object.insert("additionalProperties".into(), Value::Bool(false));
            }
            object.values_mut().for_each(close);
        }
        Value::Array(items) => items.iter_mut().for_each(close),
        _ => {}
    }
}

/// The shared schemas of answers and bodies in one map. A type read and written alike
/// has one schema; one whose body schema differs from its answer schema keeps the answer
/// schema under its name and the body schema as `<name>Input` (the second map gives the
/// renames, for the bodies' references).
fn merge(
    mut answers: Map<String, Value>,
    bodies: Map<String, Value>,
) -> (Map<String, Value>, Vec<(String, String)>) {
    let renamed: Vec<(String, String)> = bodies
        .iter()
        .filter(|(name, schema)| answers.get(*name).is_some_and(|a| a != *schema))
        .map(|(name, _)| (name.clone(), format!("{name}Input")))
        .collect();
    for (name, mut schema) in bodies {
        rename_refs(&mut schema, &renamed);
        let name = renamed
            .iter()
            .find(|(from, _)| *from == name)
            .map_or(name, |(_, to)| to.clone());
        answers.entry(name).or_insert(schema);
    }
    (answers, renamed)
}

/// Points the references of the request bodies in `paths` at the renamed schemas.
fn rename_refs_in_bodies(paths: &mut Value, renamed: &[(String, String)]) {
    if renamed.is_empty() {
        return;
    }
    let Some(paths) = paths.as_object_mut() else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|methods| methods.values_mut())
    {
        if let Some(body) = operation.get_mut("requestBody") {
            rename_refs(body, renamed);
        }
        if let Some(parameters) = operation.get_mut("parameters") {
            rename_refs(parameters, renamed);
        }
    }
}

fn rename_refs(value: &mut Value, renamed: &[(String, String)]) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get_mut("$ref")
                && let Some(name) = target.strip_prefix(REF_PREFIX)
                && let Some((_, to)) = renamed.iter().find(|(from, _)| from == name)
            {
                *target = format!("{REF_PREFIX}{to}");
            }
            object.values_mut().for_each(|v| rename_refs(v, renamed));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, renamed)),
        _ => {}
    }
}
