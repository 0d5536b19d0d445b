//! Property tests over the parsers and everything the daemon does with
//! what they admit: a job file, a JSON job or a configuration is parsed,
//! then run through deadlines, the queue, the report, `/metrics`, its
//! record and JSON, none of which may panic (SPEC §3).
//!
//! Test-only, and at the top of the crate: it reaches every stage, so no
//! stage depends on it.

mod config;
mod job;
