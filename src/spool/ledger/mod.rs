//! The ledger of finished jobs: `.finished/`, one append-only log per
//! daemon process, a line for each record it places in `done/` (when the
//! job finished, when the line was written, when the record expires, its
//! id). `raccoon list --limit N` reads the logs from their ends instead of
//! listing `done/` and looking at every record's time: listing alone takes
//! over 100 ms at 100 000 records on ext4.
//!
//! Owns `.finished/` and the format of its logs. Never decides what a job
//! became: a reader reads the records the lines name, and skips a line
//! whose record is gone (expired) or no longer what the line says.
//!
//! The promise. Each log starts with a header saying since when it misses
//! no record its writer placed (`since`). A reader trusts the lines for
//! records that finished after the latest `since` of all logs (plus the
//! clocks' allowance); when it cannot answer from those (fewer than N such
//! records, a log without a header, one it cannot read, a folder or log
//! that `done/`'s owner does not own or that others may write, no log at
//! all) it lists `done/` as always. So:
//!
//! - A log's line is written before its record's rename into `done/` (a
//!   reader that sees the record sees the line), and, with `fsync = true`,
//!   made durable by the group commit's `syncfs` before that rename.
//! - A daemon's own log is `<host in hex>.<pid>.<nanos>.log`, locked
//!   (`flock`) while it lives. At start, the logs of its host whose lock is
//!   free (their daemon is dead) are merged into the new log and removed.
//!   A dead log's lines may have been lost in a power cut when it was
//!   written without fsync during an earlier boot: such a log is removed
//!   unmerged and the new log's `since` is its start. The first log of a
//!   spool has `since` = its start too (records of earlier daemons have no
//!   lines).
//! - A write that fails (a full disk) empties the log: an empty log makes
//!   readers list `done/`. The next batch written starts it again with
//!   `since` = then.
//! - Lines of expired records are dropped when the log has grown to twice
//!   what it held after its last rewrite (a new file, renamed over it).
//! - A log is read whole (to merge or rewrite it) only up to 64 MiB, about
//!   a million lines: a dead daemon's larger log is removed unmerged, as
//!   one of an earlier boot is.
//!
//! Daemons of an earlier version write no ledger: on a spool shared with
//! one, use `raccoon list` without `--limit`.
//!
//! This file holds the format (the header, a line, a log's name) and
//! what both sides use; `write` is the daemon's side, `read` the
//! readers'.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use super::Spool;
use crate::record::Record;

mod read;
mod write;

pub(super) use read::newest;
pub use write::Ledger;

/// The ledger's folder in the spool.
const FOLDER: &str = ".finished";
/// The first word of a log's header, and the format's version.
const MAGIC: &str = "raccoond-ledger 1";
/// How much of a log's end is read at a time.
const CHUNK: u64 = 64 * 1024;
/// A log is rewritten without expired lines when it holds this many more
/// lines than twice what it kept at its last rewrite.
const SLACK: usize = 10_000;
/// The largest log read whole (merged at start, rewritten): about a
/// million lines. A larger one (that many records not expired) is not
/// merged: the next daemon's log starts afresh, `since` its start.
const WHOLE: u64 = 64 * 1024 * 1024;

/// A log's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    /// Nanoseconds since the epoch from which the log misses nothing.
    since: u128,
    /// The kernel's boot id when it was written (`?` unknown).
    boot: String,
    /// Whether its lines were fsynced before their records' renames.
    fsync: bool,
}

impl Header {
    fn text(&self) -> String {
        format!(
            "{MAGIC} since={} boot={} fsync={}\n",
            self.since,
            self.boot,
            u8::from(self.fsync)
        )
    }

    /// Parses a header line (without its newline). Pure.
    fn parse(line: &str) -> Option<Header> {
        let rest = line.strip_prefix(MAGIC)?.strip_prefix(' ')?;
        let mut since = None;
        let mut boot = None;
        let mut fsync = None;
        for word in rest.split(' ') {
            match word.split_once('=')? {
                ("since", v) => since = Some(v.parse().ok()?),
                ("boot", v) if !v.is_empty() => boot = Some(v.to_string()),
                ("fsync", "0") => fsync = Some(false),
                ("fsync", "1") => fsync = Some(true),
                _ => return None,
            }
        }
        Some(Header {
            since: since?,
            boot: boot?,
            fsync: fsync?,
        })
    }
}

/// One line: a record placed in `done/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When its job finished (ns since the epoch).
    pub finished: u128,
    /// When the line was written (ns since the epoch): its record was
    /// written at or after its job finished, and no later than this.
    pub written: u128,
    /// When the record expires (s since the epoch; 0: unknown).
    pub expires: u64,
    pub id: String,
}

impl Line {
    /// The line's text, newline included.
    pub fn text(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.finished, self.written, self.expires, self.id
        )
    }

    /// Parses a line (without its newline). Pure.
    fn parse(line: &str) -> Option<Line> {
        let mut words = line.splitn(4, ' ');
        let finished = words.next()?.parse().ok()?;
        let written = words.next()?.parse().ok()?;
        let expires = words.next()?.parse().ok()?;
        let id = words.next()?;
        crate::ids::valid_id(id).then(|| Line {
            finished,
            written,
            expires,
            id: id.to_string(),
        })
    }

    /// The line for `record`, written at `now`.
    pub fn of(record: &Record, now: SystemTime) -> Line {
        Line {
            finished: nanos(record.finished_at().unwrap_or(now)),
            written: nanos(now),
            expires: record
                .expires_at()
                .and_then(|e| e.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
            id: record.id.clone(),
        }
    }
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A `since`: the start of its millisecond, as records keep their times
/// to the millisecond.
fn since_of(t: SystemTime) -> u128 {
    nanos(t) / 1_000_000 * 1_000_000
}

fn at(ns: u128) -> SystemTime {
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    crate::time::add(UNIX_EPOCH, Duration::new(secs, (ns % 1_000_000_000) as u32))
}

/// The kernel's boot id: a log written during another boot may have lost
/// its unsynced end.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(' '))
        .unwrap_or_else(|| "?".into())
}

/// A log's name: `<host in hex>.<pid>.<nanos>.log`.
fn log_name(host: &str, pid: u32, ns: u128) -> String {
    let hex: String = host.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{pid}.{ns}.log")
}

/// The host (in hex) a log's name says wrote it. Pure.
fn host_of(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".log")?;
    let mut parts = stem.rsplitn(3, '.');
    let _ns = parts.next()?;
    let _pid = parts.next()?;
    parts.next()
}

impl Spool {
    fn ledger_dir(&self) -> PathBuf {
        self.root().join(FOLDER)
    }
}

/// `f` locked (`flock`, exclusive), or `None` when someone holds a lock
/// on it: never waits (a member may hold one on any log, which is 0644).
fn try_lock(f: File) -> Option<Flock<File>> {
    Flock::lock(f, FlockArg::LockExclusiveNonblock).ok()
}

/// A whole log: its header and every line. `None`: empty, no header, a
/// line that does not parse (then nothing in it can be trusted), or
/// larger than [`WHOLE`] (not read into memory: a merge drops it, and a
/// rewrite waits).
fn read_whole(f: &File) -> Option<(Header, Vec<Line>)> {
    if f.metadata().ok()?.len() > WHOLE {
        return None;
    }
    let mut text = String::new();
    (&*f).seek(SeekFrom::Start(0)).ok()?;
    f.take(WHOLE).read_to_string(&mut text).ok()?;
    let mut lines = text.split_inclusive('\n');
    let header = Header::parse(lines.next()?.strip_suffix('\n')?)?;
    let mut out = Vec::new();
    for l in lines {
        // A last line still being written has no newline yet: its record
        // is not renamed into place before it is whole.
        let Some(l) = l.strip_suffix('\n') else {
            break;
        };
        out.push(Line::parse(l)?);
    }
    Some((header, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_lines_read_back_and_anything_else_is_refused() {
        let h = Header {
            since: 12,
            boot: "b-1".into(),
            fsync: true,
        };
        assert_eq!(
            Header::parse(h.text().trim_end()).as_ref(),
            Some(&h),
            "round trip"
        );
        for bad in [
            "",
            "raccoond-ledger 2 since=1 boot=x fsync=0",
            "raccoond-ledger 1 since=1 boot=x",
            "raccoond-ledger 1 since=-1 boot=x fsync=0",
            "raccoond-ledger 1 since=1 boot= fsync=0",
            "raccoond-ledger 1 since=1 boot=x fsync=2",
            "raccoond-ledger 1 since=1 boot=x fsync=0 more=1",
        ] {
            assert_eq!(Header::parse(bad), None, "{bad:?}");
        }
        let l = Line {
            finished: 1,
            written: 2,
            expires: 3,
            id: "a-1".into(),
        };
        assert_eq!(Line::parse(l.text().trim_end()).as_ref(), Some(&l));
        for bad in [
            "",
            "1 2 3",
            "1 2 3 ",
            "x 2 3 a",
            "1 2 -3 a",
            "1 2 3 a b",
            "1 2 3 ../x",
            "340282366920938463463374607431768211456 2 3 a",
        ] {
            assert_eq!(Line::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_log_name_says_its_host_whatever_the_host_is_called() {
        for host in ["vm", "a.b.c", "a/b", "ü 1"] {
            let name = log_name(host, 42, 7);
            assert!(!name.contains('/'));
            assert_eq!(host_of(&name), host_of(&log_name(host, 1, 1)));
            assert_ne!(host_of(&name), host_of(&log_name("other", 42, 7)));
        }
        assert_eq!(host_of("x.log"), None);
        assert_eq!(host_of("notes.txt"), None);
    }
}

/// A ledger begun long ago (a dead daemon's log that misses nothing,
/// ever): for tests of readers on a spool whose records all have lines.
#[cfg(test)]
pub(crate) fn begun_long_ago(spool: &Spool) {
    drop(
        spool
            .open_ledger_begun(UNIX_EPOCH)
            .unwrap_or_else(|e| panic!("{e}")),
    );
}

/// What the tests of both sides share.
#[cfg(test)]
mod tests_support {
    pub use super::*;
    pub use crate::record::Status;
    pub use std::time::Duration;

    pub fn spool() -> (tempfile::TempDir, Spool) {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(&d.path().join("spool"), false).unwrap();
        (d, s)
    }

    pub fn record(id: &str, finished: SystemTime) -> Record {
        let mut r = Record::new(id, "t", Status::Succeeded);
        r.finished = Some(crate::time::to_toml(finished));
        r.expires = Some(crate::time::to_toml(finished + Duration::from_secs(86_400)));
        r
    }

    /// Writes each record as the commit thread does: its line, then the
    /// record in `done/`.
    pub fn commit(s: &Spool, ledger: &mut Ledger, recs: &[Record]) {
        let refs: Vec<&Record> = recs.iter().collect();
        ledger.append(&refs, false);
        for r in recs {
            fs::write(s.done_record(&r.id), r.to_toml().unwrap()).unwrap();
        }
    }

    pub fn ids(v: Option<Vec<(SystemTime, String, Box<Record>)>>) -> Option<Vec<String>> {
        v.map(|v| v.into_iter().map(|(_, id, _)| id).collect())
    }

    pub fn read(s: &Spool) -> impl FnMut(&str) -> Option<(SystemTime, Box<Record>)> + '_ {
        |id| {
            let r = s.read_record(id).ok()?;
            Some((r.finished_at()?, Box::new(r)))
        }
    }

    /// No allowance for clocks: the tests' records finish on this host,
    /// between the ledger's start and their commit.
    pub const SKEW: Duration = Duration::ZERO;

    /// Records finished now, one after the other.
    pub fn finished_now(prefix: &str, n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| record(&format!("{prefix}{i:05}"), SystemTime::now()))
            .collect()
    }
}
