//! Start.

use super::*;

impl Daemon {
    pub(super) fn start_ready(&mut self) {
        if self.draining.is_some() {
            return;
        }
        self.queue.promote(time::now());
        loop {
            let mut by_type: HashMap<&str, usize> = HashMap::new();
            for r in self.running.values() {
                *by_type.entry(r.kind.as_str()).or_default() += 1;
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

    pub(super) fn start(&mut self, q: Queued) {
        let claim = match self.spool.claim(&q.name, &q.id, self.config.max_job_bytes) {
            Ok(ClaimOutcome::Claimed(c)) => c,
            Ok(ClaimOutcome::Gone) => return,
            // Someone holds its lock (another daemon claiming it, or a
            // stray reader): look again after the settle time.
            Ok(ClaimOutcome::Busy) => {
                self.pending.insert(q.name, Instant::now() + SETTLE);
                return;
            }
            Err(e) => {
                crate::log!("new/{}: cannot claim: {e}", q.name);
                return;
            }
        };
        let id = claim.id.clone();
        let submitted_as = submitted_as(&id, &q.name);
        // The file may have changed since it was queued: what runs is what
        // is in running/ now, checked again.
        let job = match job::parse(&claim.bytes, &self.config) {
            Ok(j) => j,
            Err(error) => {
                let mut rec = self.unrun_record(
                    &id,
                    &claim.bytes,
                    Status::Rejected,
                    Some(error),
                    Some(q.submitted),
                );
                rec.submitted_as = submitted_as;
                self.commit(rec, None, Some(claim.lock), None);
                return;
            }
        };
        let Some(ty) = self.config.types.get(&job.kind).cloned() else {
            return;
        };
        let attempt = job.attempts + 1;
        let launch = runner::Launch {
            id: &id,
            job: &job,
            ty: &ty,
            attempt,
            spool: &self.spool,
            lock_fd: claim.lock.as_raw_fd(),
            max_output_bytes: self.config.max_output_bytes,
        };
        let started = time::now();
        let Some(supervisor) = &self.supervisor else {
            return;
        };
        match runner::start(&launch, supervisor) {
            Ok(child) => {
                crate::log!(
                    "{id}: started type={} pid={} attempt={attempt}",
                    job.kind,
                    child.id()
                );
                let deadline = job.timeout.map(|t| Instant::now() + t);
                self.running.insert(
                    id,
                    Running {
                        kind: job.kind.clone(),
                        bytes: claim.bytes,
                        job,
                        child,
                        lock: claim.lock,
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
                let run = Run {
                    id: &id,
                    job: &job,
                    bytes: &claim.bytes,
                    submitted: q.submitted,
                    submitted_as,
                    started,
                    attempt,
                };
                self.failed_run(run, claim.lock, None, format!("cannot start: {e}"), None);
            }
        }
    }
}
