//! raccoond: a file-based job spool daemon in the cron/maildir tradition.
//!
//! The modules follow a job through the pipeline; ARCHITECTURE.md has the
//! map. `raccoond` (src/main.rs) and `raccoon` (src/bin/raccoon.rs) are thin
//! shells over this library.

pub mod cli;
pub mod commit;
pub mod config;
pub mod daemon;
pub mod http;
pub mod job;
pub mod mail;
pub mod record;
pub mod report;
pub mod runner;
pub mod scheduler;
pub mod sdnotify;
pub mod spool;
pub mod status;
pub mod sweeper;
pub mod time;
pub mod watch;
