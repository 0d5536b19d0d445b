//! Admission: a valid job read from `new/` into the queue.
//!
//! Beyond `job::parse` (which needs no IO), a job is admitted once its
//! parents are known (a first submission naming a job that is nowhere is
//! rejected: `unknown dependency <id>`) and its (type, `unique`) key is
//! its own (a duplicate is rejected: `duplicate of <id>`); the queue is
//! then told what became of each parent, and holds the job while any is
//! pending. A file that cannot be judged now (another daemon or HTTP is
//! deciding on the same key) is looked at again after the settle time.
//!
//! Never claims or starts a job; a rejection goes through `ingest`.

use super::Daemon;
use super::unique::Admitted;
use crate::scheduler::{Parent, Pushed, Queued};
use crate::time;

impl Daemon {
    /// Queues a valid job read from `new/<name>`, or rejects it.
    pub(super) fn admit(&mut self, name: &str, q: Queued) {
        let states = self.parent_states(&q);
        if let Err(error) = Daemon::check_parents(&q, &states) {
            self.reject(name, Some(error));
            return;
        }
        let q = match self.take_key(name, q) {
            Admitted::Queued(q) => *q,
            Admitted::Duplicate(id) => {
                self.reject(name, Some(format!("duplicate of {id}")));
                return;
            }
            Admitted::Later => return,
        };
        let parent = |p: &str| states.get(p).copied().unwrap_or(Parent::Gone);
        match self.queue.push(q, time::now(), &parent) {
            Pushed::Queued => self.dirty = true,
            Pushed::Duplicate(id) => {
                self.reject(name, Some(format!("duplicate of {id}")));
            }
        }
    }
}
