//! The backlog: how many submissions the daemon holds in memory
//! (`max_queued`, SPEC §8), and taking the oldest files waiting in `new/`
//! as room frees up.
//!
//! The daemon holds a job in memory while it is queued, and a name while it
//! settles; together they never pass `max_queued`. A name that finds no
//! room is not read: it stays in `new/` and the daemon notes a backlog.
//! Once the queue has drained to half of `max_queued` (jobs started and left
//! it), `new/` is listed again and the oldest waiting files (by
//! modification time, then name) fill the room. Listing a large `new/` is
//! costly, so it happens once per half of `max_queued` jobs started, never
//! once per job.
//!
//! Never rejects or removes a file for want of room: a file left unread is
//! still a submission, taken later. The decisions are pure functions of
//! counts ([`room`], [`refill_due`], [`oldest`]), tested by table.

use std::time::SystemTime;

use super::Daemon;

/// How many more names may be held when `held` are and at most `max` may.
pub(super) fn room(held: usize, max: usize) -> usize {
    max.saturating_sub(held)
}

/// Whether `new/` is listed again for files left unread: only when some
/// were (`backlog`) and the daemon holds at most half of `max`, so that a
/// large `new/` is listed once per `max / 2` jobs started.
pub(super) fn refill_due(backlog: bool, held: usize, max: usize) -> bool {
    backlog && held <= max / 2
}

/// The `n` oldest of `names` (by modification time, then name): the files
/// that waited longest are taken first. Names whose time is unknown (gone,
/// or unreadable) come last.
pub(super) fn oldest(mut names: Vec<(Option<SystemTime>, String)>, n: usize) -> Vec<String> {
    let key = |(t, name): &(Option<SystemTime>, String)| (t.is_none(), *t, name.clone());
    if names.len() > n && n > 0 {
        names.select_nth_unstable_by_key(n - 1, key);
        names.truncate(n);
    }
    names.sort_by_key(key);
    names.truncate(n);
    names.into_iter().map(|(_, name)| name).collect()
}

impl Daemon {
    /// Jobs queued and names settling: what `max_queued` bounds.
    pub(super) fn held(&self) -> usize {
        self.queue.len() + self.settling.len()
    }

    /// Whether one more name may be held; when not, notes that `new/` has
    /// files left unread, for [`Daemon::refill`].
    pub(super) fn admit_one(&mut self) -> bool {
        if room(self.held(), self.config.max_queued) > 0 {
            return true;
        }
        self.note_backlog();
        false
    }

    /// Notes that files wait unread in `new/`; logged when that begins.
    fn note_backlog(&mut self) {
        if !self.backlog {
            crate::log!(
                "new/: more files than max_queued = {}; the rest wait unread and are taken, oldest first, as jobs start",
                self.config.max_queued
            );
        }
        self.backlog = true;
    }

    /// Of `fresh` (every name in `new/` the daemon does not hold: a whole
    /// listing), the ones it has room for, oldest first; notes whether some
    /// are left unread.
    pub(super) fn admissible(&mut self, fresh: Vec<String>) -> Vec<String> {
        let room = room(self.held(), self.config.max_queued);
        if fresh.len() <= room {
            self.backlog = false;
            return fresh;
        }
        let dir = self.spool.new_dir();
        let timed = fresh
            .into_iter()
            .map(|n| {
                let t = dir.join(&n).symlink_metadata().and_then(|m| m.modified());
                (t.ok(), n)
            })
            .collect();
        self.note_backlog();
        oldest(timed, room)
    }

    /// After jobs left the queue: when files wait unread in `new/` and
    /// there is room enough, takes the oldest of them.
    pub(super) fn refill(&mut self) {
        if !refill_due(self.backlog, self.held(), self.config.max_queued) {
            return;
        }
        let names = match self.spool.names(&self.spool.new_dir()) {
            Ok(n) => n,
            Err(e) => {
                crate::log!("new/: {e}; files waiting there are taken at the next rescan");
                self.backlog = false;
                return;
            }
        };
        let fresh: Vec<String> = names
            .into_iter()
            .filter(|n| !self.queue.contains(n) && !self.settling.contains_key(n))
            .collect();
        let mut fresh = self.admissible(fresh);
        fresh.sort();
        // Files that waited are read at once (a young one still settles).
        self.read_now(&fresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn room_and_when_to_list_new_again() {
        // (backlog, held, max) → room, refill due
        let table = [
            (false, 0, 5, 5, false),
            (true, 0, 5, 5, true),
            (true, 2, 5, 3, true),
            (true, 3, 5, 2, false),
            (true, 5, 5, 0, false),
            (true, 9, 5, 0, false),
            (true, 0, 1, 1, true),
            (true, 1, 1, 0, false),
            (false, 500_000, 1_000_000, 500_000, false),
            (true, 500_000, 1_000_000, 500_000, true),
            (true, 500_001, 1_000_000, 499_999, false),
        ];
        for (backlog, held, max, want_room, want_due) in table {
            assert_eq!(room(held, max), want_room, "{held}/{max}");
            assert_eq!(
                refill_due(backlog, held, max),
                want_due,
                "{backlog} {held}/{max}"
            );
        }
    }

    #[test]
    fn the_oldest_files_are_taken_first_then_by_name() {
        let at = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let names = || {
            vec![
                (at(30), "c".to_string()),
                (None, "gone".to_string()),
                (at(10), "b".to_string()),
                (at(10), "a".to_string()),
                (at(20), "d".to_string()),
            ]
        };
        let table: [(usize, &[&str]); 5] = [
            (0, &[]),
            (1, &["a"]),
            (3, &["a", "b", "d"]),
            (4, &["a", "b", "d", "c"]),
            (9, &["a", "b", "d", "c", "gone"]),
        ];
        for (n, want) in table {
            assert_eq!(oldest(names(), n), want, "{n}");
        }
    }
}
