//! Control.

use super::*;

impl Daemon {
    pub(super) fn start_signals(&self) -> Result<(), Fatal> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|e| Fatal::Temporary(format!("cannot install signal handlers: {e}")))?;
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if tx.send(Event::Signal(sig)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Fatal::Temporary(format!("cannot start the signal thread: {e}")))?;
        Ok(())
    }

    pub(super) fn cancel(&mut self, id: &str) {
        if let Some(r) = self.running.get_mut(id) {
            if r.stop.is_none() || r.stop == Some(Stop::Drain) {
                crate::log!("{id}: cancelling (SIGTERM to the process group)");
                r.stop = Some(Stop::Cancel);
                term(r);
            }
            return;
        }
        if let Some(name) = self.queue.name_of(id).map(str::to_string)
            && let Some(q) = self.queue.remove(&name)
        {
            self.dirty = true;
            // Claiming it first makes sure no other daemon starts it.
            if let Ok(ClaimOutcome::Claimed(claim)) =
                self.spool.claim(&q.name, &q.id, self.config.max_job_bytes)
            {
                let submitted_as = submitted_as(&claim.id, &q.name);
                match job::parse(&claim.bytes, &self.config) {
                    Ok(job) => {
                        let rec = self.queued_record(
                            &claim.id,
                            &job,
                            q.submitted,
                            submitted_as,
                            Status::Cancelled,
                            "cancelled before it started",
                        );
                        self.commit(rec, Some(&job), Some(claim.lock), None);
                    }
                    Err(_) => {
                        let rec = self.unrun_record(
                            &claim.id,
                            &claim.bytes,
                            Status::Cancelled,
                            None,
                            Some(q.submitted),
                        );
                        self.commit(rec, None, Some(claim.lock), None);
                    }
                }
            }
            let _ = std::fs::remove_file(self.spool.cancel_path(id));
            return;
        }
        // Not ours: another daemon may be running it; else nothing to do.
        if spool::valid_id(id) && self.spool.running_job(id).exists() {
            return;
        }
        if !self.spool.done_record(id).exists() {
            crate::log!("{id}: cancel: no such job");
        }
        let _ = std::fs::remove_file(self.spool.cancel_path(id));
    }

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
                self.draining = Some(Instant::now() + grace);
                self.dirty = true;
            }
            SIGTERM | SIGINT => {}
            SIGHUP => self.reload(),
            _ => {}
        }
    }

    pub(super) fn reload(&mut self) {
        let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.notifier
            .send(&format!("RELOADING=1\nMONOTONIC_USEC={monotonic}"));
        let path = self.config.path.clone();
        match Config::load(path.as_deref(), &self.overrides) {
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
                crate::log!(
                    "reload: configuration read again from {}",
                    path.as_deref()
                        .map_or("(none)".into(), |p: &std::path::Path| p
                            .display()
                            .to_string())
                );
                self.config = Arc::new(c);
                self.board.set_config(self.config.clone());
                self.spool = self.spool.with_fsync(self.config.fsync);
                self.send(Work::Spool(self.spool.clone()));
                self.dirty = true;
            }
            Err(e) => crate::log!("reload: {e}; the old configuration stays in force"),
        }
        self.notifier.send("READY=1");
    }

}
