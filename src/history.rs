//! The last hour, as the report draws it: jobs finished per minute by
//! outcome, per type how long jobs ran, what they used (CPU time, max
//! RSS) and how often they failed, and the latest failures.
//!
//! The main loop owns a [`History`] and tells it of every job that ends
//! ([`History::observe`], from the one place every record passes); each
//! snapshot carries it to the report. Nothing is ever read back from
//! disk for it (no rescans): what ended before this daemon started shows
//! only through the failures of the sweeper's first scan
//! ([`History::absorb_failures`]).
//!
//! Pure: `now` is an argument, no clock, no IO. Bounded whatever the
//! history: [`MINUTES`] buckets of counts, at most [`SAMPLE`] runs (run
//! time and usage) per type, [`FAILURES`] failures. Types are what the caller counts
//! them under (the loop counts a type no configuration names under "",
//! as `/metrics` does), so junk cannot grow it; a type that has had no
//! finish for an hour is dropped.
//!
//! Outcomes: `succeeded`; failed, which is what `notify = "failure"`
//! mails (`failed`, `timed_out`, `rejected`); and other (`cancelled`).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::record::{Status, Usage};

/// A finished job as the report shows it (and as the history counts it).
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
    /// What its task used (the record's `[usage]`): the report shows it
    /// in the row and, per type, over the last hour. `None` for a job
    /// that never ran.
    pub usage: Option<Usage>,
    /// Who submitted it, as its record says.
    pub submitter: Option<String>,
}

/// Minutes the chart covers, the current one included.
pub const MINUTES: usize = 60;
/// Runs kept per type for its percentiles and usage: the latest ones.
pub const SAMPLE: usize = 256;
/// Failures kept for the report's list.
pub const FAILURES: usize = 20;

const HOUR: Duration = Duration::from_secs(3600);

/// Jobs that ended, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub succeeded: u64,
    pub failed: u64,
    pub other: u64,
}

impl Outcomes {
    pub fn total(&self) -> u64 {
        self.succeeded + self.failed + self.other
    }

    fn add(&mut self, status: Status) {
        if status == Status::Succeeded {
            self.succeeded += 1;
        } else if status.is_failure() {
            self.failed += 1;
        } else {
            self.other += 1;
        }
    }
}

/// One minute's finishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Minute {
    /// Minutes since the Unix epoch.
    at: u64,
    /// All types together: the chart's bar.
    all: Outcomes,
    /// By type: the per-type failure rates.
    by_type: BTreeMap<String, Outcomes>,
}

/// The last hour of finishes. Cheap to clone: the loop keeps it in an
/// `Arc` and snapshots share it until the next finish.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Counts per minute, oldest first, none older than [`MINUTES`]
    /// minutes before the latest finish observed.
    minutes: VecDeque<Minute>,
    /// Per type, the latest runs (run time, usage) with when each job
    /// finished, oldest first, at most [`SAMPLE`].
    runs: BTreeMap<String, VecDeque<Run>>,
    /// The latest failures, newest first, at most [`FAILURES`].
    failures: VecDeque<FinishedRow>,
}

/// What one job of a type took, for the type's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    finished: SystemTime,
    /// How long it ran; `None` when that is not known.
    ran: Option<Duration>,
    /// Its CPU time; `None` without `[usage]` (or with a figure that is no
    /// duration).
    cpu: Option<Duration>,
    /// Its largest resident set; `None` without `[usage]`.
    rss: Option<u64>,
}

/// A type's last hour, for the report's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeHour {
    pub name: String,
    pub outcomes: Outcomes,
    /// Median run time of the sampled jobs that ran; `None` when none did.
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    /// CPU time of the sampled jobs that have a `[usage]`: median and
    /// largest.
    pub cpu: Option<Spread<Duration>>,
    /// Max RSS of the same jobs, in bytes: median and largest.
    pub rss: Option<Spread<u64>>,
}

/// The middle and the top of some figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread<T> {
    /// The nearest-rank median.
    pub median: T,
    pub max: T,
}

impl<T: Ord + Copy> Spread<T> {
    /// Of the values, in any order; `None` when there are none.
    fn of(mut values: Vec<T>) -> Option<Spread<T>> {
        values.sort();
        Some(Spread {
            median: percentile(&values, 50)?,
            max: *values.last()?,
        })
    }
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

impl History {
    /// A job ended: `kind` is the type it is counted under.
    pub fn observe(&mut self, kind: &str, row: &FinishedRow, now: SystemTime) {
        let current = minute_of(now);
        let first = current.saturating_sub(MINUTES as u64 - 1);
        // A finish from the future (clock skew) counts now.
        let at = minute_of(row.finished).min(current);
        if at >= first {
            let pos = self.minutes.iter().rposition(|m| m.at <= at);
            let m = match pos {
                Some(i) if self.minutes[i].at == at => &mut self.minutes[i],
                Some(i) => {
                    self.minutes.insert(
                        i + 1,
                        Minute {
                            at,
                            ..Minute::default()
                        },
                    );
                    &mut self.minutes[i + 1]
                }
                None => {
                    self.minutes.push_front(Minute {
                        at,
                        ..Minute::default()
                    });
                    &mut self.minutes[0]
                }
            };
            m.all.add(row.status);
            m.by_type
                .entry(kind.to_string())
                .or_default()
                .add(row.status);
        }
        while self.minutes.front().is_some_and(|m| m.at < first) {
            self.minutes.pop_front();
        }
        let run = Run {
            finished: row.finished,
            ran: row.duration,
            cpu: row.usage.as_ref().and_then(Usage::cpu),
            rss: row.usage.as_ref().map(|u| u.max_rss_bytes),
        };
        if run.ran.is_some() || run.cpu.is_some() || run.rss.is_some() {
            let sample = self.runs.entry(kind.to_string()).or_default();
            sample.push_back(run);
            if sample.len() > SAMPLE {
                sample.pop_front();
            }
        }
        let since = now.checked_sub(HOUR).unwrap_or(UNIX_EPOCH);
        self.runs
            .retain(|_, s| s.back().is_some_and(|r| r.finished >= since));
        if row.status.is_failure() {
            self.failures.retain(|f| f.id != row.id);
            self.failures.push_front(row.clone());
            self.failures.truncate(FAILURES);
        }
    }

    /// Takes in failures this run did not see (the sweeper's first scan of
    /// `done/`): kept if among the latest, each job once.
    pub fn absorb_failures(&mut self, rows: impl IntoIterator<Item = FinishedRow>) {
        for row in rows {
            if row.status.is_failure() && !self.failures.iter().any(|f| f.id == row.id) {
                self.failures.push_back(row);
            }
        }
        self.failures
            .make_contiguous()
            .sort_by_key(|f| std::cmp::Reverse(f.finished));
        self.failures.truncate(FAILURES);
    }

    /// The latest failures, newest first.
    pub fn failures(&self) -> impl Iterator<Item = &FinishedRow> {
        self.failures.iter()
    }

    /// The chart's bars: one per minute, the oldest first and the current
    /// minute last.
    pub fn bars(&self, now: SystemTime) -> [Outcomes; MINUTES] {
        let current = minute_of(now);
        let mut bars = [Outcomes::default(); MINUTES];
        for m in &self.minutes {
            if let Some(age) = current.checked_sub(m.at)
                && let Some(i) = (MINUTES - 1).checked_sub(age as usize)
            {
                bars[i] = m.all;
            }
        }
        bars
    }

    /// Each type's last hour, in name order: `types` (the configured
    /// ones, shown even when idle) and any other that ended in the hour.
    pub fn per_type(&self, types: &[&str], now: SystemTime) -> Vec<TypeHour> {
        let first = minute_of(now).saturating_sub(MINUTES as u64 - 1);
        let mut counts: BTreeMap<&str, Outcomes> =
            types.iter().map(|t| (*t, Outcomes::default())).collect();
        for m in self.minutes.iter().filter(|m| m.at >= first) {
            for (t, o) in &m.by_type {
                let c = counts.entry(t.as_str()).or_default();
                c.succeeded += o.succeeded;
                c.failed += o.failed;
                c.other += o.other;
            }
        }
        let since = now.checked_sub(HOUR).unwrap_or(UNIX_EPOCH);
        counts
            .into_iter()
            .map(|(name, outcomes)| {
                let recent: Vec<&Run> = self
                    .runs
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter(|r| r.finished >= since)
                    .collect();
                let mut ran: Vec<Duration> = recent.iter().filter_map(|r| r.ran).collect();
                ran.sort();
                TypeHour {
                    name: name.to_string(),
                    outcomes,
                    p50: percentile(&ran, 50),
                    p95: percentile(&ran, 95),
                    cpu: Spread::of(recent.iter().filter_map(|r| r.cpu).collect()),
                    rss: Spread::of(recent.iter().filter_map(|r| r.rss).collect()),
                }
            })
            .collect()
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile<T: Copy>(sorted: &[T], p: usize) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        // 1 800 000 000 is a whole minute: minute arithmetic reads plainly.
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn row(id: &str, status: Status, finished: u64, ran_ms: Option<u64>) -> FinishedRow {
        FinishedRow {
            id: id.into(),
            kind: "t".into(),
            status,
            finished: at(finished),
            duration: ran_ms.map(Duration::from_millis),
            exit_code: None,
            signal: None,
            error: None,
            usage: None,
            submitter: None,
        }
    }

    #[test]
    fn finishes_are_counted_by_minute_and_outcome_for_the_last_hour() {
        let mut h = History::default();
        let now = at(3600 + 30);
        let finishes = [
            ("a", Status::Succeeded, 3600 + 5),
            ("b", Status::Succeeded, 3600 + 10),
            ("c", Status::Failed, 3600 + 20),
            ("d", Status::TimedOut, 3600 - 1),
            ("e", Status::Rejected, 3600 - 59 * 60),
            ("f", Status::Cancelled, 3600 - 59 * 60),
            // Older than the hour: not drawn.
            ("g", Status::Succeeded, 3600 - 60 * 60),
            // From the future: counted now.
            ("h", Status::Succeeded, 3600 + 600),
        ];
        for (id, st, t) in finishes {
            h.observe("t", &row(id, st, t, None), now);
        }
        let bars = h.bars(now);
        let o = |succeeded, failed, other| Outcomes {
            succeeded,
            failed,
            other,
        };
        assert_eq!(bars[59], o(3, 1, 0), "the current minute");
        assert_eq!(bars[58], o(0, 1, 0));
        assert_eq!(bars[0], o(0, 1, 1), "59 minutes ago");
        assert_eq!(bars.iter().map(Outcomes::total).sum::<u64>(), 7);
        // An hour later, all of it has aged out.
        let later = at(2 * 3600 + 30);
        assert!(h.bars(later).iter().all(|b| b.total() == 0));
        h.observe("t", &row("i", Status::Succeeded, 2 * 3600, None), later);
        assert_eq!(h.minutes.len(), 1, "old minutes are dropped");
    }

    #[test]
    fn per_type_rates_and_percentiles_cover_the_hour() {
        let mut h = History::default();
        let now = at(7200);
        for i in 0..20u64 {
            let st = if i % 4 == 0 {
                Status::Failed
            } else {
                Status::Succeeded
            };
            h.observe(
                "t",
                &row(&format!("j{i}"), st, 7000 + i, Some(100 * (i + 1))),
                now,
            );
        }
        // Ran more than an hour ago: its duration is left out.
        h.observe("old", &row("o", Status::Succeeded, 3000, Some(5)), at(3100));
        let rows = h.per_type(&["idle", "t"], now);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["idle", "t"], "idle types shown; 'old' has aged out");
        let t = &rows[1];
        assert_eq!(t.outcomes.total(), 20);
        assert_eq!(t.outcomes.failed, 5);
        assert_eq!(t.p50, Some(Duration::from_millis(1000)));
        assert_eq!(t.p95, Some(Duration::from_millis(1900)));
        assert_eq!((rows[0].outcomes.total(), rows[0].p50), (0, None));
    }

    #[test]
    fn per_type_usage_is_the_median_and_the_largest_of_the_hour() {
        let mut h = History::default();
        let now = at(7200);
        let used = |cpu_seconds, max_rss_bytes| {
            Some(Usage {
                cpu_seconds,
                max_rss_bytes,
                memory_peak_bytes: None,
                oom_killed: None,
            })
        };
        // Ran more than an hour ago: left out.
        let mut old = row("old", Status::Succeeded, 3000, Some(5));
        old.usage = used(99.0, 1 << 40);
        h.observe("t", &old, at(3100));
        let runs = [(0.5, 10), (2.0, 30), (1.0, 20), (f64::NAN, 40)];
        for (i, (cpu, rss)) in runs.into_iter().enumerate() {
            let mut r = row(&format!("j{i}"), Status::Succeeded, 7000 + i as u64, None);
            r.usage = used(cpu, rss);
            h.observe("t", &r, now);
        }
        // Never ran: nothing to sample.
        h.observe("t", &row("x", Status::Rejected, 7100, None), now);
        h.observe("idle", &row("y", Status::Rejected, 7100, None), now);
        let rows = h.per_type(&["t"], now);
        let secs = Duration::from_secs_f64;
        assert_eq!(rows[1].name, "t");
        assert_eq!(
            rows[1].cpu,
            Some(Spread {
                median: secs(1.0),
                max: secs(2.0)
            }),
            "a NaN is no figure"
        );
        assert_eq!(
            rows[1].rss,
            Some(Spread {
                median: 20,
                max: 40
            })
        );
        assert_eq!((rows[1].p50, rows[1].p95), (None, None));
        assert_eq!(
            (rows[0].name.as_str(), rows[0].cpu, rows[0].rss),
            ("idle", None, None)
        );
    }

    #[test]
    fn everything_kept_is_bounded_whatever_the_history() {
        let mut h = History::default();
        for i in 0..10_000u64 {
            let st = if i % 2 == 0 {
                Status::Failed
            } else {
                Status::Succeeded
            };
            let now = at(i);
            h.observe(
                &format!("t{}", i % 3),
                &row(&format!("j{i}"), st, i, Some(i)),
                now,
            );
        }
        assert!(h.minutes.len() <= MINUTES);
        assert!(h.runs.values().all(|s| s.len() <= SAMPLE));
        assert_eq!(h.runs.len(), 3);
        assert_eq!(h.failures.len(), FAILURES);
        assert_eq!(h.failures().next().unwrap().id, "j9998", "newest first");
    }

    #[test]
    fn failures_of_earlier_runs_join_the_latest_once() {
        let mut h = History::default();
        h.observe("t", &row("new", Status::Failed, 100, None), at(100));
        h.absorb_failures([
            row("old", Status::TimedOut, 50, None),
            row("new", Status::Failed, 100, None),
            row("fine", Status::Succeeded, 60, None),
        ]);
        let ids: Vec<&str> = h.failures().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["new", "old"]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = |v: &[u64]| {
            v.iter()
                .map(|s| Duration::from_secs(*s))
                .collect::<Vec<_>>()
        };
        assert_eq!(percentile(&d(&[]), 50), None);
        assert_eq!(percentile(&d(&[7]), 95), Some(Duration::from_secs(7)));
        assert_eq!(
            percentile(&d(&[1, 2, 3, 4]), 50),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            percentile(&d(&[1, 2, 3, 4]), 95),
            Some(Duration::from_secs(4))
        );
    }
}
