//! What the daemon publishes about itself: a snapshot of its state.
//!
//! The main loop owns the state and, after each batch of events that
//! changed it, builds a [`Snapshot`] and swaps it into the [`Board`]. The
//! report, the HTTP API (`/metrics`, `/healthz`) and systemd's `STATUS=`
//! read the latest snapshot; none of them ever holds a lock the loop waits
//! on for longer than a pointer swap, and none of them changes state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::Config;
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
}

#[derive(Debug, Clone)]
pub struct FinishedRow {
    pub id: String,
    pub kind: String,
    pub status: Status,
    pub finished: SystemTime,
    pub duration: Option<Duration>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// Why it failed or was rejected, in words.
    pub error: Option<String>,
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

/// The latest snapshot and configuration, shared with readers.
#[derive(Clone)]
pub struct Board {
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    config: Arc<Mutex<Arc<Config>>>,
}

impl Board {
    pub fn new(config: Arc<Config>) -> Board {
        Board {
            snapshot: Arc::new(Mutex::new(Arc::new(Snapshot::default()))),
            config: Arc::new(Mutex::new(config)),
        }
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
