//! Looking at an entry someone else made, without following it, without
//! blocking on it, and without reading what must not be read.
//!
//! Owns [`Entry`] and [`Spool::open_new`] (a look at a name in `new/`, for
//! the daemon, the HTTP API and the client; [`NewFolder::open`] the same
//! look relative to `new/` held open, for the daemon's reading of a whole
//! listing, where walking the spool's path twice a name would cost more
//! than the look itself), [`Odd`] (every kind of entry
//! the daemon refuses to read, and how a record says what it was), and
//! the looks a claim makes: `peek` at `new/<name>`, `look` at what was
//! taken into `.tmp/`.
//!
//! Invariant: nothing is opened unless `lstat` said it is a regular file
//! (and then with `O_NOFOLLOW | O_NONBLOCK`, checked again with `fstat`),
//! and nothing is read unless it is a regular file with one link and at
//! most the limit. A hard link may be a file its submitter cannot read.
//!
//! Never writes, renames or deletes anything.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use super::Spool;
use crate::fsio::{io_context, open_nofollow};

/// What is at a name in `new/`, looked at without following links and
/// without an open that could block.
pub enum Entry {
    /// A regular file with one link, open for reading (the descriptor that
    /// was checked, so the name cannot be swapped after the look).
    Regular { file: File, meta: Metadata },
    /// A symlink, folder, FIFO, socket, device or hard link (a regular file
    /// with more than one link, which may be someone else's file and is
    /// never read), by name.
    Other(&'static str),
    /// Gone between the event and the look.
    Gone,
}

/// What a refused entry is: every kind of entry that is not a regular file
/// the daemon reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Odd {
    /// A regular file with more than one link: it may be someone else's
    /// file, linked in; it is never read.
    HardLink { links: u64, size: u64 },
    /// A regular file larger than `max_job_bytes`: not read.
    TooLarge { size: u64, max: u64 },
    /// A symlink, never followed, with its target as text.
    Symlink { target: String },
    /// A folder, FIFO, socket or device, never opened.
    Other { kind: &'static str },
    /// A regular file that could not be read as it was looked at: one the
    /// daemon may not read (a daemon that is not root), or one that changed
    /// between two looks.
    Unreadable { why: &'static str },
}

impl Odd {
    /// The record's `error` and `source` for this entry, found at `place`
    /// (`new/<name>`, `running/<name>`).
    pub fn describe(&self, place: &str) -> (String, String) {
        match self {
            Odd::HardLink { links, size } => (
                format!(
                    "a hard link: {place} has {links} links; it was rejected without being read, and removed"
                ),
                format!("(not read: a regular file of {size} bytes with {links} hard links)"),
            ),
            Odd::TooLarge { size, max } => (
                format!(
                    "too large: {size} bytes, more than max_job_bytes = {max}; it was not read, and was removed"
                ),
                format!("(not read: a regular file of {size} bytes)"),
            ),
            Odd::Symlink { target } => (
                format!(
                    "not a regular file: {place} is a symlink; it was not followed, and was removed"
                ),
                format!("symlink to {target}"),
            ),
            Odd::Other { kind } => (
                format!(
                    "not a regular file: {place} is a {kind}; it was not opened, and was removed"
                ),
                kind.to_string(),
            ),
            Odd::Unreadable { why } => (
                format!("not read: {place} is {why}; it was removed"),
                format!("(not read: {why})"),
            ),
        }
    }
}

/// What was taken, looked at.
pub(super) enum Look {
    Bytes(Vec<u8>),
    Odd(Odd),
}

/// `new/`, held open: names in it looked at without walking the spool's
/// path for each, as [`Spool::open_new`] does.
pub struct NewFolder {
    /// The folder, open for `fstatat`/`openat` (a symlink to it followed,
    /// as a path through it would be).
    dir: File,
    /// Its path, for errors.
    path: PathBuf,
}

impl Spool {
    /// Looks at a name in `new/` without following it or blocking on it,
    /// and opens it only when it is a regular file.
    /// `Err` of kind `WouldBlock`: a file of the daemon's own still being
    /// placed (look again later).
    pub fn open_new(&self, name: &str) -> io::Result<Entry> {
        let path = self.new_path(name);
        look_at(AT_FDCWD, &path, || path.clone())
    }

    /// Opens `new/` to look at many names in it ([`NewFolder::open`]).
    pub fn new_folder(&self) -> io::Result<NewFolder> {
        let path = self.new_dir();
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io_context("open", &path, e))?;
        Ok(NewFolder { dir, path })
    }
}

impl NewFolder {
    /// What [`Spool::open_new`] says of `new/<name>`, looked at relative
    /// to the open folder. `name` is one name, never a path.
    pub fn open(&self, name: &str) -> io::Result<Entry> {
        if name.is_empty() || name.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: not a name in the folder",
                    self.path.join(name).display()
                ),
            ));
        }
        look_at(self.dir.as_fd(), Path::new(name), || self.path.join(name))
    }
}

/// The look of [`Spool::open_new`]: `at` relative to `dir` (a path
/// relative to the working folder with `AT_FDCWD`), `shown` its path for
/// errors. `lstat` first: only a regular file is opened, and its `fstat`
/// is checked again (the name may have been replaced in between).
fn look_at<D: AsFd>(dir: D, at: &Path, shown: impl Fn() -> PathBuf) -> io::Result<Entry> {
    let st = match fstatat(&dir, at, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(e) => {
            let e = io::Error::from(e);
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(Entry::Gone);
            }
            return Err(io_context("stat", &shown(), e));
        }
    };
    if let Some(kind) = irregular_mode(st.st_mode) {
        return Ok(Entry::Other(kind));
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match openat(&dir, at, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            let e = io::Error::from(e);
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(Entry::Gone);
            }
            if e.raw_os_error() == Some(libc::ELOOP) {
                return Ok(Entry::Other("symlink"));
            }
            return Err(io_context("open", &shown(), e));
        }
    };
    // The name may have been replaced between lstat and open.
    let meta = file
        .metadata()
        .map_err(|e| io_context("stat", &shown(), e))?;
    if let Some(kind) = irregular(&meta) {
        return Ok(Entry::Other(kind));
    }
    if placing(&meta) {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    // Maybe someone else's file, linked in: never to be read.
    if meta.nlink() > 1 {
        return Ok(Entry::Other("hard link"));
    }
    Ok(Entry::Regular { file, meta })
}

/// What a non-regular file is, by name (`None` for a regular file).
pub fn irregular(meta: &Metadata) -> Option<&'static str> {
    irregular_mode(meta.mode())
}

/// [`irregular`] from the mode bits of a `stat`.
fn irregular_mode(mode: u32) -> Option<&'static str> {
    let kind = SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits());
    if kind == SFlag::S_IFREG {
        None
    } else if kind == SFlag::S_IFLNK {
        Some("symlink")
    } else if kind == SFlag::S_IFDIR {
        Some("directory")
    } else if kind == SFlag::S_IFIFO {
        Some("FIFO")
    } else if kind == SFlag::S_IFSOCK {
        Some("socket")
    } else if kind == SFlag::S_IFCHR {
        Some("character device")
    } else {
        Some("block device")
    }
}

/// What a first look at `new/<name>` found.
pub(super) enum Peek {
    Gone,
    /// Not a regular file with one link within the limit: taken unread.
    Odd,
    /// Read, through this descriptor.
    Read(File, Vec<u8>),
}

/// Looks at a name in `new/` without following it or blocking on it, and
/// reads it only if it is a regular file with one link and at most `max`
/// bytes.
/// What a submission held when the daemon read it on its arrival, and
/// which inode that was: a claim a moment later that finds the same inode
/// unchanged (size, modification and change times: any write, truncation,
/// link or chmod moves the change time) takes these bytes instead of
/// reading the file again. Only ever bytes that file held.
#[derive(Debug, Clone)]
pub struct Seen {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    bytes: Vec<u8>,
}

impl Seen {
    /// `bytes`, read from the file whose metadata (taken through the
    /// descriptor they were read from, before reading) is `meta`.
    pub fn of(meta: &fs::Metadata, bytes: Vec<u8>) -> Seen {
        Seen {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            bytes,
        }
    }

    /// Whether `meta` is that file, unchanged since.
    fn holds(&self, meta: &fs::Metadata) -> bool {
        (meta.dev(), meta.ino(), meta.len()) == (self.dev, self.ino, self.len)
            && (meta.mtime(), meta.mtime_nsec()) == self.mtime
            && (meta.ctime(), meta.ctime_nsec()) == self.ctime
            && self.bytes.len() as u64 == self.len
    }
}

pub(super) fn peek(path: &Path, max: u64, seen: Option<&Seen>) -> io::Result<Peek> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Peek::Gone),
        Err(e) => return Err(io_context("stat", path, e)),
    };
    if !meta.is_file() || meta.nlink() > 1 || meta.len() > max {
        return Ok(Peek::Odd);
    }
    let mut file = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Peek::Gone),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Peek::Odd),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(Peek::Odd),
        Err(e) => return Err(io_context("open", path, e)),
    };
    let now = file.metadata().map_err(|e| io_context("stat", path, e))?;
    if !now.is_file() || now.nlink() > 1 || now.ino() != meta.ino() || now.dev() != meta.dev() {
        return Ok(Peek::Odd);
    }
    if let Some(seen) = seen.filter(|s| s.holds(&now))
        && now.len() <= max
    {
        return Ok(Peek::Read(file, seen.bytes.clone()));
    }
    match read_at_most(&mut file, now.len(), max, path)? {
        Ok(bytes) => Ok(Peek::Read(file, bytes)),
        Err(_) => Ok(Peek::Odd),
    }
}

/// Whether `path` is (not through a link) the file open as `file`.
pub(super) fn same_inode(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Looks at a taken entry without following it or blocking on it; reads
/// it only when it is a regular file with one link and at most `max`
/// bytes.
pub(super) fn look(path: &Path, max: u64) -> io::Result<Look> {
    let meta = fs::symlink_metadata(path).map_err(|e| io_context("stat", path, e))?;
    if let Some(what) = odd(path, &meta, max)? {
        return Ok(Look::Odd(what));
    }
    let mut file = match open_nofollow(path) {
        Ok(f) => f,
        // Only for a daemon that is not root: nothing it can ever read.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Ok(Look::Odd(Odd::Unreadable {
                why: "a file the daemon may not read",
            }));
        }
        Err(e) => return Err(io_context("open", path, e)),
    };
    let now = file.metadata().map_err(|e| io_context("stat", path, e))?;
    if now.ino() != meta.ino() || now.dev() != meta.dev() || !now.is_file() {
        return Ok(Look::Odd(Odd::Unreadable {
            why: "a file that changed while it was looked at",
        }));
    }
    // A link may have been made through a descriptor its submitter kept.
    if now.nlink() > 1 {
        return Ok(Look::Odd(hard_link(&now)));
    }
    match read_at_most(&mut file, now.len(), max, path)? {
        Ok(bytes) => Ok(Look::Bytes(bytes)),
        Err(got) => Ok(Look::Odd(Odd::TooLarge {
            size: now.len().max(got),
            max,
        })),
    }
}

/// Whether an open file of `len` bytes (as its `fstat` said) holds exactly
/// `bytes`: read no further than one byte past them.
pub(super) fn holds_exactly(file: &File, len: u64, bytes: &[u8]) -> bool {
    if len != bytes.len() as u64 {
        return false;
    }
    let mut theirs = Vec::with_capacity(bytes.len());
    file.take(len + 1)
        .read_to_end(&mut theirs)
        .is_ok_and(|_| theirs == bytes)
}

/// Reads an open file of `len` bytes (as its `fstat` said) up to one byte
/// past `max`: its bytes, or how many were read when that was more than
/// `max` (it grew meanwhile).
fn read_at_most(
    file: &mut File,
    len: u64,
    max: u64,
    path: &Path,
) -> io::Result<Result<Vec<u8>, u64>> {
    let mut bytes = Vec::with_capacity(len.min(max) as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_context("read", path, e))?;
    if bytes.len() as u64 > max {
        return Ok(Err(bytes.len() as u64));
    }
    Ok(Ok(bytes))
}

/// What an entry is when it is not a regular file with one link and at
/// most `max` bytes (`None` when it is one), from its `lstat`.
pub(super) fn odd(path: &Path, meta: &fs::Metadata, max: u64) -> io::Result<Option<Odd>> {
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).map_err(|e| io_context("read link", path, e))?;
        return Ok(Some(Odd::Symlink {
            target: crate::escape::escape_bytes(target.as_os_str().as_bytes()),
        }));
    }
    if let Some(kind) = irregular(meta) {
        return Ok(Some(Odd::Other { kind }));
    }
    if meta.nlink() > 1 {
        return Ok(Some(hard_link(meta)));
    }
    if meta.len() > max {
        return Ok(Some(Odd::TooLarge {
            size: meta.len(),
            max,
        }));
    }
    Ok(None)
}

fn hard_link(meta: &fs::Metadata) -> Odd {
    Odd::HardLink {
        links: meta.nlink(),
        size: meta.len(),
    }
}

/// Whether a file with two links is a daemon's own being placed by a link
/// and an unlink (where the file system refuses `RENAME_NOREPLACE`): its
/// owner is this daemon's user and its last change is a moment ago. Such
/// a file is looked at again later, not refused as a hard link.
fn placing(meta: &Metadata) -> bool {
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            u64::try_from(meta.ctime()).unwrap_or(0),
            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        );
    meta.nlink() == 2
        && meta.uid() == nix::unistd::geteuid().as_raw()
        && std::time::SystemTime::now()
            .duration_since(changed)
            .map_or(true, |age| age < super::lease::CLAIMING)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a look found, in words.
    fn seen(entry: io::Result<Entry>) -> String {
        match entry {
            Ok(Entry::Regular { meta, .. }) => format!("regular {}", meta.len()),
            Ok(Entry::Other(kind)) => kind.to_string(),
            Ok(Entry::Gone) => "gone".to_string(),
            Err(e) => format!("error {:?}", e.kind()),
        }
    }

    #[test]
    fn a_look_by_path_and_one_in_the_open_folder_agree_on_every_kind_of_entry() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let new = spool.new_dir();
        fs::write(new.join("job.toml"), "type = \"t\"\n").unwrap();
        fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), new.join("link.toml")).unwrap();
        fs::create_dir(new.join("folder.toml")).unwrap();
        nix::unistd::mkfifo(&new.join("fifo.toml"), Mode::S_IRWXU).unwrap();
        // Three links: two of the daemon's own a moment ago are a file
        // being placed, looked at again later.
        fs::hard_link(dir.path().join("secret"), new.join("hard.toml")).unwrap();
        fs::hard_link(dir.path().join("secret"), dir.path().join("again")).unwrap();
        let folder = spool.new_folder().unwrap();
        let table = [
            ("job.toml", "regular 11"),
            ("link.toml", "symlink"),
            ("folder.toml", "directory"),
            ("fifo.toml", "FIFO"),
            ("hard.toml", "hard link"),
            ("missing.toml", "gone"),
        ];
        for (name, want) in table {
            assert_eq!(seen(spool.open_new(name)), want, "{name} by path");
            assert_eq!(seen(folder.open(name)), want, "{name} in the folder");
        }
        // Only names: nothing outside new/ is looked at through it.
        for name in ["../secret", "", "a/b"] {
            assert_eq!(seen(folder.open(name)), "error InvalidInput", "{name:?}");
        }
    }
}
