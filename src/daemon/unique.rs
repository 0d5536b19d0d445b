//! Unique jobs in the daemon: taking a job's (type, `unique`) key when it
//! is read from `new/`, naming the id a claim gave it, and letting the key
//! go when it ends.
//!
//! The decision across daemons is the spool's marker
//! ([`crate::spool::unique`]); inside this daemon the queue refuses a
//! second queued job with the key too. The loop never waits for the
//! marker's lock: when another daemon or an HTTP submission holds it, the
//! file is looked at again after the settle time.
//!
//! Never writes a record; a duplicate is rejected through `ingest`.

use std::time::Instant;

use super::{Daemon, SETTLE};
use crate::job::Job;
use crate::scheduler::Queued;
use crate::spool::query::Located;
use crate::spool::unique::{Holder, Take};

/// What became of a unique job read from `new/`.
pub(super) enum Admitted {
    /// It holds its key (or has none): queue it.
    Queued(Box<Queued>),
    /// Another queued or running job holds the key: reject it so.
    Duplicate(String),
    /// Cannot tell now: look at the file again later.
    Later,
}

impl Daemon {
    /// Takes the key of a unique job read from `new/<name>`; a job without
    /// `unique` passes as it is.
    pub(super) fn take_key(&mut self, name: &str, mut q: Queued) -> Admitted {
        let Some(key) = q.unique().map(str::to_string) else {
            return Admitted::Queued(Box::new(q));
        };
        if let Some(other) = self.queue.holder(&q.kind, &key)
            && other.name != q.name
        {
            return Admitted::Duplicate(other.id.clone());
        }
        // The id its claim will give it: the one its name asks for, unless
        // a job in running/ or done/ has it already. The marker must name
        // the id the job will be found under.
        if matches!(
            self.spool.query(0).find(&q.id),
            Ok(Some(Located::Finished(_) | Located::Running { .. }))
        ) {
            q.id = crate::ids::fresh_id();
        }
        let me = Holder {
            id: q.id.clone(),
            name: name.to_string(),
            ino: q.ino,
        };
        let took = self.spool.take_unique(&q.kind, &key, &me, false, || Ok(()));
        match took {
            Ok(Take::Taken) => Admitted::Queued(Box::new(q)),
            Ok(Take::Duplicate(id)) => Admitted::Duplicate(id),
            Ok(Take::Busy) => {
                self.settling
                    .insert(name.to_string(), Instant::now() + SETTLE);
                Admitted::Later
            }
            Err(e) => {
                crate::log!("new/{name}: unique {key:?}: {e}; looked at again later");
                self.settling
                    .insert(name.to_string(), Instant::now() + SETTLE);
                Admitted::Later
            }
        }
    }

    /// A unique job was claimed as `id`: its marker names that id from now
    /// on, when it named another (a claim that had to take a fresh id, or
    /// a fresh id given at an earlier reading of the same file).
    pub(super) fn key_claimed(&self, q: &Queued, id: &str) {
        if let Some(key) = q.unique()
            && let Err(e) = self.spool.unique_claimed(&q.kind, key, q.ino, id)
        {
            crate::log!("{id}: unique {key:?}: {e}");
        }
    }

    /// A unique job ended: its key is free again. Called before its record
    /// goes to the commit thread (see `Spool::release_unique`).
    pub(super) fn release_key(&self, id: &str, job: &Job) {
        if let Some(key) = &job.unique
            && let Err(e) = self.spool.release_unique(&job.kind, key, id)
        {
            crate::log!("{id}: unique {key:?}: {e}");
        }
    }
}
