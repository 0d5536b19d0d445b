//! The spool on disk: every path under it, and every step that moves a job
//! from one folder to the next.
//!
//! Owns the [`Spool`] handle, the paths, and the moves, one concern a file:
//! `look` (an entry someone else made, looked at safely), `submit` (the submitters' side: `tmp/` into `new/`, cancel requests,
//! the 36-hour rule), `claim` (a submission out of `new/`, into the
//! daemon's own copy in `running/`), `finish` (records, requeues, report,
//! deletion), `freeze` (a finished job's files made the daemon's and
//! read-only), `names` (names in `new/` that are not UTF-8), `outputs` (a
//! running task's files), `recovery` (leftovers of a dead daemon, from
//! `/proc`), `private` (the daemon's own folder `.tmp/`: who wrote what,
//! and a dead writer's leftovers), `lease` (several hosts: who holds a
//! job in `running/`, and for how long), `catalog` (`types.json`, the daemon's
//! description of what it accepts, and whether its writer still runs),
//! `ticks` (`.ticks/`, which schedule ticks were fired, and the `O_EXCL`
//! claim of a tick), [`ledger`] (`.finished/`, each daemon's log of the
//! records it placed, for the newest without listing `done/`), `newest`
//! (the pure rule of when the newest finished jobs are known, both ways of
//! listing them share it), and [`query`] (the read side).
//!
//! The daemon's side of the spool is written here only: no other module
//! of raccoond creates, renames, writes or deletes a spool path.
//! (Submitters write `tmp/`, `new/` and `cancel/`, and a task its own
//! files folder and result file; those are theirs.) Other modules still
//! *read* through some public path getters (listed where they are
//! defined).
//!
//! Each transition is committed by one `rename(2)`:
//!
//! | from                 | to                     | step                   |
//! |----------------------|------------------------|------------------------|
//! | `tmp/<random>`       | `new/<id>.toml`        | [`Spool::submit`]      |
//! | `new/<name>`         | `.tmp/<id>.….claim`    | [`Spool::claim`]: whose it is |
//! | `.tmp/….job`         | `running/<id>.toml`    | [`Spool::claim`]: the daemon's copy |
//! | `.tmp/….job`         | `new/<id>.toml`        | [`Spool::requeue`]     |
//! | `.tmp/….rec`         | `done/<id>.toml`       | [`Spool::finish_all`]  |
//!
//! Architecture Invariant: everything the daemon writes (in `running/`,
//! `done/`, `new/` for a requeue, `report.html`) is a file it created
//! itself in `.tmp/`, a folder nobody else can write; no inode that a
//! submitter or a task created, or can open for writing, ever becomes a
//! record, an output or a job file the daemon wrote.
//!
//! With `fsync = true` a file is fsynced before the rename that publishes
//! it and the folder after it (records: one `syncfs` and one folder fsync
//! per group).
//!
//! Never decides *whether* a job moves: the daemon decides, this module
//! carries it out and reports what the file system said, with the path in
//! every error. Never follows a symlink and never blocks on a FIFO in any
//! folder a submitter or a task can write.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::fsio::{io_context, open_regular};
use crate::record::Record;

mod catalog;
mod claim;
mod finish;
mod freeze;
pub mod lease;
pub mod ledger;
mod look;
mod names;
mod newest;
mod outputs;
mod pause;
mod private;
pub mod query;
mod recovery;
mod submit;
mod ticks;
pub mod unique;

pub use catalog::{this_writer, writer_alive};
pub use claim::{Claim, ClaimOutcome, Hold, Refused};
pub use finish::Present;
pub use look::{Entry, NewFolder, Odd, Seen, irregular};
pub use outputs::{OutputFile, Outputs};
pub use pause::PAUSE_ALL;
pub use recovery::Leftover;

/// One spool on disk. Cheap to clone: each thread keeps its own.
#[derive(Debug, Clone)]
pub struct Spool {
    /// The spool's folder, absolute and resolved once (for the daemon),
    /// so that tasks and logs see one clean path.
    root: PathBuf,
    /// Whether files and folders are fsynced around the renames that
    /// commit transitions (`fsync` in the configuration).
    fsync: bool,
    /// This daemon's host identity (`host` in the configuration): written
    /// beside each job it claims, so that daemons of other hosts sharing
    /// the spool wait for its lease rather than trust a lock they cannot
    /// see.
    host: String,
}

/// The folders of a spool that everyone sees, made by [`Spool::open`].
const FOLDERS: [&str; 8] = [
    "", "tmp", "new", "running", "done", "cancel", "pause", ".unique",
];
/// The daemon's own folder: temporary files, and submissions it has taken
/// out of `new/` until their record is written.
const PRIVATE: &str = ".tmp";
/// Where daemons before this one kept job files to write them again as
/// records (submitters' inodes): removed at start.
const LEGACY_SPARES: &str = ".spares";

impl Spool {
    /// Opens a spool, creating any missing folder, and makes sure the
    /// daemon's own folder `.tmp/` is a real folder that only the daemon
    /// can enter.
    pub fn open(root: &Path, fsync: bool) -> io::Result<Spool> {
        for dir in FOLDERS {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| io_context("create folder", &p, e))?;
        }
        let private = root.join(PRIVATE);
        match fs::DirBuilder::new().mode(0o700).create(&private) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_context("create folder", &private, e));
            }
            _ => {}
        }
        let meta = fs::symlink_metadata(&private).map_err(|e| io_context("stat", &private, e))?;
        if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::other(format!(
                "{}: must be a folder of raccoond's own user",
                private.display()
            )));
        }
        if meta.mode() & 0o7777 != 0o700 {
            fs::set_permissions(&private, fs::Permissions::from_mode(0o700))
                .map_err(|e| io_context("chmod", &private, e))?;
        }
        let spares = root.join(LEGACY_SPARES);
        if fs::symlink_metadata(&spares).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&spares).map_err(|e| io_context("remove", &spares, e))?;
        }
        // Tasks and logs see one clean absolute path.
        let root = fs::canonicalize(root).map_err(|e| io_context("resolve", root, e))?;
        Ok(Spool {
            root,
            fsync,
            host: crate::ids::hostname(),
        })
    }

    /// A spool handle for readers (the client): creates nothing.
    pub fn at(root: &Path) -> Spool {
        Spool {
            root: root.to_path_buf(),
            fsync: true,
            host: crate::ids::hostname(),
        }
    }

    /// Whether the root looks like a spool (it has a `new/` folder): a
    /// reader's check before it writes into a folder it did not create.
    pub fn is_spool(&self) -> bool {
        self.new_dir().is_dir()
    }

    pub fn with_fsync(&self, fsync: bool) -> Spool {
        Spool {
            fsync,
            ..self.clone()
        }
    }

    /// The same spool, claimed under host identity `host`.
    pub fn with_host(&self, host: &str) -> Spool {
        Spool {
            host: host.to_string(),
            ..self.clone()
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
    /// The daemon's own folder (0700): its temporary files, and what it
    /// took out of `new/` until the record says what became of it.
    fn private_dir(&self) -> PathBuf {
        self.root.join(PRIVATE)
    }
    fn report_path(&self) -> PathBuf {
        self.root.join("report.html")
    }

    /// Writes bytes to a new file in the daemon's own folder, fsynced when
    /// `sync`; `tag` ends its name (see `private`). Mode 0644: what it
    /// becomes (a record, a job file) is for group members to read.
    fn write_private(&self, bytes: &[u8], tag: &str, sync: bool) -> io::Result<PathBuf> {
        let path = self.private_dir().join(private::name(tag));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| io_context("create", &path, e))?;
        let written = f
            .write_all(bytes)
            .and_then(|()| if sync { f.sync_all() } else { Ok(()) });
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(io_context("write", &path, e));
        }
        Ok(path)
    }

    /// Whether a small file can be written on the spool's file system
    /// now: writes a page into the daemon's own folder and removes it. The
    /// commit thread's test that a full disk has room again.
    pub fn probe_space(&self) -> io::Result<()> {
        let path = self.write_private(&[0; 4096], "probe", false)?;
        fs::remove_file(&path).map_err(|e| io_context("remove", &path, e))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_context("fsync folder", dir, e))?;
        }
        Ok(())
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

    /// Names in a folder of the spool, dot-files left out, and names that
    /// are not UTF-8 too (in `new/` the daemon renames those, see
    /// [`Spool::escape_name`]; nothing else of the spool has them).
    pub fn names(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(list(dir)?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect())
    }

    /// Ids of the jobs in `done/` (one per record).
    pub fn done_ids(&self) -> io::Result<Vec<String>> {
        Ok(self
            .names(&self.done_dir())?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".toml").map(str::to_string))
            .collect())
    }

    /// Whether `path` is a regular file of the daemon's own user with one
    /// link: something the daemon wrote (a requeued copy, an HTTP
    /// submission), never a submitter's file.
    fn is_own_file(path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok_and(|m| {
            m.is_file() && m.nlink() == 1 && m.uid() == nix::unistd::geteuid().as_raw()
        })
    }
}

/// Every name in a folder (dot-files included), as the file system spells
/// it.
fn list(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_context("list", dir, e))? {
        let entry = entry.map_err(|e| io_context("list", dir, e))?;
        out.push(entry.file_name());
    }
    Ok(out)
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

/// The daemons' turn at `dir`: an exclusive `flock` on `dir/.lock`, a file
/// of the daemon's user only (0600), so that no member, who may open the
/// folder and its other files and so lock those, can ever hold it.
/// Without `wait`, `Ok(None)` when another daemon has the turn. The turn
/// ends when the lock is dropped.
fn take_turn(dir: &Path, wait: bool) -> io::Result<Option<nix::fcntl::Flock<File>>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| io_context("open", &path, e))?;
    let how = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, how) {
        Ok(l) => Ok(Some(l)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(io_context("lock", &path, e.into())),
    }
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing
/// anything at `to`. Where `RENAME_NOREPLACE` is refused (NFS, FUSE: EINVAL)
/// a hard link decides instead (`link(2)` never replaces), then `from` is
/// unlinked; only a folder, which cannot be linked, falls back on a look
/// before a plain rename.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // Refused (NFS, CephFS, FUSE): link(2) never replaces either, and
        // `from` is a name unique to this daemon, so whether the link is
        // ours is decided by that name, never by a look at `to` first.
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => link_noreplace(from, to),
        Err(e) => Err(e.into()),
    }
}

/// `from` (a name of this daemon's own) placed at `to` by a hard link,
/// then unlinked. A link whose answer was lost (a retransmission on a
/// network file system says it exists) is ours when `to` is the very
/// inode of `from`. A file system without links refuses: no fallback that
/// looks first and renames after.
fn link_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let ours = match (fs::symlink_metadata(from), fs::symlink_metadata(to)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !ours {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    fs::remove_file(from)
}

/// Removes whatever is at `path` without following it: a file, a link, a
/// FIFO, or a whole folder. Already gone is no error.
fn remove_any(path: &Path) -> io::Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_context("remove", path, e)),
        _ => Ok(()),
    }
}

/// A name as text for logs and records: [`crate::escape::escape_bytes`]
/// of its bytes.
fn shown(name: &std::ffi::OsStr) -> String {
    crate::escape::escape_bytes(name.as_bytes())
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
    fn open_makes_the_private_folder_the_daemons_alone_and_drops_old_spares() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("spool");
        fs::create_dir_all(root.join(".spares")).unwrap();
        fs::write(root.join(".spares/old"), "a submitter's inode").unwrap();
        fs::create_dir_all(root.join(".tmp")).unwrap();
        fs::set_permissions(root.join(".tmp"), fs::Permissions::from_mode(0o777)).unwrap();
        let spool = Spool::open(&root, false).unwrap();
        let meta = fs::symlink_metadata(spool.private_dir()).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert!(!root.join(".spares").exists());
        // A link where the folder should be is refused, not followed.
        let other = tempfile::tempdir().unwrap();
        let root2 = other.path().join("spool");
        fs::create_dir_all(&root2).unwrap();
        std::os::unix::fs::symlink(other.path(), root2.join(".tmp")).unwrap();
        assert!(Spool::open(&root2, false).is_err());
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&b).unwrap(), "b");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "a");
        assert!(!a.exists());
    }

    #[test]
    fn the_link_fallback_never_replaces_and_knows_its_own_link() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let e = link_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&b).unwrap(), "b");
        fs::remove_file(&b).unwrap();
        // An earlier link whose answer was lost: the name is ours already.
        fs::hard_link(&a, &b).unwrap();
        link_noreplace(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read_to_string(&b).unwrap(), "a");
    }
}
