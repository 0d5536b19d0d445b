//! What the daemon publishes about itself: a snapshot of its state, and
//! an index of the newest finished jobs.
//!
//! The main loop owns the state and, after each batch of events that
//! changed it, builds a [`Snapshot`] and swaps it into the [`Board`]. The
//! report, the HTTP API (`/metrics`, `/healthz`) and systemd's `STATUS=`
//! read the latest snapshot; none of them ever holds a lock the loop waits
//! on for longer than a pointer swap (or the copy of a [`FinishedIndex`]),
//! and none of them changes state.
//!
//! The [`FinishedIndex`] says which records are the newest, so that
//! `GET /jobs` reads the few records it shows instead of every one in
//! `done/`. The loop adds a job to it before it hands the record to the
//! commit thread, so a record on disk is always in the index (or older
//! than all of it).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::Config;
pub use crate::history::FinishedRow;
use crate::history::History;
use crate::record::Status;

/// How many rows of each kind a snapshot carries: the report shows these
/// and counts for the rest, whatever the queue's length.
pub const ROWS: usize = 50;

/// Upper bounds of the duration histogram buckets, in seconds.
pub const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0];

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub generated: Option<SystemTime>,
    pub total: usize,
    pub running_total: usize,
    pub queued_total: usize,
    pub draining: bool,
    /// `pause/ALL`: no type starts new jobs.
    pub paused_all: bool,
    pub types: Vec<TypeRow>,
    pub running: Vec<RunningRow>,
    /// The next queued jobs in start order, at most [`ROWS`].
    pub queued: Vec<QueuedRow>,
    /// The latest finished jobs, newest first, at most [`ROWS`].
    pub finished: Vec<FinishedRow>,
    /// Jobs finished since the daemon started, by type and status.
    pub finished_counts: BTreeMap<(String, Status), u64>,
    /// Run times of finished jobs, by type.
    pub durations: BTreeMap<String, Histogram>,
    /// The last hour of finishes and the latest failures, for the report:
    /// shared with the loop until its next finish.
    pub history: Arc<History>,
    /// The configured schedules, by name: the report's Schedules card.
    pub schedules: Vec<ScheduleRow>,
}

/// A schedule as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    /// Its name in `[schedules.NAME]`.
    pub name: String,
    /// `cron "0 3 * * *" (Europe/Paris)` or `every 1h`.
    pub when: String,
    /// The type of its jobs.
    pub kind: String,
    /// The tick this daemon waits for; `None`: the schedule has no more.
    pub next: Option<SystemTime>,
    /// The id of the job of the newest tick fired on the spool (by this
    /// daemon or another); `None` before the first.
    pub last: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRow {
    pub name: String,
    pub limit: usize,
    pub running: usize,
    pub queued: usize,
    /// Whether its new starts are held (`pause/<type>` or `pause/ALL`).
    pub paused: bool,
}

#[derive(Debug, Clone)]
pub struct RunningRow {
    pub id: String,
    pub kind: String,
    pub started: SystemTime,
    pub pid: u32,
    pub attempt: u32,
    /// Who submitted it (a user name), when known.
    pub submitter: Option<String>,
}

#[derive(Debug, Clone)]
pub struct QueuedRow {
    pub id: String,
    pub kind: String,
    pub priority: i64,
    pub submitted: SystemTime,
    pub not_before: Option<SystemTime>,
    /// The jobs it waits for (`after`, `after_any`) that have not ended.
    pub waiting_for: Vec<String>,
    /// Who submitted it (a user name), when known.
    pub submitter: Option<String>,
}

/// How many finished jobs the [`FinishedIndex`] holds: `GET /jobs` shows
/// at most 1000.
pub const INDEX_ROWS: usize = 1000;

/// A finished job as the index knows it: enough to filter and order a
/// listing without reading its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    pub id: Arc<str>,
    pub kind: Arc<str>,
    pub status: Status,
    pub finished: SystemTime,
}

/// The newest finished jobs this daemon knows of, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishedIndex {
    /// At most [`INDEX_ROWS`], newest first. A row's record may have
    /// expired since; a reader skips it.
    pub rows: VecDeque<IndexRow>,
    /// Whether `done/` has been read once (the sweeper's first scan):
    /// before that, records of earlier runs are missing from `rows`, and
    /// the index cannot say which are the newest.
    pub known: bool,
    /// Whether `rows` hold every record the daemon knows of: false once
    /// one was left out for room, so that older records may exist beyond
    /// the last row.
    pub complete: bool,
}

impl FinishedIndex {
    /// A job that just finished (the newest; a record is written once,
    /// so its id is not in the index yet).
    pub fn push(&mut self, row: IndexRow) {
        self.rows.push_front(row);
        if self.rows.len() > INDEX_ROWS {
            self.rows.truncate(INDEX_ROWS);
            self.complete = false;
        }
    }

    /// Takes in the first scan of `done/`: its newest rows (at most
    /// [`INDEX_ROWS`]; `complete` when that was all of them) merged with
    /// what finished meanwhile.
    pub fn scanned(&mut self, rows: Vec<IndexRow>, complete: bool) {
        let mut all: Vec<IndexRow> = self.rows.drain(..).chain(rows).collect();
        all.sort_by(|a, b| b.finished.cmp(&a.finished).then_with(|| b.id.cmp(&a.id)));
        let mut seen = HashSet::new();
        all.retain(|r| seen.insert(r.id.clone()));
        let kept = all.len() <= INDEX_ROWS;
        all.truncate(INDEX_ROWS);
        self.rows = all.into();
        self.complete = complete && kept && self.complete;
        self.known = true;
    }
}

/// A Prometheus-style cumulative histogram.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Counts per bucket of [`BUCKETS`] (not cumulative; the exporter sums).
    pub buckets: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    /// Counts a run time. Counters saturate rather than wrap.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i] = self.buckets[i].saturating_add(1);
        }
        self.count = self.count.saturating_add(1);
        self.sum += s;
    }
}

/// The latest snapshot, configuration and finished index, shared with
/// readers.
#[derive(Clone)]
pub struct Board {
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    config: Arc<Mutex<Arc<Config>>>,
    /// Changed in place by the loop (copied first while a reader holds
    /// it), so that a job is in it before its record is written.
    finished: Arc<Mutex<Arc<FinishedIndex>>>,
}

impl Board {
    pub fn new(config: Arc<Config>) -> Board {
        Board {
            snapshot: Arc::new(Mutex::new(Arc::new(Snapshot::default()))),
            config: Arc::new(Mutex::new(config)),
            // Complete until something is left out: a spool whose first
            // scan finds nothing has nothing older.
            finished: Arc::new(Mutex::new(Arc::new(FinishedIndex {
                complete: true,
                ..FinishedIndex::default()
            }))),
        }
    }

    /// The newest finished jobs as the loop last told them.
    pub fn finished(&self) -> Arc<FinishedIndex> {
        match self.finished.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Changes the finished index (the loop's, only).
    pub fn update_finished(&self, f: impl FnOnce(&mut FinishedIndex)) {
        let mut g = match self.finished.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(Arc::make_mut(&mut g));
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn publish(&self, s: Snapshot) {
        let s = Arc::new(s);
        match self.snapshot.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }

    /// The configuration in force (it changes on SIGHUP).
    pub fn config(&self) -> Arc<Config> {
        match self.config.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_config(&self, c: Arc<Config>) {
        match self.config.lock() {
            Ok(mut g) => *g = c,
            Err(p) => *p.into_inner() = c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, status: Status, secs: u64) -> IndexRow {
        IndexRow {
            id: id.into(),
            kind: "t".into(),
            status,
            finished: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    fn ids(ix: &FinishedIndex) -> Vec<&str> {
        ix.rows.iter().map(|r| &*r.id).collect()
    }

    #[test]
    fn the_index_keeps_the_newest_and_says_when_it_left_some_out() {
        let fresh = || FinishedIndex {
            complete: true,
            ..FinishedIndex::default()
        };
        // Jobs finished before the first scan, then the scan (overlapping).
        let mut ix = fresh();
        ix.push(row("b", Status::Failed, 20));
        ix.push(row("c", Status::Succeeded, 30));
        assert!(!ix.known);
        ix.scanned(
            vec![
                row("b", Status::Failed, 20),
                row("a", Status::Succeeded, 10),
            ],
            true,
        );
        assert_eq!(ids(&ix), ["c", "b", "a"]);
        assert!(ix.known && ix.complete);

        // A scan that found more than it kept: older ones exist.
        let mut ix = fresh();
        ix.scanned(vec![row("a", Status::Succeeded, 10)], false);
        assert!(ix.known && !ix.complete);

        // Past INDEX_ROWS, the oldest go and the index is no longer complete.
        let mut ix = fresh();
        ix.scanned(Vec::new(), true);
        for i in 0..INDEX_ROWS as u64 {
            ix.push(row(&format!("j{i}"), Status::Succeeded, i));
        }
        assert!(ix.complete);
        ix.push(row("last", Status::Succeeded, 1 << 20));
        assert_eq!(ix.rows.len(), INDEX_ROWS);
        assert_eq!(
            (&*ix.rows[0].id, &*ix.rows[INDEX_ROWS - 1].id),
            ("last", "j1")
        );
        assert!(!ix.complete);
        // A scan cannot make an index complete again once it is not.
        ix.scanned(Vec::new(), true);
        assert!(!ix.complete);
    }
}
