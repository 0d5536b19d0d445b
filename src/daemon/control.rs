//! Control: what operators ask for through files and signals.
//!
//! `cancel/<id>` stops a job (a running task gets SIGTERM, a queued job is
//! claimed and ends at once); SIGTERM and SIGINT start draining (nothing
//! new starts; tasks still running after `stop_timeout` are stopped and put
//! back); SIGHUP reads the configuration again. The signal thread started
//! here only forwards signals to the loop. A cancel request whose owner is
//! not the job's submitter, root or the daemon's user is removed and
//! logged (SPEC §13).
//!
//! Never acts on a job another live daemon runs, and never changes the
//! spool's location or the mail settings of a running daemon.

use std::sync::Arc;
use std::time::Instant;

use super::ingest::submitted_as;
use super::mailbox::Tx;
use super::submitter::{may_cancel, name_of, submitter_uid};
use super::{Daemon, Event, Fatal, Stop};
use crate::job;
use crate::record::{Outcome, Record, Status, signal_name};
use crate::spool::ClaimOutcome;
use crate::threads::Threads;
use crate::time::{self, format_duration};

/// Starts the thread that turns SIGTERM, SIGINT and SIGHUP into events.
pub(super) fn start_signals(tx: &Tx<Event>, threads: &Threads) -> Result<(), Fatal> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Fatal::Temporary(format!("cannot install signal handlers: {e}")))?;
    let tx = tx.clone();
    threads
        .spawn("signals", move || {
            for sig in signals.forever() {
                if tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Fatal::Temporary(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

impl Daemon {
    /// Acts on `cancel/<id>`: a running task of ours is stopped (its record
    /// says `cancelled` once it exits); a queued job is claimed and ends
    /// `cancelled` at once; a job another daemon runs is left to it.
    pub(super) fn cancel(&mut self, id: &str) {
        if !self.cancel_allowed(id) {
            let _ = self.spool.clear_cancel(id);
            return;
        }
        if let Some(r) = self.running.get_mut(id) {
            if r.stop.is_none() || r.stop == Some(Stop::Drain) {
                crate::log!("{id}: cancelling (SIGTERM to the process group)");
                r.term(Stop::Cancel);
            }
            return;
        }
        if let Some(name) = self.queue.name_of(id).map(str::to_string)
            && let Some(q) = self.queue.remove(&name)
        {
            self.dirty = true;
            // Claiming it first makes sure no other daemon starts it.
            match self.spool.claim(&q.name, &q.id, self.config.max_job_bytes) {
                Ok(ClaimOutcome::Claimed(claim)) => {
                    let now = time::now();
                    match job::parse(&claim.bytes, &self.config) {
                        Ok(job) => {
                            let outcome = Outcome {
                                status: Status::Cancelled,
                                error: Some("cancelled before it started".into()),
                                exit_code: None,
                                signal: None,
                                attempts: job.attempts,
                            };
                            let submitted_as = submitted_as(&claim.id, &q.name);
                            let rec = Record::of_job(
                                &claim.id,
                                &job,
                                q.submitted,
                                submitted_as,
                                outcome,
                                now,
                            );
                            self.conclude(rec, Some(&job), Some(claim.hold), None);
                        }
                        Err(_) => {
                            let keep = self.config.keep;
                            let rec = Record::of_submission(
                                &claim.id,
                                &claim.bytes,
                                Status::Cancelled,
                                None,
                                Some(q.submitted),
                                keep,
                                now,
                            );
                            self.conclude(rec, None, Some(claim.hold), None);
                        }
                    }
                }
                // Swapped for what is no file to read: rejected as such.
                Ok(ClaimOutcome::Refused(r)) => {
                    let submitted_as = submitted_as(&r.id, &q.name);
                    self.refuse(r, &format!("new/{}", q.name), submitted_as);
                }
                // Gone, or another daemon is taking it: theirs to cancel.
                Ok(ClaimOutcome::Gone | ClaimOutcome::Busy) => {}
                Err(e) => crate::log!("new/{}: cannot claim to cancel it: {e}", q.name),
            }
            let _ = self.spool.clear_cancel(id);
            return;
        }
        // Not ours: another daemon may be running it; else nothing to do.
        if crate::ids::valid_id(id) && self.spool.running_job(id).exists() {
            return;
        }
        if !self.spool.done_record(id).exists() {
            crate::log!("{id}: cancel: no such job");
        }
        let _ = self.spool.clear_cancel(id);
    }

    /// Whether `cancel/<id>` may cancel the job: its owner is the job's
    /// submitter, root, or the daemon's user (SPEC §13). A refused request
    /// is logged (the caller removes it); a request already gone asks
    /// nothing. A job that is neither running
    /// here nor queued here is not judged here.
    fn cancel_allowed(&self, id: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(request) = std::fs::symlink_metadata(self.spool.cancel_path(id)) else {
            // Gone (acted on, or refused and removed, by the time this
            // event came): nothing asks any more.
            return false;
        };
        let by = request.uid();
        let submitter = if let Some(r) = self.running.get(id) {
            r.hold.submitter()
        } else if let Some(name) = self.queue.name_of(id) {
            self.queued_submitter(name)
        } else {
            return true;
        };
        if may_cancel(by, submitter) {
            return true;
        }
        crate::log!(
            "{id}: cancel/{id} refused and removed: its owner {} is not the job's submitter ({}), root or raccoond's user",
            name_of(by),
            submitter.map_or_else(|| "unknown".into(), name_of)
        );
        false
    }

    /// Who submitted a queued job: its file's owner, or for a file of the
    /// daemon's own (a requeued copy) the `submitter` it names.
    fn queued_submitter(&self, name: &str) -> Option<u32> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let Ok(crate::spool::Entry::Regular { file, meta }) = self.spool.open_new(name) else {
            return None;
        };
        let mut bytes = Vec::new();
        let read = file
            .take(self.config.max_job_bytes + 1)
            .read_to_end(&mut bytes);
        let key = read
            .ok()
            .and_then(|_| job::parse(&bytes, &self.config).ok())
            .and_then(|j| j.submitter);
        submitter_uid(Some(meta.uid()), key.as_deref())
    }

    /// SIGTERM or SIGINT starts draining; SIGHUP reloads.
    pub(super) fn signal(&mut self, sig: i32) {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        match sig {
            SIGTERM | SIGINT if self.draining.is_none() => {
                let grace = self.config.stop_timeout;
                crate::log!(
                    "raccoond: {}, stopping: {} running job(s) may finish within {}",
                    signal_name(sig),
                    self.running.len(),
                    format_duration(grace)
                );
                self.notifier.send("STOPPING=1");
                self.draining = Some(time::deadline(Instant::now(), grace));
                self.dirty = true;
            }
            SIGTERM | SIGINT => {}
            SIGHUP => self.reload(),
            _ => {}
        }
    }

    /// Reads the configuration again; a broken one leaves the old in force.
    fn reload(&mut self) {
        let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.notifier
            .send(&format!("RELOADING=1\nMONOTONIC_USEC={monotonic}"));
        let path = self.config.path.clone();
        match crate::job::load_config(path.as_deref(), &self.overrides) {
            Ok(mut c) => {
                if format!("{:?}", c.mail) != format!("{:?}", self.config.mail) {
                    crate::log!("reload: [mail] changes take effect at the next start");
                }
                if c.spool != self.config.spool {
                    crate::log!(
                        "reload: spool cannot change while running; keeping {}",
                        self.config.spool.display()
                    );
                    c.spool = self.config.spool.clone();
                }
                if c.host != self.config.host {
                    // Other hosts know our jobs by the host we wrote.
                    crate::log!(
                        "reload: host cannot change while running; keeping {:?}",
                        self.config.host
                    );
                    c.host = self.config.host.clone();
                }
                crate::log!(
                    "reload: configuration read again from {}",
                    path.as_deref()
                        .map_or("(none)".into(), |p: &std::path::Path| p
                            .display()
                            .to_string())
                );
                self.config = Arc::new(c);
                self.board.set_config(self.config.clone());
                self.pool.reconfigure(&self.config.resources);
                // A type added or removed changes what pause/ means.
                self.read_pauses();
                self.spool = self.spool.with_fsync(self.config.fsync);
                self.committer.set_spool(self.spool.clone());
                self.describe_types();
                self.replan_schedules();
                self.dirty = true;
            }
            Err(e) => crate::log!("reload: {e}; the old configuration stays in force"),
        }
        self.notifier.send("READY=1");
    }
}
