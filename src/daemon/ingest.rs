//! Ingestion: submissions in `new/` into the queue.
//!
//! Lists `new/` (all of it at start, before READY, read in parallel) and
//! reads each name the watcher announces or a scan finds: a valid job is
//! queued (not claimed: the claim happens when it starts), anything else is
//! rejected at once with a record. A file possibly still being written
//! waits for the settle time. A name that is not UTF-8 is first renamed to
//! its escaped form (`spool::escape_name`), then taken like any other.
//!
//! Reading a submission to queue it is only a look: through a descriptor
//! opened without following links or blocking, of a regular file with one
//! link (anything else is rejected, and a hard link is never read). A
//! lock, a kept descriptor or a rename by the submitter never holds a file
//! up: only a writer that still has it open for writing does (that is a
//! file being written, SPEC §1), and only that one submission.
//!
//! Never starts a task, and never looks at `running/` or `done/` (a
//! rejected submission is taken out of `new/` by the spool's claim and
//! recorded through `finish`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::ending::Cause;
use super::finish::Claimed;
use super::{Daemon, SETTLE};
use crate::config::Config;
use crate::job;
use crate::record::{Record, Status};
use crate::scheduler::Queued;
use crate::spool::{self, ClaimOutcome, Entry, Refused, Seen};
use crate::time;

impl Daemon {
    /// Lists `new/` and takes every submission not yet known. At start
    /// files are taken at once when they have settled; otherwise (and for
    /// later scans) unknown names wait for the settle time.
    pub(super) fn scan_new(&mut self, at_start: bool) {
        let (names, raw) = match self.spool.names_in_new() {
            Ok(listed) => listed,
            Err(e) => {
                crate::log!("scan: {e}");
                return;
            }
        };
        for name in raw {
            self.adopt_raw_name(&name);
        }
        let mut fresh: Vec<String> = names
            .into_iter()
            .filter(|n| !self.queue.contains(n) && !self.settling.contains_key(n))
            .collect();
        // At most max_queued are held: the oldest files first.
        fresh = self.admissible(fresh);
        fresh.sort();
        if !at_start {
            for name in fresh {
                self.settling.insert(name, Instant::now() + SETTLE);
            }
            return;
        }
        self.read_now(&fresh);
    }

    /// Reads and queues (or rejects) `fresh`, names in `new/`, at once:
    /// at start the whole of `new/` is read before READY, and files left
    /// unread for want of room are read when room frees up. The reading
    /// and parsing is spread over the cores, in blocks of names taken in
    /// turn; this thread queues each block as it comes, in name order, so
    /// that queueing overlaps reading and only the blocks read ahead wait
    /// in memory, never the whole of `new/` at once.
    pub(super) fn read_now(&mut self, fresh: &[String]) {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (spool, config) = (self.spool.clone(), self.config.clone());
        let (spool, config) = (&spool, &*config);
        // Names looked at relative to new/ held open; without it (new/
        // cannot be opened now), each by its path.
        let folder = match spool.new_folder() {
            Ok(f) => Some(f),
            Err(e) => {
                crate::log!("{e}; reading new/ name by name");
                None
            }
        };
        let folder = folder.as_ref();
        let next = AtomicUsize::new(0);
        let next = &next;
        let block = |b: usize| fresh.get(b * READ_BLOCK..fresh.len().min((b + 1) * READ_BLOCK));
        self.queue.reserve(fresh.len());
        std::thread::scope(|scope| {
            let (tx, rx) = crossbeam_channel::bounded::<(usize, Vec<Examined>)>(2 * threads);
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let tx = tx.clone();
                    scope.spawn(move || {
                        loop {
                            let b = next.fetch_add(1, Ordering::Relaxed);
                            let Some(names) = block(b).filter(|n| !n.is_empty()) else {
                                return;
                            };
                            let seen = names
                                .iter()
                                .map(|n| {
                                    let entry = match folder {
                                        Some(f) => f.open(n),
                                        None => spool.open_new(n),
                                    };
                                    examine(entry, config, n, true, false)
                                })
                                .collect();
                            if tx.send((b, seen)).is_err() {
                                return;
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            // Blocks that came before their turn.
            let mut early: BTreeMap<usize, Vec<Examined>> = BTreeMap::new();
            let mut turn = 0;
            for (b, seen) in rx {
                early.insert(b, seen);
                while let Some(seen) = early.remove(&turn) {
                    self.apply_block(block(turn).unwrap_or_default(), seen);
                    turn += 1;
                }
            }
            // A worker that died leaves its block for the next rescan; the
            // blocks after it are queued still.
            for w in workers {
                let _ = w.join();
            }
            for (b, seen) in early {
                self.apply_block(block(b).unwrap_or_default(), seen);
            }
        });
    }

    /// Acts on what was found of a block of names, in order.
    fn apply_block(&mut self, names: &[String], seen: Vec<Examined>) {
        for (name, seen) in names.iter().zip(seen) {
            self.apply(name, seen);
        }
    }

    pub(super) fn scan_cancel(&mut self) {
        if let Ok(names) = self.spool.names(&self.spool.cancel_dir()) {
            for id in names {
                self.cancel(&id);
            }
        }
    }

    /// Reads a submission in `new/` and queues or rejects it. With
    /// `settle`, a file still being written (recently modified, or open for
    /// writing by someone) is looked at again later instead.
    pub(super) fn ingest(&mut self, name: &str, settle: bool) {
        if name.starts_with('.') {
            return;
        }
        // No room (max_queued): it waits in new/ unread, taken later.
        if !self.queue.contains(name) && !self.admit_one() {
            return;
        }
        // A name the daemon gave (see `adopt_raw_name`) arrived by its
        // rename, which says nothing about whether its writer is done.
        let settle = settle || crate::escape::looks_escaped(name);
        let seen = examine(self.spool.open_new(name), &self.config, name, settle, true);
        self.apply(name, seen);
    }

    /// Gives a name in `new/` that is not UTF-8 its escaped form, and
    /// looks at it after the settle time.
    pub(super) fn adopt_raw_name(&mut self, raw: &OsStr) {
        match self.spool.escape_name(raw) {
            Ok(Some(name)) => {
                crate::log!("new/{name}: renamed so (its name was not UTF-8)");
                if !self.admit_one() {
                    return;
                }
                self.settling
                    .entry(name)
                    .or_insert_with(|| Instant::now() + SETTLE);
            }
            Ok(None) => {}
            Err(e) => crate::log!("{e}"),
        }
    }

    /// Acts on what [`examine`] found.
    fn apply(&mut self, name: &str, seen: Examined) {
        match seen {
            Examined::Gone => {
                self.queue.remove(name);
            }
            Examined::Unreadable(e) => crate::log!("new/{name}: {e}"),
            Examined::Unsettled => {
                self.settling
                    .insert(name.to_string(), Instant::now() + SETTLE);
            }
            Examined::Job(queued, seen) => {
                if let Some(seen) = seen {
                    self.reads.put(name, *seen);
                }
                self.admit(name, *queued)
            }
            Examined::Reject => self.reject(name, None),
        }
    }

    /// Rejects a submission: takes it out of `new/` (the spool's claim: a
    /// regular file is copied, anything else is not even read) and records
    /// why — `given` (a reason the job file itself does not show: an
    /// unknown dependency, a duplicate), else what the parser says. A file
    /// that became a valid job since it was looked at, with no `given`
    /// reason, is put back into `new/` as the daemon's own copy.
    pub(super) fn reject(&mut self, name: &str, given: Option<String>) {
        self.queue.remove(name);
        let want = crate::ids::id_from_name(name).map_or_else(crate::ids::fresh_id, str::to_string);
        let claim = match self.spool.claim(name, &want, self.config.max_job_bytes) {
            Ok(ClaimOutcome::Claimed(c)) => c,
            Ok(ClaimOutcome::Refused(r)) => {
                let submitted_as = submitted_as(&r.id, name);
                self.refuse(r, &format!("new/{name}"), submitted_as);
                return;
            }
            Ok(ClaimOutcome::Gone) => return,
            Ok(ClaimOutcome::Busy) => {
                self.settling
                    .insert(name.to_string(), Instant::now() + SETTLE);
                return;
            }
            Err(e) => {
                crate::log!("new/{name}: cannot take it to reject it: {e}");
                return;
            }
        };
        let parsed = match given {
            Some(error) => Err(error),
            None => job::parse(&claim.bytes, &self.config).map(drop),
        };
        match parsed {
            Err(error) => {
                let claimed = Claimed {
                    id: &claim.id,
                    job: None,
                    bytes: &claim.bytes,
                    submitted: Some(time::now()),
                    submitted_as: submitted_as(&claim.id, name),
                    started: None,
                    attempt: 0,
                };
                self.end(claimed, claim.hold, Cause::Rejected(error), None);
            }
            Ok(_) => {
                crate::log!("{}: new/{name} changed into a job; put back", claim.id);
                self.requeue(&claim.id, &claim.bytes, claim.hold);
            }
        }
    }

    /// Records a submission the spool refused to read (a hard link, a file
    /// too large, a symlink, a folder, a FIFO, a socket, a device), found
    /// at `place`: its kind goes into the record's `source`, and the commit
    /// thread removes it once the record is written.
    pub(super) fn refuse(&mut self, r: Refused, place: &str, submitted_as: Option<String>) {
        let (error, source) = r.what.describe(place);
        let now = time::now();
        let keep = self.config.keep;
        let mut rec = Record::of_submission(
            &r.id,
            &[],
            Status::Rejected,
            Some(error),
            Some(now),
            keep,
            now,
        );
        rec.source = Some(source);
        rec.submitted_as = submitted_as;
        self.conclude(rec, None, Some(r.hold), None);
    }
}

/// How many names a reader takes at a time when many are read at once: a
/// block costs one message to this thread, and blocks read ahead of their
/// turn are what waits in memory.
const READ_BLOCK: usize = 256;

/// What a name in `new/` turned out to be.
enum Examined {
    Gone,
    Unreadable(std::io::Error),
    /// Still being written (or leased by its writer): look again after the
    /// settle time.
    Unsettled,
    /// A job, and what was read (when asked to keep it).
    Job(Box<Queued>, Option<Box<Seen>>),
    /// Not a job: take it out of `new/` and record why.
    Reject,
}

/// Reads and checks a submission without changing anything, given what
/// the look at `new/<name>` found (`Spool::open_new`): safe to run on
/// many names at once (the first scan at start does).
/// `keep`: hand back what was read, for the claim (see [`Reads`]).
fn examine(
    entry: std::io::Result<Entry>,
    config: &Config,
    name: &str,
    settle: bool,
    keep: bool,
) -> Examined {
    use std::io::Read;
    let (mut file, meta) = match entry {
        // Its writer holds a lease on it: the kernel breaks it within
        // lease-break-time, so look again later.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Examined::Unsettled,
        // Only for a daemon that is not root: rejected, as what it is.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Examined::Reject,
        Err(e) => return Examined::Unreadable(e),
        Ok(Entry::Gone) => return Examined::Gone,
        Ok(Entry::Other(_)) => return Examined::Reject,
        Ok(Entry::Regular { file, meta }) => (file, meta),
    };
    let mtime = meta.modified().unwrap_or_else(|_| time::now());
    if settle {
        let young = time::now()
            .duration_since(mtime)
            .map_or(true, |age| age < SETTLE);
        if young || spool::has_writer(&file) == Some(true) {
            return Examined::Unsettled;
        }
    }
    // Too large: not read (a hard link is no `Entry::Regular`).
    let max = config.max_job_bytes;
    if meta.len() > max {
        return Examined::Reject;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    if let Err(e) = (&mut file).take(max + 1).read_to_end(&mut bytes) {
        return Examined::Unreadable(e);
    }
    match job::parse(&bytes, config) {
        Ok(job) => {
            let mut queued = Queued::of(
                name,
                crate::ids::id_from_name(name).map_or_else(crate::ids::fresh_id, str::to_string),
                &job,
                mtime,
                std::os::unix::fs::MetadataExt::ino(&meta),
            );
            queued.submitter = super::submitter::submitter_uid(
                Some(std::os::unix::fs::MetadataExt::uid(&meta)),
                job.submitter.as_deref(),
            );
            let seen =
                (keep && bytes.len() <= Reads::MAX_BYTES).then(|| Box::new(Seen::of(&meta, bytes)));
            Examined::Job(Box::new(queued), seen)
        }
        Err(_) => Examined::Reject,
    }
}

/// Submissions read on their arrival, kept for their claim a moment later
/// (which then need not read them again: see `spool::Seen`); at most
/// [`Reads::MAX`] of them, the oldest forgotten first, each at most
/// [`Reads::MAX_BYTES`]. A queue backed up far past that reads at the
/// claim, as always.
#[derive(Debug, Default)]
pub(super) struct Reads {
    by_name: HashMap<String, Seen>,
    order: VecDeque<String>,
}

impl Reads {
    const MAX: usize = 1024;
    const MAX_BYTES: usize = 4096;

    fn put(&mut self, name: &str, seen: Seen) {
        if self.by_name.insert(name.to_string(), seen).is_none() {
            self.order.push_back(name.to_string());
        }
        while self.order.len() > Self::MAX {
            if let Some(old) = self.order.pop_front() {
                self.by_name.remove(&old);
            }
        }
    }

    /// What was read of `new/<name>`, if it is still remembered.
    pub(super) fn take(&mut self, name: &str) -> Option<Seen> {
        self.by_name.remove(name)
    }
}

/// `submitted_as` of a record: the name in `new/` when the job's id is not
/// that name without `.toml`.
pub(super) fn submitted_as(id: &str, name: &str) -> Option<String> {
    (id != name.strip_suffix(".toml").unwrap_or(name)).then(|| name.to_string())
}
