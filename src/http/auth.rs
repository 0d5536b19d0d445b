//! Who may ask, and what a browser is told: the bearer token, CORS and
//! preflights.
//!
//! Pure functions of a request's headers and the `[http]` configuration:
//! no IO, no state. It never logs or echoes the token or what a client
//! sent for it.
//!
//! Invariants: the token is compared in time that depends only on its
//! length, so that response times do not tell how much of a guess was
//! right; a CORS preflight is answered without credentials (browsers
//! never send any with one), and says nothing beyond the methods and
//! headers the API takes.

use super::request::Request;
use super::{Reply, TEXT};

/// The methods the API takes on some path, as preflights announce them.
const METHODS: &str = "GET, HEAD, POST, DELETE, OPTIONS";

/// Whether the request carries the token (`Authorization: Bearer <token>`).
pub(super) fn authorized(req: &Request, token: &str) -> bool {
    let Some(value) = req.header("Authorization") else {
        return false;
    };
    let value = value.trim();
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && same_secret(given.trim().as_bytes(), token.as_bytes())
}

/// Compares a secret in time that depends only on the secret's length.
fn same_secret(given: &[u8], want: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != want.len());
    for (i, w) in want.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ w;
    }
    std::hint::black_box(diff) == 0
}

/// The answer to `OPTIONS`: the methods, and with `cors_origin` set, what
/// a browser may send from there.
pub(super) fn preflight(cors: bool) -> Reply {
    let r = Reply::new(204, TEXT, "").header("Allow", METHODS);
    if !cors {
        return r;
    }
    r.header("Access-Control-Allow-Methods", METHODS)
        .header(
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type",
        )
        .header("Access-Control-Max-Age", "600")
}

/// The headers every answer carries when `cors_origin` is set.
pub(super) fn cors_headers(origin: &str) -> [(&'static str, &str); 2] {
    [
        ("Access-Control-Allow-Origin", origin),
        // The answer depends on the origin: caches must not mix them.
        ("Vary", "Origin"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        for bad in [&b"s3cre"[..], b"s3cret!", b"S3cret", b"", b"s3creu"] {
            assert!(!same_secret(bad, b"s3cret"), "{bad:?}");
        }
    }
}
