//! Leases: how a daemon of one host tells the daemons of other hosts that
//! a job in `running/` is alive, where file locks do not reach (SPEC §14).
//!
//! Owns the host file `running/<id>.host` (the holder's host identity,
//! written once the daemon's copy is in place; its modification time is
//! the job's submission time), the lease itself (the modification time of
//! `running/<id>.toml`, refreshed through the locked descriptor), the
//! file system's clock (the modification time of a file just touched in
//! `.tmp/`), and the pure decision [`verdict`] of whether a job that could
//! be locked is still someone's.
//!
//! Never compares a file's time with this machine's clock: hosts' clocks
//! drift, the file server's clock is the one every host reads.
//!
//! Invariant: a job whose host file names another host is never taken
//! while its lease runs, whatever its lock says (a lock taken on another
//! host is not seen here). A job without a host file (written by a daemon
//! before leases, or claimed a moment ago and its host file not yet
//! written) counts as this host's once it is older than [`CLAIMING`].

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::time::TimeSpec;

use super::Spool;
use crate::fsio::{io_context, open_regular};

/// How long a job file without a host file counts as another daemon's
/// claim in progress (a claim writes the host file right after its copy).
pub const CLAIMING: Duration = Duration::from_secs(5);

/// What `running/<id>.host` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    /// The host identity of the daemon that holds the job.
    pub host: String,
    /// When the job was submitted (the host file's modification time).
    pub submitted: Option<SystemTime>,
    /// Who submitted it (the uid that owned the submitted file).
    pub submitter: Option<u32>,
}

/// What recovery may do with a job file it could lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A daemon of this host held it and is gone (its lock would show):
    /// recover it now.
    Ours,
    /// Another host's, its lease still running (or a claim in progress):
    /// leave it alone.
    Leased,
    /// Another host's, its lease run out: take it back.
    Expired,
}

/// Whether a job file that this daemon could lock is still someone's.
/// `holder`: the host its host file names (`None`: no host file);
/// `touched`: the job file's modification time (the lease's last refresh);
/// `now`: the file system's clock. Pure.
pub fn verdict(
    holder: Option<&str>,
    me: &str,
    touched: SystemTime,
    now: SystemTime,
    lease: Duration,
) -> Verdict {
    // A file from the future (a skewed writer's clock) counts as fresh.
    let age = now.duration_since(touched).unwrap_or(Duration::ZERO);
    match holder {
        Some(h) if h == me => Verdict::Ours,
        Some(_) if age < lease => Verdict::Leased,
        Some(_) => Verdict::Expired,
        None if age < CLAIMING => Verdict::Leased,
        None => Verdict::Ours,
    }
}

impl Spool {
    /// `running/<id>.host`: which host holds the job.
    fn running_host(&self, id: &str) -> PathBuf {
        self.running_dir().join(format!("{id}.host"))
    }

    /// Writes the host file of a job this daemon has just placed in
    /// `running/`, with the job's submission time `submitted` as its
    /// modification time (a copy in `.tmp/` renamed into place, so that a
    /// reader sees all of it or none). A failure is logged: without it the
    /// job counts as this host's, as before leases.
    pub(super) fn write_host(&self, id: &str, submitted: Option<SystemTime>, by: Option<u32>) {
        let dest = self.running_host(id);
        let text = match by {
            Some(uid) => format!("{}\n{uid}\n", self.host),
            None => format!("{}\n", self.host),
        };
        let placed = self
            .write_private(text.as_bytes(), "host", false)
            .and_then(|tmp| {
                if let Some(t) = submitted
                    && let Ok(f) = File::open(&tmp)
                {
                    set_mtime(&f, Some(t));
                }
                fs::rename(&tmp, &dest).map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    io_context("rename into place", &dest, e)
                })
            });
        if let Err(e) = placed {
            crate::log!("{id}: cannot write its host file: {e}");
        }
    }

    /// The host that holds a job in `running/`, when the job was
    /// submitted and by whom (uid), as its host file says; `None` without
    /// one.
    pub(super) fn read_host(&self, id: &str) -> Option<HostFile> {
        let path = self.running_host(id);
        let (mut file, meta) = open_regular(&path).ok()??;
        let mut text = String::new();
        io::Read::read_to_string(&mut io::Read::take(&mut file, 300), &mut text).ok()?;
        let mut lines = text.lines();
        let host = lines.next()?.trim().to_string();
        Some(HostFile {
            host,
            submitted: meta.modified().ok(),
            submitter: lines.next().and_then(|l| l.trim().parse().ok()),
        })
    }

    /// Removes a job's host file (after its job file).
    pub(super) fn remove_host(&self, id: &str) {
        let _ = fs::remove_file(self.running_host(id));
    }

    /// The file system's clock: the modification time of a file written
    /// in `.tmp/` just now (on a network file system, the server's).
    pub fn fs_now(&self) -> io::Result<SystemTime> {
        let path = self.write_private(b"", "clock", false)?;
        let t = fs::symlink_metadata(&path).and_then(|m| m.modified());
        let _ = fs::remove_file(&path);
        t.map_err(|e| io_context("stat", &path, e))
    }
}

/// Refreshes a job's lease: the modification time of its file in
/// `running/`, set to the file system's now through the daemon's locked
/// descriptor. A failure costs only this refresh.
pub fn refresh(file: &File) -> io::Result<()> {
    nix::sys::stat::futimens(file.as_fd(), &TimeSpec::UTIME_OMIT, &TimeSpec::UTIME_NOW)
        .map_err(io::Error::from)
}

/// Sets a file's modification time (`None`: leaves it); a failure costs
/// only that time.
pub(super) fn set_mtime(file: &File, when: Option<SystemTime>) {
    let Some(since) = when.and_then(|w| w.duration_since(UNIX_EPOCH).ok()) else {
        return;
    };
    let t = TimeSpec::from_duration(since);
    let _ = nix::sys::stat::futimens(file.as_fd(), &TimeSpec::UTIME_OMIT, &t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_take_a_job_it_could_lock() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        let lease = s(60);
        let cases = [
            // holder, touched, now, verdict
            (Some("a"), t0, t0 + s(3600), Verdict::Ours),
            (Some("b"), t0, t0, Verdict::Leased),
            (Some("b"), t0, t0 + s(59), Verdict::Leased),
            (Some("b"), t0, t0 + s(60), Verdict::Expired),
            (Some("b"), t0 + s(30), t0, Verdict::Leased),
            (None, t0, t0 + s(4), Verdict::Leased),
            (None, t0, t0 + s(5), Verdict::Ours),
            (None, t0 + s(30), t0, Verdict::Leased),
        ];
        for (holder, touched, now, want) in cases {
            assert_eq!(
                verdict(holder, "a", touched, now, lease),
                want,
                "{holder:?} {touched:?} {now:?}"
            );
        }
    }

    #[test]
    fn the_host_file_says_who_holds_a_job_and_when_it_was_submitted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("s"), false)
            .unwrap()
            .with_host("h1");
        assert_eq!(spool.read_host("j"), None);
        let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        spool.write_host("j", Some(when), Some(1234));
        let want = HostFile {
            host: "h1".into(),
            submitted: Some(when),
            submitter: Some(1234),
        };
        assert_eq!(spool.read_host("j"), Some(want));
        spool.write_host("j", None, None);
        assert_eq!(spool.read_host("j").unwrap().submitter, None);
        spool.remove_host("j");
        assert_eq!(spool.read_host("j"), None);
        let now = spool.fs_now().unwrap();
        let age = SystemTime::now()
            .duration_since(now)
            .unwrap_or(Duration::ZERO);
        assert!(age < Duration::from_secs(5));
        assert!(spool.names(&spool.private_dir()).unwrap().is_empty());
    }
}
