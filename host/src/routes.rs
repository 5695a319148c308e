//! The shape of the route table: for each route of the API its method and path, who may
//! call it, what it reads and answers (as JSON Schemas of Rust types), the errors it can
//! give, and its handler. The service builds its router and its authentication from the
//! table, and [`crate::openapi`] the document, so a route cannot be served without being
//! described, or described without being served.

use axum::routing::{MethodFilter, MethodRouter};
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Gives a JSON Schema for a type, adding the schemas it names to the generator.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// A reference to `T`'s schema, which goes into `components/schemas` under its name.
pub fn named<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// `T`'s schema itself (its parts may still be references): for query parameters, which
/// are listed one by one, and for bodies that are one route's own.
pub fn inline<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

/// An HTTP method of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`: reads, never changes anything.
    Get,
    /// `POST`: takes a JSON body.
    Post,
}

impl Method {
    /// The method as OpenAPI names it: `get`, `post`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
        }
    }

    /// The method as the router matches it.
    pub fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        }
    }
}

/// Who can reach a route's handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// Anyone, without credentials.
    Anyone,
    /// A service key or a user token, verified before the handler runs (401 otherwise),
    /// and counted against the caller's rate limit when one is set (429 past it).
    Authenticated,
    /// An admin key: verified as [`Callers::Authenticated`], and refused (403) before the
    /// handler runs, its body unread, when it is not an admin's.
    Admin,
}

/// What a route reads besides its path.
#[derive(Clone, Copy)]
pub enum Input {
    /// Nothing.
    Nothing,
    /// A JSON body of this schema (400 when it does not read, 413 past the body limit,
    /// 415 when it is not sent as JSON).
    Body(SchemaFn),
    /// Query parameters: the properties of this object schema (400 when they do not read).
    Query(SchemaFn),
}

/// What a route answers with 200.
#[derive(Clone, Copy)]
pub enum Answer {
    /// A JSON value of this schema.
    Json(SchemaFn),
    /// Server-sent events: each event's name and the schema of its `data`.
    Events(&'static [(&'static str, SchemaFn)]),
    /// Text of this media type (not JSON).
    Text(&'static str),
}

/// An error status a route can answer, and when: besides those its [`Callers`] and
/// [`Input`] give every route of their kind (see [`Route::errors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status.
    pub status: u16,
    /// When it is answered, with the error codes.
    pub when: &'static str,
}

/// Which servers serve a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Every server.
    Always,
    /// Only a server run with `--demo` (its token issuer).
    Demo,
}

/// What a document or a router is made for: what changes which routes are served and
/// which errors they can give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deployment {
    /// A rate limit is set: authenticated routes can answer 429.
    pub rate_limited: bool,
    /// The demo token issuer runs: [`Availability::Demo`] routes are served.
    pub demo: bool,
}

/// One route of the API. `S` is the router's state.
pub struct Route<S> {
    /// The method.
    pub method: Method,
    /// The path, with `{parameters}`.
    pub path: &'static str,
    /// What it does, in a line.
    pub summary: &'static str,
    /// Who may call it, in words.
    pub who: &'static str,
    /// Who can reach its handler.
    pub callers: Callers,
    /// What it reads.
    pub input: Input,
    /// What it answers.
    pub answer: Answer,
    /// The errors of its own (not those of its access and input).
    pub failures: &'static [Failure],
    /// Which servers serve it.
    pub availability: Availability,
    /// Its handler, for the route's method.
    pub handler: fn(MethodFilter) -> MethodRouter<S>,
}

impl<S> Route<S> {
    /// Whether a server of `deployment` serves this route.
    pub fn is_served(&self, deployment: Deployment) -> bool {
        self.availability == Availability::Always || deployment.demo
    }

    /// Every error status the route can answer on a server of `deployment`, in order,
    /// each with when: those of its access, of its input, and its own.
    pub fn errors(&self, deployment: Deployment) -> Vec<Failure> {
        let mut out: Vec<Failure> = Vec::new();
        if self.callers != Callers::Anyone {
            out.push(Failure {
                status: 401,
                when: "no credential, or one that is not valid (auth.missing, auth.invalid)",
            });
            if self.callers == Callers::Admin {
                out.push(Failure {
                    status: 403,
                    when: "not an admin key (auth.forbidden)",
                });
            }
            if deployment.rate_limited {
                out.push(Failure {
                    status: 429,
                    when: "the caller is past its rate limit or its budget of work (a batch costs its requests, a write its deltas), or its address past its limit of failed authentications (auth.rate_limited); wait for retry-after",
                });
            }
        }
        match self.input {
            Input::Nothing => {}
            Input::Body(_) => out.extend([
                Failure {
                    status: 400,
                    when: "a body that is not JSON of the documented shape (request.malformed)",
                },
                Failure {
                    status: 408,
                    when: "a body that did not arrive whole within the body deadline, or slower than the least rate (request.timeout); the connection is closed",
                },
                Failure {
                    status: 413,
                    when: "a body past the body limit (request.too_large)",
                },
                Failure {
                    status: 415,
                    when: "a body not sent as application/json (request.malformed)",
                },
            ]),
            Input::Query(_) => out.push(Failure {
                status: 400,
                when: "a query that does not read (request.malformed)",
            }),
        }
        out.extend_from_slice(self.failures);
        out.sort_by_key(|f| f.status);
        out
    }
}
