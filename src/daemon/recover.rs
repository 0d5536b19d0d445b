//! Recover.

use super::*;

impl Daemon {

    /// Jobs left in `running/` by a daemon that died: those no live process
    /// holds go back to `new/` with the attempt counted, or end `failed`
    /// (`interrupted`) past their retries.
    pub(super) fn recover(&mut self) {
        let leftovers = match self.spool.recover(self.config.max_job_bytes) {
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
                Leftover::Orphan(claim) => {
                    let id = claim.id.clone();
                    if self.running.contains_key(&id) {
                        continue;
                    }
                    match job::parse(&claim.bytes, &self.config) {
                        Ok(job) => {
                            let attempt = job.attempts + 1;
                            let submitted = job.submitted.unwrap_or_else(time::now);
                            if attempt <= job.retries {
                                let text = requeue_text(&claim.bytes, attempt, submitted, None);
                                crate::log!(
                                    "{id}: recover: interrupted; put back in new/ (attempt {attempt} counted)"
                                );
                                self.requeue(&id, &text, claim.lock);
                            } else {
                                let mut rec = self.queued_record(
                                    &id,
                                    &job,
                                    submitted,
                                    None,
                                    Status::Failed,
                                    "interrupted",
                                );
                                rec.attempts = attempt;
                                self.commit(rec, Some(&job), Some(claim.lock), None);
                            }
                        }
                        Err(error) => {
                            let rec = self.unrun_record(
                                &id,
                                &claim.bytes,
                                Status::Rejected,
                                Some(error),
                                None,
                            );
                            self.commit(rec, None, Some(claim.lock), None);
                        }
                    }
                }
            }
        }
        if !self.held.is_empty() {
            self.next_held_check = Some(Instant::now() + RECHECK_HELD);
        }
    }
}
