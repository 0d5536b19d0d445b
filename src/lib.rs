//! raccoond: a file-based job spool daemon in the cron/maildir tradition.
//!
//! The modules follow a job through the pipeline; ARCHITECTURE.md has the
//! map. `raccoond` (src/main.rs) and `raccoon` (src/bin/raccoon.rs) are thin
//! shells over this library.

/// One log line on standard error, written with one `write(2)` so that
/// lines from different threads never interleave (and a line costs one
/// system call, not one per formatted piece). No timestamp: journald adds
/// it.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

pub mod bounds;
pub mod catalog;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod commit;
pub mod config;
pub mod daemon;
pub mod escape;
pub mod follow;
pub mod fsio;
#[cfg(test)]
mod fuzz;
pub mod history;
pub mod http;
pub mod ids;
pub mod inotify;
pub mod job;
pub mod mail;
pub mod metrics;
pub mod mime;
pub mod pool;
pub mod record;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod sdnotify;
pub mod space;
pub mod spool;
pub mod status;
pub mod sweeper;
pub mod threads;
pub mod time;
pub mod values;
pub mod watch;
