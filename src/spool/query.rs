//! The read side of the spool: where a job is and what it says, the jobs
//! newest first, and a job's output and files opened for serving. The HTTP
//! API, the client, the mailer and the commit thread (a task's result) all
//! ask here, so that they see the same jobs and open what a task wrote the
//! same careful way.
//!
//! Owns finding a job by id (record first, then `running/`, then `new/`),
//! listing jobs by status and type, opening `<id>.out`, `<id>.err`,
//! `<id>.result` and `<id>.files/<name>` for reading, listing a job's
//! files folder, and saying which folders a follower watches
//! ([`Query::trail`]). Callers get values and open files, never paths to
//! open: how a question is answered (today a look at the folders) can
//! change without them. (Where a file is, to tell a person, is a value:
//! [`Query::output_path`], [`FileEntry::path`].)
//!
//! Never writes, renames or deletes anything; never follows a symlink
//! (every file is opened through [`crate::fsio`], a files folder with
//! `O_NOFOLLOW` and its entries looked at through it); never blocks on a
//! FIFO;
//! never touches a path built from an id that [`ids::valid_id`] refuses or
//! from a file name that [`valid_file_name`] refuses.
//!
//! Invariant: a job is reported in the first of these places that has it:
//! its record (the commit point: leftovers in `running/` may outlive it for
//! an instant), `running/`, `new/`; a job seen nowhere is looked for once
//! more, as it may have moved on between two looks. A name in `new/` that
//! is not a regular file is still a submission (the daemon will reject it
//! with a record), so it shows as queued with nothing read from it.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, fstatat};

use super::newest::Newest;
use super::{Entry, Spool, load_record};
use crate::fsio::{io_context, open_regular, open_regular_in};
use crate::ids;
use crate::record::{Record, Status};

/// Where a job was found, with what was read there.
#[derive(Debug, Clone, PartialEq)]
pub enum Located {
    /// In `new/`, waiting for a daemon.
    Queued {
        /// The job file's keys; empty when it is not TOML, not a regular
        /// file, or not readable by this process.
        table: toml::Table,
        /// The job file's modification time: when it was submitted, for
        /// a file that does not say (`UNIX_EPOCH` when unknown).
        written: SystemTime,
    },
    /// In `running/`, claimed by a daemon.
    Running {
        /// The job file's keys, as for a queued job.
        table: toml::Table,
        /// The job file's modification time, as for a queued job.
        written: SystemTime,
        /// When the file was renamed into `running/` (its ctime): the
        /// start time for a reader that has no daemon to ask.
        claimed: SystemTime,
    },
    /// Ended: its record in `done/`.
    Finished(Box<Record>),
}

impl Located {
    /// Queued, running, or the record's status.
    pub fn status(&self) -> Status {
        match self {
            Located::Queued { .. } => Status::Queued,
            Located::Running { .. } => Status::Running,
            Located::Finished(r) => r.status,
        }
    }

    /// The job's type as its file or record says; empty when a job file
    /// says none (or is not readable).
    pub fn kind(&self) -> &str {
        match self {
            Located::Queued { table, .. } | Located::Running { table, .. } => table
                .get("type")
                .and_then(toml::Value::as_str)
                .unwrap_or(""),
            Located::Finished(r) => &r.kind,
        }
    }
}

/// Which output of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: `<id>.out`.
    Out,
    /// Standard error: `<id>.err`.
    Err,
}

/// Which folder an output is read from, for readers that name it (the
/// report links to `running/<id>.out` and `done/<id>.out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `running/`: the task is writing it.
    Running,
    /// `done/`: moved there with the record.
    Done,
}

/// How far a record's `finished` (its daemon's clock) may be past its
/// file's modification time (the file system's clock) when listing the
/// newest. On one host it is never past (the record is written after);
/// hosts sharing a spool are assumed to keep their clocks within this of
/// the file server's. A record further off may be listed out of its
/// place among the newest, never lost.
const SKEW: Duration = Duration::from_secs(5);

/// Which jobs [`Query::list`] returns.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    /// Only jobs with this status; all when `None`.
    pub status: Option<Status>,
    /// Only jobs of this type; all when `None`.
    pub kind: Option<&'a str>,
    /// At most this many, the newest.
    pub limit: usize,
}

impl Default for Filter<'_> {
    fn default() -> Self {
        Filter {
            status: None,
            kind: None,
            limit: usize::MAX,
        }
    }
}

/// One job of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The job's id (from its file name: a record's `id` field is not
    /// trusted to match).
    pub id: String,
    /// What the listing is ordered by: a record's finish time, else the
    /// job file's modification time when it was listed.
    pub when: SystemTime,
    /// What was read of it, as [`Query::find`] says.
    pub job: Located,
}

/// One entry of a job's files folder, as [`Query::files`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Its name, one that [`valid_file_name`] accepts: what
    /// [`Query::file`] opens it by.
    pub name: String,
    /// Where it is, to tell a person where to look (a mail names the
    /// files it left out); never opened by this path.
    pub path: PathBuf,
    /// Its size when it was listed; 0 when it is not a regular file.
    pub size: u64,
    /// `None` for a regular file; else what it is ("symlink",
    /// "directory", "FIFO", "socket", "device"), never followed or opened.
    pub other: Option<&'static str>,
}

/// What [`Query::trail`] gives a follower: where a job's files move, by
/// folder and name. The folders are to be watched, never opened as a way
/// into the job; the names are single components, built from a valid id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trail {
    /// `running/`: the job is claimed into it (`<id>.toml`), and its
    /// output is created there (`<id>.out`), then moved away or removed.
    pub running: PathBuf,
    /// `done/`: the output moves in, then the record (`<id>.toml`) is
    /// renamed into place, the end of the job.
    pub done: PathBuf,
    /// `<id>.toml`: the job file in `running/`, the record in `done/`.
    pub job: String,
    /// `<id>.out` or `<id>.err`: the output followed.
    pub output: String,
}

/// Questions about the jobs of one spool. Cheap to make: borrow one per
/// request.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    spool: &'a Spool,
    /// How much of a queued or running job file is read to show its keys
    /// (the daemon's `max_job_bytes`: a larger file will be rejected).
    max_table_bytes: u64,
}

impl Spool {
    /// Questions about this spool's jobs; job files are read up to
    /// `max_table_bytes` (a reader without the daemon's configuration
    /// passes `u64::MAX`).
    pub fn query(&self, max_table_bytes: u64) -> Query<'_> {
        Query {
            spool: self,
            max_table_bytes,
        }
    }
}

impl Query<'_> {
    /// Where the job `id` is, with what was read there; `None` for an
    /// invalid id or a job that is nowhere.
    pub fn find(&self, id: &str) -> io::Result<Option<Located>> {
        if !ids::valid_id(id) {
            return Ok(None);
        }
        for _ in 0..2 {
            if let Some(found) = self.look(id)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// One look at each place, in commit order.
    fn look(&self, id: &str) -> io::Result<Option<Located>> {
        if let Some(rec) = load_record(&self.spool.done_record(id))? {
            return Ok(Some(Located::Finished(Box::new(rec))));
        }
        let path = self.spool.running_job(id);
        let running = match open_regular(&path) {
            Ok(Some((file, meta))) => Some((self.table(file), meta)),
            Ok(None) => None,
            // Another submitter's file: it is there, its keys are private.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => path
                .symlink_metadata()
                .ok()
                .filter(Metadata::is_file)
                .map(|meta| (toml::Table::new(), meta)),
            Err(e) => return Err(e),
        };
        if let Some((table, meta)) = running {
            return Ok(Some(Located::Running {
                table,
                written: modified(&meta),
                claimed: changed(&meta),
            }));
        }
        for name in [format!("{id}.toml"), id.to_string()] {
            let (table, written) = match self.spool.open_new(&name) {
                Ok(Entry::Regular { file, meta }) => (self.table(file), modified(&meta)),
                Ok(Entry::Other(_)) => (toml::Table::new(), UNIX_EPOCH),
                Ok(Entry::Gone) => continue,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    let meta = self.spool.new_path(&name).symlink_metadata().ok();
                    (
                        toml::Table::new(),
                        meta.map_or(UNIX_EPOCH, |m| modified(&m)),
                    )
                }
                Err(e) => return Err(e),
            };
            return Ok(Some(Located::Queued { table, written }));
        }
        Ok(None)
    }

    /// The jobs that pass `filter`, newest first (ties: the larger id
    /// first), each job once. With a limit, the finished ones come from
    /// the daemons' ledger where it can say which are the newest (see
    /// `ledger`), else from `done/`, reading as few records as their
    /// files' times allow.
    pub fn list(&self, filter: &Filter) -> io::Result<Vec<Listed>> {
        let wants = |s: Status| filter.status.is_none_or(|w| w == s);
        let kind_ok = |k: &str| filter.kind.is_none_or(|w| w == k);
        // Candidates first, cheaply (one lstat each); queued and running
        // jobs are read only once they are among the newest. Records are
        // read all, as their finish time is inside.
        let mut cands: Vec<(SystemTime, String, Option<Box<Record>>)> = Vec::new();
        if wants(Status::Queued) {
            for name in self.spool.names(&self.spool.new_dir())? {
                let Some(id) = ids::id_from_name(&name) else {
                    continue;
                };
                if let Ok(meta) = self.spool.new_path(&name).symlink_metadata() {
                    cands.push((modified(&meta), id.to_string(), None));
                }
            }
        }
        if wants(Status::Running) {
            for name in self.spool.names(&self.spool.running_dir())? {
                let Some(id) = name.strip_suffix(".toml").filter(|i| ids::valid_id(i)) else {
                    continue;
                };
                if let Ok(meta) = self.spool.running_job(id).symlink_metadata() {
                    cands.push((modified(&meta), id.to_string(), None));
                }
            }
        }
        let from_ledger = if filter.status.is_none_or(Status::is_final) && filter.limit < usize::MAX
        {
            // The daemons' logs of what they placed in done/, newest
            // first, when they can say (see `ledger`).
            super::ledger::newest(self.spool, filter.limit, SKEW, |id| {
                let rec = load_record(&self.spool.done_record(id)).ok()??;
                (rec.id == id && wants(rec.status) && kind_ok(&rec.kind))
                    .then(|| (rec.finished_at().unwrap_or(UNIX_EPOCH), Box::new(rec)))
            })
        } else {
            None
        };
        let listed = from_ledger.is_some();
        if let Some(found) = from_ledger {
            cands.extend(
                found
                    .into_iter()
                    .map(|(when, id, rec)| (when, id, Some(rec))),
            );
        }
        if !listed && filter.status.is_none_or(Status::is_final) {
            // Newest written first, until the rest cannot be among the
            // newest (`Newest`): a record's file time says when it was
            // written.
            let mut records: Vec<(SystemTime, String)> = Vec::new();
            for id in self.spool.done_ids()? {
                if !ids::valid_id(&id) {
                    continue;
                }
                if let Ok(meta) = self.spool.done_record(&id).symlink_metadata() {
                    records.push((modified(&meta), id));
                }
            }
            records.sort_by_key(|r| std::cmp::Reverse(r.0));
            // Only records count (queued and running candidates may be
            // gone when read).
            let mut newest = Newest::new(filter.limit, SKEW);
            for (written, id) in records {
                if newest.done_before(written) {
                    break;
                }
                // Gone since the listing (expired), or not a record.
                let Ok(Some(rec)) = load_record(&self.spool.done_record(&id)) else {
                    continue;
                };
                if wants(rec.status) && kind_ok(&rec.kind) {
                    let when = rec.finished_at().unwrap_or(UNIX_EPOCH);
                    newest.take(when);
                    cands.push((when, id, Some(Box::new(rec))));
                }
            }
        }
        cands.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));

        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (when, id, rec) in cands {
            if out.len() >= filter.limit {
                break;
            }
            let job = match rec {
                Some(rec) => Located::Finished(rec),
                // Read now: it may have moved on since the listing.
                None => match self.find(&id)? {
                    Some(job) if wants(job.status()) && kind_ok(job.kind()) => job,
                    _ => continue,
                },
            };
            // A job that moved from running/ to done/ since the listing
            // (or is in new/ under two names) comes up twice.
            if seen.insert(id.clone()) {
                out.push(Listed { id, when, job });
            }
        }
        Ok(out)
    }

    /// A task's output while it runs, else once it has ended; `None` when
    /// there is none (yet), or it is not a regular file.
    pub fn output(&self, id: &str, stream: Stream) -> io::Result<Option<(File, Metadata)>> {
        // running/ first: an output moved into done/ between the two
        // looks is still found.
        for stage in [Stage::Running, Stage::Done] {
            if let Some(found) = self.output_in(stage, id, stream)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// A task's output in one folder; `None` when there is none there.
    pub fn output_in(
        &self,
        stage: Stage,
        id: &str,
        stream: Stream,
    ) -> io::Result<Option<(File, Metadata)>> {
        match self.output_path(stage, id, stream) {
            Some(path) => open_regular(&path),
            None => Ok(None),
        }
    }

    /// Where a task's output is kept in one folder, to tell a person where
    /// to look (a mail quotes a tail and says where the rest is); `None`
    /// for an invalid id. Read it through [`Query::output_in`], never by
    /// this path.
    pub fn output_path(&self, stage: Stage, id: &str, stream: Stream) -> Option<PathBuf> {
        if !ids::valid_id(id) {
            return None;
        }
        Some(match (stage, stream) {
            (Stage::Running, Stream::Out) => self.spool.running_out(id),
            (Stage::Running, Stream::Err) => self.spool.running_err(id),
            (Stage::Done, Stream::Out) => self.spool.done_out(id),
            (Stage::Done, Stream::Err) => self.spool.done_err(id),
        })
    }

    /// The result file a running task may write (`RACCOON_RESULT`), while
    /// its job is in `running/`; `None` when there is none, or it is not a
    /// regular file (a task may leave a symlink to a secret there).
    pub fn result(&self, id: &str) -> io::Result<Option<(File, Metadata)>> {
        if !ids::valid_id(id) {
            return Ok(None);
        }
        open_regular(&self.spool.running_result(id))
    }

    /// A file the task left in its files folder, while it runs or once it
    /// has ended: never through a symlink (of the folder or the name),
    /// never outside the folder. `None` when there is none.
    pub fn file(&self, id: &str, name: &str) -> io::Result<Option<(File, Metadata)>> {
        if !ids::valid_id(id) || !valid_file_name(name) {
            return Ok(None);
        }
        for dir in [self.spool.running_files(id), self.spool.done_files(id)] {
            if let Some(found) = open_regular_in(&dir, name)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// What the task left in its files folder, in name order: the folder
    /// in `running/` while it runs, else the one in `done/` (the folder
    /// [`Query::file`] would open from); empty when there is none, or it
    /// is not a folder. Never enters a folder through a symlink, never
    /// follows or opens an entry. Names [`Query::file`] refuses (hidden,
    /// not UTF-8) are left out.
    pub fn files(&self, id: &str) -> io::Result<Vec<FileEntry>> {
        if !ids::valid_id(id) {
            return Ok(Vec::new());
        }
        for dir in [self.spool.running_files(id), self.spool.done_files(id)] {
            if let Some(entries) = list_folder(&dir)? {
                return Ok(entries);
            }
        }
        Ok(Vec::new())
    }

    /// The job's record, when it has ended: one look at `done/` only,
    /// cheaper than [`Query::find`] for a reader that asks again and again
    /// whether a job it knows is running has ended (a follower). `None`
    /// for an invalid id or a job without a record (yet).
    pub fn record(&self, id: &str) -> io::Result<Option<Record>> {
        if !ids::valid_id(id) {
            return Ok(None);
        }
        load_record(&self.spool.done_record(id))
    }

    /// Where a follower sees a job move and its output appear: the two
    /// folders its files pass through, and their names there. For an
    /// inotify watch on the folders, never to open: the output is opened
    /// through [`Query::output_in`]. `None` for an invalid id.
    pub fn trail(&self, id: &str, stream: Stream) -> Option<Trail> {
        if !ids::valid_id(id) {
            return None;
        }
        let ext = match stream {
            Stream::Out => "out",
            Stream::Err => "err",
        };
        Some(Trail {
            running: self.spool.running_dir(),
            done: self.spool.done_dir(),
            job: format!("{id}.toml"),
            output: format!("{id}.{ext}"),
        })
    }

    /// A job file's keys. A file the daemon will reject (not UTF-8, not
    /// TOML, larger than the limit) shows as no keys.
    fn table(&self, file: File) -> toml::Table {
        let mut bytes = Vec::new();
        if file
            .take(self.max_table_bytes)
            .read_to_end(&mut bytes)
            .is_err()
        {
            return toml::Table::new();
        }
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| toml::from_str(t).ok())
            .unwrap_or_default()
    }
}

/// A name a task may have given a file in its files folder: one path
/// component, not hidden (which also refuses `.` and `..`).
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.bytes().any(|b| b == b'/' || b == 0)
}

/// The entries of a folder, each looked at without following it; `None`
/// when `dir` is missing, a symlink, or not a folder.
fn list_folder(dir: &Path) -> io::Result<Option<Vec<FileEntry>>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut folder = match Dir::open(dir, flags, Mode::empty()) {
        Ok(d) => d,
        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(io_context("open", dir, e.into())),
    };
    let mut names = Vec::new();
    for entry in folder.iter() {
        let entry = entry.map_err(|e| io_context("list", dir, e.into()))?;
        if let Ok(name) = entry.file_name().to_str()
            && valid_file_name(name)
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        // Looked at through the folder opened above: the name cannot
        // lead elsewhere if the folder is swapped for a link meanwhile.
        let st = match fstatat(&folder, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since the listing.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(io_context("stat", &path, e.into())),
        };
        let other = kind(st.st_mode);
        out.push(FileEntry {
            name,
            path,
            size: if other.is_none() {
                u64::try_from(st.st_size).unwrap_or(0)
            } else {
                0
            },
            other,
        });
    }
    Ok(Some(out))
}

/// What a file is, by its mode (`None` for a regular file); the words of
/// [`super::irregular`].
fn kind(mode: libc::mode_t) -> Option<&'static str> {
    match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => None,
        SFlag::S_IFLNK => Some("symlink"),
        SFlag::S_IFDIR => Some("directory"),
        SFlag::S_IFIFO => Some("FIFO"),
        SFlag::S_IFSOCK => Some("socket"),
        _ => Some("device"),
    }
}

fn modified(meta: &Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

/// The inode's change time: for a job in `running/`, its claim rename.
fn changed(meta: &Metadata) -> SystemTime {
    UNIX_EPOCH
        + Duration::new(
            u64::try_from(meta.ctime()).unwrap_or(0),
            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    /// A file with the given text and modification time.
    fn put(path: &Path, text: &str, mtime: SystemTime) {
        fs::write(path, text).unwrap();
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(mtime).unwrap();
    }

    fn record(id: &str, kind: &str, status: &str, finished: u64) -> String {
        let t = crate::time::format_rfc3339(at(finished));
        format!("id = \"{id}\"\ntype = \"{kind}\"\nstatus = \"{status}\"\nfinished = {t}\n")
    }

    /// Numbers below `m`, the same every run.
    fn xorshift(mut rng: u64) -> impl FnMut(u64) -> u64 {
        move |m| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % m
        }
    }

    /// For a few filters and limits, a limited listing is the head of the
    /// unlimited one.
    fn limited_lists_are_the_heads_of_full_ones(spool: &Spool) {
        let q = spool.query(1000);
        let ids =
            |f: &Filter| -> Vec<String> { q.list(f).unwrap().into_iter().map(|l| l.id).collect() };
        for (status, kind) in [
            (None, None),
            (Some(Status::Failed), None),
            (None, Some("a")),
            (Some(Status::Succeeded), Some("b")),
        ] {
            let all = ids(&Filter {
                status,
                kind,
                limit: usize::MAX,
            });
            for limit in [0, 1, 7, 100, 299, 1000] {
                let some = ids(&Filter {
                    status,
                    kind,
                    limit,
                });
                let want: Vec<String> = all.iter().take(limit).cloned().collect();
                assert_eq!(some, want, "{status:?} {kind:?} limit {limit}");
            }
        }
    }

    /// The newest `limit` jobs read from as few records as their files'
    /// times allow are the newest of all: records written in any order
    /// (a mail outcome rewrites one long after it finished), by hosts
    /// whose clocks are a little off, ties, and filters.
    #[test]
    fn the_newest_records_are_found_without_reading_them_all() {
        let (_d, spool) = spool();
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for i in 0..300 {
            let finished = next(5000);
            // Written when it finished, or later (a rewrite), or a little
            // before by another host's clock.
            let written = match next(4) {
                0 => finished + next(3000),
                1 => finished.saturating_sub(next(5)),
                _ => finished,
            };
            let kind = if i % 3 == 0 { "a" } else { "b" };
            let status = if i % 5 == 0 { "failed" } else { "succeeded" };
            put(
                &spool.done_record(&format!("r{i:03}")),
                &record(&format!("r{i:03}"), kind, status, finished),
                at(written),
            );
        }
        limited_lists_are_the_heads_of_full_ones(&spool);
    }

    /// The newest `limit` jobs from the daemons' ledgers are those of a
    /// full listing: records committed as the commit thread commits them,
    /// in batches out of finish order, by two daemons, one of which dies
    /// and has its log merged by the next.
    #[test]
    fn the_newest_from_the_ledgers_are_the_newest_of_a_full_listing() {
        let (_d, spool) = spool();
        // A spool whose ledger began before these records.
        crate::spool::ledger::begun_long_ago(&spool);
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut a = spool.open_ledger().unwrap();
        let mut b = Some(spool.open_ledger().unwrap());
        let mut c = None;
        let mut n = 0;
        for batch in 0..40 {
            if batch == 20 {
                drop(b.take());
                c = Some(spool.open_ledger().unwrap());
            }
            let recs: Vec<Record> = (0..10)
                .map(|_| {
                    n += 1;
                    let kind = if next(3) == 0 { "a" } else { "b" };
                    let status = if next(5) == 0 {
                        Status::Failed
                    } else {
                        Status::Succeeded
                    };
                    let mut r = Record::new(&format!("r{n:03}"), kind, status);
                    // Finished up to 2 s before its batch is written.
                    let t = SystemTime::now() - Duration::from_millis(next(2000));
                    r.finished = Some(crate::time::to_toml(t));
                    r
                })
                .collect();
            let ledger = match (batch % 2, b.as_mut(), c.as_mut()) {
                (0, Some(b), _) => b,
                (0, None, Some(c)) => c,
                _ => &mut a,
            };
            for r in spool.finish_all(&recs, &[], Some(ledger)) {
                r.unwrap();
            }
        }
        limited_lists_are_the_heads_of_full_ones(&spool);
        let q = spool.query(1000);
        let ids =
            |f: &Filter| -> Vec<String> { q.list(f).unwrap().into_iter().map(|l| l.id).collect() };
        // The limited listing came from the ledgers: a record placed in
        // done/ by hand (no daemon's line) is only in the full listing.
        let mut r = Record::new("by-hand", "a", Status::Succeeded);
        r.finished = Some(crate::time::to_toml(SystemTime::now()));
        fs::write(spool.done_record("by-hand"), r.to_toml().unwrap()).unwrap();
        let every = Filter {
            status: None,
            kind: None,
            limit: usize::MAX,
        };
        assert_eq!(ids(&every).first().map(String::as_str), Some("by-hand"));
        let one = Filter { limit: 1, ..every };
        assert_ne!(ids(&one).first().map(String::as_str), Some("by-hand"));
    }

    fn fifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    }

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        (dir, spool)
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_job_is_found_in_each_place_with_what_was_read_there() {
        let (_d, spool) = spool();
        let root = spool.root().to_path_buf();
        put(&root.join("new/q.toml"), "type = \"a\"\n", at(1));
        put(&root.join("new/bare"), "type = \"b\"\n", at(2));
        put(&root.join("running/r.toml"), "type = \"c\"\n", at(3));
        put(
            &root.join("done/f.toml"),
            &record("f", "d", "failed", 4),
            at(4),
        );
        // A leftover in running/ next to its record: the record wins.
        put(&root.join("running/f.toml"), "type = \"d\"\n", at(1));
        // Unreadable as TOML: still queued, with no keys.
        put(&root.join("new/junk.toml"), "not = [toml", at(5));
        let q = spool.query(1 << 20);

        assert_eq!(
            q.find("q").unwrap(),
            Some(Located::Queued {
                table: table("type = \"a\""),
                written: at(1)
            })
        );
        assert_eq!(
            q.find("bare").unwrap(),
            Some(Located::Queued {
                table: table("type = \"b\""),
                written: at(2)
            })
        );
        match q.find("r").unwrap() {
            Some(Located::Running {
                table: t,
                written,
                claimed,
            }) => {
                assert_eq!(t, table("type = \"c\""));
                assert_eq!(written, at(3));
                assert!(claimed > at(3), "ctime is when it was put there");
            }
            other => panic!("r: {other:?}"),
        }
        let f = q.find("f").unwrap().unwrap();
        assert_eq!(f.status(), Status::Failed);
        assert_eq!(f.kind(), "d");
        let junk = q.find("junk").unwrap().unwrap();
        assert_eq!((junk.status(), junk.kind()), (Status::Queued, ""));
        for nowhere in ["nope", "../done/f", ".f", "", "f/..", "a b"] {
            assert_eq!(q.find(nowhere).unwrap(), None, "{nowhere:?}");
        }
        // A job file larger than the limit shows no keys.
        let small = spool.query(4);
        assert_eq!(small.find("q").unwrap().unwrap().kind(), "");
    }

    #[test]
    fn symlinks_and_fifos_are_never_followed_or_read() {
        let (d, spool) = spool();
        let root = spool.root().to_path_buf();
        let outside = d.path().join("outside.toml");
        put(&outside, &record("s", "secret", "succeeded", 1), at(1));
        symlink(&outside, root.join("done/s.toml")).unwrap();
        symlink(&outside, root.join("running/u.toml")).unwrap();
        symlink(&outside, root.join("new/t.toml")).unwrap();
        fifo(&root.join("done/p.toml"));
        fifo(&root.join("new/p.toml"));
        let q = spool.query(1 << 20);

        // Not a record, not a running job: nothing is there.
        assert_eq!(q.find("s").unwrap(), None);
        assert_eq!(q.find("u").unwrap(), None);
        // Still a submission (the daemon rejects it), read from nowhere.
        let empty = Some(Located::Queued {
            table: toml::Table::new(),
            written: UNIX_EPOCH,
        });
        assert_eq!(q.find("t").unwrap(), empty);
        // The FIFO record is skipped without blocking; the FIFO in new/
        // is a queued submission.
        assert_eq!(q.find("p").unwrap(), empty);
        assert!(spool.read_record("s").is_err());
        let mut listed: Vec<String> = q
            .list(&Filter::default())
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        listed.sort();
        assert_eq!(listed, ["p", "t"], "the queued ones only");
    }

    #[test]
    fn lists_are_newest_first_filtered_and_limited() {
        let (_d, spool) = spool();
        let root = spool.root().to_path_buf();
        put(&root.join("new/q1.toml"), "type = \"a\"\n", at(10));
        put(&root.join("new/q2"), "type = \"b\"\n", at(30));
        put(&root.join("new/.draft"), "type = \"a\"\n", at(50));
        put(&root.join("new/bad name"), "type = \"a\"\n", at(50));
        put(&root.join("running/r1.toml"), "type = \"a\"\n", at(20));
        put(&root.join("running/r1.out"), "", at(60));
        put(
            &root.join("done/d1.toml"),
            &record("d1", "a", "succeeded", 40),
            at(0),
        );
        put(
            &root.join("done/d2.toml"),
            &record("d2", "b", "failed", 5),
            at(0),
        );
        put(&root.join("done/d2.out"), "", at(60));
        // Same finish time as d1: the larger id first.
        put(
            &root.join("done/d0.toml"),
            &record("d0", "c", "failed", 40),
            at(0),
        );
        let q = spool.query(1 << 20);
        let ids =
            |f: Filter| -> Vec<String> { q.list(&f).unwrap().into_iter().map(|l| l.id).collect() };
        let all = Filter::default();

        assert_eq!(ids(all), ["d1", "d0", "q2", "r1", "q1", "d2"]);
        let first = &q.list(&all).unwrap()[0];
        assert_eq!(
            (first.when, first.job.status()),
            (at(40), Status::Succeeded)
        );
        let f = |status, kind, limit| Filter {
            status,
            kind,
            limit,
        };
        let cases: [(Filter, &[&str]); 7] = [
            (f(Some(Status::Queued), None, 9), &["q2", "q1"]),
            (f(Some(Status::Running), None, 9), &["r1"]),
            (f(Some(Status::Failed), None, 9), &["d0", "d2"]),
            (f(None, Some("a"), 9), &["d1", "r1", "q1"]),
            (f(Some(Status::Running), Some("b"), 9), &[]),
            (f(None, None, 2), &["d1", "d0"]),
            (f(None, Some("b"), 1), &["q2"]),
        ];
        for (f, want) in cases {
            assert_eq!(ids(f), want, "{f:?}");
        }
    }

    #[test]
    fn outputs_and_files_open_only_regular_files_by_one_visible_name() {
        let (d, spool) = spool();
        let root = spool.root().to_path_buf();
        let secret = d.path().join("secret");
        put(&secret, "secret", at(0));
        put(&root.join("running/o.out"), "live", at(0));
        put(&root.join("done/o.out"), "done", at(0));
        put(&root.join("done/o.err"), "oops", at(0));
        symlink(&secret, root.join("done/s.out")).unwrap();
        fifo(&root.join("running/p.out"));
        fs::create_dir(root.join("running/o.files")).unwrap();
        fs::create_dir_all(root.join("done/o.files/sub")).unwrap();
        put(&root.join("running/o.files/a.txt"), "a", at(0));
        put(&root.join("done/o.files/b.txt"), "b", at(0));
        put(&root.join("done/o.files/.hidden"), "h", at(0));
        put(&root.join("done/o.files/sub/x"), "x", at(0));
        symlink(&secret, root.join("done/o.files/link")).unwrap();
        fifo(&root.join("done/o.files/fifo"));
        symlink(d.path(), root.join("done/l.files")).unwrap();
        let q = spool.query(1 << 20);
        let text = |found: io::Result<Option<(File, Metadata)>>| -> Option<String> {
            found.unwrap().map(|(mut f, _)| {
                let mut s = String::new();
                f.read_to_string(&mut s).unwrap();
                s
            })
        };

        assert_eq!(text(q.output("o", Stream::Out)).as_deref(), Some("live"));
        assert_eq!(text(q.output("o", Stream::Err)).as_deref(), Some("oops"));
        assert_eq!(
            text(q.output_in(Stage::Done, "o", Stream::Out)).as_deref(),
            Some("done")
        );
        assert_eq!(text(q.output_in(Stage::Running, "o", Stream::Err)), None);
        for (id, stream) in [
            ("s", Stream::Out),
            ("p", Stream::Out),
            ("../done/o", Stream::Out),
        ] {
            assert_eq!(text(q.output(id, stream)), None, "{id}");
        }
        assert_eq!(text(q.file("o", "a.txt")).as_deref(), Some("a"));
        assert_eq!(text(q.file("o", "b.txt")).as_deref(), Some("b"));
        for name in [
            "link", "fifo", "sub", "sub/x", ".hidden", ".", "..", "", "../o.out", "none",
        ] {
            assert_eq!(text(q.file("o", name)), None, "{name:?}");
        }
        // A files folder that is a symlink is not entered.
        assert_eq!(text(q.file("l", "secret")), None);
        assert!(!valid_file_name(&"a".repeat(256)));
        assert!(valid_file_name("report.pdf"));
    }

    #[test]
    fn a_files_listing_says_what_each_entry_is_and_enters_no_link() {
        let (d, spool) = spool();
        let root = spool.root().to_path_buf();
        let files = root.join("done/o.files");
        fs::create_dir_all(files.join("sub")).unwrap();
        put(&files.join("b.txt"), "bb", at(0));
        put(&files.join("a.csv"), "a", at(0));
        put(&files.join(".hidden"), "h", at(0));
        symlink("/etc/passwd", files.join("passwd")).unwrap();
        fifo(&files.join("fifo"));
        let q = spool.query(1 << 20);
        let listed: Vec<(String, u64, Option<&str>)> = q
            .files("o")
            .unwrap()
            .into_iter()
            .map(|f| {
                assert_eq!(f.path, files.join(&f.name));
                (f.name, f.size, f.other)
            })
            .collect();
        let want: Vec<(String, u64, Option<&str>)> = vec![
            ("a.csv".into(), 1, None),
            ("b.txt".into(), 2, None),
            ("fifo".into(), 0, Some("FIFO")),
            ("passwd".into(), 0, Some("symlink")),
            ("sub".into(), 0, Some("directory")),
        ];
        assert_eq!(listed, want);

        // While the job runs, its folder in running/ is the one listed.
        fs::create_dir(root.join("running/o.files")).unwrap();
        put(&root.join("running/o.files/live"), "", at(0));
        let names: Vec<String> = q.files("o").unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["live"]);

        // A files folder that is a link, or is not a folder, is no folder.
        symlink(d.path(), root.join("done/l.files")).unwrap();
        put(&root.join("done/f.files"), "", at(0));
        for id in ["l", "f", "none", "../done/o"] {
            assert_eq!(q.files(id).unwrap(), [], "{id}");
        }
    }

    #[test]
    fn a_followers_record_and_trail_come_from_valid_ids_only() {
        let (d, spool) = spool();
        let root = spool.root().to_path_buf();
        put(
            &root.join("done/f.toml"),
            &record("f", "d", "failed", 4),
            at(4),
        );
        put(&root.join("running/r.toml"), "type = \"c\"\n", at(3));
        let outside = d.path().join("outside.toml");
        put(&outside, &record("s", "secret", "succeeded", 1), at(1));
        symlink(&outside, root.join("done/s.toml")).unwrap();
        let q = spool.query(1 << 20);
        assert_eq!(q.record("f").unwrap().unwrap().status, Status::Failed);
        for none in ["r", "s", "nope", "../done/f"] {
            assert!(q.record(none).unwrap().is_none(), "{none}");
        }
        let trail = q.trail("r", Stream::Err).unwrap();
        assert_eq!(
            trail,
            Trail {
                running: root.join("running"),
                done: root.join("done"),
                job: "r.toml".into(),
                output: "r.err".into(),
            }
        );
        assert_eq!(q.trail("../r", Stream::Out), None);
    }

    #[test]
    fn a_result_file_opens_only_when_it_is_a_regular_file() {
        let (d, spool) = spool();
        let root = spool.root().to_path_buf();
        let secret = d.path().join("secret");
        put(&secret, "secret = 1", at(0));
        put(&root.join("running/r.result"), "rows = 1", at(0));
        symlink(&secret, root.join("running/s.result")).unwrap();
        fifo(&root.join("running/p.result"));
        put(&root.join("done/d.result"), "rows = 1", at(0));
        let q = spool.query(1 << 20);
        assert!(q.result("r").unwrap().is_some());
        for id in ["s", "p", "d", "none", "../done/d"] {
            assert!(q.result(id).unwrap().is_none(), "{id}");
        }
        assert_eq!(
            q.output_path(Stage::Done, "o", Stream::Err),
            Some(root.join("done/o.err"))
        );
        assert_eq!(q.output_path(Stage::Running, "../o", Stream::Out), None);
    }
}
