//! raccoond's integration tests: each starts the real daemon on a
//! temporary spool and checks what it leaves on disk, as a user would.

// Tests may unwrap: a panic is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The spool pipeline: submission, params, limits, order, records.
mod core;
/// Hostile submitters and tasks: one test per finding of the security review.
mod hostile;
/// The HTTP API: every endpoint and error, tokens, traversal, idle clients.
mod http;
/// The HTTP server's limits: long heads, idle and excess connections,
/// keep-alive, and what they cost the daemon.
mod http_limits;
/// Mail: the message, retries, 5xx, sendmail, address checks.
mod mail;
/// Operating it: systemd unit and notify, sysusers, tmpfiles, exit codes, man pages.
mod ops;
/// The HTML report: escaping, links, and a real browser's view of it.
mod report;
/// Crash recovery, signals, timeouts, retries, cancel, expiry, hostile input.
mod robust;
/// The harness: TestSpool, waits with deadlines.
mod support;
