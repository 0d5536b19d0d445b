//! What a queued job waits for, as `raccoon show` tells it: its
//! `not_before`, or its turn among the queued jobs of its type.
//!
//! Pure: the queued jobs' keys and `now` in, an answer out. The order is
//! the scheduler's (`scheduler`): higher priority first, then earlier
//! submission; among equals the daemon goes by the order it learned of
//! the jobs, which a reader of the spool cannot see, so ids break the tie
//! here (fresh ids sort by submission time). A job whose `not_before` is
//! still ahead is not in line yet.

use std::cmp::Reverse;
use std::time::SystemTime;

use crate::time;

/// What the scheduler orders a queued job by, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub priority: i64,
    /// Its `submitted` key, else when its file was written.
    pub submitted: SystemTime,
    pub not_before: Option<SystemTime>,
}

impl Pending {
    /// A queued job from its file's keys; `written` is the file's
    /// modification time. Keys that do not parse count as absent (the
    /// daemon will reject such a file anyway).
    pub fn from_table(id: &str, table: &toml::Table, written: SystemTime) -> Pending {
        let datetime = |key: &str| match table.get(key) {
            Some(toml::Value::Datetime(d)) => time::from_toml(d).ok(),
            _ => None,
        };
        Pending {
            id: id.to_string(),
            priority: table
                .get("priority")
                .and_then(toml::Value::as_integer)
                .unwrap_or(0),
            submitted: datetime("submitted").unwrap_or(written),
            not_before: datetime("not_before"),
        }
    }

    fn ready(&self, now: SystemTime) -> bool {
        self.not_before.is_none_or(|t| t <= now)
    }
}

/// What a queued job waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waits {
    /// Its `not_before`, still ahead.
    NotBefore(SystemTime),
    /// Its turn: it is `position` (from 1) of the `of` jobs of its type
    /// that may start now.
    Turn { position: usize, of: usize },
}

/// What `me` waits for, among `queue` (the queued jobs of its type, `me`
/// among them or not).
pub fn waits(me: &Pending, queue: &[Pending], now: SystemTime) -> Waits {
    if let Some(t) = me.not_before.filter(|t| *t > now) {
        return Waits::NotBefore(t);
    }
    let key = |p: &Pending| (Reverse(p.priority), p.submitted, p.id.clone());
    let mine = key(me);
    let others = queue.iter().filter(|p| p.id != me.id && p.ready(now));
    let (mut ahead, mut of) = (0, 1);
    for p in others {
        of += 1;
        if key(p) < mine {
            ahead += 1;
        }
    }
    Waits::Turn {
        position: ahead + 1,
        of,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn p(id: &str, priority: i64, submitted: u64, not_before: Option<u64>) -> Pending {
        Pending {
            id: id.into(),
            priority,
            submitted: at(submitted),
            not_before: not_before.map(at),
        }
    }

    #[test]
    fn a_queued_job_waits_for_its_time_or_its_turn() {
        let queue = [
            p("a", 0, 1, None),
            p("b", 5, 9, None),
            p("c", 0, 2, None),
            p("d", 0, 0, Some(500)),
            p("e", 0, 1, None),
        ];
        let now = at(100);
        let cases = [
            (p("a", 0, 1, None), Waits::Turn { position: 2, of: 4 }),
            (p("b", 5, 9, None), Waits::Turn { position: 1, of: 4 }),
            (p("c", 0, 2, None), Waits::Turn { position: 4, of: 4 }),
            // Same priority and time as a: the id decides.
            (p("e", 0, 1, None), Waits::Turn { position: 3, of: 4 }),
            (p("d", 0, 0, Some(500)), Waits::NotBefore(at(500))),
            // A not_before already past is no wait.
            (p("f", 0, 3, Some(50)), Waits::Turn { position: 5, of: 5 }),
        ];
        for (me, want) in cases {
            assert_eq!(waits(&me, &queue, now), want, "{}", me.id);
        }
    }

    #[test]
    fn keys_come_from_the_job_file_else_its_time() {
        let table: toml::Table = toml::from_str(
            "priority = 3\nsubmitted = 2027-01-15T08:00:00Z\nnot_before = 2027-01-15T09:00:00Z\n",
        )
        .unwrap();
        let got = Pending::from_table("x", &table, at(0));
        assert_eq!(got.priority, 3);
        assert_eq!(
            time::format_rfc3339(got.submitted),
            "2027-01-15T08:00:00.000Z"
        );
        assert!(got.not_before.is_some());
        let bare = Pending::from_table("y", &toml::Table::new(), at(7));
        assert_eq!(bare, p("y", 0, 7, None));
    }
}
