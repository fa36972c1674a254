//! One trace per saga instance, in the W3C trace context format.
//!
//! A saga instance's trace is fixed when it is submitted: the caller's [`TraceParent`] (the
//! `traceparent` header of the request that submitted it, see
//! [`SubmitOptions::traceparent`](crate::engine::SubmitOptions::traceparent)), or a new trace
//! when there is none. It is persisted with the instance (the `traceparent` column of
//! `saga_instance`, written by the insert that creates it), so every call of every step carries
//! it, also the calls an engine makes after a crash and a recovery, or after another engine took
//! the instance over. The step's [`StepContext::traceparent`](crate::StepContext::traceparent) is
//! what a call sends; over HTTP (feature `http`), `http::StepClient` sends it as the
//! `traceparent` header and `http::SagaHeaders` reads it on the participant side.
//!
//! # Spans
//!
//! The engine and the barrier make `tracing` spans:
//!
//! - `saga.submit` (debug; `gid`, `saga`, `created`): a submit.
//! - `saga` (info; `gid`, `saga`, `engine`, `fence`): an engine driving an instance, one per
//!   driver (a recovery or a takeover starts another).
//! - `saga.step` (debug; `gid`, `saga`, `step`, `op`, `attempt`, `outcome`, `error`): one call of
//!   an action or a compensation.
//! - `saga.barrier` (debug; `gid`, `step`, `op`, `barrier`, `outcome`): one barrier call on the
//!   participant side.
//!
//! With the feature `opentelemetry` and a `tracing-opentelemetry` layer installed, they are
//! OpenTelemetry spans of the saga's trace: `saga.submit` continues the caller's trace (or the
//! current span's) and is the parent that is persisted; each `saga` span is a child of it, each
//! `saga.step` a child of its `saga`, and a call's `traceparent` names its `saga.step` span, which
//! the participant's `saga.barrier` span continues. Without a layer (or without the feature) no
//! span is recorded, and a call sends the persisted parent: the trace id is the saga's all the
//! same.
//!
//! The call and barrier spans are at debug level, so that without an exporter they cost nothing:
//! the layer that exports them needs a filter that lets `saga_core` at debug through. A per-layer
//! filter whose answer is cached per callsite can miss spans when `log` records reach `tracing`
//! (through `tracing-log`) between its checks; the order example's `serve` filters its
//! OpenTelemetry layer with a `DynFilterFn`, asked every time.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// The length of a `traceparent` of version `00`: `00-{32 hex}-{16 hex}-{2 hex}`.
const ENCODED_LEN: usize = 55;

/// The sampled flag of the trace flags.
const SAMPLED: u8 = 0x01;

/// A W3C `traceparent`: a trace id, the id of the parent span and the trace flags.
///
/// Parsed from and shown as the header's text, `00-{trace id}-{parent id}-{flags}` in lowercase
/// hex (see [`TraceParent::parse`]).
///
/// ```
/// use saga_core::trace::TraceParent;
///
/// let parent: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
/// assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(parent.sampled());
/// assert_eq!(parent.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// Why a `traceparent` value was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent: {0}")]
pub struct ParseTraceParentError(&'static str);

impl TraceParent {
    /// A trace context from its parts; `None` when either id is all zeros (invalid in W3C).
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], sampled: bool) -> Option<Self> {
        let flags = if sampled { SAMPLED } else { 0 };
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace: random trace and parent ids, sampled.
    #[cfg(feature = "runtime")]
    pub fn random() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        loop {
            let (trace_id, parent_id) = (rng.random(), rng.random());
            if let Some(parent) = TraceParent::new(trace_id, parent_id, true) {
                return parent;
            }
        }
    }

    /// The trace of an instance persisted before traces were kept: derived from its gid, so it
    /// is the same for every call, in every engine.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn derived(gid: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::new()
            .chain_update(b"saga trace\0")
            .chain_update(gid.as_bytes())
            .finalize()
            .into();
        let mut trace_id = [0; 16];
        let mut parent_id = [0; 8];
        trace_id.copy_from_slice(&digest[..16]);
        parent_id.copy_from_slice(&digest[16..24]);
        // A digest of zeros in either part is as likely as a collision: mark it rather than fail.
        trace_id[15] |= u8::from(trace_id == [0; 16]);
        parent_id[7] |= u8::from(parent_id == [0; 8]);
        TraceParent {
            trace_id,
            parent_id,
            flags: SAMPLED,
        }
    }

    /// Parses a `traceparent` header value as W3C Trace Context says: two lowercase hex digits
    /// of version (not `ff`), a 32-digit trace id and a 16-digit parent id that are not all
    /// zeros, and two digits of flags, separated by `-`. A version `00` value is exactly 55
    /// characters; a later version may carry more after a further `-`, which is ignored.
    pub fn parse(value: &str) -> Result<Self, ParseTraceParentError> {
        let bytes = value.trim_matches(|c| c == ' ' || c == '\t').as_bytes();
        if bytes.len() < ENCODED_LEN {
            return Err(ParseTraceParentError("too short"));
        }
        let version = hex::<1>(&bytes[0..2]).ok_or(ParseTraceParentError("bad version"))?[0];
        if version == 0xff {
            return Err(ParseTraceParentError("version ff"));
        }
        if version == 0 && bytes.len() != ENCODED_LEN {
            return Err(ParseTraceParentError("version 00 is 55 characters long"));
        }
        if bytes.len() > ENCODED_LEN && bytes[ENCODED_LEN] != b'-' {
            return Err(ParseTraceParentError("bad separator"));
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(ParseTraceParentError("bad separator"));
        }
        let trace_id = hex::<16>(&bytes[3..35]).ok_or(ParseTraceParentError("bad trace id"))?;
        let parent_id = hex::<8>(&bytes[36..52]).ok_or(ParseTraceParentError("bad parent id"))?;
        let flags = hex::<1>(&bytes[53..55]).ok_or(ParseTraceParentError("bad flags"))?[0];
        if trace_id == [0; 16] {
            return Err(ParseTraceParentError("all-zero trace id"));
        }
        if parent_id == [0; 8] {
            return Err(ParseTraceParentError("all-zero parent id"));
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The trace id in lowercase hex, as in the header.
    pub fn trace_id_hex(&self) -> String {
        let encoded = self.encode();
        String::from_utf8_lossy(&encoded[3..35]).into_owned()
    }

    /// The id of the parent span.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller records this trace (the sampled flag).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The same trace with another parent span (`None` for an all-zero id).
    pub fn with_parent_id(self, parent_id: [u8; 8]) -> Option<Self> {
        (parent_id != [0; 8]).then_some(TraceParent { parent_id, ..self })
    }

    /// The header's text, version `00`.
    fn encode(&self) -> [u8; ENCODED_LEN] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; ENCODED_LEN];
        out[0] = b'0';
        out[1] = b'0';
        let mut at = 3;
        for part in [&self.trace_id[..], &self.parent_id[..], &[self.flags][..]] {
            for byte in part {
                out[at] = DIGITS[usize::from(byte >> 4)];
                out[at + 1] = DIGITS[usize::from(byte & 0x0f)];
                at += 2;
            }
            at += 1;
        }
        out
    }
}

/// `N` bytes from `2 * N` lowercase hex digits.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(d: u8) -> Option<u8> {
        match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

impl FromStr for TraceParent {
    type Err = ParseTraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceParent::parse(s)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex digits and dashes: always UTF-8.
        f.write_str(std::str::from_utf8(&self.encode()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

/// As the header's text.
impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encoded = self.encode();
        let text = std::str::from_utf8(&encoded).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceParent;

    /// A remote span context (the caller's span).
    impl From<TraceParent> for SpanContext {
        fn from(parent: TraceParent) -> Self {
            SpanContext::new(
                TraceId::from_bytes(parent.trace_id),
                SpanId::from_bytes(parent.parent_id),
                TraceFlags::new(parent.flags),
                true,
                TraceState::NONE,
            )
        }
    }

    impl TraceParent {
        /// The `traceparent` that names the span `context` as the parent; `None` for an
        /// invalid (empty) context.
        pub fn from_span_context(context: &SpanContext) -> Option<Self> {
            if !context.is_valid() {
                return None;
            }
            Some(TraceParent {
                trace_id: context.trace_id().to_bytes(),
                parent_id: context.span_id().to_bytes(),
                flags: context.trace_flags().to_u8(),
            })
        }

        /// The `traceparent` naming `span` as the parent, from its OpenTelemetry context:
        /// `None` when the span is disabled or no `tracing-opentelemetry` layer records it.
        pub fn of_span(span: &tracing::Span) -> Option<Self> {
            if span.is_disabled() {
                return None;
            }
            TraceParent::from_span_context(span.context().span().span_context())
        }

        /// Makes `span`, a span just made under the current span, continue this trace: in
        /// OpenTelemetry its parent becomes the span this `traceparent` names, unless the
        /// current span is in this trace already (then `span` stays its child). Call it before
        /// `span` is first entered. Does nothing when `span` is disabled or no
        /// `tracing-opentelemetry` layer records it.
        pub fn set_parent_of(&self, span: &tracing::Span) {
            if span.is_disabled() {
                return;
            }
            // An empty context is no allocation: find out first whether a layer records the
            // span (and that it has not started), before making the remote parent.
            if span.set_parent(opentelemetry::Context::new()).is_err() {
                return;
            }
            let current = tracing::Span::current().context();
            let in_trace = {
                let own = current.span();
                let own = own.span_context();
                own.is_valid() && own.trace_id().to_bytes() == self.trace_id
            };
            let parent = if in_trace {
                current
            } else {
                opentelemetry::Context::new().with_remote_span_context(SpanContext::from(*self))
            };
            let _ = span.set_parent(parent);
        }
    }
}

/// The parent a call made under `span` names: the span itself when it is recorded in
/// OpenTelemetry, else `fallback`.
#[cfg(feature = "runtime")]
pub(crate) fn parent_for(span: &tracing::Span, fallback: TraceParent) -> TraceParent {
    #[cfg(feature = "opentelemetry")]
    if let Some(own) = TraceParent::of_span(span) {
        return own;
    }
    let _ = span;
    fallback
}

/// The parent a call made under the current span names, when that span is recorded in
/// OpenTelemetry.
#[cfg(feature = "runtime")]
pub(crate) fn parent_for_current() -> Option<TraceParent> {
    #[cfg(feature = "opentelemetry")]
    return TraceParent::of_span(&tracing::Span::current());
    #[cfg(not(feature = "opentelemetry"))]
    None
}

/// Makes `span` continue the trace of `parent` (see `TraceParent::set_parent_of`); without the
/// feature `opentelemetry`, nothing to do.
#[cfg(feature = "runtime")]
pub(crate) fn continue_trace(span: &tracing::Span, parent: &TraceParent) {
    #[cfg(feature = "opentelemetry")]
    parent.set_parent_of(span);
    let _ = (span, parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_shows_the_header() {
        let parent = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(parent.to_string(), EXAMPLE);
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            parent.parent_id(),
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert!(parent.sampled());
        assert_eq!(
            serde_json::to_value(parent).unwrap(),
            serde_json::Value::String(EXAMPLE.into())
        );
        let unsampled = TraceParent::parse(&EXAMPLE.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn refuses_what_w3c_refuses() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for value in bad {
            assert!(TraceParent::parse(value).is_err(), "{value:?} was accepted");
        }
        // A later version may carry more fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-else";
        assert_eq!(TraceParent::parse(later).unwrap().to_string(), EXAMPLE);
    }

    #[cfg(feature = "runtime")]
    #[test]
    fn new_traces_are_valid_and_distinct() {
        let (a, b) = (TraceParent::random(), TraceParent::random());
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(TraceParent::parse(&a.to_string()), Ok(a));
        assert_eq!(TraceParent::new([0; 16], [1; 8], true), None);
        assert_eq!(a.with_parent_id([0; 8]), None);
        let child = a.with_parent_id([7; 8]).unwrap();
        assert_eq!(
            (child.trace_id(), child.parent_id()),
            (a.trace_id(), [7; 8])
        );
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[test]
    fn derived_traces_are_stable_per_gid() {
        assert_eq!(
            TraceParent::derived("order-1"),
            TraceParent::derived("order-1")
        );
        assert_ne!(
            TraceParent::derived("order-1").trace_id(),
            TraceParent::derived("order-2").trace_id()
        );
    }
}
