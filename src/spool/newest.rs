//! The newest `limit` finish times among records read newest-written
//! first, and when to stop reading: the rule both ways of listing the
//! newest finished jobs share (records by their files' times, and the
//! ledger's lines by their `written`).
//!
//! A record is written after its job finished, so when it was written
//! bounds when it finished (give or take the hosts' clocks, `skew`). Once
//! `limit` records taken finished after the next one was written, no
//! record not read yet can be among the newest.
//!
//! Pure: no I/O, no clock.

use std::time::{Duration, SystemTime};

/// The finish times taken so far, newest first, at most `limit`.
#[derive(Debug)]
pub(super) struct Newest {
    limit: usize,
    skew: Duration,
    times: Vec<SystemTime>,
}

impl Newest {
    pub(super) fn new(limit: usize, skew: Duration) -> Newest {
        Newest {
            limit,
            skew,
            times: Vec::new(),
        }
    }

    /// Whether a record written at `written`, and every one written
    /// before it, can be left unread: `limit` taken finished after it
    /// (with the clocks' allowance).
    pub(super) fn done_before(&self, written: SystemTime) -> bool {
        let bound = crate::time::add(written, self.skew);
        self.last().is_some_and(|t| t > bound)
    }

    /// Takes the finish time of a record that counts (it passed the
    /// filter).
    pub(super) fn take(&mut self, finished: SystemTime) {
        let at = self.times.partition_point(|t| *t > finished);
        self.times.insert(at, finished);
        self.times.truncate(self.limit.max(1));
    }

    /// Whether `limit` records taken all finished at or after `moment`
    /// (with the clocks' allowance): with `moment` a ledger's `since`, no
    /// record missing from the ledger can be among the newest.
    pub(super) fn all_since(&self, moment: SystemTime) -> bool {
        let bound = crate::time::add(moment, self.skew);
        self.last().is_some_and(|t| t >= bound)
    }

    /// The `limit`-th newest finish time, once there are `limit`.
    fn last(&self) -> Option<SystemTime> {
        self.times.get(self.limit.checked_sub(1)?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn reading_stops_once_limit_finished_after_the_next_was_written() {
        // (limit, finish times taken, next written, may stop)
        let cases: &[(usize, &[u64], u64, bool)] = &[
            (1, &[], 100, false),
            (1, &[200], 100, true),
            // Within the clocks' allowance (5 s): not yet.
            (1, &[104], 100, false),
            (1, &[105], 100, false),
            (1, &[106], 100, true),
            (2, &[200], 100, false),
            (2, &[200, 50], 100, false),
            (2, &[50, 200, 300], 100, true),
            (3, &[300, 200, 106, 1], 100, true),
            // No limit at all: never.
            (0, &[300], 100, false),
        ];
        for (limit, taken, written, stop) in cases {
            let mut n = Newest::new(*limit, Duration::from_secs(5));
            for t in *taken {
                n.take(at(*t));
            }
            assert_eq!(
                n.done_before(at(*written)),
                *stop,
                "limit {limit}, taken {taken:?}, written {written}"
            );
        }
    }

    #[test]
    fn a_ledger_is_trusted_when_the_newest_all_finished_since_it_began() {
        let mut n = Newest::new(2, Duration::from_secs(5));
        n.take(at(120));
        assert!(!n.all_since(at(100)), "one of two");
        n.take(at(105));
        assert!(n.all_since(at(100)), "at the allowance's edge");
        n.take(at(104));
        assert!(n.all_since(at(100)), "the older one is not among the two");
        let mut n = Newest::new(2, Duration::from_secs(5));
        n.take(at(120));
        n.take(at(104));
        assert!(!n.all_since(at(100)));
        assert!(!Newest::new(0, Duration::ZERO).all_since(at(0)));
    }

    #[test]
    fn the_newest_are_kept_however_they_come() {
        let mut n = Newest::new(3, Duration::ZERO);
        for t in [5, 1, 9, 7, 3, 9] {
            n.take(at(t));
        }
        assert_eq!(n.times, [at(9), at(9), at(7)]);
    }
}
