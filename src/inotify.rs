//! A small inotify(7) instance: watches on folders (for the events their
//! user names) and on open files, and the names its events carry.
//!
//! Used by the daemon's watch (`watch`, whose descriptor the main loop
//! polls beside its mailbox) and by followers (`follow`): neither wants a
//! thread, only a descriptor to `poll(2)` beside others. Owns the descriptor and the parsing of the
//! events read from it; never decides what an event means (its users do).
//!
//! Invariant: a folder is watched without following a symlink
//! (`IN_DONT_FOLLOW`, `IN_ONLYDIR`); an open file is watched through its
//! own descriptor (`/proc/self/fd/N`), so the watch is on the inode the
//! follower reads, whatever is at its name since.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::fsio::io_context;

/// Names coming and going in a folder (what a follower watches).
pub const FOLDER_EVENTS: u32 =
    libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_MOVED_FROM | libc::IN_DELETE;
/// The watched file was written to.
pub const FILE_EVENTS: u32 = libc::IN_MODIFY;

/// One event: which watch, what, and the name in the folder (empty for
/// the file's own watch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub wd: i32,
    pub mask: u32,
    pub name: Vec<u8>,
}

impl Event {
    /// The kernel's queue overflowed: events were lost, look again.
    pub fn overflowed(&self) -> bool {
        self.mask & libc::IN_Q_OVERFLOW != 0
    }
}

/// An inotify instance, non-blocking.
#[derive(Debug)]
pub struct Inotify {
    fd: File,
    /// Where events are read into, kept from one read to the next: room
    /// for at least one event with the longest name.
    buf: Vec<u8>,
}

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: no pointers; the result is checked before use.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::other(format!(
                "inotify_init1: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: a descriptor just returned to us and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify {
            fd: File::from(fd),
            buf: vec![0; 16 * 1024],
        })
    }

    /// Watches a folder for `events` (`IN_*` bits); never through a
    /// symlink.
    pub fn watch_folder(&self, dir: &Path, events: u32) -> io::Result<i32> {
        let mask = events | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW;
        self.add(dir, mask)
            .map_err(|e| io_context("watch (inotify)", dir, e))
    }

    /// Watches the file an open descriptor reads for writes, whatever is
    /// at its name now.
    pub fn watch_open_file(&self, file: &File) -> io::Result<i32> {
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        self.add(Path::new(&link), FILE_EVENTS)
            .map_err(|e| io_context("watch (inotify)", Path::new(&link), e))
    }

    /// Stops a watch (a file no longer followed). A watch the kernel
    /// dropped already is no error.
    pub fn unwatch(&self, wd: i32) {
        // SAFETY: no pointers; a stale wd only gives EINVAL.
        let _ = unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    fn add(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        // SAFETY: `c` is a NUL-terminated string alive for the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Every event queued now (none when there is none: never blocks).
    pub fn drain(&mut self) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        loop {
            let n = match self.fd.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("read inotify: {e}"))),
            };
            if n == 0 {
                return Ok(out);
            }
            out.extend(parse(&self.buf[..n]));
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The events in what one `read(2)` of an inotify descriptor gave:
/// `struct inotify_event` (wd, mask, cookie, len) then `len` bytes of
/// name, NUL-padded. A cut record (which the kernel never makes) ends the
/// list.
fn parse(mut bytes: &[u8]) -> Vec<Event> {
    const HEAD: usize = 16;
    let word = |b: &[u8], i: usize| -> [u8; 4] { [b[i], b[i + 1], b[i + 2], b[i + 3]] };
    let mut out = Vec::new();
    while bytes.len() >= HEAD {
        let wd = i32::from_ne_bytes(word(bytes, 0));
        let mask = u32::from_ne_bytes(word(bytes, 4));
        let len = u32::from_ne_bytes(word(bytes, 12)) as usize;
        let Some(raw) = bytes.get(HEAD..HEAD + len) else {
            break;
        };
        let name = raw.split(|b| *b == 0).next().unwrap_or_default().to_vec();
        out.push(Event { wd, mask, name });
        bytes = &bytes[HEAD + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn raw(wd: i32, mask: u32, name: &[u8], pad: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&wd.to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&((name.len() + pad) as u32).to_ne_bytes());
        b.extend_from_slice(name);
        b.extend(std::iter::repeat_n(0, pad));
        b
    }

    #[test]
    fn events_are_read_with_their_names_and_a_cut_one_is_dropped() {
        let mut bytes = raw(1, libc::IN_CREATE, b"a.out", 3);
        bytes.extend(raw(2, libc::IN_MODIFY, b"", 0));
        bytes.extend(raw(3, libc::IN_Q_OVERFLOW, b"", 0));
        let mut cut = raw(4, libc::IN_DELETE, b"gone.toml", 7);
        cut.truncate(cut.len() - 2);
        bytes.extend(cut);
        let events = parse(&bytes);
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].name, b"a.out");
        assert_eq!((events[1].wd, events[1].name.len()), (2, 0));
        assert!(events[2].overflowed() && !events[0].overflowed());
    }

    #[test]
    fn a_folder_and_an_open_file_are_watched() {
        let dir = tempfile::tempdir().unwrap();
        let mut ino = Inotify::new().unwrap();
        let wd = ino.watch_folder(dir.path(), FOLDER_EVENTS).unwrap();
        assert!(ino.drain().unwrap().is_empty(), "nothing yet, and no wait");
        let path = dir.path().join("x.out");
        let mut w = File::create(&path).unwrap();
        let events = ino.drain().unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.wd == wd && e.name == b"x.out" && e.mask & libc::IN_CREATE != 0),
            "{events:?}"
        );
        // Renamed away, the file is still the one watched.
        let r = File::open(&path).unwrap();
        let fwd = ino.watch_open_file(&r).unwrap();
        std::fs::rename(&path, dir.path().join("y.out")).unwrap();
        ino.drain().unwrap();
        w.write_all(b"more").unwrap();
        let events = ino.drain().unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.wd == fwd && e.mask & libc::IN_MODIFY != 0),
            "{events:?}"
        );
        ino.unwatch(fwd);
        ino.unwatch(fwd);
        // A symlink to a folder is not watched.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(ino.watch_folder(&link, FOLDER_EVENTS).is_err());
    }
}
