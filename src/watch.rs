//! Turns inotify events on `new/`, `cancel/` and `pause/` into what the
//! daemon acts on.
//!
//! Takes the spool's folders; gives [`Fs`] events to whoever reads its one
//! inotify descriptor (the daemon's loop, which polls it beside its
//! mailbox: no thread stands between a submission and the loop). It never opens,
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
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

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

/// A watch on the folders: its descriptor becomes readable when something
/// happened; [`Watcher::read`] says what. Dropping it ends the watch.
pub struct Watcher {
    inotify: Inotify,
    /// Each watch and its folder.
    dir_of: Vec<(i32, Dir)>,
}

impl Watcher {
    /// Watches `dirs`.
    pub fn start(dirs: &Watched) -> io::Result<Watcher> {
        let inotify = Inotify::new()?;
        let mut dir_of = Vec::new();
        for (path, dir) in [
            (&dirs.new, Dir::New),
            (&dirs.cancel, Dir::Cancel),
            (&dirs.pause, Dir::Pause),
        ] {
            let wd = inotify.watch_folder(path, dir.mask())?;
            dir_of.push((wd, dir));
        }
        Ok(Watcher { inotify, dir_of })
    }

    /// Readable when there are events to [`read`](Watcher::read).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.fd()
    }

    /// What happened since the last read (nothing: never blocks). An error
    /// of the descriptor is [`Fs::Overflow`]: whatever it hid is found by
    /// listing.
    pub fn read(&mut self) -> Vec<Fs> {
        match self.inotify.drain() {
            Ok(events) => events
                .into_iter()
                .filter_map(|ev| {
                    let dir = self
                        .dir_of
                        .iter()
                        .find(|(wd, _)| *wd == ev.wd)
                        .map(|(_, d)| *d);
                    let name = (!ev.name.is_empty()).then(|| OsStr::from_bytes(&ev.name));
                    translate(dir, ev.mask, name)
                })
                .collect(),
            Err(e) => {
                crate::log!("watch: {e}");
                vec![Fs::Overflow]
            }
        }
    }
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
    fn a_watcher_reports_arrivals_and_not_the_daemons_reads() {
        let d = tempfile::tempdir().unwrap();
        let dirs = Watched {
            new: d.path().join("new"),
            cancel: d.path().join("cancel"),
            pause: d.path().join("pause"),
        };
        for p in [&dirs.new, &dirs.cancel, &dirs.pause] {
            std::fs::create_dir(p).unwrap();
        }
        let mut w = Watcher::start(&dirs).unwrap();
        assert!(w.read().is_empty(), "nothing before the arrivals");
        std::fs::write(d.path().join("j.toml"), "x").unwrap();
        std::fs::rename(d.path().join("j.toml"), dirs.new.join("j.toml")).unwrap();
        std::fs::write(dirs.cancel.join("k"), "").unwrap();
        // The daemon's own reads of a submission wake nobody.
        let _ = std::fs::read(dirs.new.join("j.toml")).unwrap();
        std::fs::write(dirs.pause.join("ALL"), "").unwrap();
        // Until the last arrival (a created-then-closed cancel file says
        // so twice: the daemon takes a cancel once).
        let mut got: Vec<Fs> = Vec::new();
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.last() != Some(&Fs::Pause) {
            assert!(std::time::Instant::now() < give_up, "only {got:?}");
            let mut fds = [nix::poll::PollFd::new(w.fd(), nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
            got.extend(w.read());
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
        assert!(w.read().is_empty(), "nothing after the arrivals");
    }
}
