//! Recovery: what a dead daemon left in `running/`.
//!
//! At start, again every `RECHECK_HELD` while some job in `running/` is
//! held by a live process that is not ours (or by another host's lease),
//! and every `lease` in any case (a daemon of another host dies without an
//! event here), asks the spool for the jobs no
//! live process holds: each ends as [`super::ending::decide`] says for an
//! interrupted attempt (back to `new/` with the attempt counted, or
//! `failed`/`interrupted` past its retries), or is rejected when its text
//! is no job. Leftovers of jobs already finished or requeued are removed
//! by the spool; a job held only by the escaped children of a dead
//! daemon's task has them killed first. An entry of `running/` that no
//! daemon makes (a folder, a symlink, a hard link) is recorded as
//! rejected and removed; nothing found there stops recovery.
//!
//! A recovered job keeps the `submitted` it had: its file's own, else the
//! job file's modification time (when it was written into `new/`; the
//! claim's rename keeps it), never the time of the restart.
//!
//! Never touches a job another live daemon holds, nor one of ours.

use std::time::Instant;

use super::ending::Cause;
use super::finish::Claimed;
use super::{Daemon, RECHECK_HELD};
use crate::job;
use crate::spool::{Claim, Leftover};

impl Daemon {
    /// Looks at `running/` for jobs whose daemon died, and ends them.
    pub(super) fn recover(&mut self) {
        let leftovers = match self
            .spool
            .recover(self.config.max_job_bytes, self.config.lease)
        {
            Ok(l) => l,
            Err(e) => {
                crate::log!("recover: {e}");
                return;
            }
        };
        self.held.clear();
        for left in leftovers {
            match left {
                Leftover::Alive(id) => {
                    if !self.running.contains_key(&id) {
                        let killed = self.spool.kill_orphans(&id);
                        if killed > 0 {
                            crate::log!(
                                "{id}: recover: killed {killed} leftover process(es) of a dead daemon's task"
                            );
                        }
                        self.held.insert(id);
                    }
                }
                Leftover::Cleaned(id) => {
                    crate::log!("{id}: recover: removed leftovers of a finished job")
                }
                Leftover::Odd { name, refused } => {
                    self.refuse(refused, &format!("running/{name}"), None);
                }
                Leftover::Orphan(Claim { id, bytes, hold }) => {
                    if self.running.contains_key(&id) {
                        continue;
                    }
                    let parsed = job::parse(&bytes, &self.config);
                    let (job, cause) = match &parsed {
                        Ok(job) => (Some(job), Cause::Interrupted),
                        Err(error) => (None, Cause::Rejected(error.clone())),
                    };
                    let written = hold.written();
                    let claimed = Claimed {
                        id: &id,
                        job,
                        bytes: &bytes,
                        submitted: job.and_then(|j| j.submitted).or(written),
                        submitted_as: None,
                        started: None,
                        attempt: job.map_or(0, |j| j.attempts + 1),
                    };
                    self.end(claimed, hold, cause, None);
                }
            }
        }
        // Held jobs are looked at again soon; and since a daemon of
        // another host may die at any time with no event to say so, all of
        // running/ is looked at again every lease.
        let again = if self.held.is_empty() {
            self.config.lease
        } else {
            RECHECK_HELD.min(self.config.lease)
        };
        self.next_held_check = Some(Instant::now() + again);
    }
}
