//! Every error code the host answers with, in one table: its text, its kind (what the
//! HTTP face answers it with) and its help. The codes of the module's own errors are the
//! core's ([`clearance_core::ErrorCode`]); [`Kind::of_module`] gives their kind.
//!
//! The table is below every other part of the host: the runtime, the credentials and the
//! commands name codes from here, `api` answers each kind with its HTTP status
//! ([`Kind::http_status`]), and the OpenAPI document lists the codes from here.

use clearance_core::{ErrorCode, ErrorKind};

/// What kind of failure an error is, as the caller should read it. `api` answers each
/// with one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request does not read, or asks for what it may not send (400).
    Malformed,
    /// No credential, or one that is not valid (401).
    Unauthenticated,
    /// The caller may not do it, or the policy refused it (403).
    Forbidden,
    /// No such route or entity (404).
    NotFound,
    /// The route does not take that method (405).
    MethodNotAllowed,
    /// The body did not arrive in time (408); the connection is closed.
    Timeout,
    /// The request contradicts the host's state: a revision ahead of it, another host's
    /// write first, a decision made on other facts (409).
    Conflict,
    /// The body or the batch is past its limit (413).
    TooLarge,
    /// The body is not JSON (415).
    MediaType,
    /// The caller is past a limit of its own; wait for `retry-after` (429).
    RateLimited,
    /// A fault of the host or the module (500).
    Internal,
    /// The host cannot answer now: busy, not ready, its store unreachable (503).
    Unavailable,
}

impl Kind {
    /// The HTTP status the API answers it with.
    pub const fn http_status(self) -> u16 {
        match self {
            Kind::Malformed => 400,
            Kind::Unauthenticated => 401,
            Kind::Forbidden => 403,
            Kind::NotFound => 404,
            Kind::MethodNotAllowed => 405,
            Kind::Timeout => 408,
            Kind::Conflict => 409,
            Kind::TooLarge => 413,
            Kind::MediaType => 415,
            Kind::RateLimited => 429,
            Kind::Internal => 500,
            Kind::Unavailable => 503,
        }
    }

    /// The kind of an error the module reported: the core's code's kind, or a fault for a
    /// code the core does not have.
    pub fn of_module(code: &str) -> Kind {
        match ErrorCode::parse(code).map(ErrorCode::kind) {
            Some(ErrorKind::Input) => Kind::Malformed,
            Some(ErrorKind::Refused) => Kind::Forbidden,
            Some(ErrorKind::State | ErrorKind::Internal) | None => Kind::Internal,
        }
    }
}

macro_rules! codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $code:literal, $kind:ident, $help:literal;)+) => {
        /// A code of the host's own errors.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Code {
            /// Every code, in the order declared.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)+];

            /// The code's stable text, e.g. `auth.invalid`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)+
                }
            }

            /// What kind of failure it is.
            pub const fn kind(self) -> Kind {
                match self {
                    $(Code::$variant => Kind::$kind,)+
                }
            }

            /// What to do about it, unless the place that answers it says more.
            pub const fn help(self) -> &'static str {
                match self {
                    $(Code::$variant => $help,)+
                }
            }

            /// What the code means.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Code::$variant => concat!($($doc),+),)+
                }
            }
        }
    };
}

codes! {
    /// A body, query or path that does not read as the route's documented shape.
    RequestMalformed = "request.malformed", Malformed, "see /v1/openapi.json";
    /// A body not sent as JSON.
    RequestMediaType = "request.malformed", MediaType, "send a JSON object (content-type: application/json) within the body limit; see /v1/openapi.json; nothing was written";
    /// A write with no deltas.
    RequestEmpty = "request.empty", Malformed, "send at least one delta";
    /// A user's request that names a `now`: users are decided at the server's clock.
    RequestNowNotAllowed = "request.now_not_allowed", Malformed, "";
    /// A body past the body limit.
    RequestTooLarge = "request.too_large", TooLarge, "send less; nothing was written";
    /// A batch or write with more items than one request may carry.
    RequestTooMany = "request.too_many", TooLarge, "split the request";
    /// A body that did not arrive whole within the deadline, or slower than the least rate.
    RequestTimeout = "request.timeout", Timeout, "send the whole body at once, without pauses; nothing was written";
    /// No credential.
    AuthMissing = "auth.missing", Unauthenticated, "send `Authorization: Bearer <credential>`: a service key (clearance keys create) or a user token from the configured issuer";
    /// A credential that is not valid: unknown, revoked, expired, badly signed.
    AuthInvalid = "auth.invalid", Unauthenticated, "send `Authorization: Bearer <credential>`: a service key (clearance keys create) or a user token from the configured issuer";
    /// A credential not scoped to what was asked.
    AuthForbidden = "auth.forbidden", Forbidden, "nothing was decided, written or revealed; ask with a credential scoped to it";
    /// A principal that fails one of its gates (`gate.<name>`: invited, deactivated, ...).
    Gate = "gate", Forbidden, "nothing was revealed; the principal passes its gates before it reads anything";
    /// A caller past its rate limit or budget of work, or an address past its limit of failed authentications.
    AuthRateLimited = "auth.rate_limited", RateLimited, "wait for the time in `retry-after`";
    /// A caller past its quota of entities created.
    WriteQuota = "write.quota", RateLimited, "nothing was written; wait for the time in `retry-after`, or ask an administrator for a larger quota";
    /// A caller with as many change feeds open as it may have.
    FeedTooMany = "feed.too_many", RateLimited, "close a feed before opening another";
    /// No route at that path.
    RouteUnknown = "route.unknown", NotFound, "see /v1/openapi.json";
    /// The route does not take that method.
    RouteMethod = "route.method", MethodNotAllowed, "see /v1/openapi.json";
    /// An entity the caller's facts do not have (or one outside its account: the answer is the same).
    EntityUnknown = "entity.unknown", NotFound, "";
    /// A `min_revision` the host did not reach in time.
    RevisionUnavailable = "revision.unavailable", Unavailable, "retry later, or ask without `min_revision`";
    /// A revision ahead of the host's.
    RevisionFuture = "revision.future", Conflict, "follow from a revision this host has";
    /// A write that lost its revision to another host's, past the retries; nothing was written.
    RevisionConflict = "revision.conflict", Conflict, "another host wrote first; nothing was written: retry";
    /// A write decided on a module or policy other than the host's.
    ParityStale = "parity.stale", Conflict, "load the host's module and policy, decide again, and resend";
    /// A write decided on a revision ahead of the host's.
    ParityFuture = "parity.future", Conflict, "retry when the host has caught up";
    /// A write whose decision the host's facts no longer give.
    ParityOutcomeChanged = "parity.outcome_changed", Conflict, "load the current facts, decide again, and resend";
    /// A policy directory that cannot be read.
    PolicyUnreadable = "policy.unreadable", Malformed, "";
    /// A policy change naming no policy files.
    PolicyMissing = "policy.missing", Malformed, "send at least one policy file";
    /// The store failed or could not be reached.
    StoreFailed = "store.failed", Unavailable, "retry; nothing was written";
    /// The store's outcome of a write is unknown; the host reloads from it.
    StoreUnknown = "store.unknown", Unavailable, "the write may or may not be stored: read it back before retrying";
    /// Every instance is busy and the queue is full, or the wait ran out.
    HostBusy = "host.busy", Unavailable, "retry after the time in `retry-after`; nothing was decided or written";
    /// The host is not ready: starting, or behind its store.
    HostNotReady = "host.not_ready", Unavailable, "retry when /readyz answers 200";
    /// The host has no snapshot loaded.
    HostNotLoaded = "host.not_loaded", Unavailable, "load a snapshot first";
    /// The host is shutting down.
    HostShutdown = "host.shutdown", Unavailable, "reconnect, to this host or another, with Last-Event-ID";
    /// The module trapped; its instance was replaced and the request denied.
    HostTrap = "host.trap", Internal, "the instance was replaced; the request was denied";
    /// The module's bytes are not those the host was built for.
    HostModuleMismatch = "host.module_mismatch", Internal, "rebuild with `cargo xtask wasm` and restart";
    /// The wasm runtime could not start.
    HostSetup = "host.setup", Internal, "check the wasm runtime configuration";
    /// The module's answer could not be read.
    HostProtocol = "host.protocol", Internal, "the module and the host disagree on the ABI";
    /// A fault of the host.
    HostInternal = "host.internal", Internal, "nothing was written";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, text: &&str) -> bool {
        self.as_str() == *text
    }
}

impl PartialEq<String> for Code {
    fn eq(&self, text: &String) -> bool {
        self.as_str() == text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_text_has_one_entry_per_kind_and_every_core_code_reads_back() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            assert!(
                seen.insert((code.as_str(), code.kind().http_status())),
                "{code} is listed twice with one status"
            );
            assert!(!code.meaning().trim().is_empty(), "{code} says nothing");
        }
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        // A code the core does not have is the host's fault, never the caller's.
        assert_eq!(Kind::of_module("facts.no_such_code"), Kind::Internal);
        assert_eq!(Kind::of_module("facts.unknown_type"), Kind::Malformed);
        assert_eq!(Kind::of_module("write.denied"), Kind::Forbidden);
    }
}
