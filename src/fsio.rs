//! Careful file access, the one way the crate opens a file it did not just
//! create: errors that name the action and the path, and opening that never
//! follows a symlink, never blocks on a FIFO, and hands back regular files
//! only.
//!
//! A leaf: no other module of the crate is imported. It never writes,
//! renames or deletes anything.
//!
//! Invariant: whatever a submitter or a task put at a path (a symlink to a
//! secret, a FIFO that never opens, a folder), these functions either
//! return a descriptor of a regular file that was at that name when it was
//! opened, or say there is none.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An IO error that says what was being done to which path.
pub fn io_context(action: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{action} {}: {e}", path.display()))
}

/// Opens whatever is at `path` for reading, without following a final
/// symlink and without blocking on a FIFO. The caller looks at its type.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Opens `path` for reading if it is a regular file: never through a
/// symlink, never blocking on a FIFO. `None` when there is none (missing,
/// a symlink, or not a regular file).
pub fn open_regular(path: &Path) -> io::Result<Option<(File, Metadata)>> {
    let file = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io_context("open", path, e)),
    };
    regular(file, path)
}

/// Opens `name` inside `dir` if it is a regular file, following a symlink
/// for neither the folder nor the name. `None` when there is none.
pub fn open_regular_in(dir: &Path, name: &str) -> io::Result<Option<(File, Metadata)>> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let d = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(d) => d,
        Err(e) if is_absent(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) => return Err(io_context("open", dir, e)),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let path = dir.join(name);
    match openat(&d, name, flags, Mode::empty()) {
        Ok(fd) => regular(File::from(fd), &path),
        Err(e) => {
            let e = io::Error::from(e);
            if is_absent(&e) {
                Ok(None)
            } else {
                Err(io_context("open", &path, e))
            }
        }
    }
}

fn regular(file: File, path: &Path) -> io::Result<Option<(File, Metadata)>> {
    let meta = file.metadata().map_err(|e| io_context("stat", path, e))?;
    Ok(meta.is_file().then_some((file, meta)))
}

/// Errors that mean "nothing regular here": missing, or a symlink where a
/// file should be (`O_NOFOLLOW` answers ELOOP).
pub fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_open_and_links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("plain"), b"x").unwrap();
        std::os::unix::fs::symlink(d.join("plain"), d.join("link")).unwrap();
        std::fs::create_dir(d.join("folder")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(open_regular(&d.join("plain")).unwrap().is_some());
        assert!(open_regular_in(d, "plain").unwrap().is_some());
        for name in ["link", "folder", "fifo", "missing"] {
            assert!(open_regular(&d.join(name)).unwrap().is_none(), "{name}");
            assert!(open_regular_in(d, name).unwrap().is_none(), "{name}");
        }
        std::os::unix::fs::symlink(d, d.join("dirlink")).unwrap();
        assert!(
            open_regular_in(&d.join("dirlink"), "plain")
                .unwrap()
                .is_none()
        );
    }
}
