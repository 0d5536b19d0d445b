//! Turns inotify events on `new/`, `cancel/` and `pause/` into what the
//! daemon acts on.
//!
//! Takes the spool's folders; gives [`Fs`] events through a callback, from
//! a thread of its own reading one inotify descriptor. It never opens,
//! reads or moves a file: deciding whether a file is complete is the
//! daemon's job. A file is *ready* when its writer closed it or it was
//! renamed in; a file merely *seen* (created, hard-linked) must be left
//! alone for a settle time first.
//!
//! Why inotify directly: each folder is watched for exactly the events
//! acted on. A general watcher also asks for opens, modifications and
//! attribute changes, so the daemon's own reads of every submission woke a
//! thread for nothing, twice a job.
//!
//! Invariant: dot-files are never reported (a submitter's drafts, by
//! convention); a rename within `new/` is reported once, as its arrival.
//! A name in `new/` that is not UTF-8 is reported as it is ([`Fs::RawName`]),
//! whatever happened to it: the daemon gives it a name first. Lost events
//! (the queue overflowed, a folder's watch went) are reported as
//! [`Fs::Overflow`]: the daemon lists the folders again.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::inotify::Inotify;

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

/// Which watched folder an event is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    New,
    Cancel,
    Pause,
}

impl Dir {
    /// What is watched in it (`IN_*` bits): only what [`translate`] acts
    /// on.
    fn mask(self) -> u32 {
        match self {
            Dir::New | Dir::Cancel => libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE,
            Dir::Pause => {
                libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO
            }
        }
    }
}

/// A running watch: its thread reads until the watcher is dropped.
pub struct Watcher {
    /// The thread's instance, through a descriptor of its own.
    inotify: Inotify,
    watches: Vec<i32>,
    /// Set when dropped: the thread ends at its next wake-up (removing the
    /// watches wakes it).
    stop: Arc<AtomicBool>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for wd in self.watches.drain(..) {
            self.inotify.unwatch(wd);
        }
    }
}

/// Starts watching on a thread that `spawn` starts (the daemon's
/// supervised spawn). The returned watcher stops when dropped.
pub fn start<F, S>(dirs: &Watched, send: F, spawn: S) -> io::Result<Watcher>
where
    F: Fn(Fs) + Send + 'static,
    S: FnOnce(Box<dyn FnOnce() + Send>) -> io::Result<()>,
{
    let ino = Inotify::new()?;
    let mut watches = Vec::new();
    let mut dir_of = Vec::new();
    for (path, dir) in [
        (&dirs.new, Dir::New),
        (&dirs.cancel, Dir::Cancel),
        (&dirs.pause, Dir::Pause),
    ] {
        let wd = ino.watch_folder(path, dir.mask())?;
        watches.push(wd);
        dir_of.push((wd, dir));
    }
    let inotify = ino.try_clone()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    spawn(Box::new(move || {
        let mut ino = ino;
        loop {
            let mut fds = [PollFd::new(ino.fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::NONE);
            let events = ino.drain();
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            match events {
                Ok(events) => {
                    for ev in events {
                        let dir = dir_of.iter().find(|(wd, _)| *wd == ev.wd).map(|(_, d)| *d);
                        let name = (!ev.name.is_empty()).then(|| OsStr::from_bytes(&ev.name));
                        if let Some(fs) = translate(dir, ev.mask, name) {
                            send(fs);
                        }
                    }
                }
                Err(e) => {
                    crate::log!("watch: {e}");
                    send(Fs::Overflow);
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    }))?;
    Ok(Watcher {
        inotify,
        watches,
        stop,
    })
}

/// What one inotify event (`IN_*` bits in `mask`) in `dir` (`None`: no
/// folder of ours) means. Pure.
fn translate(dir: Option<Dir>, mask: u32, name: Option<&OsStr>) -> Option<Fs> {
    // Events were dropped, or a folder's watch is gone (removed,
    // unmounted): whatever happened meanwhile is found by listing.
    if mask & (libc::IN_Q_OVERFLOW | libc::IN_IGNORED | libc::IN_UNMOUNT) != 0 {
        return Some(Fs::Overflow);
    }
    let raw = name?;
    if raw.as_bytes().first() == Some(&b'.') {
        return None;
    }
    let arrived = mask & (libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) != 0;
    let created = mask & libc::IN_CREATE != 0;
    match dir? {
        // Every arrival and departure counts: the folder is listed again.
        Dir::Pause => (mask & Dir::Pause.mask() != 0).then_some(Fs::Pause),
        Dir::Cancel => {
            let name = raw.to_str()?;
            (arrived || created).then(|| Fs::Cancel(name.to_string()))
        }
        Dir::New => match raw.to_str() {
            None if arrived || created => Some(Fs::RawName(raw.into())),
            None => None,
            Some(name) if arrived => Some(Fs::Ready(name.to_string())),
            Some(name) if created => Some(Fs::Seen(name.to_string())),
            Some(_) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_and_rename_make_a_file_ready_create_only_seen() {
        let os = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
        // folder, IN_* bits, name, what it means
        type Case = (Option<Dir>, u32, Option<OsString>, Option<Fs>);
        let cases: Vec<Case> = vec![
            (
                Some(Dir::New),
                libc::IN_CLOSE_WRITE,
                Some(os(b"a.toml")),
                Some(Fs::Ready("a.toml".into())),
            ),
            (
                Some(Dir::New),
                libc::IN_MOVED_TO,
                Some(os(b"b.toml")),
                Some(Fs::Ready("b.toml".into())),
            ),
            (
                Some(Dir::New),
                libc::IN_CREATE,
                Some(os(b"c.toml")),
                Some(Fs::Seen("c.toml".into())),
            ),
            (
                Some(Dir::New),
                libc::IN_CREATE | libc::IN_ISDIR,
                Some(os(b"d")),
                Some(Fs::Seen("d".into())),
            ),
            (Some(Dir::New), libc::IN_CREATE, Some(os(b".part")), None),
            (Some(Dir::New), libc::IN_MOVED_TO, Some(os(b".part")), None),
            // A rename out of new/ (a claim) is nothing to act on.
            (
                Some(Dir::New),
                libc::IN_MOVED_FROM,
                Some(os(b"c.toml")),
                None,
            ),
            (Some(Dir::New), libc::IN_MODIFY, Some(os(b"c.toml")), None),
            (
                Some(Dir::Cancel),
                libc::IN_CREATE,
                Some(os(b"job-1")),
                Some(Fs::Cancel("job-1".into())),
            ),
            (
                Some(Dir::Cancel),
                libc::IN_MOVED_TO,
                Some(os(b"job-2")),
                Some(Fs::Cancel("job-2".into())),
            ),
            (
                Some(Dir::Cancel),
                libc::IN_CREATE,
                Some(os(b".job-1")),
                None,
            ),
            (Some(Dir::Cancel), libc::IN_CREATE, Some(os(b"\xff")), None),
            (None, libc::IN_CREATE, Some(os(b"x")), None),
            (
                Some(Dir::Pause),
                libc::IN_CREATE,
                Some(os(b"build")),
                Some(Fs::Pause),
            ),
            (
                Some(Dir::Pause),
                libc::IN_DELETE,
                Some(os(b"ALL")),
                Some(Fs::Pause),
            ),
            (
                Some(Dir::Pause),
                libc::IN_MOVED_FROM,
                Some(os(b"build")),
                Some(Fs::Pause),
            ),
            (
                Some(Dir::Pause),
                libc::IN_CLOSE_WRITE,
                Some(os(b"build")),
                None,
            ),
            (Some(Dir::Pause), libc::IN_DELETE, Some(os(b".x")), None),
            (
                Some(Dir::New),
                libc::IN_MOVED_TO,
                Some(os(b"caf\xe9.toml")),
                Some(Fs::RawName(os(b"caf\xe9.toml"))),
            ),
            (
                Some(Dir::New),
                libc::IN_CREATE | libc::IN_ISDIR,
                Some(os(b"\xff")),
                Some(Fs::RawName(os(b"\xff"))),
            ),
            (Some(Dir::New), libc::IN_CREATE, Some(os(b".\xff")), None),
            // Lost events, or a watch that went: list again.
            (None, libc::IN_Q_OVERFLOW, None, Some(Fs::Overflow)),
            (Some(Dir::New), libc::IN_IGNORED, None, Some(Fs::Overflow)),
            (
                Some(Dir::Cancel),
                libc::IN_UNMOUNT,
                None,
                Some(Fs::Overflow),
            ),
            (Some(Dir::New), libc::IN_CLOSE_WRITE, None, None),
        ];
        for (dir, mask, name, want) in cases {
            assert_eq!(
                translate(dir, mask, name.as_deref()),
                want,
                "{dir:?} {mask:?} {name:?}"
            );
        }
    }

    #[test]
    fn a_watcher_reports_arrivals_and_stops_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let dirs = Watched {
            new: d.path().join("new"),
            cancel: d.path().join("cancel"),
            pause: d.path().join("pause"),
        };
        for p in [&dirs.new, &dirs.cancel, &dirs.pause] {
            std::fs::create_dir(p).unwrap();
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let w = start(
            &dirs,
            move |fs| {
                let _ = tx.send(fs);
            },
            move |f| {
                std::thread::spawn(move || {
                    f();
                    let _ = done_tx.send(());
                });
                Ok(())
            },
        )
        .unwrap();
        std::fs::write(d.path().join("j.toml"), "x").unwrap();
        std::fs::rename(d.path().join("j.toml"), dirs.new.join("j.toml")).unwrap();
        std::fs::write(dirs.cancel.join("k"), "").unwrap();
        // The daemon's own reads of a submission wake nobody.
        let _ = std::fs::read(dirs.new.join("j.toml")).unwrap();
        std::fs::write(dirs.pause.join("ALL"), "").unwrap();
        // Until the last arrival (a created-then-closed cancel file says
        // so twice: the daemon takes a cancel once).
        let mut got: Vec<Fs> = Vec::new();
        while got.last() != Some(&Fs::Pause) {
            got.push(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap());
        }
        got.dedup();
        assert_eq!(
            got,
            [
                Fs::Ready("j.toml".into()),
                Fs::Cancel("k".into()),
                Fs::Pause
            ],
        );
        drop(w);
        done_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        assert!(rx.try_recv().is_err(), "nothing after the arrivals");
    }
}
