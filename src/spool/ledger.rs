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
//!
//! Daemons of an earlier version write no ledger: on a spool shared with
//! one, use `raccoon list` without `--limit`.

use std::collections::{BinaryHeap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Spool;
use crate::fsio::io_context;
use crate::record::Record;

/// The ledger's folder in the spool.
const FOLDER: &str = ".finished";
/// The first word of a log's header, and the format's version.
const MAGIC: &str = "raccoond-ledger 1";
/// How much of a log's end is read at a time.
const CHUNK: u64 = 64 * 1024;
/// A log is rewritten without expired lines when it holds this many more
/// lines than twice what it kept at its last rewrite.
const SLACK: usize = 10_000;

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

/// This daemon's log, written by the commit thread.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// Open, locked while the daemon lives; `None` once a write failed
    /// (the log is empty then) until the next write starts it again.
    file: Option<File>,
    header: Header,
    /// Lines written since the last rewrite, and kept at it.
    lines: usize,
    kept: usize,
    /// Whether a failure was logged and no write has worked since: a full
    /// disk fails every batch, and says so once.
    said: bool,
}

impl Spool {
    fn ledger_dir(&self) -> PathBuf {
        self.root().join(FOLDER)
    }

    /// Starts this daemon's log: makes `.finished/` (not writable by
    /// others), merges the logs of this host's dead daemons, and writes
    /// the header. `Err`: no log (logged by the caller; readers of a
    /// ledger this daemon does not write may miss its records).
    pub fn open_ledger(&self) -> io::Result<Ledger> {
        let dir = self.ledger_dir();
        // The first log of a spool: records before it have no lines.
        let first = match fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_context("create folder", &dir, e)),
        };
        let meta = fs::symlink_metadata(&dir).map_err(|e| io_context("stat", &dir, e))?;
        if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::other(format!(
                "{}: must be a folder of raccoond's own user",
                dir.display()
            )));
        }
        let now = SystemTime::now();
        let boot = boot_id();
        let name = log_name(&self.host, std::process::id(), nanos(now));
        let path = dir.join(&name);
        // Created empty (what readers take as "list done/") and locked
        // before anything else: another daemon starting now sees it alive.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io_context("create", &path, e))?;
        lock(&file, false).map_err(|e| io_context("lock", &path, e))?;

        let mut since = if first { since_of(now) } else { 0 };
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
            let Ok(f) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&p)
            else {
                continue;
            };
            // Alive (or another daemon merging it right now): left alone.
            if lock(&f, true).is_err() {
                continue;
            }
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
    fn write(&mut self, bytes: &[u8], fsync: bool) -> bool {
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
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| io_context("open", &self.path, e))?;
        file.set_len(0)
            .map_err(|e| io_context("truncate", &self.path, e))?;
        lock(&file, false).map_err(|e| io_context("lock", &self.path, e))?;
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
        let made = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .and_then(|mut t| {
                lock(&t, false)?;
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

/// `flock` on `f`: exclusive, waiting or not.
fn lock(f: &File, nonblocking: bool) -> io::Result<()> {
    let op = libc::LOCK_EX | if nonblocking { libc::LOCK_NB } else { 0 };
    // SAFETY: no pointers; the descriptor is open for the call.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A whole log: its header and every line. `None`: empty, no header, or a
/// line that does not parse (then nothing in it can be trusted).
fn read_whole(f: &File) -> Option<(Header, Vec<Line>)> {
    let mut text = String::new();
    (&*f).seek(SeekFrom::Start(0)).ok()?;
    (&*f).read_to_string(&mut text).ok()?;
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

/// A log read from its end, a chunk at a time: lines newest-written last
/// in the file come out first.
struct Tail {
    file: File,
    /// Where the part not read yet ends.
    end: u64,
    /// Where the lines start (after the header).
    start: u64,
    /// The start of a line cut by the last chunk read.
    carry: Vec<u8>,
    /// Lines read, not handed out yet, in file order.
    ready: Vec<Line>,
    /// Whether the next chunk is the first, at the end as it was opened.
    first: bool,
}

impl Tail {
    /// Opens a log; `None` when it cannot be trusted (see [`read_whole`]).
    fn open(path: &Path, owner: u32) -> Option<(Header, Tail)> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.uid() != owner || meta.mode() & 0o022 != 0 {
            return None;
        }
        let mut head = [0u8; 256];
        let n = (&file).read(&mut head).ok()?;
        let nl = head.get(..n)?.iter().position(|b| *b == b'\n')?;
        let header = Header::parse(std::str::from_utf8(head.get(..nl)?).ok()?)?;
        let size = meta.len();
        Some((
            header,
            Tail {
                file,
                end: size,
                start: nl as u64 + 1,
                carry: Vec::new(),
                ready: Vec::new(),
                first: true,
            },
        ))
    }

    /// The next line from the end; `Err` when the log cannot be trusted
    /// (a line that does not parse, a read that fails).
    fn next(&mut self) -> Result<Option<Line>, ()> {
        loop {
            if let Some(l) = self.ready.pop() {
                return Ok(Some(l));
            }
            if self.end <= self.start {
                if self.carry.is_empty() {
                    return Ok(None);
                }
                let text = std::mem::take(&mut self.carry);
                return self.parse_block(&text).map(|()| self.ready.pop());
            }
            let from = self.end.saturating_sub(CHUNK).max(self.start);
            let mut buf = vec![0u8; (self.end - from) as usize];
            (&self.file).seek(SeekFrom::Start(from)).map_err(drop)?;
            (&self.file).read_exact(&mut buf).map_err(drop)?;
            let at_end = std::mem::replace(&mut self.first, false);
            self.end = from;
            buf.extend_from_slice(&std::mem::take(&mut self.carry));
            // The first (partial) line waits for the chunk before it,
            // unless this chunk starts where the lines start.
            let cut = if from > self.start {
                match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None => {
                        self.carry = buf;
                        continue;
                    }
                }
            } else {
                0
            };
            self.carry = buf.get(..cut).map(<[u8]>::to_vec).unwrap_or_default();
            let mut block = buf.get(cut..).map(<[u8]>::to_vec).unwrap_or_default();
            // A last line still being written (no newline) is left out:
            // its record is renamed into place only after it is whole.
            if at_end && block.last().is_some_and(|b| *b != b'\n') {
                let keep = block.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                block.truncate(keep);
            }
            self.parse_block(&block)?;
        }
    }

    fn parse_block(&mut self, block: &[u8]) -> Result<(), ()> {
        let text = std::str::from_utf8(block).map_err(drop)?;
        for l in text.split_terminator('\n') {
            self.ready.push(Line::parse(l).ok_or(())?);
        }
        Ok(())
    }
}

/// The newest `limit` finished jobs that `accept` takes (it reads the
/// record a line names: `None` when it is gone or filtered out), newest
/// first (ties: the larger id first), from the ledger; `None` when the
/// ledger cannot say (see the module's header): the caller lists `done/`.
pub(super) fn newest<F>(
    spool: &Spool,
    limit: usize,
    skew: Duration,
    mut accept: F,
) -> Option<Vec<(SystemTime, String, Box<Record>)>>
where
    F: FnMut(&str) -> Option<(SystemTime, Box<Record>)>,
{
    if limit == 0 {
        return Some(Vec::new());
    }
    let dir = spool.ledger_dir();
    let owner = fs::symlink_metadata(spool.done_dir()).ok()?.uid();
    let meta = fs::symlink_metadata(&dir).ok()?;
    if !meta.is_dir() || meta.uid() != owner || meta.mode() & 0o022 != 0 {
        return None;
    }
    let mut tails = Vec::new();
    let mut since = 0u128;
    for name in spool.names(&dir).ok()? {
        if name.starts_with('.') {
            continue;
        }
        let (header, tail) = Tail::open(&dir.join(&name), owner)?;
        since = since.max(header.since);
        tails.push(tail);
    }
    if tails.is_empty() {
        return None;
    }
    // The newest-written line of every log, the newest of them on top.
    let mut heads: BinaryHeap<(u128, usize, String)> = BinaryHeap::new();
    for (i, t) in tails.iter_mut().enumerate() {
        if let Some(l) = t.next().ok()? {
            heads.push((l.written, i, l.id));
        }
    }
    let skew_ns = skew.as_nanos();
    let mut newest: Vec<SystemTime> = Vec::new();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let last = limit - 1;
    while let Some((written, i, id)) = heads.pop() {
        // No record not read yet finished after this line was written
        // (give or take the clocks): once `limit` taken finished later,
        // the rest cannot be among the newest.
        if newest.get(last).is_some_and(|t| *t > at(written + skew_ns)) {
            break;
        }
        if let Some(t) = tails.get_mut(i)
            && let Some(l) = t.next().ok()?
        {
            heads.push((l.written, i, l.id));
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some((when, rec)) = accept(&id) {
            let pos = newest.partition_point(|t| *t > when);
            newest.insert(pos, when);
            newest.truncate(limit);
            out.push((when, id, rec));
        }
    }
    // Trusted only where no record can be missing: after the latest
    // `since`.
    let trusted = since == 0 || newest.get(last).is_some_and(|t| *t >= at(since + skew_ns));
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    out.truncate(limit);
    trusted.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;

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

    fn spool() -> (tempfile::TempDir, Spool) {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(&d.path().join("spool"), false).unwrap();
        (d, s)
    }

    fn record(id: &str, finished: SystemTime) -> Record {
        let mut r = Record::new(id, "t", Status::Succeeded);
        r.finished = Some(crate::time::to_toml(finished));
        r.expires = Some(crate::time::to_toml(finished + Duration::from_secs(86_400)));
        r
    }

    /// Writes each record as the commit thread does: its line, then the
    /// record in `done/`.
    fn commit(s: &Spool, ledger: &mut Ledger, recs: &[Record]) {
        let refs: Vec<&Record> = recs.iter().collect();
        ledger.append(&refs, false);
        for r in recs {
            fs::write(s.done_record(&r.id), r.to_toml().unwrap()).unwrap();
        }
    }

    fn ids(v: Option<Vec<(SystemTime, String, Box<Record>)>>) -> Option<Vec<String>> {
        v.map(|v| v.into_iter().map(|(_, id, _)| id).collect())
    }

    fn read(s: &Spool) -> impl FnMut(&str) -> Option<(SystemTime, Box<Record>)> + '_ {
        |id| {
            let r = s.read_record(id).ok()?;
            Some((r.finished_at()?, Box::new(r)))
        }
    }

    /// No allowance for clocks: the tests' records finish on this host,
    /// between the ledger's start and their commit.
    const SKEW: Duration = Duration::ZERO;

    /// Records finished now, one after the other.
    fn finished_now(prefix: &str, n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| record(&format!("{prefix}{i:05}"), SystemTime::now()))
            .collect()
    }

    #[test]
    fn the_newest_come_from_the_log_and_a_first_log_trusts_nothing_before_it() {
        let (_d, s) = spool();
        // A record of a daemon before ledgers.
        let old = record("old", SystemTime::now() - Duration::from_secs(60));
        fs::write(s.done_record("old"), old.to_toml().unwrap()).unwrap();
        let mut l = s.open_ledger().unwrap();
        let recs = finished_now("j", 30);
        commit(&s, &mut l, &recs);
        let got = ids(newest(&s, 3, SKEW, read(&s)));
        assert_eq!(
            got,
            Some(vec!["j00029".into(), "j00028".into(), "j00027".into()])
        );
        assert_eq!(
            ids(newest(&s, 30, SKEW, read(&s))).map(|v| v.len()),
            Some(30)
        );
        // One more than the log holds after its start: not known here.
        assert_eq!(ids(newest(&s, 31, SKEW, read(&s))), None);
        // A line whose record is gone (expired) is skipped.
        fs::remove_file(s.done_record("j00029")).unwrap();
        assert_eq!(
            ids(newest(&s, 2, SKEW, read(&s))),
            Some(vec!["j00028".into(), "j00027".into()])
        );
    }

    #[test]
    fn a_dead_daemons_log_is_merged_and_a_failed_one_distrusts_the_past() {
        let (_d, s) = spool();
        let mut first = s.open_ledger().unwrap();
        commit(&s, &mut first, &finished_now("a", 5));
        // Its daemon dies (its lock goes with its descriptor).
        drop(first);
        let mut second = s.open_ledger().unwrap();
        let logs = s.names(&s.ledger_dir()).unwrap();
        assert_eq!(logs.len(), 1, "merged and removed: {logs:?}");
        commit(&s, &mut second, &finished_now("b", 1));
        // The merged lines count: the first log's records are trusted.
        assert_eq!(ids(newest(&s, 6, SKEW, read(&s))).map(|v| v.len()), Some(6));
        // A live daemon's log is left alone.
        let third = s.open_ledger().unwrap();
        assert_eq!(s.names(&s.ledger_dir()).unwrap().len(), 2);
        drop(third);
        // A log emptied by a failed write: readers list done/.
        fs::File::options()
            .write(true)
            .open(&second.path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(ids(newest(&s, 1, SKEW, read(&s))), None);
        // Its writer starts it again at its next write, since then only.
        second.file = None;
        let later = finished_now("c", 2);
        commit(&s, &mut second, &later);
        assert_eq!(
            ids(newest(&s, 2, SKEW, read(&s))),
            Some(vec!["c00001".into(), "c00000".into()])
        );
        assert_eq!(ids(newest(&s, 3, SKEW, read(&s))), None);
    }

    #[test]
    fn a_log_others_may_write_or_a_line_that_does_not_parse_is_not_trusted() {
        let (_d, s) = spool();
        let mut l = s.open_ledger().unwrap();
        commit(&s, &mut l, &finished_now("x", 1));
        assert!(newest(&s, 1, SKEW, read(&s)).is_some());
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&l.path, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(newest(&s, 1, SKEW, read(&s)).is_none());
        fs::set_permissions(&l.path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(s.ledger_dir(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(newest(&s, 1, SKEW, read(&s)).is_none());
        fs::set_permissions(s.ledger_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        l.write(b"garbage\n", false);
        assert!(newest(&s, 1, SKEW, read(&s)).is_none());
    }

    #[test]
    fn a_last_line_still_being_written_is_left_out() {
        let (_d, s) = spool();
        let mut l = s.open_ledger().unwrap();
        commit(&s, &mut l, &finished_now("y", 2));
        // Half a line: a writer's append caught in the middle (its record
        // is not in done/ yet). "y0000" would be another job's id.
        let half = Line::of(&record("y00001", SystemTime::now()), SystemTime::now()).text();
        let half = half.get(..half.len() - 2).unwrap().to_string();
        l.write(half.as_bytes(), false);
        assert_eq!(
            ids(newest(&s, 2, SKEW, read(&s))),
            Some(vec!["y00001".into(), "y00000".into()])
        );
    }

    #[test]
    fn many_lines_read_backwards_across_chunks_in_written_order() {
        let (_d, s) = spool();
        let mut l = s.open_ledger().unwrap();
        // Enough lines for several chunks, committed in batches written
        // in another order than they finished.
        let mut all = Vec::new();
        for batch in 0..40 {
            let mut recs = finished_now(&format!("r{batch:02}-"), 100);
            recs.reverse();
            commit(&s, &mut l, &recs);
            all.extend(recs);
        }
        let mut want: Vec<(SystemTime, String)> = all
            .iter()
            .map(|r| (r.finished_at().unwrap(), r.id.clone()))
            .collect();
        want.sort_by(|a, b| b.cmp(a));
        for limit in [1, 7, 150, 4000] {
            let got = ids(newest(&s, limit, SKEW, read(&s))).unwrap();
            let w: Vec<String> = want.iter().take(limit).map(|(_, id)| id.clone()).collect();
            assert_eq!(got, w, "{limit}");
        }
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
