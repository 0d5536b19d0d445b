//! The spool on disk: every path under it, and every step that moves a job
//! from one folder to the next.
//!
//! Owns the [`Spool`] handle, the paths, and the moves: [`Spool::submit`],
//! [`Spool::claim`], [`Spool::park`], [`Spool::finish_all`],
//! [`Spool::requeue`], [`Spool::delete_finished`], cancel requests. Its
//! parts: [`query`] (the read side: find, list, open outputs and files),
//! `outputs` (a running task's files), `recovery` (leftovers of a dead
//! daemon, from `/proc`), `tmpname` (who wrote a temporary file),
//! `catalog` (`types.json`, the daemon's description of what it
//! accepts, and whether its writer still runs).
//!
//! The daemon's side of the spool is written here only: no other module
//! of raccoond creates, renames, writes or deletes a spool path, except the
//! daemon's removal of `cancel/<id>`, which [`Spool::clear_cancel`] is
//! there to replace. (Submitters write `tmp/` and `new/`, and a task its
//! own outputs; those are theirs.) Readers ask [`query`] (the HTTP API,
//! the client, the mailer, the commit thread's read of a task's result);
//! only the daemon still reads through a few public path getters (listed
//! where they are defined).
//!
//! Each transition is committed by one `rename(2)`:
//!
//! | from            | to                    | step                         |
//! |-----------------|-----------------------|------------------------------|
//! | `tmp/x`         | `new/<id>.toml`       | [`Spool::submit`], requeue   |
//! | `new/<name>`    | `running/<id>.toml`   | [`Spool::claim`]             |
//! | `tmp/x` or a spare | `done/<id>.toml`   | [`Spool::finish_all`]        |
//!
//! With `fsync = true` a file is fsynced before the rename that publishes
//! it and the folder after it (records: one `syncfs` and one folder fsync
//! per group). Finished job files are not deleted but kept in `.spares/`
//! and written again as records; the spool's own `tmp/` and `.spares/`
//! files carry their writer's host, pid and start time so that the
//! leftovers of a dead writer can be told apart and removed.
//!
//! Never decides *whether* a job moves: the daemon decides, this module
//! carries it out and reports what the file system said, with the path in
//! every error. Never follows a symlink in `new/` or `done/` when reading
//! a job or a record.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::fsio::{io_context, open_nofollow, open_regular};
use crate::ids::{fresh_id, valid_id};
use crate::record::Record;

mod catalog;
mod outputs;
mod pause;
pub mod query;
mod recovery;
mod tmpname;
pub mod unique;

pub use catalog::{this_writer, writer_alive};
pub use outputs::{OutputFile, Outputs};
pub use pause::PAUSE_ALL;
pub use recovery::Leftover;
use tmpname::tmp_name;

/// Files kept in `.spares/` to be written again as records (see
/// [`Spool::finish_all`]); owned by the one thread that commits records.
#[derive(Debug, Default)]
pub struct Spares(Vec<PathBuf>);

impl Spares {
    const MAX: usize = 256;
}

impl Drop for Spares {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// What is at a name in `new/`, looked at without following links and
/// without an open that could block.
pub enum Entry {
    /// A regular file, open for reading (the descriptor that was checked,
    /// so the name cannot be swapped after the look).
    Regular { file: File, meta: Metadata },
    /// A symlink, folder, FIFO, socket or device, by name.
    Other(&'static str),
    /// Gone between the event and the look.
    Gone,
}

/// A job this daemon now owns: its file is in `running/` and locked.
pub struct Claim {
    /// The id it runs under: the one asked for, or a fresh one when that
    /// was taken.
    pub id: String,
    /// The job file, open and locked: the lock says "this job is alive" as
    /// long as the daemon or its task holds the descriptor.
    pub lock: Flock<File>,
    /// The job file's bytes, read through the locked descriptor (one byte
    /// past the limit, so that the caller can tell it is too large).
    pub bytes: Vec<u8>,
}

pub enum ClaimOutcome {
    Claimed(Claim),
    /// Someone else took it, or it was deleted.
    Gone,
    /// Another process holds its lock right now.
    Busy,
}

/// One spool on disk. Cheap to clone: each thread keeps its own.
#[derive(Debug, Clone)]
pub struct Spool {
    /// The spool's folder, absolute and resolved once (for the daemon),
    /// so that tasks and logs see one clean path.
    root: PathBuf,
    /// Whether files and folders are fsynced around the renames that
    /// commit transitions (`fsync` in the configuration).
    fsync: bool,
}

impl Spool {
    /// Opens a spool, creating any missing folder.
    pub fn open(root: &Path, fsync: bool) -> io::Result<Spool> {
        for dir in [
            "", "tmp", "new", "running", "done", "cancel", "pause", ".spares", ".unique",
        ] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| io_context("create folder", &p, e))?;
        }
        // Tasks and logs see one clean absolute path.
        let root = fs::canonicalize(root).map_err(|e| io_context("resolve", root, e))?;
        Ok(Spool { root, fsync })
    }

    /// A spool handle for readers (the client): creates nothing.
    pub fn at(root: &Path) -> Spool {
        Spool {
            root: root.to_path_buf(),
            fsync: true,
        }
    }

    /// Whether the root looks like a spool (it has a `new/` folder): a
    /// reader's check before it writes into a folder it did not create.
    pub fn is_spool(&self) -> bool {
        self.new_dir().is_dir()
    }

    pub fn with_fsync(&self, fsync: bool) -> Spool {
        Spool {
            root: self.root.clone(),
            fsync,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    // Paths the daemon still builds on (watching `new/` and `cancel/`,
    // its scans, cancels, and whether a job is running or done). Reading
    // through them is its to do carefully; only this module writes. Every
    // other reader asks `query`.

    pub fn new_dir(&self) -> PathBuf {
        self.root.join("new")
    }
    pub fn cancel_dir(&self) -> PathBuf {
        self.root.join("cancel")
    }
    pub fn running_job(&self, id: &str) -> PathBuf {
        self.root.join("running").join(format!("{id}.toml"))
    }
    pub fn done_record(&self, id: &str) -> PathBuf {
        self.root.join("done").join(format!("{id}.toml"))
    }
    pub fn cancel_path(&self, id: &str) -> PathBuf {
        self.root.join("cancel").join(id)
    }

    // The spool's own paths: no one else needs them (readers ask `query`).

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    fn running_dir(&self) -> PathBuf {
        self.root.join("running")
    }
    fn done_dir(&self) -> PathBuf {
        self.root.join("done")
    }
    fn new_path(&self, name: &str) -> PathBuf {
        self.root.join("new").join(name)
    }
    fn running_out(&self, id: &str) -> PathBuf {
        self.root.join("running").join(format!("{id}.out"))
    }
    fn running_err(&self, id: &str) -> PathBuf {
        self.root.join("running").join(format!("{id}.err"))
    }
    fn running_files(&self, id: &str) -> PathBuf {
        self.root.join("running").join(format!("{id}.files"))
    }
    fn running_result(&self, id: &str) -> PathBuf {
        self.root.join("running").join(format!("{id}.result"))
    }
    fn done_out(&self, id: &str) -> PathBuf {
        self.root.join("done").join(format!("{id}.out"))
    }
    fn done_err(&self, id: &str) -> PathBuf {
        self.root.join("done").join(format!("{id}.err"))
    }
    fn done_files(&self, id: &str) -> PathBuf {
        self.root.join("done").join(format!("{id}.files"))
    }
    /// Retired job files waiting to be written again as records: the
    /// daemon's own, out of the way of the folders users look at.
    fn spares_dir(&self) -> PathBuf {
        self.root.join(".spares")
    }
    fn report_path(&self) -> PathBuf {
        self.root.join("report.html")
    }

    /// Asks the daemon to cancel a job: creates `cancel/<id>`, as `touch`
    /// would (a request already there is left as it is), never through a
    /// symlink someone put there.
    pub fn request_cancel(&self, id: &str) -> io::Result<()> {
        if !valid_id(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cancel: invalid job id {id:?}"),
            ));
        }
        let path = self.cancel_path(id);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map(drop)
            .map_err(|e| io_context("create", &path, e))
    }

    /// Removes a cancel request once it has been acted on, or when it
    /// names no job. `name` is whatever appeared in `cancel/` (not always
    /// a valid id), but must be one visible path component. A request
    /// already gone is not an error.
    pub fn clear_cancel(&self, name: &str) -> io::Result<()> {
        if !query::valid_file_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cancel: {name:?} is not a name in cancel/"),
            ));
        }
        let path = self.cancel_path(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_context("remove", &path, e)),
            _ => Ok(()),
        }
    }

    /// Writes a job into `new/<id>.toml` through `tmp/`, as every writer
    /// must. With `id = None` (or an id already taken) a fresh id is used.
    /// Returns the id once the file is in `new/` (and durable, with fsync).
    pub fn submit(&self, id: Option<&str>, bytes: &[u8]) -> io::Result<String> {
        let tmp = self.write_tmp(bytes, "job")?;
        let mut want = id.map(str::to_string);
        for _ in 0..100 {
            let id = want.take().unwrap_or_else(fresh_id);
            if self.done_record(&id).exists() || self.running_job(&id).exists() {
                continue;
            }
            let dest = self.new_path(&format!("{id}.toml"));
            match rename_noreplace(&tmp, &dest) {
                Ok(()) => {
                    self.sync_dir(&self.new_dir())?;
                    return Ok(id);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(io_context("rename into new/", &dest, e));
                }
            }
        }
        let _ = fs::remove_file(&tmp);
        Err(io::Error::other(
            "could not find a free job id after 100 tries",
        ))
    }

    /// Writes bytes to a fresh file in `tmp/`, fsynced when configured.
    fn write_tmp(&self, bytes: &[u8], tag: &str) -> io::Result<PathBuf> {
        let path = self.tmp_dir().join(tmp_name(tag));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| io_context("create", &path, e))?;
        let written = f
            .write_all(bytes)
            .map_err(|e| io_context("write", &path, e))
            .and_then(|()| {
                if self.fsync {
                    f.sync_all().map_err(|e| io_context("fsync", &path, e))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = written {
            // A full disk must not leave a file behind at every try.
            drop(f);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(path)
    }

    /// Whether a small file can be written on the spool's file system
    /// now: writes a page into `tmp/` and removes it. The commit thread's
    /// test that a full disk has room again.
    pub fn probe_space(&self) -> io::Result<()> {
        let path = self.with_fsync(false).write_tmp(&[0; 4096], "probe")?;
        fs::remove_file(&path).map_err(|e| io_context("remove", &path, e))
    }

    /// Replaces `dest` with `bytes` in one rename from `tmp/`.
    fn write_replacing(&self, dest: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.write_tmp(bytes, "rec")?;
        fs::rename(&tmp, dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_context("rename into place", dest, e)
        })?;
        if let Some(dir) = dest.parent() {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_context("fsync folder", dir, e))?;
        }
        Ok(())
    }

    /// Looks at a name in `new/` without following it or blocking on it.
    pub fn open_new(&self, name: &str) -> io::Result<Entry> {
        let path = self.new_path(name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Gone),
            Err(e) => return Err(io_context("stat", &path, e)),
        };
        if let Some(kind) = irregular(&meta) {
            return Ok(Entry::Other(kind));
        }
        let file = match open_nofollow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Gone),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Entry::Other("symlink")),
            Err(e) => return Err(io_context("open", &path, e)),
        };
        // The name may have been replaced between lstat and open.
        let meta = file.metadata().map_err(|e| io_context("stat", &path, e))?;
        if let Some(kind) = irregular(&meta) {
            return Ok(Entry::Other(kind));
        }
        Ok(Entry::Regular { file, meta })
    }

    /// Claims a job: locks its file, then renames it from `new/` into
    /// `running/<id>.toml`. When `id` is taken by a job in `running/` or
    /// `done/`, a fresh id is used; the returned claim says which.
    pub fn claim(&self, name: &str, id: &str, max_bytes: u64) -> io::Result<ClaimOutcome> {
        let path = self.new_path(name);
        let file = match open_nofollow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ClaimOutcome::Gone),
            Err(e) => return Err(io_context("open", &path, e)),
        };
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(ClaimOutcome::Busy),
            Err((_, e)) => return Err(io_context("lock", &path, e.into())),
        };
        if !same_file(&lock, &path) {
            return Ok(ClaimOutcome::Gone);
        }
        let mut id = id.to_string();
        let mut tries = 0;
        loop {
            tries += 1;
            if tries > 100 {
                return Err(io::Error::other(format!(
                    "claim {}: could not find a free job id",
                    path.display()
                )));
            }
            if self.done_record(&id).exists() {
                id = fresh_id();
                continue;
            }
            let dest = self.running_job(&id);
            match rename_noreplace(&path, &dest) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => id = fresh_id(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ClaimOutcome::Gone),
                Err(e) => return Err(io_context("rename into running/", &dest, e)),
            }
        }
        let bytes = read_limited(&mut lock, max_bytes)
            .map_err(|e| io_context("read", &self.running_job(&id), e))?;
        Ok(ClaimOutcome::Claimed(Claim { id, lock, bytes }))
    }

    /// Moves a non-regular entry (or an oversized file) out of `new/` into
    /// `done/<id>.files/`, untouched, so that nothing submitted is lost.
    /// Returns false when another daemon moved it first.
    pub fn park(&self, name: &str, id: &str) -> io::Result<bool> {
        let dir = self.done_files(id);
        fs::create_dir_all(&dir).map_err(|e| io_context("create folder", &dir, e))?;
        let from = self.new_path(name);
        let to = dir.join(name);
        match fs::rename(&from, &to) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = fs::remove_dir(&dir);
                Ok(false)
            }
            Err(e) => Err(io_context("move out of new/", &from, e)),
        }
    }

    /// Ends jobs: moves each one's output and files into `done/`, writes
    /// its record (the commit point), then removes what is left in
    /// `running/`. A group commit: with `fsync = true`, one `syncfs(2)`
    /// makes every output and record durable before the renames that
    /// publish the records, and one fsync of `done/` makes the renames
    /// durable, however many jobs are in the batch. Returns, per record,
    /// whether it was written.
    pub fn finish_all(&self, records: &[Record], spares: &mut Spares) -> Vec<io::Result<()>> {
        let staged: Vec<io::Result<PathBuf>> =
            records.iter().map(|r| self.stage(r, spares)).collect();
        if self.fsync {
            self.sync_fs();
        }
        let results: Vec<io::Result<()>> = records
            .iter()
            .zip(staged)
            .map(|(rec, tmp)| {
                let tmp = tmp?;
                let dest = self.done_record(&rec.id);
                fs::rename(&tmp, &dest).map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    io_context("rename into place", &dest, e)
                })
            })
            .collect();
        if let Err(e) = self.sync_dir(&self.done_dir()) {
            crate::log!("{e}");
        }
        for (rec, r) in records.iter().zip(&results) {
            if r.is_ok() {
                // Output and files were moved: only these can be left.
                let _ = fs::remove_file(self.running_result(&rec.id));
                self.retire(&self.running_job(&rec.id), spares);
            }
        }
        results
    }

    /// Takes a file out of `running/` for good: kept as a spare in
    /// `.spares/` for the next record when there is room, else deleted. Deleting one
    /// inode per job and creating another made every creation slower on
    /// file systems that skip recently freed inodes (ext4 without a
    /// journal scans them one by one).
    fn retire(&self, path: &Path, spares: &mut Spares) {
        if spares.0.len() < Spares::MAX {
            let spare = self.spares_dir().join(tmp_name("spare"));
            if fs::rename(path, &spare).is_ok() {
                spares.0.push(spare);
                return;
            }
        }
        let _ = fs::remove_file(path);
    }

    /// Writes bytes into a spare from `.spares/` (made the daemon's own again)
    /// or, when there is none, into a new file there.
    fn write_spare(&self, bytes: &[u8], spares: &mut Spares) -> io::Result<PathBuf> {
        while let Some(spare) = spares.0.pop() {
            let reused = OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&spare)
                .and_then(|mut f| {
                    // A job file belongs to whoever submitted it; a record must not.
                    let meta = f.metadata()?;
                    let (uid, gid) = (
                        nix::unistd::geteuid().as_raw(),
                        nix::unistd::getegid().as_raw(),
                    );
                    if meta.uid() != uid || meta.gid() != gid {
                        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
                    }
                    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
                    f.write_all(bytes)
                });
            match reused {
                Ok(()) => return Ok(spare),
                Err(_) => {
                    let _ = fs::remove_file(&spare);
                }
            }
        }
        self.with_fsync(false).write_tmp(bytes, "rec")
    }

    /// Moves a job's output and files into `done/` and writes its record
    /// into `tmp/`, ready to be renamed into place.
    fn stage(&self, record: &Record, spares: &mut Spares) -> io::Result<PathBuf> {
        let id = record.id.as_str();
        for (from, to) in [
            (self.running_out(id), self.done_out(id)),
            (self.running_err(id), self.done_err(id)),
        ] {
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_context("move output", &from, e)),
            }
        }
        let files = self.running_files(id);
        let done_files = self.done_files(id);
        // Moved even when empty: a rename is cheaper than a delete on file
        // systems that scan recently deleted inodes when creating new ones.
        match fs::rename(&files, &done_files) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) if done_files.exists() => {
                // Left by an earlier attempt that crashed before its record.
                fs::remove_dir_all(&done_files)
                    .map_err(|e| io_context("remove stale", &done_files, e))?;
                fs::rename(&files, &done_files)
                    .map_err(|e| io_context("move files folder", &files, e))?;
            }
            Err(e) => return Err(io_context("move files folder", &files, e)),
        }
        let text = record.to_toml().map_err(io::Error::other)?;
        self.write_spare(text.as_bytes(), spares)
    }

    /// Flushes the whole file system the spool is on (`syncfs(2)`).
    fn sync_fs(&self) {
        match File::open(self.tmp_dir()) {
            // SAFETY: syncfs on a descriptor we own.
            Ok(d) => unsafe {
                use std::os::fd::AsRawFd;
                if libc::syncfs(d.as_raw_fd()) < 0 {
                    crate::log!(
                        "syncfs {}: {}",
                        self.root.display(),
                        io::Error::last_os_error()
                    );
                }
            },
            Err(e) => crate::log!("syncfs: cannot open {}: {e}", self.tmp_dir().display()),
        }
    }

    /// Keeps a claimed file itself (binary or oversized, so its text alone
    /// would lose something) as `<id>.files/<name>`; `finish` moves it to
    /// `done/` with the record.
    pub fn keep_claimed(&self, id: &str, name: &str) -> io::Result<()> {
        let dir = self.running_files(id);
        fs::create_dir_all(&dir).map_err(|e| io_context("create folder", &dir, e))?;
        let to = dir.join(name);
        fs::rename(self.running_job(id), &to).map_err(|e| io_context("keep", &to, e))
    }

    /// Replaces `report.html`. Never fsynced: it is rebuilt from state.
    pub fn write_report(&self, html: &[u8]) -> io::Result<()> {
        self.with_fsync(false)
            .write_replacing(&self.report_path(), html)
    }

    /// Rewrites an existing record (its `mail` field changes after mail).
    pub fn rewrite_record(&self, record: &Record) -> io::Result<()> {
        let path = self.done_record(&record.id);
        if !path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("rewrite {}: the record is gone", path.display()),
            ));
        }
        let text = record.to_toml().map_err(io::Error::other)?;
        self.write_replacing(&path, text.as_bytes())
    }

    /// Puts a job back into `new/<id>.toml` with the given text, then
    /// removes its leftovers from `running/`.
    pub fn requeue(&self, id: &str, bytes: &[u8]) -> io::Result<()> {
        let dest = self.new_path(&format!("{id}.toml"));
        self.write_replacing(&dest, bytes)?;
        self.remove_running(id);
        Ok(())
    }

    /// Removes a job's files from `running/`, the job file last.
    fn remove_running(&self, id: &str) {
        let _ = fs::remove_file(self.running_out(id));
        let _ = fs::remove_file(self.running_err(id));
        let _ = fs::remove_file(self.running_result(id));
        let files = self.running_files(id);
        if files.exists() {
            let _ = fs::remove_dir_all(&files);
        }
        let _ = fs::remove_file(self.running_job(id));
    }

    /// Deletes a finished job: its record, output and files.
    pub fn delete_finished(&self, id: &str) -> io::Result<()> {
        let _ = fs::remove_file(self.done_out(id));
        let _ = fs::remove_file(self.done_err(id));
        let files = self.done_files(id);
        if files.exists() {
            fs::remove_dir_all(&files).map_err(|e| io_context("remove", &files, e))?;
        }
        match fs::remove_file(self.done_record(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_context("remove", &self.done_record(id), e))
            }
            _ => Ok(()),
        }
    }

    /// Reads `done/<id>.toml`, never through a symlink: a name that is
    /// not a regular file is no record (`NotFound`).
    pub fn read_record(&self, id: &str) -> io::Result<Record> {
        let path = self.done_record(id);
        load_record(&path)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("read {}: no record there", path.display()),
            )
        })
    }

    /// Names in a folder of the spool, dot-files left out.
    pub fn names(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_context("list", dir, e))? {
            let entry = entry.map_err(|e| io_context("list", dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                if !name.starts_with('.') {
                    out.push(name.to_string());
                }
            } else {
                // Not UTF-8: still a submission, named lossily for the log.
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }

    /// Ids of the jobs in `done/` (one per record).
    pub fn done_ids(&self) -> io::Result<Vec<String>> {
        Ok(self
            .names(&self.done_dir())?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".toml").map(str::to_string))
            .collect())
    }

    /// Deletes files in `tmp/` older than `age` (the maildir rule: 36 h).
    /// Returns the modification time of the oldest file kept.
    pub fn clean_tmp(&self, now: SystemTime, age: std::time::Duration) -> Option<SystemTime> {
        let dir = self.tmp_dir();
        let mut oldest: Option<SystemTime> = None;
        let Ok(rd) = fs::read_dir(&dir) else {
            return None;
        };
        for entry in rd.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let Ok(mtime) = meta.modified() else {
                continue;
            };
            if now.duration_since(mtime).is_ok_and(|d| d > age) {
                let p = entry.path();
                let r = if meta.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                match r {
                    Ok(()) => crate::log!("tmp: removed {} (older than 36h)", p.display()),
                    Err(e) => crate::log!("tmp: cannot remove {}: {e}", p.display()),
                }
            } else {
                oldest = Some(oldest.map_or(mtime, |o| o.min(mtime)));
            }
        }
        oldest
    }
}

/// What a non-regular file is, by name (`None` for a regular file).
pub fn irregular(meta: &Metadata) -> Option<&'static str> {
    let ft = meta.file_type();
    if ft.is_file() {
        None
    } else if ft.is_symlink() {
        Some("symlink")
    } else if ft.is_dir() {
        Some("directory")
    } else if ft.is_fifo() {
        Some("FIFO")
    } else if ft.is_socket() {
        Some("socket")
    } else {
        Some("device")
    }
}

/// A record, read without following a symlink or blocking on a FIFO;
/// `None` when no regular file is at `path`.
fn load_record(path: &Path) -> io::Result<Option<Record>> {
    let Some((mut file, _)) = open_regular(path)? else {
        return Ok(None);
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io_context("read", path, e))?;
    Record::from_toml(&text).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Whether an open file is still the one at `path` (not unlinked or
/// replaced since it was opened).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn read_limited(file: &mut File, max: u64) -> io::Result<Vec<u8>> {
    file.rewind()?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without RENAME_NOREPLACE (some NFS): check, then rename.
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            if to.symlink_metadata().is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether someone has the file open for writing: `Some(true)` when a
/// read lease is refused. `None` when leases are not allowed here (not the
/// owner, or a file system without them); the caller falls back on age.
pub fn has_writer(file: &File) -> Option<bool> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: F_SETLEASE on a descriptor we own; no memory is passed.
    let r = unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) };
    if r == 0 {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        return Some(false);
    }
    match Errno::last() {
        Errno::EAGAIN => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_requests_are_made_and_cleared_by_name_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let cancel = spool.root().join("cancel");
        spool.request_cancel("job-1").unwrap();
        spool.request_cancel("job-1").unwrap();
        assert!(cancel.join("job-1").is_file());
        spool.clear_cancel("job-1").unwrap();
        assert!(!cancel.join("job-1").exists());
        spool.clear_cancel("job-1").unwrap();
        // Junk that is not an id is still cleared; paths are not.
        fs::write(cancel.join("not an id"), "").unwrap();
        spool.clear_cancel("not an id").unwrap();
        assert!(!cancel.join("not an id").exists());
        fs::write(spool.root().join("keep"), "").unwrap();
        for bad in ["../keep", ".hidden", "", ".."] {
            assert!(spool.clear_cancel(bad).is_err(), "{bad:?}");
        }
        assert!(spool.root().join("keep").exists());
        assert!(spool.request_cancel("../keep").is_err());
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&target, cancel.join("linked")).unwrap();
        assert!(spool.request_cancel("linked").is_err());
        assert!(!target.exists(), "the link was followed");
    }
}
