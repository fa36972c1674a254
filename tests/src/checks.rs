//! Collecting contract mismatches so that one test reports all of them at once.

use crate::api::Reply;

/// A list of failed contract checks; [`Checks::finish`] panics with all of them.
///
/// ```
/// let mut checks = acceptance::Checks::new();
/// checks.check(1 + 1 == 2, || "arithmetic".to_string());
/// checks.finish();
/// ```
#[derive(Debug, Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    /// No failures yet.
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Records `message()` when `ok` is false; returns `ok`.
    pub fn check(&mut self, ok: bool, message: impl FnOnce() -> String) -> bool {
        if !ok {
            self.failures.push(message());
        }
        ok
    }

    /// Checks that `reply` has one of the `expected` statuses, and, when it is a 4xx/5xx, that
    /// its body is a JSON `{"error": "..."}` (the contract's error shape). `what` names the
    /// request (`"POST /api/busi/submitOrder with product_count 0"`). Returns whether both
    /// held.
    pub fn status(&mut self, what: &str, reply: &Reply, expected: &[u16]) -> bool {
        let status_ok = expected.contains(&reply.status);
        let shape_ok = reply.status < 400 || reply.has_json_error();
        self.check(status_ok, || {
            format!("{what}: expected {expected:?}, got {reply}")
        });
        self.check(!status_ok || shape_ok, || {
            format!("{what}: error reply without a JSON {{\"error\": \"...\"}} body: {reply}")
        });
        status_ok && shape_ok
    }

    /// The failures so far.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// Panics listing every failure, if there is any.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "{} contract check(s) failed:\n  {}",
                self.failures.len(),
                self.failures.join("\n  ")
            );
        }
    }
}

/// Whether `text` is an RFC 3339 UTC timestamp with milliseconds, as the contract prints
/// them: `2026-11-25T19:22:00.123Z`.
pub fn is_rfc3339_utc_millis(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| range.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}
