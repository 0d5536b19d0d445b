//! How an attempt at a job ends: one pure decision.
//!
//! Takes why the attempt is over ([`Cause`]: the task's exit, a timeout, a
//! cancel, shutdown, a daemon that died under it, a text that is no job),
//! the attempt's number, the job's retry [`Terms`], `now` and a jitter; says
//! whether the job ends with a record (and what the record says of the
//! end) or goes back to `new/` (with which `attempts` and `not_before`). The
//! loop's handling of a task's exit, a task that cannot start and recovery
//! after a crash all ask here, so a retry is decided in one place.
//!
//! Never does IO, never reads a clock, never touches a job's files: the
//! daemon carries the decision out (`finish.rs`).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use crate::record::{Outcome, Status, signal_name};
use crate::time::{self, format_duration};

/// Why an attempt at a job is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The task ended by itself: an exit status, or a signal nobody here sent.
    Exited(ExitStatus),
    /// The daemon stopped it when its `timeout` ran out.
    TimedOut(ExitStatus),
    /// The daemon stopped it because `cancel/<id>` asked.
    Cancelled(ExitStatus),
    /// The daemon stopped it at shutdown, once `stop_timeout` had passed:
    /// the job never had its chance, so the attempt does not count.
    Drained,
    /// Its task could not be started: why.
    Unstartable(String),
    /// Found in `running/` with no live process holding it: the daemon that
    /// ran it died. The task may have run, so the attempt counts.
    Interrupted,
    /// The claimed text is not a job: why. Never retried.
    Rejected(String),
}

/// What the job file and its type say about retrying.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terms {
    /// The job's `retries`: how many attempts may follow a failed first one.
    pub retries: u32,
    /// The type's `retry_delay`: the wait before the first retry, doubled
    /// for each one after.
    pub retry_delay: Duration,
    /// The job's `timeout`, for the words of a `timed_out` record.
    pub timeout: Option<Duration>,
}

/// What becomes of a job whose attempt is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The job ends: its record says this.
    Record(Outcome),
    /// The job goes back to `new/` for another attempt.
    Requeue(Requeue),
}

/// A job going back to `new/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeue {
    /// The `attempts` its requeued copy says: the attempts that counted.
    pub attempts: u32,
    /// Not to start before this (a retry's delay); `None`: at once.
    pub not_before: Option<SystemTime>,
    /// Whether the attempt that just ended counts against `retries`.
    pub counted: bool,
    /// Why, in words for the log.
    pub why: String,
}

/// Decides how the attempt numbered `attempt` (from 1: the job file's
/// `attempts` + 1) ends. `jitter` is the fraction of the retry delay added
/// or taken away (clamped to ±0.1), so that jobs failing together do not
/// retry together; the caller draws it.
pub fn decide(cause: Cause, attempt: u32, terms: &Terms, now: SystemTime, jitter: f64) -> Ending {
    let record = |status, error, exit: Option<ExitStatus>| {
        let (exit_code, signal) = exit.map_or((None, None), split_exit);
        Ending::Record(Outcome {
            status,
            error,
            exit_code,
            signal,
            attempts: attempt,
        })
    };
    // A failure: another attempt while retries remain, else `failed`.
    let failed = |why: String, exit: Option<ExitStatus>| {
        if attempt <= terms.retries {
            let delay = time::retry_delay(terms.retry_delay, attempt, jitter);
            Ending::Requeue(Requeue {
                attempts: attempt,
                not_before: Some(time::add(now, delay)),
                counted: true,
                why,
            })
        } else {
            record(Status::Failed, Some(why), exit)
        }
    };
    match cause {
        Cause::Exited(status) if status.success() => record(Status::Succeeded, None, Some(status)),
        Cause::Exited(status) => failed(describe_exit(status), Some(status)),
        Cause::Unstartable(why) => failed(format!("cannot start: {why}"), None),
        Cause::TimedOut(status) => {
            let limit = terms.timeout.map(format_duration).unwrap_or_default();
            let why = format!("timed out after {limit}");
            record(Status::TimedOut, Some(why), Some(status))
        }
        Cause::Cancelled(status) => {
            record(Status::Cancelled, Some("cancelled".into()), Some(status))
        }
        Cause::Drained => Ending::Requeue(Requeue {
            attempts: attempt.saturating_sub(1),
            not_before: None,
            counted: false,
            why: "shutdown".into(),
        }),
        // Put back at once: the wait was the crash and the restart.
        Cause::Interrupted if attempt <= terms.retries => Ending::Requeue(Requeue {
            attempts: attempt,
            not_before: None,
            counted: true,
            why: "interrupted".into(),
        }),
        Cause::Interrupted => record(Status::Failed, Some("interrupted".into()), None),
        Cause::Rejected(why) => Ending::Record(Outcome {
            status: Status::Rejected,
            error: Some(why),
            exit_code: None,
            signal: None,
            attempts: 0,
        }),
    }
}

/// The exit code, or the name of the signal that ended the task.
fn split_exit(status: ExitStatus) -> (Option<i32>, Option<String>) {
    match (status.code(), status.signal()) {
        (Some(c), _) => (Some(c), None),
        (None, Some(s)) => (None, Some(signal_name(s))),
        _ => (None, None),
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match split_exit(status) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by {s}"),
        _ => "ended".into(),
    }
}

impl Requeue {
    /// The job file's text as it goes back into `new/`: `attempts`,
    /// `submitted` and (for a retry) `not_before` set, the rest kept.
    pub fn text(&self, bytes: &[u8], submitted: SystemTime) -> String {
        let text = String::from_utf8_lossy(bytes);
        let mut table: toml::Table = toml::from_str(&text).unwrap_or_default();
        table.insert(
            "attempts".into(),
            toml::Value::Integer(i64::from(self.attempts)),
        );
        table.insert(
            "submitted".into(),
            toml::Value::Datetime(time::to_toml(submitted)),
        );
        if let Some(t) = self.not_before {
            table.insert("not_before".into(), toml::Value::Datetime(time::to_toml(t)));
        }
        toml::to_string(&table).unwrap_or_else(|_| text.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn killed(sig: i32) -> ExitStatus {
        ExitStatus::from_raw(sig)
    }

    fn record(
        status: Status,
        error: Option<&str>,
        exit_code: Option<i32>,
        signal: Option<&str>,
        attempts: u32,
    ) -> Ending {
        Ending::Record(Outcome {
            status,
            error: error.map(str::to_string),
            exit_code,
            signal: signal.map(str::to_string),
            attempts,
        })
    }

    fn requeue(
        attempts: u32,
        after: Option<u64>,
        counted: bool,
        why: &str,
        now: SystemTime,
    ) -> Ending {
        Ending::Requeue(Requeue {
            attempts,
            not_before: after.map(|s| time::add(now, Duration::from_secs(s))),
            counted,
            why: why.into(),
        })
    }

    #[test]
    fn every_way_an_attempt_ends() {
        let now = time::parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
        let terms = |retries| Terms {
            retries,
            retry_delay: Duration::from_secs(10),
            timeout: Some(Duration::from_secs(90)),
        };
        let rows: Vec<(&str, Cause, u32, u32, Ending)> = vec![
            (
                "success",
                Cause::Exited(exit(0)),
                1,
                2,
                record(Status::Succeeded, None, Some(0), None, 1),
            ),
            (
                "failure with retries left: the next in 10 s",
                Cause::Exited(exit(3)),
                1,
                2,
                requeue(1, Some(10), true, "exited with status 3", now),
            ),
            (
                "second failure: the delay doubles",
                Cause::Exited(exit(3)),
                2,
                2,
                requeue(2, Some(20), true, "exited with status 3", now),
            ),
            (
                "failure with no retries left",
                Cause::Exited(exit(3)),
                3,
                2,
                record(
                    Status::Failed,
                    Some("exited with status 3"),
                    Some(3),
                    None,
                    3,
                ),
            ),
            (
                "a crash by signal is a failure like any",
                Cause::Exited(killed(11)),
                1,
                0,
                record(
                    Status::Failed,
                    Some("killed by SIGSEGV"),
                    None,
                    Some("SIGSEGV"),
                    1,
                ),
            ),
            (
                "a crash by signal with retries left",
                Cause::Exited(killed(11)),
                1,
                1,
                requeue(1, Some(10), true, "killed by SIGSEGV", now),
            ),
            (
                "a task that cannot start is retried",
                Cause::Unstartable("no such file".into()),
                1,
                1,
                requeue(1, Some(10), true, "cannot start: no such file", now),
            ),
            (
                "a task that cannot start, past its retries",
                Cause::Unstartable("no such file".into()),
                1,
                0,
                record(
                    Status::Failed,
                    Some("cannot start: no such file"),
                    None,
                    None,
                    1,
                ),
            ),
            (
                "timeout: never retried",
                Cause::TimedOut(killed(15)),
                1,
                2,
                record(
                    Status::TimedOut,
                    Some("timed out after 1m30s"),
                    None,
                    Some("SIGTERM"),
                    1,
                ),
            ),
            (
                "cancel: never retried",
                Cause::Cancelled(exit(143)),
                1,
                2,
                record(Status::Cancelled, Some("cancelled"), Some(143), None, 1),
            ),
            (
                "shutdown: back at once, the attempt not counted",
                Cause::Drained,
                3,
                0,
                requeue(2, None, false, "shutdown", now),
            ),
            (
                "recovery: back at once, the attempt counted",
                Cause::Interrupted,
                2,
                2,
                requeue(2, None, true, "interrupted", now),
            ),
            (
                "recovery past the retries",
                Cause::Interrupted,
                3,
                2,
                record(Status::Failed, Some("interrupted"), None, None, 3),
            ),
            (
                "rejection: never retried, never attempted",
                Cause::Rejected("missing type".into()),
                1,
                5,
                record(Status::Rejected, Some("missing type"), None, None, 0),
            ),
        ];
        for (what, cause, attempt, retries, want) in rows {
            let got = decide(cause, attempt, &terms(retries), now, 0.0);
            assert_eq!(got, want, "{what}");
        }
    }
}
