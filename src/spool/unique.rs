//! Unique markers: at most one queued or running job per (type,
//! `unique`), decided atomically across daemons and HTTP submitters
//! sharing one spool (SPEC §13).
//!
//! A marker is `.unique/<type>/<key in hex>`, a small JSON file naming
//! its holder: the job's id, and the name and inode its file had in
//! `new/` (a claim's rename keeps the inode, so a holder is still known
//! when two daemons gave a file without an id of its own different fresh
//! ids). A submission takes the marker or is a duplicate of its holder,
//! under an exclusive `flock` of `.unique/<type>/.lock`, so that the look
//! and the write are one step for every daemon and HTTP thread:
//!
//! - no marker: it is written, naming the submission: taken;
//! - the marker names this very job (same id, or same inode): taken
//!   already (another daemon read the same file, or this one read it
//!   again);
//! - its holder is queued or running: a duplicate of the holder;
//! - its holder is finished or nowhere: stale, replaced.
//!
//! The marker is removed when its job ends (before its record is handed
//! to be written, so that no taker can meanwhile find the holder finished
//! and replace it), and renamed to the job's id when a claim gave the job
//! another id than the one it was queued under.
//!
//! `.unique/` is the daemon's: only it writes there. Members of the
//! spool's group may read a marker (folders 0755, markers 0644, inside a
//! spool only members enter): the client, which cannot take the lock,
//! asks [`Spool::unique_holder`] who holds a key and submits only when
//! nobody does; a submission that loses a race after that look is
//! rejected by the daemon as a duplicate.
//!
//! Invariant: the decision ([`decide`]) is pure and tested by table; a
//! marker is only ever replaced under the lock, and written whole (into
//! `.<hex>.new`, then renamed), so a reader never sees half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Spool;
use super::query::Located;
use crate::fsio::{io_context, open_regular};

/// The most bytes of a marker read: it holds an id, a name and a number.
const MAX_MARKER_BYTES: u64 = 4096;

/// A job holding a unique key, as its marker names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The job's id (as queued; renamed at its claim when that changed).
    pub id: String,
    /// Its file's name in `new/` when it was taken; empty when unknown.
    #[serde(default)]
    pub name: String,
    /// Its file's inode in `new/`; 0 when unknown (HTTP takes the marker
    /// before it writes the file).
    #[serde(default)]
    pub ino: u64,
}

impl Holder {
    /// Whether two holders are the same job: the same id, or the same
    /// file.
    fn same(&self, other: &Holder) -> bool {
        self.id == other.id || (self.ino != 0 && self.ino == other.ino)
    }
}

/// What a submission of a unique job comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// It holds the key (now, or already).
    Taken,
    /// Another queued or running job holds it: its id.
    Duplicate(String),
    /// Someone else is deciding for this type right now (only when asked
    /// not to wait): look again later.
    Busy,
}

/// What to do with a marker, from what it says (`None`: no readable
/// marker), who asks, and whether its holder is queued or running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Write a marker naming the submission (there is none, or a stale one).
    Write,
    /// The marker names this very job already.
    Keep,
    /// A duplicate of the holder.
    Duplicate(String),
}

/// The decision, pure: see the module's header.
pub fn decide(marker: Option<&Holder>, me: &Holder, holder_alive: bool) -> Verdict {
    match marker {
        None => Verdict::Write,
        Some(h) if h.same(me) => Verdict::Keep,
        Some(h) if holder_alive => Verdict::Duplicate(h.id.clone()),
        Some(_) => Verdict::Write,
    }
}

/// A key as a file name: its bytes in hex (at most 200 characters, as a
/// key has at most 100 bytes).
fn hex(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Spool {
    fn unique_dir(&self, kind: &str) -> io::Result<PathBuf> {
        if !crate::ids::valid_id(kind) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unique: {kind:?} is not a type name"),
            ));
        }
        Ok(self.root().join(".unique").join(kind))
    }

    /// Takes the key `(kind, key)` for `me`, or says who holds it. With
    /// `wait`, waits for another taker of the same type to finish (HTTP
    /// threads); without, answers [`Take::Busy`] instead (the daemon's
    /// loop never waits). `then` runs while the lock is still held, once
    /// the key is taken (HTTP writes the job into `new/` there); when it
    /// fails, a marker written for it is taken back.
    pub fn take_unique(
        &self,
        kind: &str,
        key: &str,
        me: &Holder,
        wait: bool,
        then: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<Take> {
        let dir = self.unique_dir(kind)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| io_context("create folder", &dir, e))?;
        let Some(_turn) = super::take_turn(&dir, wait)? else {
            return Ok(Take::Busy);
        };
        let path = dir.join(hex(key));
        let marker = read_marker(&path)?;
        let alive = marker.as_ref().is_some_and(|h| self.holds(h));
        match decide(marker.as_ref(), me, alive) {
            Verdict::Duplicate(id) => Ok(Take::Duplicate(id)),
            Verdict::Keep => {
                then()?;
                Ok(Take::Taken)
            }
            Verdict::Write => {
                self.write_marker(&dir, &path, me)?;
                if let Err(e) = then() {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
                Ok(Take::Taken)
            }
        }
    }

    /// Who holds `(kind, key)` now: the marker's job while it is queued or
    /// running. A look for readers (the client) who cannot take the lock:
    /// by the time it returns, the answer may have changed.
    pub fn unique_holder(&self, kind: &str, key: &str) -> io::Result<Option<String>> {
        let path = self.unique_dir(kind)?.join(hex(key));
        Ok(read_marker(&path)?.filter(|h| self.holds(h)).map(|h| h.id))
    }

    /// Lets go of the key a job held once it has ended: removes the marker
    /// when it still names `id`. Called before the job's record is handed
    /// to be written: a taker looking meanwhile finds its holder still in
    /// `running/` (alive), so no taker replaces the marker between this
    /// look and the removal, and no lock is needed.
    pub fn release_unique(&self, kind: &str, key: &str, id: &str) -> io::Result<()> {
        let path = self.unique_dir(kind)?.join(hex(key));
        match read_marker(&path)? {
            Some(h) if h.id == id => match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(io_context("remove", &path, e))
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// A claim gave the job holding `(kind, key)` through its file (inode
    /// `ino`) the id `id`: the marker names that id from now on, so that
    /// its holder is found once the file is no longer in `new/`.
    pub fn unique_claimed(&self, kind: &str, key: &str, ino: u64, id: &str) -> io::Result<()> {
        let dir = self.unique_dir(kind)?;
        let path = dir.join(hex(key));
        match read_marker(&path)? {
            Some(h) if ino != 0 && h.ino == ino && h.id != id => {
                let renamed = Holder {
                    id: id.to_string(),
                    ..h
                };
                self.write_marker(&dir, &path, &renamed)
            }
            _ => Ok(()),
        }
    }

    /// Whether a marker's holder is queued or running: its id found in
    /// `new/` or `running/`, else its file still in `new/`, else a file
    /// in `running/` with its inode (claimed under another id). A look
    /// that fails counts as alive: a duplicate refused is better than a
    /// duplicate run.
    fn holds(&self, h: &Holder) -> bool {
        match self.query(0).find(&h.id) {
            Ok(Some(Located::Queued { .. } | Located::Running { .. })) | Err(_) => return true,
            Ok(Some(Located::Finished(_))) => return false,
            Ok(None) => {}
        }
        if h.ino == 0 {
            return false;
        }
        let same = |p: &Path| p.symlink_metadata().is_ok_and(|m| m.ino() == h.ino);
        if crate::ids::id_from_name(&h.name).is_some() && same(&self.new_dir().join(&h.name)) {
            return true;
        }
        let running = self.root().join("running");
        self.names(&running).is_ok_and(|names| {
            names
                .iter()
                .filter(|n| n.ends_with(".toml"))
                .any(|n| same(&running.join(n)))
        })
    }

    /// Writes a marker whole: into `.<hex>.new`, then renamed over it.
    fn write_marker(&self, dir: &Path, path: &Path, h: &Holder) -> io::Result<()> {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.new"));
        let text = serde_json::to_string(h).map_err(io::Error::other)?;
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                if self.fsync {
                    f.sync_all()?;
                }
                Ok(())
            })
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_context("write", path, e));
        }
        if self.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_context("fsync folder", dir, e))?;
        }
        Ok(())
    }
}

/// A marker's holder; `None` when there is none, or it is not one (a
/// marker is written whole, so junk is someone else's: it holds nothing).
fn read_marker(path: &Path) -> io::Result<Option<Holder>> {
    let Some((file, _)) = open_regular(path)? else {
        return Ok(None);
    };
    let mut text = String::new();
    if file
        .take(MAX_MARKER_BYTES)
        .read_to_string(&mut text)
        .is_err()
    {
        return Ok(None);
    }
    Ok(serde_json::from_str(&text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(id: &str, ino: u64) -> Holder {
        Holder {
            id: id.into(),
            name: format!("{id}.toml"),
            ino,
        }
    }

    #[test]
    fn the_decision_takes_a_free_or_stale_key_and_keeps_a_live_one() {
        use Verdict::{Duplicate, Keep, Write};
        let cases = [
            (None, h("a", 1), false, Write),
            (Some(h("a", 1)), h("a", 1), true, Keep),
            // The same file under another fresh id (another daemon read it).
            (Some(h("x", 7)), h("y", 7), true, Keep),
            // The same id, read again after it was put back (a new inode).
            (Some(h("a", 1)), h("a", 2), true, Keep),
            (Some(h("a", 1)), h("b", 2), true, Duplicate("a".into())),
            (Some(h("a", 1)), h("b", 2), false, Write),
            // HTTP's marker names no inode: only the id tells.
            (Some(h("a", 0)), h("b", 0), true, Duplicate("a".into())),
        ];
        for (marker, me, alive, want) in cases {
            assert_eq!(
                decide(marker.as_ref(), &me, alive),
                want,
                "{marker:?} {me:?} {alive}"
            );
        }
    }

    #[test]
    fn a_key_is_held_while_its_job_is_queued_or_running_then_freed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let root = spool.root().to_path_buf();
        let ok = || Ok(());
        fs::write(root.join("new/a.toml"), "type = \"t\"\n").unwrap();
        let ino = fs::metadata(root.join("new/a.toml")).unwrap().ino();
        let a = h("a", ino);
        assert_eq!(
            spool.take_unique("t", "k", &a, true, ok).unwrap(),
            Take::Taken
        );
        assert_eq!(
            spool.take_unique("t", "k", &a, false, ok).unwrap(),
            Take::Taken
        );
        let b = h("b", 1);
        let dup = Take::Duplicate("a".into());
        assert_eq!(spool.take_unique("t", "k", &b, true, ok).unwrap(), dup);
        assert_eq!(spool.unique_holder("t", "k").unwrap().as_deref(), Some("a"));
        assert_eq!(spool.unique_holder("t", "nobody").unwrap(), None);
        // Another key, another type: free.
        assert_eq!(
            spool.take_unique("t", "l", &b, true, ok).unwrap(),
            Take::Taken
        );
        assert_eq!(
            spool.take_unique("s", "k", &b, true, ok).unwrap(),
            Take::Taken
        );
        // Claimed under another id: still held, through the inode, and
        // the marker follows the id.
        fs::rename(root.join("new/a.toml"), root.join("running/fresh.toml")).unwrap();
        assert_eq!(spool.take_unique("t", "k", &b, true, ok).unwrap(), dup);
        spool.unique_claimed("t", "k", ino, "fresh").unwrap();
        let dup = Take::Duplicate("fresh".into());
        assert_eq!(spool.take_unique("t", "k", &b, true, ok).unwrap(), dup);
        // Released by another id: kept. Released by its holder: free.
        spool.release_unique("t", "k", "a").unwrap();
        assert_eq!(spool.take_unique("t", "k", &b, true, ok).unwrap(), dup);
        spool.release_unique("t", "k", "fresh").unwrap();
        assert_eq!(
            spool.take_unique("t", "k", &b, true, ok).unwrap(),
            Take::Taken
        );
        // A stale marker (its holder finished) is replaced.
        fs::write(
            root.join("done/b.toml"),
            "id = \"b\"\ntype = \"t\"\nstatus = \"succeeded\"\n",
        )
        .unwrap();
        let c = h("c", 3);
        assert_eq!(
            spool.take_unique("t", "k", &c, true, ok).unwrap(),
            Take::Taken
        );
        // A failed write into new/ takes the marker back.
        let d = h("d", 4);
        fs::remove_file(root.join("done/b.toml")).unwrap();
        spool.release_unique("t", "k", "c").unwrap();
        let failed = spool.take_unique("t", "k", &d, true, || Err(io::Error::other("full")));
        assert!(failed.is_err());
        assert_eq!(
            spool.take_unique("t", "k", &c, true, ok).unwrap(),
            Take::Taken
        );
        assert!(spool.take_unique("../x", "k", &c, true, ok).is_err());
    }
}
