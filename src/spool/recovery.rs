//! Jobs left in `running/` by a daemon that is gone, and the processes
//! that hold them: everything the spool learns from `/proc`.
//!
//! Owns reading `/proc/locks` (who took a job's `flock`) and `/proc/*/fd`
//! (who still has a job file open), [`Spool::recover`] and
//! [`Spool::kill_orphans`]. Never touches a job a live process holds,
//! never kills the daemon's own process group, never decides what happens
//! to an orphan (the daemon requeues or ends it).
//!
//! Invariant: "alive" means some process still has the locked job file
//! open; a pid alone is never trusted, since pids are reused.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{Claim, Spool, read_limited, same_file};
use crate::fsio::{io_context, open_nofollow};

/// What recovery found in `running/`.
pub enum Leftover {
    /// No live process holds it: the job must be requeued or ended.
    Orphan(Claim),
    /// A live process (another daemon or its task) holds it.
    Alive(String),
    /// A record or a requeued copy exists: the leftovers were removed.
    Cleaned(String),
}

impl Spool {
    /// Looks at each job left in `running/` by an earlier run: removes the
    /// leftovers of jobs that already have a record or a requeued copy,
    /// leaves alone those a live process holds, and hands back the rest.
    pub fn recover(&self, max_bytes: u64) -> io::Result<Vec<Leftover>> {
        let mut out = Vec::new();
        for name in self.names(&self.running_dir())? {
            let Some(id) = name.strip_suffix(".toml") else {
                continue;
            };
            let path = self.running_job(id);
            let file = match open_nofollow(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_context("open", &path, e)),
            };
            let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, Errno::EWOULDBLOCK)) => {
                    out.push(Leftover::Alive(id.to_string()));
                    continue;
                }
                Err((_, e)) => return Err(io_context("lock", &path, e.into())),
            };
            if !same_file(&lock, &path) {
                continue;
            }
            if self.done_record(id).exists() || self.new_path(&format!("{id}.toml")).exists() {
                self.remove_running(id);
                out.push(Leftover::Cleaned(id.to_string()));
                continue;
            }
            let bytes =
                read_limited(&mut lock, max_bytes).map_err(|e| io_context("read", &path, e))?;
            out.push(Leftover::Orphan(Claim {
                id: id.to_string(),
                lock,
                bytes,
            }));
        }
        // Outputs whose job file is gone (a crash between the steps of
        // finish or requeue) belong to no one.
        for name in self.names(&self.running_dir())? {
            let Some((id, _)) = name.rsplit_once('.') else {
                continue;
            };
            if !self.running_job(id).exists() {
                let p = self.running_dir().join(&name);
                let _ = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
            }
        }
        Ok(out)
    }

    /// Kills what is left of a job whose daemon died: processes that still
    /// hold its file in `running/` (background children of its task that
    /// escaped the death signal) while the process that took the lock is
    /// gone. A job held for a live daemon is left alone. Returns how many
    /// processes were killed. Linux only (`/proc/locks`, `/proc/*/fd`).
    pub fn kill_orphans(&self, id: &str) -> usize {
        let path = self.running_job(id);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return 0;
        };
        let Some(owner) = flock_owner(&meta) else {
            return 0;
        };
        // The taker is alive only if it still has the file open: its pid
        // may have been reused by an unrelated process since it died.
        let alive = match holds(owner, &meta) {
            Some(h) => h,
            None => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(owner), None).is_ok_or_eperm()
            }
        };
        if alive {
            return 0;
        }
        let mut killed = 0;
        for pid in holders(&meta) {
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

/// The process that took the `flock` on a file, from `/proc/locks`.
fn flock_owner(meta: &Metadata) -> Option<i32> {
    let text = fs::read_to_string("/proc/locks").ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 12345 fd:00:1234567 0 EOF"
        let i = f.iter().position(|w| *w == "FLOCK")?;
        (f.get(i + 4) == Some(&want.as_str())).then(|| f.get(i + 3)?.parse().ok())?
    })
}

/// Whether a process has the file open: `None` when its descriptors
/// cannot be read (gone, or another user's without privileges).
fn holds(pid: i32, meta: &Metadata) -> Option<bool> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        fs::metadata(fd.path()).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
    }))
}

/// Processes with the file open, from `/proc/*/fd`.
fn holders(meta: &Metadata) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if holds(pid, meta) == Some(true) && pid != std::process::id() as i32 {
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
