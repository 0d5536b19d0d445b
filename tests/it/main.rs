//! raccoond's integration tests: each starts the real daemon on a
//! temporary spool and checks what it leaves on disk, as a user would.

/// The spool pipeline: submission, params, limits, order, records.
mod core;
/// The HTTP API: every endpoint and error, tokens, traversal, idle clients.
mod http;
/// The HTML report: escaping, links, and a real browser's view of it.
mod report;
/// The harness: TestSpool, waits with deadlines.
mod support;
