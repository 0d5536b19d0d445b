//! The static HTML report, `spool/report.html`.
//!
//! Pure: a function of a [`Snapshot`] and `now`. Placeholder until the
//! report is built; see the HTTP/report issue.

use std::time::SystemTime;

use crate::status::Snapshot;

pub fn render(s: &Snapshot, _now: SystemTime) -> String {
    format!(
        "<!doctype html><title>raccoond</title><p>{} running, {} queued</p>\n",
        s.running_total, s.queued_total
    )
}
