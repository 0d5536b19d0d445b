//! Publishing: what the daemon tells the world about itself.
//!
//! After each batch of events that changed something, the loop builds a
//! [`Snapshot`] and swaps it into the `status::Board` (read by HTTP and the
//! report), tells systemd a `STATUS=` line when it changed, and schedules
//! `report.html` (written at most once every `REPORT_EVERY`). Also binds
//! the HTTP API, and takes in the sweeper's first scan of `done/` (the
//! report's rows of earlier runs; mail an earlier run left `pending`, which
//! it passes to the commit thread).
//!
//! Also writes `types.json` (what this daemon accepts, for the client) at
//! start and after each reload.
//!
//! Never changes a job or the queue; reads nothing from disk.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Daemon, Event, Fatal, REPORT_EVERY};
use crate::catalog::Catalog;
use crate::status::{QueuedRow, ROWS, RunningRow, Snapshot, TypeRow};
use crate::sweeper::FirstScan;
use crate::threads::Stopped;
use crate::{http, report, spool, time};

/// systemd's `STATUS=` line: the counts, what is paused (`paused` in
/// words, empty when nothing is), and whether the daemon is stopping.
fn status_line(s: &Snapshot, paused: &str) -> String {
    let mut line = format!(
        "STATUS={} running, {} queued",
        s.running_total, s.queued_total
    );
    if !paused.is_empty() {
        line.push_str(&format!(", paused: {paused}"));
    }
    if s.draining {
        line.push_str(", stopping");
    }
    line
}

impl Daemon {
    /// Publishes a snapshot and tells systemd, then schedules the report.
    pub(super) fn publish(&mut self) {
        self.dirty = false;
        let snapshot = self.snapshot();
        let line = status_line(&snapshot, &self.pauses.describe());
        self.board.publish(snapshot);
        if line != self.last_status_line {
            self.notifier.send(&line);
            self.last_status_line = line;
        }
        if self.report_due.is_none() {
            let earliest = self
                .last_report
                .map_or(Instant::now(), |t| t + REPORT_EVERY);
            self.report_due = Some(earliest.max(Instant::now()));
        }
    }

    /// Publishes, sending `STATUS=` even when it did not change.
    pub(super) fn notify_status(&mut self) {
        self.last_status_line.clear();
        self.publish();
    }

    fn snapshot(&self) -> Snapshot {
        let counts = self.queue.counts();
        let mut running_by: HashMap<&str, usize> = HashMap::new();
        for r in self.running.values() {
            *running_by.entry(r.job.kind.as_str()).or_default() += 1;
        }
        let types = self
            .config
            .types
            .keys()
            .map(|name| TypeRow {
                name: name.clone(),
                limit: self.config.limit_of(name),
                running: running_by.get(name.as_str()).copied().unwrap_or(0),
                queued: counts.get(name.as_str()).copied().unwrap_or(0),
                paused: self.pauses.held(name),
            })
            .collect();
        let mut running: Vec<RunningRow> = self
            .running
            .iter()
            .map(|(id, r)| RunningRow {
                id: id.clone(),
                kind: r.job.kind.clone(),
                started: r.started,
                pid: r.task.id(),
                attempt: r.attempt,
                submitter: r.hold.submitter().map(super::submitter::shown_name),
            })
            .collect();
        running.sort_by_key(|r| r.started);
        Snapshot {
            generated: Some(time::now()),
            total: self.config.total,
            running_total: self.running.len(),
            queued_total: self.queue.len(),
            draining: self.draining.is_some(),
            paused_all: self.pauses.all,
            types,
            running,
            queued: self
                .queue
                .first(ROWS)
                .into_iter()
                .map(|q| QueuedRow {
                    id: q.id.clone(),
                    kind: q.kind.to_string(),
                    priority: q.priority,
                    submitted: q.submitted,
                    not_before: q.not_before,
                    waiting_for: self.queue.waiting_for(&q.name),
                    submitter: q.submitter.map(super::submitter::shown_name),
                })
                .collect(),
            finished: self.recent.iter().cloned().collect(),
            finished_counts: self.finished_counts.clone(),
            durations: self.durations.clone(),
            history: self.history.clone(),
            schedules: self.schedule_rows(),
        }
    }

    /// Writes `report.html` from the latest snapshot.
    pub(super) fn write_report(&mut self) {
        self.report_due = None;
        self.last_report = Some(Instant::now());
        let html = report::render(&self.board.snapshot(), time::now());
        if let Err(e) = self.spool.write_report(html.as_bytes()) {
            crate::log!("report: {e}");
        }
    }

    /// Writes `types.json`: the types this daemon accepts now, for the
    /// client to check a job against before it is queued.
    pub(super) fn describe_types(&self) {
        let catalog = Catalog::of(&self.config, &spool::this_writer(), time::now())
            .paused(self.pauses.all, |t| self.pauses.types.contains(t));
        if let Err(e) = self.spool.write_catalog(catalog.to_json().as_bytes()) {
            crate::log!("types.json: {e}");
        }
    }

    /// Takes in the sweeper's first scan of `done/`: its latest records
    /// fill the report's rows this run has not filled yet and the board's
    /// finished index (which HTTP then lists from), its latest failures
    /// join the report's list, and mail still `pending` goes to the commit
    /// thread (which skips what this run has handed to the mailer already).
    pub(super) fn first_scan(&mut self, scan: FirstScan) {
        crate::log!(
            "raccoond: done/ read ({} newest records indexed{})",
            scan.index.len(),
            if scan.index_complete {
                ", all of them"
            } else {
                ""
            }
        );
        std::sync::Arc::make_mut(&mut self.history).absorb_failures(scan.failures);
        self.board
            .update_finished(|index| index.scanned(scan.index, scan.index_complete));
        for row in scan.recent {
            if self.recent.len() < ROWS && !self.recent.iter().any(|r| r.id == row.id) {
                self.recent.push_back(row);
            }
        }
        if self.mail_enabled && !scan.mail_pending.is_empty() {
            self.committer.mail_pending(scan.mail_pending);
        }
        self.dirty = true;
    }

    /// Binds the HTTP API when `[http] listen` is set; its health check
    /// asks the loop for an answer.
    pub(super) fn start_http(&self) -> Result<Option<http::Server>, Fatal> {
        let Some(listen) = self.config.http.listen.clone() else {
            return Ok(None);
        };
        let tx = self.tx.clone();
        let health = self.threads.health();
        let check = move || {
            let (ptx, prx) = crossbeam_channel::bounded(1);
            let mut stopped = health.problems();
            if tx.send(Event::Ping(ptx)).is_err()
                || prx.recv_timeout(Duration::from_secs(2)).is_err()
            {
                stopped.push(Stopped {
                    name: "scheduler".into(),
                    why: "the main loop did not answer within 2 s".into(),
                });
            }
            stopped
        };
        let server = http::Server::start(
            &self.threads,
            &listen,
            self.board.clone(),
            self.spool.clone(),
            check,
        )
        .map_err(|e| Fatal::Temporary(format!("[http] listen = {listen:?}: {e}")))?;
        crate::log!("http: listening on {}", server.addr());
        Ok(Some(server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_counts_pauses_and_stopping() {
        let mut s = Snapshot {
            running_total: 2,
            queued_total: 5,
            ..Snapshot::default()
        };
        let cases = [
            ("", false, "STATUS=2 running, 5 queued"),
            ("ALL", false, "STATUS=2 running, 5 queued, paused: ALL"),
            (
                "a, b",
                true,
                "STATUS=2 running, 5 queued, paused: a, b, stopping",
            ),
        ];
        for (paused, draining, want) in cases {
            s.draining = draining;
            assert_eq!(status_line(&s, paused), want);
        }
    }
}
