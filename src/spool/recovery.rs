//! Jobs left in `running/` by a daemon that is gone, and the processes
//! that hold them: everything the spool learns from `/proc`.
//!
//! Owns reading `/proc/locks` (who took a job's `flock`), `/proc/*/fd`
//! and `/proc/*/fdinfo` (who shares that lock), [`Spool::recover`] and
//! [`Spool::kill_orphans`]. Never touches a job a live daemon holds, never
//! kills the daemon's own process group, never kills a process that merely
//! has a job file open, never decides what happens to an orphan (the
//! daemon requeues or ends it).
//!
//! Invariant: "alive" means a live process of the daemon's own user took
//! the lock and still has the file open, or the task of a dead daemon still
//! shares the lock it inherited (recovery kills those). A lock taken by a
//! process of another user (a group member can open a job file in
//! `running/` for reading, and `flock` needs no more) holds nothing: the
//! job file is replaced by a new copy of the daemon's own, and the job is
//! recovered. A pid alone is never trusted, since pids are reused.
//!
//! Recovery skips nothing silently and stops at nothing: an entry no
//! daemon makes in `running/` (a folder, a symlink, a file with several
//! links) is taken out, to be recorded as rejected, and an entry that
//! cannot be read is logged and looked at again next time.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use std::time::{Duration, SystemTime};

use super::lease::{self, Verdict};
use super::{
    Claim, Hold, Refused, Spool, private, read_limited, remove_any, rename_noreplace, same_file,
};
use crate::fsio::{io_context, open_nofollow, open_regular};
use crate::ids::{fresh_id, valid_id};

/// What recovery found in `running/`.
pub enum Leftover {
    /// No live process holds it: the job must be requeued or ended.
    Orphan(Claim),
    /// A live process (another daemon or its task) holds it.
    Alive(String),
    /// A record or a requeued copy exists: the leftovers were removed.
    Cleaned(String),
    /// `running/<name>` was no job file of a daemon's: taken out of
    /// `running/`, to be recorded as rejected.
    Odd { name: String, refused: Refused },
}

/// Who holds the lock on a job file that cannot be locked.
#[derive(Debug, PartialEq, Eq)]
enum Holder {
    /// A live process of the daemon's user took it: another daemon.
    Daemon,
    /// Its taker is gone, but processes that inherited it (a dead
    /// daemon's task) still share it.
    Escaped,
    /// Only live processes of other users took it.
    Squatters(Vec<i32>),
    /// `/proc/locks` does not show it (a network file system).
    Unknown,
}

impl Spool {
    /// Looks at each job left in `running/` by an earlier run: removes the
    /// leftovers of jobs that already have a record or a requeued copy,
    /// leaves alone those a live daemon holds, takes out what is no job
    /// file, and hands back the rest.
    ///
    /// A job whose holder mark names another host is left alone while its
    /// lease (`lease`, by the file system's clock) runs, and taken back by
    /// a rename once it ran out (see `lease`).
    pub fn recover(&self, max_bytes: u64, lease: Duration) -> io::Result<Vec<Leftover>> {
        let mut out = Vec::new();
        let clock = Clock {
            now: self.fs_now().ok(),
            lease,
        };
        for name in self.names(&self.running_dir())? {
            let Some(stem) = name.strip_suffix(".toml") else {
                continue;
            };
            match self.recover_one(&name, stem, max_bytes, &clock) {
                Ok(Some(left)) => out.push(left),
                Ok(None) => {}
                Err(e) => crate::log!("recover: running/{name}: {e}"),
            }
        }
        // Outputs whose job file is gone (a crash between the steps of
        // finish or requeue) belong to no one.
        for name in self.names(&self.running_dir())? {
            let Some((id, _)) = name.rsplit_once('.') else {
                continue;
            };
            if self.running_job(id).symlink_metadata().is_err()
                && let Err(e) = remove_any(&self.running_dir().join(&name))
            {
                crate::log!("recover: {e}");
            }
        }
        Ok(out)
    }

    /// Recovery of `running/<name>` (`<stem>.toml`).
    fn recover_one(
        &self,
        name: &str,
        stem: &str,
        max_bytes: u64,
        clock: &Clock,
    ) -> io::Result<Option<Leftover>> {
        let path = self.running_dir().join(name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_context("stat", &path, e)),
        };
        if meta.is_file() && meta.nlink() == 2 && clock.young(&meta) {
            // A claim placing its copy by a link (where rename cannot
            // refuse to replace) has not unlinked its own name yet.
            return Ok(None);
        }
        if !valid_id(stem) || !meta.is_file() || meta.nlink() > 1 {
            let id = if valid_id(stem) && self.done_record(stem).symlink_metadata().is_err() {
                stem.to_string()
            } else {
                fresh_id()
            };
            let refused = self.refuse_running(name, &id)?;
            return Ok(refused.map(|refused| Leftover::Odd {
                name: name.to_string(),
                refused,
            }));
        }
        let id = stem;
        let file = match open_nofollow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_context("open", &path, e)),
        };
        let opened = file.metadata().map_err(|e| io_context("stat", &path, e))?;
        if opened.ino() != meta.ino() || opened.dev() != meta.dev() {
            // Changed under us: looked at again next time.
            return Ok(None);
        }
        let holder = self.read_host(id);
        let written = holder
            .as_ref()
            .and_then(|h| h.submitted)
            .or_else(|| opened.modified().ok());
        let by = holder.as_ref().and_then(|h| h.submitter);
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((file, Errno::EWOULDBLOCK)) => {
                return match holder_of(&opened) {
                    Holder::Squatters(pids) => {
                        crate::log!(
                            "{id}: recover: its job file is locked by pid {pids:?}, not a daemon; replaced by a new copy"
                        );
                        self.take_over(id, file, max_bytes, (written, by))
                            .map(|c| Some(Leftover::Orphan(c)))
                    }
                    _ => Ok(Some(Leftover::Alive(id.to_string()))),
                };
            }
            Err((_, e)) => return Err(io_context("lock", &path, e.into())),
        };
        if !same_file(&lock, &path) {
            return Ok(None);
        }
        // A lock taken on another host is not seen here: its lease is.
        let touched = lock.metadata().and_then(|m| m.modified());
        let verdict = match (clock.now, touched) {
            (Some(now), Ok(touched)) => lease::verdict(
                holder.as_ref().map(|h| h.host.as_str()),
                &self.host,
                touched,
                now,
                clock.lease,
            ),
            // Without the file system's clock, only what is surely ours.
            _ if holder.as_ref().is_some_and(|h| h.host == self.host) => Verdict::Ours,
            _ => Verdict::Leased,
        };
        match verdict {
            Verdict::Ours => {}
            Verdict::Leased => return Ok(Some(Leftover::Alive(id.to_string()))),
            Verdict::Expired => {
                let from = holder.map_or_else(String::new, |h| h.host);
                return self.take_back(id, lock, max_bytes, (written, by), &from);
            }
        }
        let bytes = read_limited(&mut lock, max_bytes).map_err(|e| io_context("read", &path, e))?;
        if self.done_record(id).symlink_metadata().is_ok() || self.still_in_new(id, &bytes) {
            self.remove_running(id);
            return Ok(Some(Leftover::Cleaned(id.to_string())));
        }
        Ok(Some(Leftover::Orphan(Claim {
            id: id.to_string(),
            bytes,
            hold: Hold::locked(lock, written, by),
        })))
    }

    /// Takes back a job of host `from` whose lease ran out: its job file
    /// is renamed into `.tmp/` as a claim of this daemon's (the rename
    /// decides between hosts taking it at once; the loser finds it gone),
    /// and a new locked copy of ours takes its place in `running/`.
    fn take_back(
        &self,
        id: &str,
        mut old: Flock<File>,
        max_bytes: u64,
        (written, by): (Option<SystemTime>, Option<u32>),
        from: &str,
    ) -> io::Result<Option<Leftover>> {
        let path = self.running_job(id);
        let taken = self.private_dir().join(private::claim_name(id));
        match fs::rename(&path, &taken) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_context("take back", &path, e)),
        }
        crate::log!("{id}: recover: the lease of host {from:?} ran out; taken back");
        let bytes = read_limited(&mut old, max_bytes).map_err(|e| io_context("read", &taken, e))?;
        let mut hold = Hold::taken_back(taken, written, by);
        if self.done_record(id).symlink_metadata().is_ok() || self.still_in_new(id, &bytes) {
            self.remove_running(id);
            self.release(hold);
            return Ok(Some(Leftover::Cleaned(id.to_string())));
        }
        let (copy, lock) = self.write_locked_copy(&bytes, false)?;
        if let Err(e) = rename_noreplace(&copy, &path) {
            let _ = fs::remove_file(&copy);
            // The job stays claimed in `.tmp/`: the next start puts it
            // back into `new/`.
            return Err(io_context("rename into running/", &path, e));
        }
        self.write_host(id, &lock, written, by);
        hold.set_lock(lock);
        Ok(Some(Leftover::Orphan(Claim {
            id: id.to_string(),
            bytes,
            hold,
        })))
    }

    /// Whether the job is (still, or again) in `new/<id>.toml`: a copy the
    /// daemon put back (its own file), or the very text of the copy in
    /// `running/` (a claim cut short between its copy and its rename).
    fn still_in_new(&self, id: &str, bytes: &[u8]) -> bool {
        let path = self.new_path(&format!("{id}.toml"));
        if Spool::is_own_file(&path) {
            return true;
        }
        let Ok(Some((file, meta))) = open_regular(&path) else {
            return false;
        };
        meta.nlink() == 1 && super::look::holds_exactly(&file, meta.len(), bytes)
    }

    /// Replaces a job file someone else has locked with a new, locked copy
    /// of the daemon's own: the old inode, lock and all, is left to them.
    fn take_over(
        &self,
        id: &str,
        mut file: File,
        max_bytes: u64,
        (written, by): (Option<SystemTime>, Option<u32>),
    ) -> io::Result<Claim> {
        let path = self.running_job(id);
        let bytes = read_limited(&mut file, max_bytes).map_err(|e| io_context("read", &path, e))?;
        let (copy, lock) = self.write_locked_copy(&bytes, self.fsync)?;
        fs::rename(&copy, &path).map_err(|e| {
            let _ = fs::remove_file(&copy);
            io_context("replace", &path, e)
        })?;
        Ok(Claim {
            id: id.to_string(),
            bytes,
            hold: Hold::locked(lock, written, by),
        })
    }

    /// Kills what is left of a job whose daemon died: the processes that
    /// still share its lock (background children of its task that escaped
    /// the death signal), once the process that took the lock is gone. A
    /// job held by a live daemon is left alone, and so is a process that
    /// has the file open without sharing the lock. Returns how many
    /// processes were killed. Linux only (`/proc`).
    pub fn kill_orphans(&self, id: &str) -> usize {
        let path = self.running_job(id);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return 0;
        };
        if holder_of(&meta) != Holder::Escaped {
            return 0;
        }
        let mut killed = 0;
        for pid in sharers(&meta) {
            // The whole group: the task's leftovers share it.
            let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
                .unwrap_or(nix::unistd::Pid::from_raw(pid));
            if group.as_raw() > 1 && group != nix::unistd::getpgrp() {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::SIGKILL);
            }
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            killed += 1;
        }
        killed
    }
}

/// The file system's clock for one pass of recovery, and the lease.
struct Clock {
    /// The file system's now, read once per pass; `None` when it could
    /// not be read (then no other host's job is taken back).
    now: Option<SystemTime>,
    /// How long a lease runs after its last refresh.
    lease: Duration,
}

impl Clock {
    /// Whether a file changed less than [`lease::CLAIMING`] ago (or the
    /// clock is unknown).
    fn young(&self, meta: &Metadata) -> bool {
        match (self.now, meta.modified()) {
            (Some(now), Ok(t)) => now.duration_since(t).unwrap_or_default() < lease::CLAIMING,
            _ => true,
        }
    }
}

/// Who holds the lock on a file that could not be locked.
fn holder_of(meta: &Metadata) -> Holder {
    let takers = flock_takers(meta);
    if takers.is_empty() {
        return Holder::Unknown;
    }
    let me = nix::unistd::geteuid().as_raw();
    let mut squatters = Vec::new();
    let mut escaped = false;
    for pid in takers {
        match holds(pid, meta) {
            Some(true) if euid_of(pid) == Some(me) => return Holder::Daemon,
            Some(true) => squatters.push(pid),
            Some(false) => escaped = true,
            // Alive, but its descriptors cannot be read: assume the worst.
            None if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                .is_ok_or_eperm() =>
            {
                return Holder::Daemon;
            }
            None => escaped = true,
        }
    }
    if escaped {
        Holder::Escaped
    } else {
        Holder::Squatters(squatters)
    }
}

/// The effective user of a process, from `/proc/<pid>/status`.
fn euid_of(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The processes that took a `flock` on a file, from `/proc/locks`.
fn flock_takers(meta: &Metadata) -> Vec<i32> {
    let Ok(text) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let want = lock_key(meta);
    text.lines()
        .filter_map(|line| flock_taker(line, &want))
        .collect()
}

/// `MAJOR:MINOR:INODE` as `/proc/locks` and fdinfo spell a file.
fn lock_key(meta: &Metadata) -> String {
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    format!("{major:02x}:{minor:02x}:{}", meta.ino())
}

/// The taker's pid in a lock line ("1: FLOCK  ADVISORY  WRITE 12345
/// fd:00:1234567 0 EOF", also after "lock:\t" in fdinfo) about the file
/// `want`.
fn flock_taker(line: &str, want: &str) -> Option<i32> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let i = f.iter().position(|w| *w == "FLOCK")?;
    if f.get(i + 4) != Some(&want) {
        return None;
    }
    f.get(i + 3)?.parse().ok()
}

/// Whether a process has the file open: `None` when its descriptors
/// cannot be read (gone, or another user's without privileges).
fn holds(pid: i32, meta: &Metadata) -> Option<bool> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        fs::metadata(fd.path()).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
    }))
}

/// Processes that share a lock on the file (their descriptor's fdinfo
/// shows it, which only the descriptors of the locked open file do), from
/// `/proc/*/fd` and `/proc/*/fdinfo`; never this process.
fn sharers(meta: &Metadata) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    let want = lock_key(meta);
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let shares = fds.flatten().any(|fd| {
            fs::metadata(fd.path()).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
                && fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .is_ok_and(|info| {
                    info.lines()
                        .any(|l| l.starts_with("lock:") && flock_taker(l, &want).is_some())
                })
        });
        if shares {
            out.push(pid);
        }
    }
    out
}

/// `kill(pid, 0)` answers EPERM for a live process of another user.
trait AliveExt {
    fn is_ok_or_eperm(&self) -> bool;
}

impl AliveExt for nix::Result<()> {
    fn is_ok_or_eperm(&self) -> bool {
        matches!(self, Ok(()) | Err(Errno::EPERM))
    }
}
