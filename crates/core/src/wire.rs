//! The compact binary formats every runtime shares: resolved queries in, decisions out.
//! The wasm module's batch ABI, the host and the parity suite all use these, so a
//! decision has one byte encoding everywhere.
//!
//! A query is 24 bytes, little endian: principal `u32`, resource `u32` (an entity id, or
//! `PAGE | matrix << 16 | row` for a page), action `u16`, flags `u16` (bit 0: a target
//! follows), target `u32`, now `i64`.
//!
//! A decision is `allowed u8`, `n u8`, `n × (code u8, rule u32)`, `valid_until i64`
//! (`i64::MIN` when none).

use crate::decision::{Code, Decision, Query, Reason, Resource};
use smallvec::SmallVec;

/// The size of an encoded query.
pub const QUERY_LEN: usize = 24;
/// The bit that marks a page in an encoded resource.
pub const PAGE: u32 = 0x8000_0000;
const NONE: i64 = i64::MIN;

/// Appends the encoding of `q`.
pub fn encode_query(q: &Query, out: &mut Vec<u8>) {
    let resource = match q.resource {
        Resource::Entity(e) => e,
        Resource::Page { matrix, row } => PAGE | (u32::from(matrix) << 16) | u32::from(row),
    };
    out.extend_from_slice(&q.principal.to_le_bytes());
    out.extend_from_slice(&resource.to_le_bytes());
    out.extend_from_slice(&q.action.to_le_bytes());
    out.extend_from_slice(&u16::from(q.target.is_some()).to_le_bytes());
    // Without a target, its four bytes are zero padding behind the flag above.
    out.extend_from_slice(&q.target.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&q.now.to_le_bytes());
}

/// Reads one query of exactly [`QUERY_LEN`] bytes.
pub fn decode_query(b: &[u8]) -> Option<Query> {
    let b: &[u8; QUERY_LEN] = b.try_into().ok()?;
    let [
        p0,
        p1,
        p2,
        p3,
        r0,
        r1,
        r2,
        r3,
        a0,
        a1,
        f0,
        f1,
        t0,
        t1,
        t2,
        t3,
        n0,
        n1,
        n2,
        n3,
        n4,
        n5,
        n6,
        n7,
    ] = *b;
    let resource = u32::from_le_bytes([r0, r1, r2, r3]);
    let resource = if resource & PAGE != 0 {
        Resource::Page {
            matrix: ((resource & !PAGE) >> 16) as u16,
            row: (resource & 0xffff) as u16,
        }
    } else {
        Resource::Entity(resource)
    };
    let flags = u16::from_le_bytes([f0, f1]);
    Some(Query {
        principal: u32::from_le_bytes([p0, p1, p2, p3]),
        resource,
        action: u16::from_le_bytes([a0, a1]),
        target: (flags & 1 == 1).then(|| u32::from_le_bytes([t0, t1, t2, t3])),
        now: i64::from_le_bytes([n0, n1, n2, n3, n4, n5, n6, n7]),
    })
}

/// Appends the encoding of `d`.
pub fn encode_decision(d: &Decision, out: &mut Vec<u8>) {
    out.push(u8::from(d.allowed));
    // The count is one byte; a decision never has more than a few reasons, and one with
    // more is cut at 255 (the first reason, the one that decided, always stays).
    let n = u8::try_from(d.reasons.len()).unwrap_or(u8::MAX);
    out.push(n);
    for r in d.reasons.iter().take(usize::from(n)) {
        out.push(r.code as u8);
        out.extend_from_slice(&r.rule.to_le_bytes());
    }
    out.extend_from_slice(&d.valid_until.unwrap_or(NONE).to_le_bytes());
}

/// One decoded decision: what the wire carries (no revision or policy hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireDecision {
    /// Allow or deny.
    pub allowed: bool,
    /// The reasons.
    pub reasons: SmallVec<[Reason; 2]>,
    /// When time alone could change the decision.
    pub valid_until: Option<i64>,
}

/// Reads the decision at the start of `b`; returns it and the bytes it took.
pub fn decode_decision(b: &[u8]) -> Option<(WireDecision, usize)> {
    let allowed = *b.first()? == 1;
    let n = *b.get(1)? as usize;
    let mut at = 2;
    let mut reasons = SmallVec::new();
    for _ in 0..n {
        let code = Code::from_u8(*b.get(at)?)?;
        let rule = u32::from_le_bytes(b.get(at + 1..at + 5)?.try_into().ok()?);
        reasons.push(Reason { code, rule });
        at += 5;
    }
    let until = i64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?);
    Some((
        WireDecision {
            allowed,
            reasons,
            valid_until: (until != NONE).then_some(until),
        },
        at + 8,
    ))
}

/// Reads every decision of a buffer.
pub fn decode_decisions(mut b: &[u8]) -> Option<Vec<WireDecision>> {
    // Most decisions carry one reason or none: 15 bytes or 10.
    let mut out = Vec::with_capacity(b.len() / 14);
    while !b.is_empty() {
        let (d, used) = decode_decision(b)?;
        out.push(d);
        b = b.get(used..)?;
    }
    Some(out)
}

impl Code {
    /// Every code, in the order of its byte value.
    pub const ALL: [Code; 23] = [
        Code::Granted,
        Code::RequestInvalid,
        Code::EntityUnknown,
        Code::ActionUnknown,
        Code::PrincipalInvalid,
        Code::TargetInvalid,
        Code::Gate,
        Code::AccountMismatch,
        Code::RelationMissing,
        Code::RelationExpired,
        Code::ConditionFailed,
        Code::ExclusionMatched,
        Code::RoleNoneAssigned,
        Code::RoleMissingPermission,
        Code::FeatureDisabled,
        Code::SetupModeOff,
        Code::AuthorizationMissing,
        Code::AuthorizationExpired,
        Code::AuthorizationNotYetValid,
        Code::AuthorizationRevoked,
        Code::AuthorizationOutOfScope,
        Code::DepthExceeded,
        Code::DutyConflict,
    ];

    /// The code with byte value `b`.
    pub fn from_u8(b: u8) -> Option<Code> {
        Code::ALL.get(b as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_byte() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(*c as u8 as usize, i);
            assert_eq!(Code::from_u8(*c as u8), Some(*c));
        }
        assert_eq!(Code::from_u8(u8::try_from(Code::ALL.len()).unwrap()), None);
    }

    #[test]
    fn queries_and_decisions_round_trip() {
        let qs = [
            Query {
                principal: 7,
                resource: Resource::Entity(9),
                action: 3,
                target: Some(11),
                now: -5,
            },
            Query {
                principal: 1,
                resource: Resource::Page {
                    matrix: 2,
                    row: 300,
                },
                action: 4,
                target: None,
                now: i64::MAX,
            },
        ];
        for q in qs {
            let mut b = Vec::new();
            encode_query(&q, &mut b);
            assert_eq!(b.len(), QUERY_LEN);
            assert_eq!(decode_query(&b), Some(q));
        }
        let mut reasons = SmallVec::new();
        reasons.push(Reason {
            code: Code::Gate,
            rule: 77,
        });
        reasons.push(Reason {
            code: Code::AccountMismatch,
            rule: 1,
        });
        let d = Decision {
            allowed: false,
            reasons,
            revision: 3,
            policy_hash: [0; 32],
            valid_until: Some(1_777_680_000),
        };
        let mut b = Vec::new();
        encode_decision(&d, &mut b);
        encode_decision(
            &Decision {
                valid_until: None,
                ..d.clone()
            },
            &mut b,
        );
        let back = decode_decisions(&b).unwrap_or_default();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].reasons, d.reasons);
        assert_eq!(back[0].valid_until, Some(1_777_680_000));
        assert_eq!(back[1].valid_until, None);
        assert_eq!(decode_decisions(&b[..b.len() - 1]), None);
    }
}
