//! Job ids and the identity of this host and process: what a valid id is,
//! the id a name in `new/` asks for, fresh ids, and the host name.
//!
//! A leaf: it imports nothing of the crate but `time`. It never touches
//! the spool.
//!
//! Invariant: a fresh id is a valid id, unique across processes and hosts
//! sharing a spool (a per-process random nonce), and fresh ids sort by
//! submission time.

use std::fs::File;
use std::io::Read;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::time;

/// The name in `pause/` that pauses every type, and so the one name no
/// type may have.
pub const PAUSE_ALL: &str = "ALL";

/// A job id or a type name: 1-100 characters of `[A-Za-z0-9._-]`, not
/// starting with a dot.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id a name in `new/` asks for: the name without `.toml`, when that
/// is a valid id.
pub fn id_from_name(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".toml").unwrap_or(name);
    valid_id(stem).then_some(stem)
}

/// A new id: the submission time (so that ids sort by it), a nonce drawn
/// once per process (so that hosts and processes sharing a spool never
/// collide), and a counter.
pub fn fresh_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let stamp = time::format_rfc3339(time::now());
    // 2026-11-22T10:00:00.125Z -> 20261122T100000.125Z
    let compact: String = stamp.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    format!("{compact}-{:08x}-{n:04}", nonce())
}

/// A random number drawn once per process.
pub fn nonce() -> u32 {
    static NONCE: OnceLock<u32> = OnceLock::new();
    *NONCE.get_or_init(|| {
        let mut b = [0u8; 4];
        match File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
            Ok(()) => u32::from_le_bytes(b),
            Err(_) => std::process::id() ^ (time::unix_millis(time::now()) as u32),
        }
    })
}

/// This machine's host name (`localhost` when it has none that is UTF-8).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_spec() {
        for ok in ["a", "report-42", "x.y_z", &"a".repeat(100)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "é", &"a".repeat(101), ".."] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert_eq!(id_from_name("job.toml"), Some("job"));
        assert_eq!(id_from_name("job"), Some("job"));
        assert_eq!(id_from_name("my job.toml"), None);
    }

    #[test]
    fn fresh_ids_are_valid_unique_and_sorted() {
        let a = fresh_id();
        let b = fresh_id();
        assert!(valid_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(a < b || a[..20] == b[..20], "{a} {b}");
    }
}
