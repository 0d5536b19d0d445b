//! Looking at an entry someone else made, without following it, without
//! blocking on it, and without reading what must not be read.
//!
//! Owns [`Entry`] and [`Spool::open_new`] (a look at a name in `new/`, for
//! the daemon, the HTTP API and the client), [`Odd`] (every kind of entry
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

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

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

impl Spool {
    /// Looks at a name in `new/` without following it or blocking on it,
    /// and opens it only when it is a regular file.
    /// `Err` of kind `WouldBlock`: a file of the daemon's own still being
    /// placed (look again later).
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
        if placing(&meta) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // Maybe someone else's file, linked in: never to be read.
        if meta.nlink() > 1 {
            return Ok(Entry::Other("hard link"));
        }
        Ok(Entry::Regular { file, meta })
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
    } else if ft.is_char_device() {
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
pub(super) fn peek(path: &Path, max: u64) -> io::Result<Peek> {
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
    let mut bytes = Vec::with_capacity(now.len().min(max) as usize);
    (&mut file)
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_context("read", path, e))?;
    if bytes.len() as u64 > max {
        return Ok(Peek::Odd);
    }
    Ok(Peek::Read(file, bytes))
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
    let mut bytes = Vec::with_capacity(now.len().min(max) as usize);
    (&mut file)
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_context("read", path, e))?;
    if bytes.len() as u64 > max {
        return Ok(Look::Odd(Odd::TooLarge {
            size: now.len().max(bytes.len() as u64),
            max,
        }));
    }
    Ok(Look::Bytes(bytes))
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
