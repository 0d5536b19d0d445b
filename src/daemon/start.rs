//! Starting: the queue into tasks.
//!
//! Asks the scheduler what may start under the limits, claims it (the
//! spool takes it out of `new/` and copies it into `running/` under the
//! daemon's lock), parses the copied text again (what runs is what was
//! claimed) and starts its task. A claimed text that is no longer a job,
//! an entry swapped for something that is no file to read (a folder, a
//! link), and a task that cannot start, end at once through `finish`.
//!
//! Never starts anything while draining, and never waits for a task.

use std::collections::HashMap;
use std::time::Instant;

use super::ending::Cause;
use super::finish::Claimed;
use super::ingest::submitted_as;
use super::{Daemon, RunningJob, SETTLE};
use crate::job;
use crate::runner;
use crate::scheduler::{Queued, Slots};
use crate::spool::{Claim, ClaimOutcome};
use crate::time;

impl Daemon {
    /// Starts queued jobs while the scheduler finds one a slot.
    pub(super) fn start_ready(&mut self) {
        if self.draining.is_some() {
            return;
        }
        self.queue.promote(time::now());
        loop {
            let mut by_type: HashMap<&str, usize> = HashMap::new();
            for r in self.running.values() {
                *by_type.entry(r.job.kind.as_str()).or_default() += 1;
            }
            let config = self.config.clone();
            let limit = |k: &str| config.limit_of(k);
            let running = |k: &str| by_type.get(k).copied().unwrap_or(0);
            let slots = Slots {
                total: config.total,
                running_total: self.running.len(),
                limit: &limit,
                running: &running,
            };
            let Some(next) = self.queue.next(&slots).cloned() else {
                return;
            };
            drop(by_type);
            self.queue.remove(&next.name);
            self.dirty = true;
            self.start(next);
        }
    }

    /// Claims a queued job and starts its task.
    fn start(&mut self, q: Queued) {
        let Claim { id, bytes, hold } =
            match self.spool.claim(&q.name, &q.id, self.config.max_job_bytes) {
                Ok(ClaimOutcome::Claimed(c)) => c,
                // Swapped since it was queued for what is no file to read.
                Ok(ClaimOutcome::Refused(r)) => {
                    let submitted_as = submitted_as(&r.id, &q.name);
                    self.refuse(r, &format!("new/{}", q.name), submitted_as);
                    return;
                }
                Ok(ClaimOutcome::Gone) => return,
                // Another daemon is claiming it: look again after the
                // settle time.
                Ok(ClaimOutcome::Busy) => {
                    self.settling.insert(q.name, Instant::now() + SETTLE);
                    return;
                }
                Err(e) => {
                    crate::log!("new/{}: cannot claim: {e}", q.name);
                    return;
                }
            };
        let submitted_as = submitted_as(&id, &q.name);
        // The file may have changed since it was queued: what runs is what
        // is in running/ now, checked again.
        let job = match job::parse(&bytes, &self.config) {
            Ok(j) => j,
            Err(error) => {
                let claimed = Claimed {
                    id: &id,
                    job: None,
                    bytes: &bytes,
                    submitted: Some(q.submitted),
                    submitted_as,
                    started: None,
                    attempt: 0,
                };
                self.end(claimed, hold, Cause::Rejected(error), None);
                return;
            }
        };
        // A job that parses has a known type; without one, or without the
        // lock its task must inherit, it cannot start.
        let ty = self.config.types.get(&job.kind).cloned();
        let (Some(ty), Some(lock_fd)) = (ty, hold.lock_fd()) else {
            let claimed = Claimed {
                id: &id,
                job: Some(&job),
                bytes: &bytes,
                submitted: Some(q.submitted),
                submitted_as,
                started: None,
                attempt: job.attempts + 1,
            };
            let why = Cause::Unstartable("its type or its lock is missing".into());
            self.end(claimed, hold, why, None);
            return;
        };
        let attempt = job.attempts + 1;
        let launch = runner::Launch {
            id: &id,
            job: &job,
            ty: &ty,
            attempt,
            spool: &self.spool,
            lock_fd,
            max_output_bytes: self.config.max_output_bytes,
        };
        let started = time::now();
        match runner::start(&launch, &self.supervisor) {
            Ok(task) => {
                crate::log!(
                    "{id}: started type={} pid={} attempt={attempt}",
                    job.kind,
                    task.id()
                );
                let deadline = job.timeout.map(|t| Instant::now() + t);
                self.running.insert(
                    id,
                    RunningJob {
                        job,
                        bytes,
                        task,
                        hold,
                        submitted: q.submitted,
                        submitted_as,
                        started,
                        attempt,
                        deadline,
                        stop: None,
                        term_sent: None,
                    },
                );
            }
            Err(e) => {
                crate::log!("{id}: cannot start: {e}");
                let claimed = Claimed {
                    id: &id,
                    job: Some(&job),
                    bytes: &bytes,
                    submitted: Some(q.submitted),
                    submitted_as,
                    started: Some(started),
                    attempt,
                };
                self.end(claimed, hold, Cause::Unstartable(e.to_string()), None);
            }
        }
    }
}
