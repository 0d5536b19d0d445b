//! Finishing: carrying out how a job ends.
//!
//! A task's exit, a task that could not start, a job found interrupted by
//! recovery and a claimed text that is no job all come to [`Daemon::end`],
//! which asks [`ending::decide`] and then either puts the job back into
//! `new/` (here, synchronously) or makes its record and hands it to the
//! commit thread ([`Daemon::conclude`], which every record goes through:
//! it also logs the end, counts it for `/metrics` and the report, and
//! decides whether the record is mailed).
//!
//! Never writes a record (the commit thread does), and never decides a
//! retry itself (`ending` does).

use std::time::SystemTime;

use super::Daemon;
use super::ending::{self, Cause, Ending, Terms};
use super::{RunningJob, Stop};
use crate::commit::Finish;
use crate::config::{DEFAULT_RETRY_DELAY, Notify};
use crate::job::Job;
use crate::record::Record;
use crate::runner::Output;
use crate::spool::Hold;
use crate::status::{FinishedRow, IndexRow, ROWS};
use crate::time::{self, format_duration};

/// A job file this daemon holds claimed in `running/`, as the end of its
/// attempt needs it: what its record or its requeued copy is made of.
pub(super) struct Claimed<'a> {
    /// The job's id: its name in `running/` and its record's.
    pub id: &'a str,
    /// `None` when the claimed text is not a job (it is then rejected).
    pub job: Option<&'a Job>,
    /// The claimed text: a requeued copy is made from it, a rejected one
    /// is quoted in its record.
    pub bytes: &'a [u8],
    /// When it was submitted, if known: else the job file's own
    /// `submitted`, else now.
    pub submitted: Option<SystemTime>,
    /// The name it had in `new/` when that is not `<id>.toml`.
    pub submitted_as: Option<String>,
    /// When its task started; `None` when none did, or when nobody knows
    /// (recovery): the record then has no `started`.
    pub started: Option<SystemTime>,
    /// This attempt's number, from 1; 0 for a text that is no job.
    pub attempt: u32,
}

impl Daemon {
    /// A task of ours exited and its output is written: its job ends.
    pub(super) fn exited(&mut self, id: &str, mut output: Output) {
        let Some(r) = self.running.remove(id) else {
            return;
        };
        self.pool.give(&r.grant);
        self.dirty = true;
        let status = match r.task.reap(&mut output) {
            Ok(s) => s,
            Err(e) => {
                crate::log!("{id}: cannot reap pid {}: {e}", r.task.id());
                return;
            }
        };
        let cause = match r.stop {
            None => Cause::Exited(status),
            Some(Stop::Timeout) => Cause::TimedOut(status),
            Some(Stop::Cancel) => Cause::Cancelled(status),
            Some(Stop::Drain) => Cause::Drained,
        };
        let RunningJob {
            job,
            bytes,
            hold,
            submitted,
            submitted_as,
            started,
            attempt,
            stop,
            ..
        } = r;
        let claimed = Claimed {
            id,
            job: Some(&job),
            bytes: &bytes,
            submitted: Some(submitted),
            submitted_as,
            started: Some(started),
            attempt,
        };
        self.end(claimed, hold, cause, Some(output));
        if stop == Some(Stop::Cancel) {
            let _ = self.spool.clear_cancel(id);
        }
    }

    /// Ends an attempt at a claimed job as [`ending::decide`] says: back
    /// into `new/`, or a record to commit. `hold` is let go of once the
    /// requeued copy or the record is in place.
    pub(super) fn end(&mut self, c: Claimed, hold: Hold, cause: Cause, output: Option<Output>) {
        if !self.spool.still_ours(c.id, &hold) {
            // Cut off longer than the lease: a daemon of another host took
            // the job back and records or reruns it; ours would be a
            // second record.
            crate::log!(
                "{}: taken back by another host while it ran here (lease ran out); no record from this host",
                c.id
            );
            self.spool.release(hold);
            return;
        }
        let now = time::now();
        let terms = c.job.map_or_else(Terms::default, |job| Terms {
            retries: job.retries,
            retry_delay: self
                .config
                .types
                .get(&job.kind)
                .map_or(DEFAULT_RETRY_DELAY, |t| t.retry_delay),
            timeout: job.timeout,
        });
        match ending::decide(cause, c.attempt, &terms, now, jitter(now)) {
            Ending::Requeue(r) => {
                let id = c.id;
                match r.not_before {
                    Some(at) => crate::log!(
                        "{id}: {}; retry {}/{} in {}",
                        r.why,
                        r.attempts,
                        terms.retries,
                        format_duration(at.duration_since(now).unwrap_or_default())
                    ),
                    None if r.counted => crate::log!(
                        "{id}: recover: {}; put back in new/ (attempt {} counted)",
                        r.why,
                        r.attempts
                    ),
                    None => crate::log!("{id}: put back in new/ ({})", r.why),
                }
                let mut text = r.text(c.bytes, c.submitted.unwrap_or(now));
                if let Some(uid) = hold.submitter() {
                    text = with_submitter(&text, &super::submitter::shown_name(uid));
                }
                self.requeue(id, text.as_bytes(), hold);
            }
            Ending::Record(outcome) => {
                let rec = match (c.job, c.started) {
                    (None, _) => {
                        let keep = self.config.keep;
                        let mut rec = Record::of_submission(
                            c.id,
                            c.bytes,
                            outcome.status,
                            outcome.error,
                            c.submitted,
                            keep,
                            now,
                        );
                        rec.submitted_as = c.submitted_as;
                        if std::str::from_utf8(c.bytes).is_err() {
                            // Every byte kept, as text that reads back to it.
                            rec.source = Some(crate::escape::escape_bytes(c.bytes));
                        }
                        rec
                    }
                    (Some(job), None) => Record::of_job(
                        c.id,
                        job,
                        c.submitted.unwrap_or(now),
                        c.submitted_as,
                        outcome,
                        now,
                    ),
                    (Some(job), Some(started)) => Record::of_run(
                        c.id,
                        job,
                        c.submitted.unwrap_or(now),
                        c.submitted_as,
                        started,
                        outcome,
                        now,
                    ),
                };
                self.conclude(rec, c.job, Some(hold), output);
            }
        }
    }

    /// Ends a job with its record: logs it, counts it, decides whether it
    /// is mailed, and hands it to the commit thread (which writes it, then
    /// lets go of `hold`).
    pub(super) fn conclude(
        &mut self,
        mut rec: Record,
        job: Option<&Job>,
        hold: Option<Hold>,
        output: Option<Output>,
    ) {
        rec.usage = output.as_ref().and_then(|o| o.usage);
        // Before the record goes to be written: see `Spool::release_unique`.
        if let Some(j) = job {
            self.release_key(&rec.id, j);
        }
        self.job_ended(&rec.id, rec.status);
        if rec.submitter.is_none() {
            rec.submitter = hold
                .as_ref()
                .and_then(Hold::submitter)
                .map(super::submitter::shown_name);
        }
        let notify = job
            .and_then(|j| self.config.types.get(&j.kind))
            .map_or(Notify::Always, |t| t.notify);
        let mail = self.mail_enabled
            && !rec.email.is_empty()
            && match notify {
                Notify::Always => true,
                Notify::Failure => rec.status.is_failure(),
                Notify::Never => false,
            };
        if !rec.email.is_empty() {
            rec.mail = Some(if mail { "pending" } else { "none" }.into());
        }
        let mut line = format!("{}: {}", rec.id, rec.status);
        if let Some(c) = rec.exit_code {
            line.push_str(&format!(" exit={c}"));
        }
        if let Some(s) = &rec.signal {
            line.push_str(&format!(" signal={s}"));
        }
        if let Some(d) = rec.duration() {
            line.push_str(&format!(" after {}", format_duration(d)));
        }
        if let Some(e) = &rec.error {
            line.push_str(&format!(" ({e})"));
        }
        crate::log!("{line}");
        // A rejected file may claim any type: count those under "" so that
        // junk cannot grow the metrics without bound.
        let counted = if self.config.types.contains_key(&rec.kind) {
            rec.kind.clone()
        } else {
            String::new()
        };
        *self
            .finished_counts
            .entry((counted.clone(), rec.status))
            .or_default() += 1;
        if let Some(d) = rec.duration() {
            self.durations
                .entry(rec.kind.clone())
                .or_default()
                .observe(d);
        }
        let row = FinishedRow {
            id: rec.id.clone(),
            kind: rec.kind.clone(),
            status: rec.status,
            finished: rec.finished_at().unwrap_or_else(time::now),
            duration: rec.duration(),
            exit_code: rec.exit_code,
            signal: rec.signal.clone(),
            error: rec.error.clone(),
            usage: rec.usage,
            submitter: rec.submitter.clone(),
        };
        std::sync::Arc::make_mut(&mut self.history).observe(&counted, &row, time::now());
        self.recent.push_front(row);
        self.recent.truncate(ROWS);
        // Before the commit thread has it: a record on disk is always in
        // the index HTTP lists from.
        self.board.update_finished(|index| {
            index.push(IndexRow {
                id: rec.id.as_str().into(),
                kind: rec.kind.as_str().into(),
                status: rec.status,
                finished: rec.finished_at().unwrap_or_else(time::now),
            });
        });
        self.dirty = true;
        self.committer.finish(Finish {
            record: rec,
            hold,
            output,
            mail,
        });
    }

    /// Puts a job back into `new/`, here on the loop's thread and not on
    /// the commit thread: until it returns, the job's file is in both
    /// `new/` and `running/`, and a claim of the new file then would see
    /// its id taken. Rare (retries, shutdown, recovery), so cheap enough.
    /// `hold` is let go of only once the copy is in `new/`: else the job
    /// stays where it is, for recovery.
    pub(super) fn requeue(&self, id: &str, text: &[u8], hold: Hold) {
        match self.spool.requeue(id, text) {
            Ok(()) => self.spool.release(hold),
            Err(e) => crate::log!("{id}: cannot put back in new/: {e}"),
        }
    }
}

/// A fraction in -0.1..=0.1 drawn from the clock's nanoseconds: enough to
/// spread the retries of jobs that failed together.
fn jitter(now: SystemTime) -> f64 {
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 2001) / 10_000.0 - 0.1
}

/// A requeued copy's text with its first submitter written down (the copy
/// is the daemon's own file: its owner no longer says who submitted it).
fn with_submitter(text: &str, name: &str) -> String {
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return text.to_string();
    };
    table.insert("submitter".into(), toml::Value::String(name.into()));
    toml::to_string(&table).unwrap_or_else(|_| text.to_string())
}
