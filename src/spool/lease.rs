//! Leases: how a daemon of one host tells the daemons of other hosts that
//! a job in `running/` is alive, where file locks do not reach (SPEC §14).
//!
//! Owns the holder mark of a job (the holder's host identity, who
//! submitted the job and when): an extended attribute `user.raccoond` of
//! the daemon's copy `running/<id>.toml`, set through the locked
//! descriptor, and where the file system has no extended attributes a host
//! file `running/<id>.host` (its modification time is the submission
//! time). Also the lease itself (the modification time of
//! `running/<id>.toml`, refreshed through the locked descriptor), the
//! file system's clock (the modification time of a file just touched in
//! `.tmp/`), and the pure decision [`verdict`] of whether a job that could
//! be locked is still someone's.
//!
//! Why an attribute first: it costs one system call and no inode, where a
//! host file cost an inode created, renamed and removed per job.
//!
//! Never compares a file's time with this machine's clock: hosts' clocks
//! drift, the file server's clock is the one every host reads.
//!
//! Invariant: a job whose mark names another host is never taken while
//! its lease runs, whatever its lock says (a lock taken on another host is
//! not seen here). A job without a mark (written by a daemon before
//! leases, or claimed a moment ago and its mark not yet set) counts as
//! this host's once it is older than [`CLAIMING`]; one whose mark this
//! daemon cannot read (a mount without extended attributes of a file
//! system that has them) counts as another host's.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::time::TimeSpec;

use super::Spool;
use crate::fsio::{io_context, open_regular};

/// How long a job file without a holder mark counts as another daemon's
/// claim in progress (a claim marks its copy right after placing it).
pub const CLAIMING: Duration = Duration::from_secs(5);

/// The name of the holder mark's extended attribute.
const MARK: &std::ffi::CStr = c"user.raccoond";

/// The holder a job has when its mark cannot be read here: no configured
/// host is empty, so it is always another host's.
pub const UNKNOWN_HOLDER: &str = "";

/// What a job's holder mark says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    /// The host identity of the daemon that holds the job.
    pub host: String,
    /// When the job was submitted (the mark says, or the host file's modification time).
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
/// `holder`: the host its holder mark names (`None`: no mark);
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

    /// Marks a job this daemon has just placed in `running/` (its copy
    /// open as `copy`) as held by this host, submitted at `submitted` by
    /// uid `by`: the attribute, else a host file. A failure is logged:
    /// without a mark the job counts as this host's, as before leases.
    pub(super) fn write_host(
        &self,
        id: &str,
        copy: &File,
        submitted: Option<SystemTime>,
        by: Option<u32>,
    ) {
        let when = submitted
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
            .unwrap_or_default();
        let uid = by.map(|u| u.to_string()).unwrap_or_default();
        let value = format!("{}\n{uid}\n{when}\n", self.host);
        // SAFETY: the descriptor is open; name and value are valid for the
        // lengths given.
        let set = unsafe {
            libc::fsetxattr(
                copy.as_raw_fd(),
                MARK.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if set == 0 {
            return;
        }
        self.write_host_file(id, submitted, by);
    }

    /// The host file: where the file system keeps no extended attributes.
    fn write_host_file(&self, id: &str, submitted: Option<SystemTime>, by: Option<u32>) {
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
            crate::log!("{id}: cannot mark it as this host's: {e}");
        }
    }

    /// The host that holds a job in `running/`, when the job was
    /// submitted and by whom (uid), as its mark says; `None` without one,
    /// [`UNKNOWN_HOLDER`] when it cannot be read here.
    pub(super) fn read_host(&self, id: &str) -> Option<HostFile> {
        let mut buf = [0u8; 512];
        let Ok(path) = std::ffi::CString::new(self.running_job(id).into_os_string().into_vec())
        else {
            return None;
        };
        // SAFETY: path and name are NUL-terminated; the buffer is ours
        // and its length is given.
        let got = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                MARK.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let unreadable = match usize::try_from(got) {
            Ok(n) => return parse_mark(buf.get(..n).unwrap_or_default()),
            Err(_) => matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOTSUP | libc::EACCES | libc::EPERM)
            ),
        };
        match self.read_host_file(id) {
            Some(h) => Some(h),
            None if unreadable => Some(HostFile {
                host: UNKNOWN_HOLDER.to_string(),
                submitted: None,
                submitter: None,
            }),
            None => None,
        }
    }

    /// What a host file says.
    fn read_host_file(&self, id: &str) -> Option<HostFile> {
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

/// Removes a holder mark (a copy that became a record); a failure leaves
/// a stale mark on a record, which nothing reads.
pub(super) fn clear_mark(file: &File) {
    // SAFETY: an open descriptor and a NUL-terminated name.
    let _ = unsafe { libc::fremovexattr(file.as_raw_fd(), MARK.as_ptr()) };
}

/// Reads a holder mark: `host`, `uid` (may be empty), `secs.nanos` of the
/// submission (may be empty), one per line. `None` when it names no host.
fn parse_mark(bytes: &[u8]) -> Option<HostFile> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    let host = lines.next()?.trim();
    if host.is_empty() {
        return None;
    }
    let submitter = lines.next().and_then(|l| l.trim().parse().ok());
    let submitted = lines.next().and_then(|l| {
        let (s, n) = l.trim().split_once('.')?;
        let secs: u64 = s.parse().ok()?;
        let nanos: u32 = n.parse().ok().filter(|n| *n < 1_000_000_000)?;
        UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    });
    Some(HostFile {
        host: host.to_string(),
        submitted,
        submitter,
    })
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
    fn the_mark_says_who_holds_a_job_and_when_it_was_submitted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("s"), false)
            .unwrap()
            .with_host("h1");
        assert_eq!(spool.read_host("j"), None);
        fs::write(spool.running_job("j"), "type = \"x\"\n").unwrap();
        let copy = File::open(spool.running_job("j")).unwrap();
        let when = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        spool.write_host("j", &copy, Some(when), Some(1234));
        let want = HostFile {
            host: "h1".into(),
            submitted: Some(when),
            submitter: Some(1234),
        };
        assert_eq!(spool.read_host("j"), Some(want.clone()));
        // An attribute where the file system has them: no host file.
        assert!(!spool.running_host("j").exists());
        spool.write_host("j", &copy, None, None);
        let bare = spool.read_host("j").unwrap();
        assert_eq!((bare.submitter, bare.submitted), (None, None));
        // Where it has none: the host file says the same (its time to the
        // microsecond or so, as file systems keep it).
        spool.write_host_file("k", Some(when), Some(1234));
        fs::write(spool.running_job("k"), "type = \"x\"\n").unwrap();
        let k = spool.read_host("k").unwrap();
        assert_eq!((k.host.as_str(), k.submitter), ("h1", Some(1234)));
        assert!(k.submitted.is_some());
        spool.remove_host("k");
        assert_eq!(spool.read_host("k"), None);
        let now = spool.fs_now().unwrap();
        let age = SystemTime::now()
            .duration_since(now)
            .unwrap_or(Duration::ZERO);
        assert!(age < Duration::from_secs(5));
        assert!(spool.names(&spool.private_dir()).unwrap().is_empty());
    }

    #[test]
    fn marks_read_back_and_odd_marks_name_no_host() {
        let t = UNIX_EPOCH + Duration::new(5, 7);
        let cases: [(&[u8], Option<HostFile>); 6] = [
            (
                b"a\n1000\n5.000000007\n",
                Some(HostFile {
                    host: "a".into(),
                    submitted: Some(t),
                    submitter: Some(1000),
                }),
            ),
            (
                b"a\n\n\n",
                Some(HostFile {
                    host: "a".into(),
                    submitted: None,
                    submitter: None,
                }),
            ),
            (
                b"a\nx\n5.9999999999\n",
                Some(HostFile {
                    host: "a".into(),
                    submitted: None,
                    submitter: None,
                }),
            ),
            (b"\n1\n", None),
            (b"", None),
            (b"\xff\xfe", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_mark(bytes), want, "{bytes:?}");
        }
        // Far past what a time can hold: no time, no panic.
        assert_eq!(
            parse_mark(b"a\n\n18446744073709551615.999999999\n").and_then(|h| h.submitted),
            None
        );
    }
}
