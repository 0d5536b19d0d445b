//! Turns inotify events on `new/`, `cancel/` and `pause/` into what the
//! daemon acts on.
//!
//! Takes the spool's folders; gives [`Fs`] events through a callback, from
//! notify's own thread. It never opens, reads or moves a file: deciding
//! whether a file is complete is the daemon's job. A file is *ready* when
//! its writer closed it or it was renamed in; a file merely *seen* (created,
//! hard-linked) must be left alone for a settle time first.
//!
//! Invariant: dot-files are never reported (a submitter's drafts, by
//! convention); a rename within `new/` is reported once, as its arrival.
//! A name in `new/` that is not UTF-8 is reported as it is ([`Fs::RawName`]),
//! whatever happened to it: the daemon gives it a name first.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

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

/// Starts watching. The returned watcher stops when dropped.
pub fn start<F>(dirs: &Watched, send: F) -> notify::Result<RecommendedWatcher>
where
    F: Fn(Fs) + Send + 'static,
{
    let w = dirs.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else {
            send(Fs::Overflow);
            return;
        };
        if event.need_rescan() {
            send(Fs::Overflow);
            return;
        }
        for fs in translate(&event, &w) {
            send(fs);
        }
    })?;
    for dir in [&dirs.new, &dirs.cancel, &dirs.pause] {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

fn translate(event: &notify::Event, dirs: &Watched) -> Vec<Fs> {
    let (new_dir, cancel_dir) = (dirs.new.as_path(), dirs.cancel.as_path());
    let mut out = Vec::new();
    // A rename within a watched folder reports From, To and Both; To alone
    // is enough (and the only one when the source is not watched).
    // In pause/ every arrival and departure counts, whatever its kind:
    // the folder is listed again.
    let in_pause = |p: &&PathBuf| p.parent() == Some(dirs.pause.as_path());
    if event.paths.iter().any(|p| in_pause(&p)) {
        let visible = event.paths.iter().filter(in_pause).any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        });
        if visible
            && matches!(
                event.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(ModifyKind::Name(_))
            )
        {
            out.push(Fs::Pause);
        }
        return out;
    }
    let target = match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => event.paths.first(),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => return out,
        _ => event.paths.first(),
    };
    let Some(path) = target else {
        return out;
    };
    let (Some(dir), Some(raw)) = (path.parent(), path.file_name()) else {
        return out;
    };
    if raw.as_bytes().first() == Some(&b'.') {
        return out;
    }
    let Some(name) = raw.to_str() else {
        let arrived = matches!(
            event.kind,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Modify(ModifyKind::Name(RenameMode::To))
                | EventKind::Create(_)
        );
        if dir == new_dir && arrived {
            out.push(Fs::RawName(raw.to_os_string()));
        }
        return out;
    };
    let name = name.to_string();
    if dir == new_dir {
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => out.push(Fs::Ready(name)),
            EventKind::Create(
                CreateKind::File | CreateKind::Folder | CreateKind::Other | CreateKind::Any,
            ) => out.push(Fs::Seen(name)),
            _ => {}
        }
    } else if dir == cancel_dir {
        match event.kind {
            EventKind::Create(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => out.push(Fs::Cancel(name)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::Event;

    fn ev(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn close_and_rename_make_a_file_ready_create_only_seen() {
        let dirs = Watched {
            new: "/s/new".into(),
            cancel: "/s/cancel".into(),
            pause: "/s/pause".into(),
        };
        let cases = [
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    "/s/new/a.toml",
                ),
                vec![Fs::Ready("a.toml".into())],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                    "/s/new/b.toml",
                ),
                vec![Fs::Ready("b.toml".into())],
            ),
            (
                ev(EventKind::Create(CreateKind::File), "/s/new/c.toml"),
                vec![Fs::Seen("c.toml".into())],
            ),
            (
                ev(EventKind::Create(CreateKind::File), "/s/new/.part"),
                vec![],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any)),
                    "/s/new/c.toml",
                ),
                vec![],
            ),
            (
                ev(EventKind::Create(CreateKind::File), "/s/cancel/job-1"),
                vec![Fs::Cancel("job-1".into())],
            ),
            (
                ev(EventKind::Create(CreateKind::File), "/s/elsewhere/x"),
                vec![],
            ),
            (
                ev(EventKind::Create(CreateKind::File), "/s/pause/build"),
                vec![Fs::Pause],
            ),
            (
                ev(
                    EventKind::Remove(notify::event::RemoveKind::File),
                    "/s/pause/ALL",
                ),
                vec![Fs::Pause],
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                    "/s/pause/build",
                ),
                vec![Fs::Pause],
            ),
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    "/s/pause/build",
                ),
                vec![],
            ),
        ];
        let raw = |b: &[u8]| {
            let mut p = PathBuf::from("/s/new");
            p.push(std::ffi::OsStr::from_bytes(b));
            p
        };
        let cases = cases.into_iter().chain([
            (
                Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::To)))
                    .add_path(raw(b"caf\xe9.toml")),
                vec![Fs::RawName(
                    std::ffi::OsStr::from_bytes(b"caf\xe9.toml").into(),
                )],
            ),
            (
                Event::new(EventKind::Create(CreateKind::Folder)).add_path(raw(b"\xff")),
                vec![Fs::RawName(std::ffi::OsStr::from_bytes(b"\xff").into())],
            ),
            (
                Event::new(EventKind::Create(CreateKind::File)).add_path(raw(b".\xff")),
                vec![],
            ),
        ]);
        for (event, want) in cases {
            assert_eq!(translate(&event, &dirs), want, "{event:?}");
        }
    }
}
