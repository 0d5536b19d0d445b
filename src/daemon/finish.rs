//! Finish.

use super::*;

impl Daemon {
    pub(super) fn exited(&mut self, id: &str, output: Output) {
        let Some(r) = self.running.remove(id) else {
            return;
        };
        self.dirty = true;
        let status = match r.child.wait() {
            Ok(s) => s,
            Err(e) => {
                crate::log!("{id}: cannot reap pid {}: {e}", r.child.id());
                return;
            }
        };
        let run = Run {
            id,
            job: &r.job,
            bytes: &r.bytes,
            submitted: r.submitted,
            submitted_as: r.submitted_as.clone(),
            started: r.started,
            attempt: r.attempt,
        };
        match r.stop {
            Some(Stop::Drain) => {
                // The attempt does not count: the job never had its chance.
                let text = requeue_text(&r.bytes, r.job.attempts, r.submitted, None);
                crate::log!("{id}: put back in new/ (shutdown)");
                self.requeue(id, &text, r.lock);
            }
            Some(Stop::Cancel) => {
                let rec = self.run_record(
                    &run,
                    Status::Cancelled,
                    Some(status),
                    Some("cancelled".into()),
                );
                self.commit(rec, Some(&r.job), Some(r.lock), Some(output));
                let _ = std::fs::remove_file(self.spool.cancel_path(id));
            }
            Some(Stop::Timeout) => {
                let limit = r.job.timeout.map(format_duration).unwrap_or_default();
                let rec = self.run_record(
                    &run,
                    Status::TimedOut,
                    Some(status),
                    Some(format!("timed out after {limit}")),
                );
                self.commit(rec, Some(&r.job), Some(r.lock), Some(output));
            }
            None if status.success() => {
                let rec = self.run_record(&run, Status::Succeeded, Some(status), None);
                self.commit(rec, Some(&r.job), Some(r.lock), Some(output));
            }
            None => {
                let why = describe_exit(status);
                self.failed_run(run, r.lock, Some(status), why, Some(output));
            }
        }
    }

    /// A run that failed: put back for a retry while retries remain, else
    /// the record says `failed`.
    pub(super) fn failed_run(
        &mut self,
        run: Run,
        lock: Flock<File>,
        status: Option<ExitStatus>,
        why: String,
        output: Option<Output>,
    ) {
        let id = run.id;
        if run.attempt <= run.job.retries {
            let kind = run.job.kind.as_str();
            let base = self
                .config
                .types
                .get(kind)
                .map_or(crate::config::DEFAULT_RETRY_DELAY, |t| t.retry_delay);
            let delay = retry_delay(base, run.attempt);
            let at = time::now() + delay;
            let text = requeue_text(run.bytes, run.attempt, run.submitted, Some(at));
            crate::log!(
                "{id}: {why}; retry {}/{} in {}",
                run.attempt,
                run.job.retries,
                format_duration(delay)
            );
            self.requeue(id, &text, lock);
            return;
        }
        let rec = self.run_record(&run, Status::Failed, status, Some(why));
        self.commit(rec, Some(run.job), Some(lock), output);
    }

    pub(super) fn run_record(
        &self,
        run: &Run,
        status: Status,
        exit: Option<ExitStatus>,
        error: Option<String>,
    ) -> Record {
        let now = time::now();
        let mut rec = self.queued_record(
            run.id,
            run.job,
            run.submitted,
            run.submitted_as.clone(),
            status,
            "",
        );
        rec.error = error;
        rec.started = Some(time::to_toml(run.started));
        rec.finished = Some(time::to_toml(now));
        rec.expires = Some(time::to_toml(now + run.job.keep));
        rec.attempts = run.attempt;
        if let Some(st) = exit {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(c), _) => rec.exit_code = Some(c),
                (None, Some(s)) => rec.signal = Some(signal_name(s)),
                _ => {}
            }
        }
        rec
    }

    /// A record for a submission that never ran and is not (or no longer)
    /// a valid job: its type as far as the text says, its text as `source`.
    pub(super) fn unrun_record(
        &self,
        id: &str,
        bytes: &[u8],
        status: Status,
        error: Option<String>,
        submitted: Option<SystemTime>,
    ) -> Record {
        let now = time::now();
        let mut rec = Record::new(id, &guess_type(bytes), status);
        rec.submitted = submitted.map(time::to_toml);
        rec.finished = Some(time::to_toml(now));
        rec.expires = Some(time::to_toml(now + self.config.keep));
        rec.error = error;
        rec.source = Some(String::from_utf8_lossy(bytes).into_owned());
        rec
    }

    /// A record for a valid job that never ran (cancelled while queued).
    pub(super) fn queued_record(
        &self,
        id: &str,
        job: &Job,
        submitted: SystemTime,
        submitted_as: Option<String>,
        status: Status,
        error: &str,
    ) -> Record {
        let now = time::now();
        let mut rec = Record::new(id, &job.kind, status);
        rec.submitted = Some(time::to_toml(job.submitted.unwrap_or(submitted)));
        rec.finished = Some(time::to_toml(now));
        rec.expires = Some(time::to_toml(now + job.keep));
        rec.attempts = job.attempts;
        rec.error = (!error.is_empty()).then(|| error.to_string());
        rec.submitted_as = submitted_as;
        rec.email = job.email.clone();
        if job.priority != 0 {
            rec.priority = Some(job.priority);
        }
        rec.args = job.args.clone();
        rec.params = (!job.params.is_empty()).then(|| job.params.clone());
        rec
    }

    /// Ends a job: hands its record to the committer (which writes it and
    /// then lets go of the lock) and tells the log and the report.
    pub(super) fn commit(
        &mut self,
        mut rec: Record,
        job: Option<&Job>,
        lock: Option<Flock<File>>,
        output: Option<Output>,
    ) {
        let notify = job
            .and_then(|j| self.config.types.get(&j.kind))
            .map_or(Notify::Always, |t| t.notify);
        let mail = self.mail_enabled
            && !rec.email.is_empty()
            && match notify {
                Notify::Always => true,
                Notify::Failure => rec.status.is_failure(),
                Notify::Never => false,
            };
        if !rec.email.is_empty() {
            rec.mail = Some(if mail { "pending" } else { "none" }.into());
        }
        let mut line = format!("{}: {}", rec.id, rec.status);
        if let Some(c) = rec.exit_code {
            line.push_str(&format!(" exit={c}"));
        }
        if let Some(s) = &rec.signal {
            line.push_str(&format!(" signal={s}"));
        }
        if let Some(d) = rec.duration() {
            line.push_str(&format!(" after {}", format_duration(d)));
        }
        if let Some(e) = &rec.error {
            line.push_str(&format!(" ({e})"));
        }
        crate::log!("{line}");
        // A rejected file may claim any type: count those under "" so that
        // junk cannot grow the metrics without bound.
        let counted = if self.config.types.contains_key(&rec.kind) {
            rec.kind.clone()
        } else {
            String::new()
        };
        *self
            .finished_counts
            .entry((counted, rec.status))
            .or_default() += 1;
        if let Some(d) = rec.duration() {
            self.durations
                .entry(rec.kind.clone())
                .or_default()
                .observe(d);
        }
        self.recent.push_front(FinishedRow {
            id: rec.id.clone(),
            kind: rec.kind.clone(),
            status: rec.status,
            finished: rec.finished_at().unwrap_or_else(time::now),
            duration: rec.duration(),
            exit_code: rec.exit_code,
            signal: rec.signal.clone(),
            error: rec.error.clone(),
        });
        self.recent.truncate(ROWS);
        self.dirty = true;
        if mail {
            self.mailing.insert(rec.id.clone());
        }
        self.send(Work::Finish(Finish {
            record: rec,
            lock,
            output,
            mail,
        }));
    }

    /// Puts a job back into `new/`, here on the loop's thread and not on
    /// the commit thread: until it returns, the job's file is in both
    /// `new/` and `running/`, and a claim of the new file then would see
    /// its id taken. Rare (retries, shutdown, recovery), so cheap enough.
    pub(super) fn requeue(&self, id: &str, text: &str, lock: Flock<File>) {
        if let Err(e) = self.spool.requeue(id, text.as_bytes()) {
            crate::log!("{id}: cannot put back in new/: {e}");
        }
        drop(lock);
    }

    pub(super) fn send(&self, work: Work) {
        if let Some(c) = &self.committer {
            c.send(work);
        }
    }

    pub(super) fn mailed(&mut self, id: &str, outcome: &str) {
        self.mailing.remove(id);
        match self.spool.read_record(id) {
            Ok(mut rec) => {
                rec.mail = Some(outcome.to_string());
                match self.spool.rewrite_record(&rec) {
                    Ok(()) => crate::log!("{id}: mail {outcome}"),
                    Err(e) => {
                        crate::log!("{id}: mail {outcome}, but the record cannot say so: {e}")
                    }
                }
            }
            Err(e) => crate::log!("{id}: mail {outcome}, but the record is gone: {e}"),
        }
    }

    pub(super) fn found(&mut self, found: Found) {
        for row in found.recent {
            if self.recent.len() < ROWS && !self.recent.iter().any(|r| r.id == row.id) {
                self.recent.push_back(row);
            }
        }
        if self.mail_enabled {
            for id in found.mail_pending {
                if self.mailing.contains(&id) {
                    continue;
                }
                if let Ok(rec) = self.spool.read_record(&id)
                    && rec.mail.as_deref() == Some("pending")
                {
                    crate::log!("{id}: mail still pending from an earlier run; sending");
                    self.send(Work::Mail(rec));
                }
            }
        }
        self.dirty = true;
    }
}

/// The parts of a run that its record and its retry need.
pub(super) struct Run<'a> {
    pub(super) id: &'a str,
    pub(super) job: &'a Job,
    pub(super) bytes: &'a [u8],
    pub(super) submitted: SystemTime,
    pub(super) submitted_as: Option<String>,
    pub(super) started: SystemTime,
    pub(super) attempt: u32,
}

pub(super) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by {}", signal_name(s)),
        _ => "ended".into(),
    }
}

/// `retry_delay` doubled for each earlier retry, give or take a tenth so
/// that jobs failing together do not retry together.
pub(super) fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let nanos = time::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = (nanos % 2001) as f64 / 10_000.0 - 0.1; // -0.1 ..= +0.1
    doubled.mul_f64(1.0 + jitter)
}

/// The job file's text with `attempts`, `submitted` and (for a retry)
/// `not_before` set, as it goes back into `new/`.
pub(super) fn requeue_text(
    bytes: &[u8],
    attempts: u32,
    submitted: SystemTime,
    not_before: Option<SystemTime>,
) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut table: toml::Table = toml::from_str(&text).unwrap_or_default();
    table.insert("attempts".into(), toml::Value::Integer(i64::from(attempts)));
    table.insert(
        "submitted".into(),
        toml::Value::Datetime(time::to_toml(submitted)),
    );
    if let Some(t) = not_before {
        table.insert("not_before".into(), toml::Value::Datetime(time::to_toml(t)));
    }
    toml::to_string(&table).unwrap_or_else(|_| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_a_little_jitter() {
        let base = Duration::from_secs(10);
        for (attempt, want) in [(1, 10.0), (2, 20.0), (3, 40.0)] {
            let d = retry_delay(base, attempt).as_secs_f64();
            assert!(
                d >= want * 0.89 && d <= want * 1.11,
                "attempt {attempt}: {d}"
            );
        }
    }

    #[test]
    fn requeued_text_keeps_the_job_and_adds_the_schedule() {
        let t0 = time::parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
        let text = requeue_text(b"type = \"a\"\n[params]\nn = 1\n", 2, t0, Some(t0));
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["type"].as_str(), Some("a"));
        assert_eq!(table["attempts"].as_integer(), Some(2));
        assert!(table["submitted"].as_datetime().is_some());
        assert!(table["not_before"].as_datetime().is_some());
        assert_eq!(table["params"]["n"].as_integer(), Some(1));
    }
}
