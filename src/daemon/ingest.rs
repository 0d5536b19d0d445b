//! Ingestion: submissions in `new/` into the queue.
//!
//! Lists `new/` (all of it at start, before READY, read in parallel) and
//! reads each name the watcher announces or a scan finds: a valid job is
//! queued (not claimed: the claim happens when it starts), anything else is
//! rejected at once with a record (a regular file is claimed first; a
//! symlink, folder, FIFO, socket or device is moved aside whole without
//! being opened). A file possibly still being written waits for the settle
//! time.
//!
//! Never starts a task, and never looks at `running/` or `done/` (a
//! rejected file is claimed and recorded through the spool and `finish`).

use std::time::Instant;

use super::{Daemon, SETTLE};
use crate::config::Config;
use crate::job;
use crate::record::{Record, Status};
use crate::scheduler::Queued;
use crate::spool::{self, ClaimOutcome, Entry, Spool};
use crate::time;

impl Daemon {
    /// Lists `new/` and takes every submission not yet known. At start
    /// files are taken at once when they have settled; otherwise (and for
    /// later scans) unknown names wait for the settle time.
    pub(super) fn scan_new(&mut self, at_start: bool) {
        let names = match self.spool.names(&self.spool.new_dir()) {
            Ok(n) => n,
            Err(e) => {
                crate::log!("scan: {e}");
                return;
            }
        };
        let mut fresh: Vec<String> = names
            .into_iter()
            .filter(|n| !self.queue.contains(n) && !self.settling.contains_key(n))
            .collect();
        fresh.sort();
        if !at_start {
            for name in fresh {
                self.settling.insert(name, Instant::now() + SETTLE);
            }
            return;
        }
        // At start the whole of new/ is read before READY: spread the
        // reading and parsing over the cores, then queue in name order.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = fresh.len().div_ceil(threads).max(1);
        let (spool, config) = (&self.spool, &self.config);
        let seen: Vec<Vec<(&String, Examined)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = fresh
                .chunks(chunk)
                .map(|names| {
                    scope.spawn(move || {
                        names
                            .iter()
                            .map(|n| (n, examine(spool, config, n, true)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            // A worker that died leaves its names for the next rescan.
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_default())
                .collect()
        });
        for (name, seen) in seen.into_iter().flatten() {
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
        let seen = examine(&self.spool, &self.config, name, settle);
        self.apply(name, seen);
    }

    /// Acts on what [`examine`] found.
    fn apply(&mut self, name: &str, seen: Examined) {
        match seen {
            Examined::Gone => {
                self.queue.remove(name);
            }
            Examined::Unreadable(e) => crate::log!("new/{name}: {e}"),
            Examined::Irregular(kind) => self.reject_entry(name, kind),
            Examined::Unsettled => {
                self.settling
                    .insert(name.to_string(), Instant::now() + SETTLE);
            }
            Examined::Job(queued) => self.admit(name, queued),
            Examined::Bad {
                bytes,
                error,
                keep_file,
            } => self.reject_regular(name, &bytes, error, keep_file),
        }
    }

    /// Rejects a regular file: claims it like any job, then writes a
    /// `rejected` record holding its text. `keep_file` keeps the file
    /// itself too (binary or oversized), in `done/<id>.files/`.
    pub(super) fn reject_regular(
        &mut self,
        name: &str,
        bytes: &[u8],
        error: String,
        keep_file: bool,
    ) {
        self.queue.remove(name);
        let want = crate::ids::id_from_name(name).map_or_else(crate::ids::fresh_id, str::to_string);
        let claim = match self.spool.claim(name, &want, self.config.max_job_bytes) {
            Ok(ClaimOutcome::Claimed(c)) => c,
            Ok(_) => return,
            Err(e) => {
                crate::log!("new/{name}: cannot claim to reject it: {e}");
                return;
            }
        };
        let bytes = if bytes.is_empty() {
            &claim.bytes[..]
        } else {
            bytes
        };
        let now = time::now();
        let keep = self.config.keep;
        let mut rec = Record::of_submission(
            &claim.id,
            bytes,
            Status::Rejected,
            Some(error),
            Some(now),
            keep,
            now,
        );
        rec.submitted_as = submitted_as(&claim.id, name);
        if keep_file {
            if let Err(e) = self.spool.keep_claimed(&claim.id, name) {
                crate::log!("{}: cannot keep the rejected file: {e}", claim.id);
            }
            // An oversized file is kept whole, not copied into the record.
            if std::str::from_utf8(bytes).is_ok() {
                rec.source = None;
            }
        }
        self.conclude(rec, None, Some(claim.lock), None);
    }

    /// Rejects a symlink, folder, FIFO, socket or device without opening
    /// it: it is moved whole into `done/<id>.files/`.
    fn reject_entry(&mut self, name: &str, kind: &str) {
        self.queue.remove(name);
        let id = crate::ids::fresh_id();
        match self.spool.park(name, &id) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                crate::log!("new/{name}: cannot move it aside: {e}");
                return;
            }
        }
        let error = format!(
            "not a regular file: new/{name} is a {kind}; it was not opened and is kept in done/{id}.files/"
        );
        let now = time::now();
        let keep = self.config.keep;
        let mut rec = Record::of_submission(
            &id,
            &[],
            Status::Rejected,
            Some(error),
            Some(now),
            keep,
            now,
        );
        rec.submitted_as = Some(name.to_string());
        self.conclude(rec, None, None, None);
    }
}

/// What a name in `new/` turned out to be.
enum Examined {
    Gone,
    Unreadable(std::io::Error),
    /// A symlink, folder, FIFO, socket or device.
    Irregular(&'static str),
    /// Still being written: look again after the settle time.
    Unsettled,
    Job(Queued),
    /// Not a job: the reason, and the bytes for the record's `source`
    /// (empty when too large to read).
    Bad {
        bytes: Vec<u8>,
        error: String,
        keep_file: bool,
    },
}

/// Reads and checks a submission without changing anything: safe to run
/// on many names at once (the first scan at start does).
fn examine(spool: &Spool, config: &Config, name: &str, settle: bool) -> Examined {
    use std::io::Read;
    let (mut file, meta) = match spool.open_new(name) {
        Err(e) => return Examined::Unreadable(e),
        Ok(Entry::Gone) => return Examined::Gone,
        Ok(Entry::Other(kind)) => return Examined::Irregular(kind),
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
    let max = config.max_job_bytes;
    if meta.len() > max {
        return Examined::Bad {
            bytes: Vec::new(),
            error: format!(
                "too large: {} bytes, more than max_job_bytes = {max}",
                meta.len()
            ),
            keep_file: true,
        };
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    if let Err(e) = (&mut file).take(max + 1).read_to_end(&mut bytes) {
        return Examined::Unreadable(e);
    }
    match job::parse(&bytes, config) {
        Ok(job) => Examined::Job(Queued::of(
            name,
            crate::ids::id_from_name(name).map_or_else(crate::ids::fresh_id, str::to_string),
            &job,
            mtime,
            std::os::unix::fs::MetadataExt::ino(&meta),
        )),
        Err(error) => Examined::Bad {
            keep_file: std::str::from_utf8(&bytes).is_err() || bytes.len() as u64 > max,
            bytes,
            error,
        },
    }
}

/// `submitted_as` of a record: the name in `new/` when the job's id is not
/// that name without `.toml`.
pub(super) fn submitted_as(id: &str, name: &str) -> Option<String> {
    (id != name.strip_suffix(".toml").unwrap_or(name)).then(|| name.to_string())
}
