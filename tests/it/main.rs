//! raccoond's integration tests: each starts the real daemon on a
//! temporary spool and checks what it leaves on disk, as a user would.

// Tests may unwrap: a panic is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The spool pipeline: submission, params, limits, order, records.
mod core;
/// Faults under the daemon: a full spool (blocks, inodes), a thread that dies.
mod faults;
/// Beyond the queue: dependencies, unique jobs, counted resources, pause.
mod features;
/// Following output as it is written: `raccoon output --follow`, and
/// `?follow=1` streams over HTTP (chunks, the end, bounds, clients that leave).
mod follow;
/// Hostile submitters and tasks: one test per finding of the security review.
mod hostile;
/// Several hosts on one spool: two bindfs mounts, a daemon with its own
/// `host` on each; each job runs once, a dead host's jobs after its lease.
mod hosts;
/// The HTTP API: every endpoint and error, tokens, traversal, idle clients.
mod http;
/// The HTTP server's limits: long heads, idle and excess connections,
/// keep-alive, and what they cost the daemon.
mod http_limits;
/// Mail: the message, retries, 5xx, sendmail, address checks.
mod mail;
/// A newcomer's first hour: the client's checks, types, show, retry, tables
/// and completions; the report's last hour; metrics that promtool accepts.
mod newcomer;
/// Operating it: systemd unit and notify, sysusers, tmpfiles, exit codes, man pages.
mod ops;
/// Regressions, named after the bugs they pin.
mod regression;
/// The HTML report: escaping, links, and a real browser's view of it.
mod report;
/// Crash recovery, signals, timeouts, retries, cancel, expiry, hostile input.
mod robust;
/// Scale: a flood of submissions held to `max_queued`, each run once.
mod scale;
/// Schedules: one job per tick across three daemons, one claim per tick
/// through two bindfs "hosts", catch_up after a SIGKILL, `raccoon
/// schedules` and the report's card, errors that stop the daemon.
mod schedules;
/// `user = "@submitter"`: jobs run as their file's owner, per_user,
/// cancels only by the submitter, root-owned submissions refused, 422 over HTTP.
mod submitters;
/// The harness: TestSpool, waits with deadlines.
mod support;
/// Tasks and their processes: the death signal as another user, per-job
/// cgroups (detached processes die with the job), `[usage]` in the record.
mod tasks;
