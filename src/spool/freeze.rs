//! Freezing a finished job's files: `running/<id>.files/` made the
//! daemon's and read-only before it moves into `done/` with the record.
//!
//! Owns [`Spool::freeze_files`]. While its task runs, the files folder is
//! the task user's; once the job has ended, no task (a later job of the
//! same user included) may change it. So every folder and regular file in
//! it is given to the daemon's user and loses its group and other write
//! bits (and any set-user-id, set-group-id or sticky bit); every other
//! entry (symlink, FIFO, socket, device) and every regular file with more
//! than one link (it may be someone else's file, linked in) is removed, so
//! that `done/` holds only regular files and folders.
//!
//! Never follows a symlink and never opens anything that could block: each
//! entry is looked at with `fstatat(AT_SYMLINK_NOFOLLOW)` relative to its
//! folder's descriptor, and changed only through a descriptor opened with
//! `O_NOFOLLOW | O_NONBLOCK` and checked to be the entry looked at. A task
//! process that outlived its job can still race the walk, but only with
//! its own files: nothing outside the folder is ever reached.
//!
//! Invariant: at most [`MAX_DEPTH`] folders are open at once, however
//! deep the tree; anything deeper is removed.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::{Spool, private, remove_any};
use crate::fsio::io_context;

/// How deep folders in a task's files may go; deeper ones are removed.
const MAX_DEPTH: usize = 64;

/// The permission bits a frozen entry may keep: no write for group and
/// others, no set-id or sticky bit.
const KEEP: u32 = 0o755;

/// One folder being walked: its descriptor and the names left in it.
struct Level {
    dir: File,
    names: std::vec::IntoIter<OsString>,
    /// Its path under the files folder, for the list of what was removed.
    prefix: String,
}

impl Spool {
    /// Freezes `running/<id>.files/` (see the module). Returns what was
    /// removed, as `name (why)`. A job without a files folder has nothing
    /// to freeze.
    pub(super) fn freeze_files(&self, id: &str) -> io::Result<Vec<String>> {
        let path = self.running_files(id);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let top = match nix::fcntl::open(&path, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(io_context("open", &path, e.into())),
        };
        let owner = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        make_own(&top, owner).map_err(|e| io_context("freeze", &path, e))?;
        let names = list_fd(&top).map_err(|e| io_context("list", &path, e))?;
        let mut removed = Vec::new();
        let mut stack = vec![Level {
            dir: top,
            names: names.into_iter(),
            prefix: String::new(),
        }];
        while let Some(level) = stack.last_mut() {
            let Some(name) = level.names.next() else {
                stack.pop();
                continue;
            };
            let shown = format!("{}{}", level.prefix, super::shown(&name));
            let depth = stack.len();
            match self.freeze_entry(&stack[depth - 1].dir, &name, owner, depth) {
                Ok(Frozen::File) => {}
                Ok(Frozen::Folder(dir)) => match list_fd(&dir) {
                    Ok(names) => stack.push(Level {
                        dir,
                        names: names.into_iter(),
                        prefix: format!("{shown}/"),
                    }),
                    Err(e) => removed.push(format!("{shown}/ (cannot be listed: {e})")),
                },
                Ok(Frozen::Removed(why)) => removed.push(format!("{shown} ({why})")),
                Err(e) => removed.push(format!("{shown} (left as it was: {e})")),
            }
        }
        Ok(removed)
    }

    /// Freezes one entry of a folder at `depth` (1 for the files folder's
    /// own entries).
    fn freeze_entry(
        &self,
        dir: &File,
        name: &OsString,
        owner: (u32, u32),
        depth: usize,
    ) -> io::Result<Frozen> {
        let st = match fstatat(
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => return Ok(Frozen::Removed("gone")),
            Err(e) => return Err(e.into()),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR {
            if depth >= MAX_DEPTH {
                self.discard_folder(dir, name)?;
                return Ok(Frozen::Removed("a folder too deep"));
            }
            let sub = open_at(dir, name, OFlag::O_DIRECTORY)?;
            if !same(&sub, &st)? {
                unlink(dir, name, &sub)?;
                return Ok(Frozen::Removed("changed while frozen"));
            }
            make_own(&sub, owner)?;
            return Ok(Frozen::Folder(sub));
        }
        if kind != SFlag::S_IFREG {
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
            return Ok(Frozen::Removed(kind_name(kind)));
        }
        if st.st_nlink > 1 {
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
            return Ok(Frozen::Removed("a hard link"));
        }
        let file = match open_at(dir, name, OFlag::empty()) {
            Ok(f) => f,
            Err(e) => {
                // Leased or gone: it cannot be frozen, so it cannot stay.
                let _ = unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
                return Ok(Frozen::Removed(if e.raw_os_error() == Some(libc::ENOENT) {
                    "gone"
                } else {
                    "could not be opened"
                }));
            }
        };
        let meta = file.metadata()?;
        if !same(&file, &st)? || !meta.is_file() || meta.nlink() > 1 {
            unlink(dir, name, &file)?;
            return Ok(Frozen::Removed("changed while frozen"));
        }
        make_own(&file, owner)?;
        Ok(Frozen::File)
    }

    /// Moves a folder out of a task's files into `.tmp/` and removes it
    /// there, where no task can reach it any more.
    fn discard_folder(&self, dir: &File, name: &OsString) -> io::Result<()> {
        let private = self.private_dir();
        let trash = private::name("trash");
        let p = nix::fcntl::open(
            &private,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        renameat(dir, name.as_os_str(), &p, trash.as_str())?;
        remove_any(&private.join(&trash))
    }
}

/// What freezing an entry did.
enum Frozen {
    File,
    /// A folder, frozen itself, whose entries are next.
    Folder(File),
    Removed(&'static str),
}

/// Gives an open file or folder to the daemon's user and takes away what
/// [`KEEP`] does not allow. chown first: the kernel may drop set-id bits
/// as it changes the owner, and the mode is set after it.
fn make_own(f: &File, (uid, gid): (u32, u32)) -> io::Result<()> {
    let meta = f.metadata()?;
    if (meta.uid(), meta.gid()) != (uid, gid) {
        std::os::unix::fs::fchown(f, Some(uid), Some(gid))?;
    }
    let mode = meta.mode() & 0o7777;
    if mode & !KEEP != 0 || (meta.uid(), meta.gid()) != (uid, gid) {
        f.set_permissions(fs::Permissions::from_mode(mode & KEEP))?;
    }
    Ok(())
}

/// Opens `name` in `dir` read-only, following nothing and blocking on
/// nothing.
fn open_at(dir: &File, name: &OsString, extra: OFlag) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | extra;
    let fd: OwnedFd = openat(dir, name.as_os_str(), flags, Mode::empty())?;
    Ok(File::from(fd))
}

/// Whether an open file is the entry `st` describes.
fn same(f: &File, st: &FileStat) -> io::Result<bool> {
    let m = f.metadata()?;
    Ok(m.dev() == st.st_dev && m.ino() == st.st_ino)
}

/// Removes `name` from `dir`, whatever it became (a file or a folder).
fn unlink(dir: &File, name: &OsString, opened: &File) -> io::Result<()> {
    let how = if opened.metadata()?.is_dir() {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    match unlinkat(dir, name.as_os_str(), how) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The names in an open folder, read through its descriptor (the folder
/// itself, wherever it is now, never a path someone could swap).
fn list_fd(dir: &File) -> io::Result<Vec<OsString>> {
    let via = format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd());
    let mut out = Vec::new();
    for e in fs::read_dir(via)? {
        out.push(e?.file_name());
    }
    Ok(out)
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "not a regular file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_files_keep_only_regular_files_and_folders_without_write_or_set_id_bits() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let files = spool.running_files("f");
        fs::create_dir_all(files.join("sub/deeper")).unwrap();
        fs::write(files.join("report.txt"), "r").unwrap();
        fs::set_permissions(files.join("report.txt"), fs::Permissions::from_mode(0o6777)).unwrap();
        fs::write(files.join("sub/deeper/x"), "x").unwrap();
        fs::set_permissions(files.join("sub"), fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", files.join("sub/pw")).unwrap();
        nix::unistd::mkfifo(&files.join("pipe"), Mode::S_IRWXU).unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "o").unwrap();
        fs::hard_link(&outside, files.join("linked")).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o666)).unwrap();
        let mut deep = files.clone();
        for _ in 0..(MAX_DEPTH + 3) {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();

        let mut removed = spool.freeze_files("f").unwrap();
        removed.sort();
        assert_eq!(removed.len(), 4, "{removed:?}");
        assert!(removed[0].starts_with("d/d/") && removed[0].ends_with("(a folder too deep)"));
        assert_eq!(removed[1], "linked (a hard link)");
        assert_eq!(removed[2], "pipe (a FIFO)");
        assert_eq!(removed[3], "sub/pw (a symlink)");
        let mode = |p: &std::path::Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&files.join("report.txt")), 0o755);
        assert_eq!(mode(&files.join("sub")), 0o755);
        assert_eq!(mode(&files.join("sub/deeper/x")) & 0o022, 0);
        assert_eq!(mode(&outside), 0o666, "a linked file outside was changed");
        assert_eq!(fs::read_to_string(files.join("sub/deeper/x")).unwrap(), "x");
        assert!(spool.names(&spool.private_dir()).unwrap().is_empty());
        assert!(spool.freeze_files("none").unwrap().is_empty());
    }
}
