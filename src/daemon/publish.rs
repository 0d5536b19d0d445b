//! Publish.

use super::*;

impl Daemon {
    pub(super) fn publish(&mut self) {
        self.dirty = false;
        let snapshot = self.snapshot();
        let line = format!(
            "STATUS={} running, {} queued{}",
            snapshot.running_total,
            snapshot.queued_total,
            if snapshot.draining { ", stopping" } else { "" }
        );
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

    pub(super) fn notify_status(&mut self) {
        self.last_status_line.clear();
        self.publish();
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let counts = self.queue.counts();
        let mut running_by: HashMap<&str, usize> = HashMap::new();
        for r in self.running.values() {
            *running_by.entry(r.kind.as_str()).or_default() += 1;
        }
        let types = self
            .config
            .types
            .keys()
            .map(|name| TypeRow {
                name: name.clone(),
                limit: self.config.limit_of(name),
                running: running_by.get(name.as_str()).copied().unwrap_or(0),
                queued: counts.get(name).copied().unwrap_or(0),
            })
            .collect();
        let mut running: Vec<RunningRow> = self
            .running
            .iter()
            .map(|(id, r)| RunningRow {
                id: id.clone(),
                kind: r.kind.clone(),
                started: r.started,
                pid: r.child.id(),
                attempt: r.attempt,
            })
            .collect();
        running.sort_by_key(|r| r.started);
        Snapshot {
            generated: Some(time::now()),
            total: self.config.total,
            running_total: self.running.len(),
            queued_total: self.queue.len(),
            draining: self.draining.is_some(),
            types,
            running,
            queued: self
                .queue
                .first(ROWS)
                .into_iter()
                .map(|q| QueuedRow {
                    id: q.id.clone(),
                    kind: q.kind.clone(),
                    priority: q.priority,
                    submitted: q.submitted,
                    not_before: q.not_before,
                })
                .collect(),
            finished: self.recent.iter().cloned().collect(),
            finished_counts: self.finished_counts.clone(),
            durations: self.durations.clone(),
        }
    }

    pub(super) fn write_report(&mut self) {
        self.report_due = None;
        self.last_report = Some(Instant::now());
        let html = report::render(&self.board.snapshot(), time::now());
        if let Err(e) = self.spool.write_report(html.as_bytes()) {
            crate::log!("report: {e}");
        }
    }
}
