//! Room on the spool's file system: what a full disk looks like, how much
//! room is left, and when to try a write again while it is full.
//!
//! A full file system (out of blocks or out of inodes: `ENOSPC`; over a
//! quota: `EDQUOT`) is a state the daemon waits out, never a failure of
//! the job whose record could not be written (SPEC §8). [`is_full`] tells
//! that state from other errors; [`Room::of`] asks the file system how
//! much is left (`statvfs(2)`, which writes nothing), so that the loop can
//! stop starting jobs before their outputs are lost and the commit thread
//! can try again as soon as something frees space; [`due`] and
//! [`next_delay`] are the retry schedule, pure, `now` as an argument.
//!
//! Never writes, never sleeps, never decides anything about a job.
//!
//! Invariant: "short of room" errs on the side of waiting: a file system
//! that reports no inode count (btrfs, some network file systems) is taken
//! to have inodes to spare, and a `statvfs` that fails says nothing (the
//! callers then go by the errors of real writes).

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// The first wait before a write that failed for want of room is tried
/// again (unless room is seen to free up before).
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two tries: a quota raised or space freed on a
/// file system whose counts say nothing is noticed within this.
pub const MAX_RETRY: Duration = Duration::from_secs(10);
/// How often the room left is looked at while the file system is full: no
/// event says that space was freed, and a `statvfs` costs next to nothing.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Below this much room no job starts: its output, its record and the
/// spool's own small files need a little space. Small enough for a tiny
/// spool (a test's 2 MiB tmpfs), large enough for a record or two.
pub const RESERVE: Room = Room {
    bytes: 64 << 10,
    inodes: 16,
};

/// Whether an IO error means the file system is full: out of blocks or
/// inodes (`ENOSPC`), or over a quota (`EDQUOT`). Errors that were given
/// context along the way keep their kind, so both are looked at.
pub fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

/// What is left on a file system for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Bytes this process may still write (root may use the blocks kept
    /// for it).
    pub bytes: u64,
    /// Files that may still be created; `u64::MAX` when the file system
    /// does not count them.
    pub inodes: u64,
}

impl Room {
    /// The room left on the file system that holds `path`.
    pub fn of(path: &Path) -> io::Result<Room> {
        let s = nix::sys::statvfs::statvfs(path).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("statvfs {}: {e}", path.display()),
            )
        })?;
        let root = nix::unistd::geteuid().is_root();
        let blocks = if root {
            s.blocks_free()
        } else {
            s.blocks_available()
        };
        let inodes = if s.files() == 0 {
            u64::MAX
        } else if root {
            s.files_free()
        } else {
            s.files_available()
        };
        Ok(Room {
            bytes: blocks.saturating_mul(s.fragment_size()),
            inodes,
        })
    }

    /// Whether there is less room than [`RESERVE`] (of bytes or inodes).
    pub fn is_short(self) -> bool {
        self.bytes < RESERVE.bytes || self.inodes < RESERVE.inodes
    }

    /// Whether something was freed since `before` was seen.
    pub fn grew_since(self, before: Room) -> bool {
        self.bytes > before.bytes || self.inodes > before.inodes
    }

    /// The room left, in words for the log.
    pub fn describe(self) -> String {
        let inodes = if self.inodes == u64::MAX {
            "inodes not counted".to_string()
        } else {
            format!("{} inodes free", self.inodes)
        };
        format!("{} KiB free, {inodes}", self.bytes >> 10)
    }
}

/// Whether a write that failed for want of room is tried again now: its
/// retry time has come, or room was freed since the last try failed
/// (`now_room` against `then_room`; either unknown says nothing).
pub fn due(
    now: Instant,
    retry_at: Instant,
    now_room: Option<Room>,
    then_room: Option<Room>,
) -> bool {
    now >= retry_at || matches!((now_room, then_room), (Some(n), Some(t)) if n.grew_since(t))
}

/// The wait after `delay`: doubled, at most [`MAX_RETRY`].
pub fn next_delay(delay: Duration) -> Duration {
    delay.saturating_mul(2).clamp(FIRST_RETRY, MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disks_are_told_from_other_errors_even_with_context() {
        for (e, full) in [
            (io::Error::from_raw_os_error(libc::ENOSPC), true),
            (io::Error::from_raw_os_error(libc::EDQUOT), true),
            (io::Error::from_raw_os_error(libc::EIO), false),
            (io::Error::from_raw_os_error(libc::EACCES), false),
            (io::Error::from(io::ErrorKind::NotFound), false),
        ] {
            assert_eq!(is_full(&e), full, "{e}");
            // As `fsio::io_context` wraps it: the kind survives, the code not.
            let wrapped = io::Error::new(e.kind(), format!("write /x: {e}"));
            assert_eq!(is_full(&wrapped), full, "{wrapped}");
        }
    }

    #[test]
    fn room_is_short_below_the_reserve_of_either_kind() {
        let room = |bytes, inodes| Room { bytes, inodes };
        for (r, short) in [
            (room(1 << 30, 1000), false),
            (RESERVE, false),
            (room(RESERVE.bytes - 1, 1000), true),
            (room(1 << 30, RESERVE.inodes - 1), true),
            (room(0, u64::MAX), true),
            (room(1 << 30, u64::MAX), false),
        ] {
            assert_eq!(r.is_short(), short, "{r:?}");
        }
        assert!(room(10, 5).grew_since(room(9, 5)));
        assert!(room(9, 6).grew_since(room(9, 5)));
        assert!(!room(9, 5).grew_since(room(9, 5)));
        assert!(!room(8, 5).grew_since(room(9, 5)));
    }

    #[test]
    fn a_retry_is_due_at_its_time_or_when_room_was_freed() {
        let t = Instant::now();
        let later = t + Duration::from_secs(1);
        let r = |bytes| Some(Room { bytes, inodes: 10 });
        for (now, now_room, then_room, due_now) in [
            (t, r(0), r(0), false),
            (later, r(0), r(0), true),
            (t, r(4096), r(0), true),
            (t, r(0), r(4096), false),
            (t, None, r(0), false),
            (t, r(4096), None, false),
            (later, None, None, true),
        ] {
            assert_eq!(
                due(now, later, now_room, then_room),
                due_now,
                "{now_room:?} {then_room:?}"
            );
        }
    }

    #[test]
    fn retries_back_off_from_one_second_doubling_to_ten() {
        let mut d = FIRST_RETRY;
        let mut seen = vec![d];
        for _ in 0..6 {
            d = next_delay(d);
            seen.push(d);
        }
        let secs: Vec<u64> = seen.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10, 10]);
    }

    #[test]
    fn the_room_of_a_real_folder_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let r = Room::of(dir.path()).unwrap();
        assert!(r.inodes > 0, "{r:?}");
        assert!(Room::of(&dir.path().join("missing")).is_err());
    }
}
