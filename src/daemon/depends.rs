//! Dependencies: what became of the jobs others wait for (`after`,
//! `after_any`), as this daemon can tell.
//!
//! A parent is looked up in this order: the statuses of jobs that ended
//! lately (every record this daemon hands to the commit thread, and every
//! record read since: a bounded cache), this daemon's running jobs, then
//! the spool (`spool::query`: `done/<id>.toml`, `running/`, `new/`), so a
//! parent run and finished by another daemon on the same spool counts.
//! The queue holds a waiting job and is told when a parent ends: at once
//! for every record this daemon makes ([`Daemon::job_ended`]), and at each
//! rescan for the parents it still waits for (another daemon may have
//! ended them; inotify does not watch `done/`).
//!
//! A job whose `after` parent did not succeed is ended `cancelled` here,
//! without running (claimed first, so that no other daemon starts it);
//! its own record then reaches its children the same way.
//!
//! Never decides whether a job waits (the scheduler does); never writes a
//! record (the commit thread does).

use std::collections::HashMap;

use super::Daemon;
use super::ingest::submitted_as;
use crate::job;
use crate::record::{Outcome, Record, Status};
use crate::scheduler::{Parent, Queued};
use crate::spool::query::Located;
use crate::time;

/// At most this many ended jobs' statuses are cached; past it the cache
/// starts again (a lookup then reads the record).
const ENDED_CACHE: usize = 100_000;

/// The statuses of jobs that ended lately, by id.
#[derive(Debug, Default)]
pub(super) struct Ended(HashMap<String, Status>);

impl Ended {
    fn note(&mut self, id: &str, status: Status) {
        if self.0.len() >= ENDED_CACHE {
            self.0.clear();
        }
        self.0.insert(id.to_string(), status);
    }
}

impl Daemon {
    /// What became of the job `id`, for a job that waits for it.
    pub(super) fn parent_state(&mut self, id: &str) -> Parent {
        if let Some(s) = self.ended.0.get(id) {
            return Parent::Ended(*s);
        }
        if self.running.contains_key(id) {
            return Parent::Pending;
        }
        // Job files are not read (a limit of 0): only where it is counts.
        match self.spool.query(0).find(id) {
            Ok(Some(Located::Finished(rec))) => {
                self.ended.note(id, rec.status);
                Parent::Ended(rec.status)
            }
            Ok(Some(_)) => Parent::Pending,
            Ok(None) => Parent::Gone,
            Err(e) => {
                // Cannot tell: it waits, and is looked at again.
                crate::log!("{id}: cannot look up a dependency: {e}");
                Parent::Pending
            }
        }
    }

    /// What became of every parent of a job, for [`crate::scheduler::Queue::push`].
    pub(super) fn parent_states(&mut self, q: &Queued) -> HashMap<String, Parent> {
        q.after()
            .iter()
            .chain(q.after_any())
            .map(|p| (p.clone(), self.parent_state(p)))
            .collect()
    }

    /// Why a fresh submission cannot wait for its parents: one of them is
    /// the job itself, or is nowhere (`unknown dependency <id>`). A job a
    /// daemon put back is not asked: its parents existed when it came.
    /// `states` is what [`Daemon::parent_states`] found.
    pub(super) fn check_parents(
        q: &Queued,
        states: &HashMap<String, Parent>,
    ) -> Result<(), String> {
        for p in q.after().iter().chain(q.after_any()) {
            if *p == q.id {
                return Err(format!("dependency {p}: a job cannot wait for itself"));
            }
            if q.fresh && states.get(p).is_none_or(|s| *s == Parent::Gone) {
                return Err(format!("unknown dependency {p}"));
            }
        }
        Ok(())
    }

    /// A job ended with a record: remembered, and the jobs waiting for it
    /// are released or doomed.
    pub(super) fn job_ended(&mut self, id: &str, status: Status) {
        self.ended.note(id, status);
        self.queue
            .parent_ended(id, Parent::Ended(status), time::now());
    }

    /// At a rescan: the parents some queued job still waits for, looked
    /// up again (another daemon may have ended them, or they may be gone).
    pub(super) fn recheck_parents(&mut self) {
        let awaited: Vec<String> = self.queue.awaited().cloned().collect();
        for id in awaited {
            match self.parent_state(&id) {
                Parent::Pending => {}
                how => {
                    self.queue.parent_ended(&id, how, time::now());
                    self.dirty = true;
                }
            }
        }
    }

    /// Ends every doomed job `cancelled`, until none is left (each end
    /// may doom the jobs that wait for it).
    pub(super) fn end_doomed(&mut self) {
        loop {
            let doomed = self.queue.take_doomed();
            if doomed.is_empty() {
                return;
            }
            for (q, why) in doomed {
                self.dirty = true;
                self.cancel_unstarted(q, why);
            }
        }
    }

    /// Claims a queued job and ends it `cancelled` with `why`, without
    /// running it.
    fn cancel_unstarted(&mut self, q: Queued, why: String) {
        let Some(claim) = self.claim_queued(&q, "claim to cancel it") else {
            return;
        };
        let now = time::now();
        let submitted_as = submitted_as(&claim.id, &q.name);
        match job::parse(&claim.bytes, &self.config) {
            Ok(job) => {
                let outcome = Outcome {
                    status: Status::Cancelled,
                    error: Some(why),
                    exit_code: None,
                    signal: None,
                    attempts: job.attempts,
                };
                let rec = Record::of_job(&claim.id, &job, q.submitted, submitted_as, outcome, now);
                self.conclude(rec, Some(&job), Some(claim.hold), None);
            }
            Err(error) => {
                let mut rec = Record::of_submission(
                    &claim.id,
                    &claim.bytes,
                    Status::Rejected,
                    Some(error),
                    Some(q.submitted),
                    self.config.keep,
                    now,
                );
                rec.submitted_as = submitted_as;
                self.conclude(rec, None, Some(claim.hold), None);
            }
        }
    }
}
