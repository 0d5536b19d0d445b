//! Turns inotify events on `new/`, `cancel/` and `pause/` into what the
//! daemon acts on.
//!
//! Takes the spool's folders; gives [`Fs`] events through a callback, from
//! a thread of its own (`watcher`). It never opens, reads or moves a file:
//! deciding whether a file is complete is the daemon's job. A file is
//! *ready* when its writer closed it or it was renamed in; a file merely
//! *seen* (created, hard-linked) must be left alone for a settle time
//! first.
//!
//! It asks the kernel only for the events it acts on (a name created,
//! closed after writing, renamed in; in `pause/` also removed or renamed
//! away), never for opens or reads: the daemon reads every file in `new/`,
//! a million at start, and an event for each of its own opens would cost a
//! wake-up of this thread apiece and overflow the kernel's queue, which
//! forces a rescan.
//!
//! Invariant: dot-files are never reported (a submitter's drafts, by
//! convention); a rename within `new/` is reported once, as its arrival.
//! A name in `new/` that is not UTF-8 is reported as it is ([`Fs::RawName`]),
//! whatever happened to it: the daemon gives it a name first.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::follow::inotify::{Event, Inotify};
use crate::threads::Threads;

/// What happened in the spool's watched folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fs {
    /// A file in `new/` was closed after writing or renamed in: take it.
    Ready(String),
    /// A name appeared in `new/` without a close (a hard link, a folder, a
    /// FIFO, or a writer still at work): take it once it has settled.
    Seen(String),
    /// A name in `new/` that is not UTF-8 was created, closed or renamed
    /// in: it is renamed to its escaped form before anything else.
    RawName(OsString),
    /// Events were lost: scan `new/` and `cancel/` again.
    Overflow,
    /// `cancel/<id>` appeared.
    Cancel(String),
    /// A name came or went in `pause/`: list it again.
    Pause,
}

/// The folders watched.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Submissions: closes and renames make a file ready.
    pub new: PathBuf,
    /// Cancel requests, by id.
    pub cancel: PathBuf,
    /// Pause requests: any change means the folder is listed again.
    pub pause: PathBuf,
}

/// Names created, closed after writing or renamed in: what `new/` and
/// `cancel/` are watched for.
const ARRIVALS: u32 = libc::IN_CREATE | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO;
/// Names coming or going: what `pause/` is watched for.
const COMINGS_AND_GOINGS: u32 =
    libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;

/// Which watched folder an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Folder {
    New,
    Cancel,
    Pause,
}

/// The watch descriptors of the three folders.
#[derive(Debug, Clone, Copy)]
struct Wds {
    new: i32,
    cancel: i32,
    pause: i32,
}

impl Wds {
    fn folder(&self, wd: i32) -> Option<Folder> {
        [
            (self.new, Folder::New),
            (self.cancel, Folder::Cancel),
            (self.pause, Folder::Pause),
        ]
        .into_iter()
        .find(|(w, _)| *w == wd)
        .map(|(_, f)| f)
    }
}

/// The running watcher: dropping it stops its thread.
pub struct Watcher {
    /// Written to once to tell the thread to stop (an eventfd).
    stop: File,
    /// The thread, joined when the watcher is dropped.
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = (&self.stop).write_all(&1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts watching: every event after this returns is reported.
pub fn start<F>(dirs: &Watched, threads: &Threads, send: F) -> io::Result<Watcher>
where
    F: Fn(Fs) + Send + 'static,
{
    let mut ino = Inotify::new()?;
    let wds = Wds {
        new: ino.watch_folder_for(&dirs.new, ARRIVALS)?,
        cancel: ino.watch_folder_for(&dirs.cancel, ARRIVALS)?,
        pause: ino.watch_folder_for(&dirs.pause, COMINGS_AND_GOINGS)?,
    };
    // SAFETY: no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::other(format!(
            "eventfd: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: a descriptor just returned to us and owned by nobody else.
    let stop = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut stopped = stop.try_clone()?;
    let thread = threads.spawn("watcher", move || {
        loop {
            let mut fds = [
                PollFd::new(ino.fd(), PollFlags::POLLIN),
                PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                // A watcher that cannot wait for its events is a part that
                // stopped working: its end is reported, the daemon restarts.
                Err(e) => {
                    crate::log!("watch: poll inotify: {e}");
                    return;
                }
            }
            let asked = fds[1].revents().is_some_and(|r| !r.is_empty());
            if asked {
                let _ = stopped.read(&mut [0; 8]);
                return;
            }
            let events = match ino.drain() {
                Ok(events) => events,
                Err(e) => {
                    crate::log!("watch: {e}");
                    return;
                }
            };
            for event in &events {
                for fs in translate(event, &wds) {
                    send(fs);
                }
            }
        }
    })?;
    Ok(Watcher {
        stop,
        thread: Some(thread),
    })
}

fn translate(event: &Event, wds: &Wds) -> Vec<Fs> {
    if event.overflowed() {
        return vec![Fs::Overflow];
    }
    let Some(folder) = wds.folder(event.wd) else {
        return Vec::new();
    };
    let raw = OsStr::from_bytes(&event.name);
    if event.name.is_empty() || event.name.first() == Some(&b'.') {
        return Vec::new();
    }
    let has = |bits: u32| event.mask & bits != 0;
    let arrived = has(ARRIVALS);
    let out = match (folder, raw.to_str()) {
        // In pause/ every arrival and departure counts, whatever its
        // kind: the folder is listed again.
        (Folder::Pause, Some(_)) if has(COMINGS_AND_GOINGS) => Fs::Pause,
        (Folder::New, None) if arrived => Fs::RawName(raw.to_os_string()),
        (Folder::New, Some(name)) if has(libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) => {
            Fs::Ready(name.to_string())
        }
        (Folder::New, Some(name)) if has(libc::IN_CREATE) => Fs::Seen(name.to_string()),
        (Folder::Cancel, Some(name)) if arrived => Fs::Cancel(name.to_string()),
        _ => return Vec::new(),
    };
    vec![out]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(wd: i32, mask: u32, name: &[u8]) -> Event {
        Event {
            wd,
            mask,
            name: name.to_vec(),
        }
    }

    #[test]
    fn close_and_rename_make_a_file_ready_create_only_seen() {
        let wds = Wds {
            new: 1,
            cancel: 2,
            pause: 3,
        };
        let dir = libc::IN_ISDIR;
        let cases: Vec<(Event, Vec<Fs>)> = vec![
            (
                ev(1, libc::IN_CLOSE_WRITE, b"a.toml"),
                vec![Fs::Ready("a.toml".into())],
            ),
            (
                ev(1, libc::IN_MOVED_TO, b"b.toml"),
                vec![Fs::Ready("b.toml".into())],
            ),
            (
                ev(1, libc::IN_CREATE, b"c.toml"),
                vec![Fs::Seen("c.toml".into())],
            ),
            (
                ev(1, libc::IN_CREATE | dir, b"d"),
                vec![Fs::Seen("d".into())],
            ),
            (ev(1, libc::IN_CREATE, b".part"), vec![]),
            (ev(1, libc::IN_MODIFY, b"c.toml"), vec![]),
            (ev(1, libc::IN_OPEN, b"c.toml"), vec![]),
            (ev(1, libc::IN_MOVED_FROM, b"c.toml"), vec![]),
            (ev(1, libc::IN_DELETE, b"c.toml"), vec![]),
            (
                ev(2, libc::IN_CREATE, b"job-1"),
                vec![Fs::Cancel("job-1".into())],
            ),
            (
                ev(2, libc::IN_MOVED_TO, b"job-2"),
                vec![Fs::Cancel("job-2".into())],
            ),
            (ev(2, libc::IN_DELETE, b"job-1"), vec![]),
            (ev(9, libc::IN_CREATE, b"x"), vec![]),
            (ev(3, libc::IN_CREATE, b"build"), vec![Fs::Pause]),
            (ev(3, libc::IN_DELETE, b"ALL"), vec![Fs::Pause]),
            (ev(3, libc::IN_MOVED_FROM, b"build"), vec![Fs::Pause]),
            (ev(3, libc::IN_CLOSE_WRITE, b"build"), vec![]),
            (ev(3, libc::IN_CREATE, b".build"), vec![]),
            (ev(-1, libc::IN_Q_OVERFLOW, b""), vec![Fs::Overflow]),
            (ev(1, libc::IN_IGNORED, b""), vec![]),
            (
                ev(1, libc::IN_MOVED_TO, b"caf\xe9.toml"),
                vec![Fs::RawName(OsStr::from_bytes(b"caf\xe9.toml").into())],
            ),
            (
                ev(1, libc::IN_CREATE | dir, b"\xff"),
                vec![Fs::RawName(OsStr::from_bytes(b"\xff").into())],
            ),
            (ev(1, libc::IN_CREATE, b".\xff"), vec![]),
            (ev(2, libc::IN_CREATE, b"\xff"), vec![]),
        ];
        for (event, want) in cases {
            assert_eq!(translate(&event, &wds), want, "{event:?}");
        }
    }

    #[test]
    fn a_rename_into_new_is_reported_and_an_open_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Watched {
            new: dir.path().join("new"),
            cancel: dir.path().join("cancel"),
            pause: dir.path().join("pause"),
        };
        for d in [&dirs.new, &dirs.cancel, &dirs.pause] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dir.path().join("a.toml"), "x").unwrap();
        std::fs::write(dirs.new.join("old.toml"), "x").unwrap();
        let (threads, _ended) = {
            let (tx, rx) = crossbeam_channel::unbounded();
            (
                Threads::new(move |s| {
                    let _ = tx.send(s);
                }),
                rx,
            )
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let watcher = start(&dirs, &threads, move |fs| {
            let _ = tx.send(fs);
        })
        .unwrap();
        // The daemon's own reads raise nothing.
        std::fs::read(dirs.new.join("old.toml")).unwrap();
        std::fs::rename(dir.path().join("a.toml"), dirs.new.join("a.toml")).unwrap();
        let soon = std::time::Duration::from_secs(10);
        assert_eq!(rx.recv_timeout(soon).unwrap(), Fs::Ready("a.toml".into()));
        threads.closing();
        drop(watcher);
        assert!(rx.try_recv().is_err());
    }
}
