//! Starting: the queue into tasks.
//!
//! Asks the scheduler what may start under the limits, the pauses and
//! the free resources, claims it (the spool takes it out of `new/` and
//! copies it into `running/` under the daemon's lock), parses the copied
//! text again (what runs is what was claimed), grants it its resource
//! units and starts its task. A claimed text that is no longer a job, an
//! entry swapped for something that is no file to read (a folder, a
//! link), and a task that cannot start, end at once through `finish`;
//! jobs doomed by a failed dependency end first (`depends`).
//!
//! A full file system stops starting, never ends a job: before the first
//! start of a batch the room left on the spool's file system is looked at
//! (a job started without room would lose its output and its record), and
//! below the reserve nothing starts; a task that cannot start because the
//! disk is full keeps its claim (a [`Stalled`] job) and starts first once
//! the commit thread says there is room again. Either way the commit thread
//! is told, and waits the condition out.
//!
//! Never starts anything while draining or while the disk is full, and
//! never waits for a task.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use super::ending::Cause;
use super::finish::Claimed;
use super::ingest::submitted_as;
use super::submitter::{run_as, submitter_uid};
use super::{Daemon, RunningJob, SETTLE};
use crate::job::{self, Job};
use crate::pool::{self, Grant};
use crate::runner;
use crate::scheduler::{Queued, Slots, per_user_allows};
use crate::space::{self, Room};
use crate::spool::{Claim, ClaimOutcome, Hold};
use crate::time;

/// A claimed job whose task has not started: what starting it needs, kept
/// while the disk is full.
pub(super) struct Stalled {
    /// The id it runs under.
    id: String,
    /// The job as claimed and parsed.
    job: Job,
    /// The claimed text (for a requeue at shutdown).
    bytes: Vec<u8>,
    /// What holds it (its file in `running/`, locked, and what was taken
    /// out of `new/`): it stays ours while it waits.
    hold: Hold,
    /// The resource units granted to it, held while it waits.
    grant: Grant,
    /// When it was submitted: its record's `submitted`.
    submitted: SystemTime,
    /// The name it had in `new/` when that is not `<id>.toml`.
    submitted_as: Option<String>,
}

impl Stalled {
    /// The id it runs under.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// What holds it: its lease is refreshed through it.
    pub(super) fn hold(&self) -> &Hold {
        &self.hold
    }
}

impl Daemon {
    /// Starts queued jobs while the scheduler finds one a slot.
    pub(super) fn start_ready(&mut self) {
        if self.draining.is_some() {
            return;
        }
        // Promoted even while nothing starts, so that the loop's next
        // deadline is never a `not_before` already past.
        self.queue.promote(time::now());
        if self.disk_full {
            return;
        }
        self.end_doomed();
        for s in std::mem::take(&mut self.stalled) {
            if self.disk_full {
                self.stalled.push(s);
            } else {
                self.launch(s);
            }
        }
        let mut room_checked = false;
        loop {
            if self.disk_full {
                return;
            }
            let mut by_type: HashMap<&str, usize> = HashMap::new();
            for r in self.running.values() {
                *by_type.entry(r.job.kind.as_str()).or_default() += 1;
            }
            let config = self.config.clone();
            let limit = |k: &str| config.limit_of(k);
            let running = |k: &str| by_type.get(k).copied().unwrap_or(0);
            let paused = |k: &str| self.pauses.held(k);
            // `per_user`: jobs running per (type, submitter).
            let mut by_submitter: HashMap<(&str, Option<u32>), usize> = HashMap::new();
            for r in self.running.values() {
                *by_submitter
                    .entry((r.job.kind.as_str(), r.hold.submitter()))
                    .or_default() += 1;
            }
            for s in &self.stalled {
                *by_submitter
                    .entry((s.job.kind.as_str(), s.hold.submitter()))
                    .or_default() += 1;
            }
            let allow = |q: &Queued| {
                let per_user = config.types.get(&*q.kind).and_then(|t| t.per_user);
                let running = by_submitter
                    .get(&(&*q.kind, q.submitter))
                    .copied()
                    .unwrap_or(0);
                per_user_allows(per_user, running)
            };
            let (free, capacity) = (self.pool.free(), self.pool.capacity());
            let slots = Slots {
                total: config.total,
                running_total: self.running.len() + self.stalled.len(),
                limit: &limit,
                running: &running,
                paused: &paused,
                free: &free,
                capacity: &capacity,
                allow: &allow,
            };
            let Some(choice) = self.queue.choose(&slots) else {
                return;
            };
            drop(by_type);
            drop(by_submitter);
            if !room_checked {
                room_checked = true;
                // One statvfs per batch of starts; when it fails, the
                // errors of real writes say whether the disk is full.
                if let Ok(room) = Room::of(self.spool.root())
                    && room.is_short()
                {
                    self.disk_is_full(format!(
                        "{} left, below the reserve a job needs",
                        room.describe()
                    ));
                    return;
                }
            }
            let Some(next) = self.queue.take(choice) else {
                return;
            };
            self.dirty = true;
            self.start(next);
        }
    }

    /// The spool's file system is full (`why`): nothing starts until the
    /// commit thread, told here, says there is room again.
    fn disk_is_full(&mut self, why: String) {
        if !self.disk_full {
            self.disk_full = true;
            self.committer.report_full(why);
        }
    }

    /// Claims the queued job `q` for `what` (a start, a cancel). `None`
    /// when there is nothing to do now: it was swapped for what is no file
    /// to read (then recorded as refused), it is gone (another daemon took
    /// it), another daemon is claiming it right now (looked at again after
    /// the settle time), or the claim failed (logged).
    pub(super) fn claim_queued(&mut self, q: &Queued, what: &str) -> Option<Claim> {
        let seen = self.reads.take(&q.name);
        match self
            .spool
            .claim_seen(&q.name, &q.id, self.config.max_job_bytes, seen.as_ref())
        {
            Ok(ClaimOutcome::Claimed(c)) => Some(c),
            Ok(ClaimOutcome::Refused(r)) => {
                let submitted_as = submitted_as(&r.id, &q.name);
                self.refuse(r, &format!("new/{}", q.name), submitted_as);
                None
            }
            Ok(ClaimOutcome::Gone) => None,
            Ok(ClaimOutcome::Busy) => {
                self.settling
                    .insert(q.name.to_string(), Instant::now() + SETTLE);
                None
            }
            Err(e) => {
                crate::log!("new/{}: cannot {what}: {e}", q.name);
                None
            }
        }
    }

    /// Claims a queued job and starts its task.
    fn start(&mut self, q: Queued) {
        let Some(Claim {
            id,
            bytes,
            mut hold,
        }) = self.claim_queued(&q, "claim")
        else {
            return;
        };
        let submitted_as = submitted_as(&id, &q.name);
        self.key_claimed(&q, &id);
        // The file may have changed since it was queued: what runs is what
        // is in running/ now, checked again.
        let job = match job::parse(&bytes, &self.config) {
            Ok(j) => {
                // A requeued copy (the daemon's own) names its submitter.
                if let Some(uid) = submitter_uid(hold.submitter(), j.submitter.as_deref()) {
                    hold.set_submitter(uid);
                }
                j
            }
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
        let Some(grant) = self.pool.take(job.needs.iter().map(|(r, n)| (r, *n))) else {
            // Its file asks for more than it did when it was queued, and
            // that is not free: back into new/, the attempt not counted.
            crate::log!("{id}: its needs changed since it was queued and are not free; put back");
            let claimed = Claimed {
                id: &id,
                job: Some(&job),
                bytes: &bytes,
                submitted: Some(q.submitted),
                submitted_as,
                started: None,
                attempt: job.attempts + 1,
            };
            self.end(claimed, hold, Cause::Drained, None);
            return;
        };
        self.launch(Stalled {
            id,
            job,
            bytes,
            hold,
            grant,
            submitted: q.submitted,
            submitted_as,
        });
    }

    /// Starts the task of a claimed job. When the disk is full it is kept
    /// for later, claimed; any other failure ends the attempt.
    fn launch(&mut self, s: Stalled) {
        // A job that parses has a known type; without one, or without the
        // lock its task must inherit, it cannot start.
        let mut ty = self.config.types.get(&s.job.kind).cloned();
        if let Some(t) = ty.as_mut().filter(|t| t.as_submitter) {
            match run_as(s.hold.submitter()) {
                Ok(who) => t.user = Some(who),
                Err(why) => {
                    self.end_stalled(s, None, false, Cause::Rejected(why));
                    return;
                }
            }
        }
        let (Some(ty), Some(lock_fd)) = (ty, s.hold.lock_fd()) else {
            let why = Cause::Unstartable("its type or its lock is missing".into());
            self.end_stalled(s, None, true, why);
            return;
        };
        let attempt = s.job.attempts + 1;
        let env = pool::environment(&s.grant);
        let launch = runner::Launch {
            id: &s.id,
            job: &s.job,
            ty: &ty,
            attempt,
            spool: &self.spool,
            lock_fd,
            max_output_bytes: self.config.max_output_bytes,
            env: &env,
        };
        let started = time::now();
        match runner::start(&launch, &self.supervisor) {
            Ok(task) => {
                let Stalled {
                    id,
                    job,
                    bytes,
                    hold,
                    grant,
                    submitted,
                    submitted_as,
                } = s;
                let held: String = env.iter().map(|(k, v)| format!(" {k}={v}")).collect();
                crate::log!(
                    "{id}: started type={} pid={} attempt={attempt}{held}",
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
                        submitted,
                        submitted_as,
                        started,
                        attempt,
                        deadline,
                        grant,
                        stop: None,
                        term_sent: None,
                    },
                );
            }
            Err(e) if space::is_full(&e) => {
                crate::log!(
                    "{}: cannot start yet ({e}); it starts once the spool has room",
                    s.id
                );
                self.disk_is_full(e.to_string());
                self.stalled.push(s);
            }
            Err(e) => {
                crate::log!("{}: cannot start: {e}", s.id);
                self.end_stalled(s, Some(started), true, Cause::Unstartable(e.to_string()));
            }
        }
    }

    /// At the end of a drain: jobs still waiting for room go back to
    /// `new/`, their attempt not counted.
    pub(super) fn release_stalled(&mut self) {
        for s in std::mem::take(&mut self.stalled) {
            self.end_stalled(s, None, true, Cause::Drained);
        }
    }

    /// Ends a claimed job whose task did not start (or just failed to):
    /// its resource units go back, and `finish` ends it with `cause`;
    /// `next_attempt` says whether this was an attempt (the job's next) or
    /// the job was turned away before any.
    fn end_stalled(
        &mut self,
        s: Stalled,
        started: Option<SystemTime>,
        next_attempt: bool,
        cause: Cause,
    ) {
        self.pool.give(&s.grant);
        let Stalled {
            id,
            job,
            bytes,
            hold,
            submitted,
            submitted_as,
            ..
        } = s;
        let claimed = Claimed {
            id: &id,
            job: Some(&job),
            bytes: &bytes,
            submitted: Some(submitted),
            submitted_as,
            started,
            attempt: job.attempts + u32::from(next_attempt),
        };
        self.end(claimed, hold, cause, None);
    }
}
