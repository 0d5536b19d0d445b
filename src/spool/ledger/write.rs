//! The daemon's side of the ledger: its own log, started at start-up
//! (merging the logs of this host's dead daemons), appended by the commit
//! thread before each batch's renames, emptied when a write fails and
//! started again, rewritten without expired lines as it grows.
//!
//! Never reads a record: a line says what the commit thread was given.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::Flock;

use super::{
    Header, Line, SLACK, boot_id, host_of, log_name, nanos, read_whole, since_of, try_lock,
};
use crate::fsio::io_context;
use crate::record::Record;
use crate::spool::{Spool, take_turn};

/// This daemon's log, written by the commit thread.
#[derive(Debug)]
pub struct Ledger {
    pub(super) path: PathBuf,
    /// Open, locked while the daemon lives; `None` once a write failed
    /// (the log is empty then) until the next write starts it again.
    pub(super) file: Option<Flock<File>>,
    header: Header,
    /// Lines written since the last rewrite, and kept at it.
    lines: usize,
    kept: usize,
    /// Whether a failure was logged and no write has worked since: a full
    /// disk fails every batch, and says so once.
    said: bool,
}

impl Spool {
    /// Starts this daemon's log: makes `.finished/` (not writable by
    /// others), merges the logs of this host's dead daemons, and writes
    /// the header. `Err`: no log (logged by the caller; readers of a
    /// ledger this daemon does not write may miss its records).
    pub fn open_ledger(&self) -> io::Result<Ledger> {
        self.open_ledger_begun(SystemTime::now())
    }

    /// [`Spool::open_ledger`] for a writer that places records as daemons
    /// did since `began` (a benchmark's spool of old records): a first
    /// log misses nothing from then on.
    pub fn open_ledger_begun(&self, began: SystemTime) -> io::Result<Ledger> {
        let dir = self.ledger_dir();
        match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_context("create folder", &dir, e)),
        }
        let meta = fs::symlink_metadata(&dir).map_err(|e| io_context("stat", &dir, e))?;
        if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::other(format!(
                "{}: must be a folder of raccoond's own user",
                dir.display()
            )));
        }
        // Daemons starting at once take turns, so that exactly one of
        // them finds no log and starts the first (members may open the
        // folder and the logs, and lock those: never the turn's file).
        let turn = take_turn(&dir, true)?;
        // The first log of a spool (the folder may have been made empty,
        // by the package): records before it have no lines.
        let first = !self
            .names(&dir)?
            .iter()
            .any(|n| host_of(n.trim_start_matches('.')).is_some());
        let now = SystemTime::now();
        let boot = boot_id();
        let name = log_name(&self.host, std::process::id(), nanos(now));
        let path = dir.join(&name);
        // Created empty (what readers take as "list done/") and locked
        // before anything else: another daemon starting now sees it alive.
        let file = open_log(&path, true)?;

        let mut since = if first { since_of(began.min(now)) } else { 0 };
        let mut merged = String::new();
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mine = log_name(&self.host, 0, 0);
        let my_host = host_of(&mine);
        for other in self.names(&dir)?.iter().filter(|n| **n != name) {
            // A rewrite's leftover is `.` and the log's name.
            let rewrite = other.starts_with('.');
            if host_of(other.trim_start_matches('.')) != my_host {
                continue;
            }
            let p = dir.join(other);
            // Alive (or another daemon merging it right now, or a member
            // holding a lock on it): left alone.
            let Some(f) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&p)
                .ok()
                .and_then(try_lock)
            else {
                continue;
            };
            if rewrite {
                let _ = fs::remove_file(&p);
                continue;
            }
            match read_whole(&f) {
                Some((h, lines)) if h.boot == boot || h.fsync => {
                    since = since.max(h.since);
                    for l in lines.iter().filter(|l| l.expires == 0 || l.expires > now_s) {
                        merged.push_str(&l.text());
                    }
                }
                // Empty (a write failed), unreadable, or of an earlier boot
                // without fsync: what it missed is not known.
                _ => since = since.max(since_of(now)),
            }
            let _ = fs::remove_file(&p);
        }
        let header = Header {
            since,
            boot,
            fsync: self.fsync,
        };
        let mut ledger = Ledger {
            path,
            file: Some(file),
            header,
            lines: 0,
            kept: merged.lines().count(),
            said: false,
        };
        let text = format!("{}{merged}", ledger.header.text());
        ledger.write(text.as_bytes(), self.fsync);
        if self.fsync {
            let _ = File::open(&dir).and_then(|d| d.sync_all());
        }
        drop(turn);
        Ok(ledger)
    }
}

impl Ledger {
    /// Appends the lines of `records` (about to be renamed into `done/`),
    /// in one write. A failure empties the log (readers then list
    /// `done/`); the next append starts it again, with `since` = then.
    pub fn append(&mut self, records: &[&Record], fsync: bool) {
        let now = SystemTime::now();
        let lines: Vec<Line> = records.iter().map(|r| Line::of(r, now)).collect();
        self.append_lines(&lines, fsync);
    }

    /// Appends `lines` (see [`Ledger::append`]): for a benchmark that
    /// writes records as daemons once did.
    pub fn append_lines(&mut self, lines: &[Line], fsync: bool) {
        if lines.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let mut text = String::new();
        if self.file.is_none() {
            match self.reopen(now) {
                Ok(()) => text.push_str(&self.header.text()),
                Err(e) => {
                    if !std::mem::replace(&mut self.said, true) {
                        crate::log!("{e}");
                    }
                    return;
                }
            }
        }
        for l in lines {
            text.push_str(&l.text());
        }
        if self.write(text.as_bytes(), false) {
            self.lines += lines.len();
            if self.lines > 2 * self.kept + SLACK {
                self.rewrite(now, fsync);
            }
        }
    }

    /// Writes `bytes` at the end; on failure, empties the log and forgets
    /// it until the next append. Whether it was written.
    pub(super) fn write(&mut self, bytes: &[u8], fsync: bool) -> bool {
        let Some(f) = self.file.as_mut() else {
            return false;
        };
        let done = f
            .write_all(bytes)
            .and_then(|()| if fsync { f.sync_data() } else { Ok(()) });
        match done {
            Ok(()) => {
                self.said = false;
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut self.said, true) {
                    crate::log!(
                        "{}: {e}; emptied (`raccoon list --limit` lists done/ until it is written again)",
                        self.path.display()
                    );
                }
                let _ = f.set_len(0);
                self.file = None;
                false
            }
        }
    }

    /// After a failed write: the log starts again, empty, `since` = now.
    fn reopen(&mut self, now: SystemTime) -> io::Result<()> {
        let file = open_log(&self.path, false)?;
        file.set_len(0)
            .map_err(|e| io_context("truncate", &self.path, e))?;
        self.header.since = since_of(now);
        self.file = Some(file);
        self.lines = 0;
        self.kept = 0;
        Ok(())
    }

    /// Drops the lines of expired records: a new file, locked, renamed
    /// over the log.
    fn rewrite(&mut self, now: SystemTime, fsync: bool) {
        let Some(f) = self.file.as_ref() else {
            return;
        };
        let Some((header, lines)) = read_whole(f) else {
            return;
        };
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let kept: Vec<Line> = lines
            .into_iter()
            .filter(|l| l.expires == 0 || l.expires > now_s)
            .collect();
        let mut text = header.text();
        for l in &kept {
            text.push_str(&l.text());
        }
        let Some(dir) = self.path.parent() else {
            return;
        };
        let Some(name) = self.path.file_name() else {
            return;
        };
        let tmp = dir.join(format!(".{}", name.to_string_lossy()));
        // A leftover of a rewrite that failed is ours to replace.
        let _ = fs::remove_file(&tmp);
        let made = open_log(&tmp, true).and_then(|mut t| {
            t.write_all(text.as_bytes())?;
            if fsync {
                t.sync_data()?;
            }
            fs::rename(&tmp, &self.path)?;
            Ok(t)
        });
        match made {
            Ok(t) => {
                self.file = Some(t);
                self.kept = kept.len();
                self.lines = 0;
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                crate::log!("{}: cannot rewrite: {e}", self.path.display());
            }
        }
    }
}

/// A log of this daemon's, opened to append (made when `create`, 0644,
/// readable by members) and locked without waiting: a member may have
/// opened it to read, and any lock of theirs is refused, never waited on.
fn open_log(path: &Path, create: bool) -> io::Result<Flock<File>> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(create)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_context(if create { "create" } else { "open" }, path, e))?;
    try_lock(file).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("lock {}: held by another process", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests_support::*;
    use super::*;

    /// A dead daemon's log too large to read whole is not merged: it is
    /// removed, and the new log trusts nothing before its start.
    #[test]
    fn a_dead_log_too_large_to_merge_is_dropped_and_distrusted() {
        let (_d, s) = spool();
        super::super::begun_long_ago(&s);
        let mut old = s.open_ledger().unwrap();
        let before = SystemTime::now();
        old.append(&[&record("a", before)], false);
        // A million records not expired (sparse: no need to write them).
        old.file
            .as_ref()
            .unwrap()
            .set_len(super::super::WHOLE + 1)
            .unwrap();
        drop(old);
        let l = s.open_ledger().unwrap();
        assert_eq!(s.names(&s.ledger_dir()).unwrap().len(), 1);
        let (header, lines) = read_whole(&File::open(&l.path).unwrap()).unwrap();
        assert!(lines.is_empty());
        assert!(header.since >= since_of(before), "{header:?}");
    }

    /// Members may open the folder and the logs, and so lock them: no lock
    /// of theirs makes a starting daemon wait.
    #[test]
    fn locks_a_member_may_hold_never_make_the_daemon_wait() {
        let (_d, s) = spool();
        let l = s.open_ledger().unwrap();
        let held: Vec<Option<Flock<File>>> = [s.ledger_dir(), l.path.clone()]
            .iter()
            .map(|p| try_lock(File::open(p).unwrap()))
            .collect();
        assert!(held[0].is_some(), "a member holds the folder");
        assert!(try_lock(File::open(s.ledger_dir()).unwrap()).is_none());
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = s.clone();
        std::thread::spawn(move || {
            let other = s2.open_ledger().map(drop);
            let _ = tx.send(other.is_ok());
        });
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(true),
            "a second daemon's start waited on a member's lock"
        );
        drop(held);
    }

    /// A write the disk refuses (ENOSPC, as `/dev/full` answers every
    /// write) leaves the log untrusted and is said once; the next batch
    /// starts the log again, trusted only from then on.
    #[test]
    fn a_write_the_disk_refuses_starts_the_log_again_from_then() {
        let (_d, s) = spool();
        super::super::begun_long_ago(&s);
        let mut l = s.open_ledger().unwrap();
        assert_eq!(l.header.since, 0);
        l.append(&[&record("a", SystemTime::now())], false);
        let full = File::options().write(true).open("/dev/full").unwrap();
        l.file = Some(try_lock(full).unwrap());
        let failed = SystemTime::now();
        l.append(&[&record("b", SystemTime::now())], false);
        assert!(l.file.is_none() && l.said, "the failure is remembered");
        l.append(&[&record("c", SystemTime::now())], false);
        let (header, lines) = read_whole(&File::open(&l.path).unwrap()).unwrap();
        assert!(header.since >= since_of(failed), "{header:?}");
        let ids: Vec<&str> = lines.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["c"]);
        assert!(!l.said, "a write that works ends the failure");
    }

    #[test]
    fn expired_lines_are_dropped_when_the_log_is_rewritten() {
        let (_d, s) = spool();
        let mut l = s.open_ledger().unwrap();
        let past = SystemTime::now() - Duration::from_secs(10 * 86_400);
        let old: Vec<Record> = (0..(SLACK + 10))
            .map(|i| record(&format!("o{i}"), past))
            .collect();
        let refs: Vec<&Record> = old.iter().collect();
        l.append(&refs, false);
        let (_, lines) = read_whole(&File::open(&l.path).unwrap()).unwrap();
        assert!(lines.is_empty(), "{} lines kept", lines.len());
        l.append(&[&record("new", SystemTime::now())], false);
        let (_, lines) = read_whole(&File::open(&l.path).unwrap()).unwrap();
        assert_eq!(lines.len(), 1);
    }
}
