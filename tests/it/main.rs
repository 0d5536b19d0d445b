//! raccoond's integration tests: each starts the real daemon on a
//! temporary spool and checks what it leaves on disk, as a user would.

/// The harness: TestSpool, waits with deadlines.
mod support;
/// The spool pipeline: submission, params, limits, order, records.
mod core;
/// Mail: the message, retries, 5xx, sendmail, address checks.
mod mail;
