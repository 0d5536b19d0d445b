//! Claiming: a submission out of `new/`, and the daemon's own copy of it
//! into `running/`.
//!
//! Owns [`Spool::claim`], what it hands back ([`Claim`], [`Refused`] and
//! the [`Hold`] that keeps either alive until its record is written) and
//! [`Spool::release`]. Whatever is at a name in `new/` is hostile: any
//! type, hard links, descriptors its submitter keeps open or locked, a
//! file swapped for another at any instant.
//!
//! The protocol, one step each:
//!
//! 1. Look at `new/<name>` without following it or blocking on it: only a
//!    regular file with one link and at most `max_job_bytes` is read
//!    (anything else, an [`Odd`], is not read at all: a hard link may be a
//!    file its submitter cannot read). A file that is still the very one
//!    the daemon read on its arrival, unchanged ([`Seen`]), is not read
//!    again: those bytes are what it holds.
//! 2. Copy what was read into a new file of the daemon's own in `.tmp/`,
//!    locked (the "alive" lock, on a read-only descriptor the task
//!    inherits; not fsynced: the submission is kept until the record is
//!    durable, see step 4), and rename it, never
//!    replacing, into `running/<id>.toml`. For a moment the job is in
//!    both folders; it is never in neither.
//! 3. `rename(new/<name> → .tmp/<id>.….claim)`: the rename decides which
//!    daemon has the submission (the name is gone for the others, who
//!    remove their copy). If what was taken is not the file that was read
//!    (swapped in between), the copy goes, and what was taken is looked
//!    at again where nobody else can touch it.
//! 4. The taken submission stays in `.tmp/` until the job's record (or
//!    requeued copy) is in place, then [`Spool::release`] removes it. A
//!    dead daemon's claims go back into `new/` unless their job went on
//!    (see `private`); a copy whose claim never happened is removed by
//!    recovery (the same text is still in `new/`).
//!
//! Architecture Invariant: no lock, descriptor or rename of a submitter
//! can hold a claim up: the claim takes no lock on the submitter's file,
//! and a file renamed away under it is simply gone.
//!
//! Never writes into a file it did not create, and never decides whether
//! the copied text is a job (the daemon parses it).

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::lease::CLAIMING;
use super::look::{Look, Odd, Peek, Seen, holds_exactly, look, odd, peek, same_inode};
use super::{Spool, private, remove_any, rename_noreplace};
use crate::fsio::{io_context, open_nofollow};
use crate::ids::fresh_id;

/// What keeps a job this daemon has claimed from being taken up again by
/// anyone (a recovering daemon, or this one after a crash) until its
/// record or requeued copy is in place. Dropped, it lets go of the lock and
/// leaves the taken submission in `.tmp/` (the next start puts it back
/// into `new/`): only [`Spool::release`] removes it.
#[derive(Default)]
pub struct Hold {
    /// The daemon's copy in `running/`, open read-only and locked: the
    /// task inherits it, so the lock lives as long as some process of the
    /// job does.
    lock: Option<Flock<File>>,
    /// What was taken out of `new/`, in `.tmp/`: removed once the record
    /// or requeued copy is in place.
    taken: Option<PathBuf>,
    /// When the job was submitted, as the claim found it (the
    /// submission's modification time) or recovery read it (the holder
    /// mark): the job file's own time is the lease's.
    written: Option<std::time::SystemTime>,
    /// Who submitted the job: the owner of the submitted file, as the
    /// claim's `fstat` found it (kept in the holder mark across a crash).
    /// `@submitter` types run as this user; cancels are checked against it.
    submitter: Option<u32>,
}

impl Hold {
    /// The uid of whoever submitted the job, when known.
    pub fn submitter(&self) -> Option<u32> {
        self.submitter
    }

    /// Sets who submitted the job: the daemon's own requeued copy says so
    /// in its `submitter` key, which the claim's `fstat` cannot see.
    pub fn set_submitter(&mut self, uid: u32) {
        self.submitter = Some(uid);
    }

    /// The daemon's copy of the job, when what it copies is still kept in
    /// `.tmp/`: then it may become the record (see `finish`).
    pub fn copy_with_claim(&self) -> Option<&File> {
        self.taken.as_ref()?;
        self.lock.as_deref()
    }

    /// The locked descriptor a task inherits; `None` when nothing is
    /// locked (a submission that was never copied).
    pub fn lock_fd(&self) -> Option<RawFd> {
        self.lock.as_ref().map(|l| l.as_raw_fd())
    }

    /// When the job was submitted as the claim found it (the holder mark
    /// in `running/` keeps it across a crash): what a recovery takes for
    /// `submitted` when the job file does not say.
    pub fn written(&self) -> Option<std::time::SystemTime> {
        self.written
    }

    /// The locked copy in `running/`, whose modification time is the
    /// job's lease: refreshed through it (see `lease`).
    pub fn refresh_lease(&self) -> io::Result<()> {
        match &self.lock {
            Some(l) => super::lease::refresh(l),
            None => Ok(()),
        }
    }

    /// Holding a job taken back from another host: the taken file, the
    /// lock to come.
    pub(super) fn taken_back(
        taken: PathBuf,
        written: Option<std::time::SystemTime>,
        submitter: Option<u32>,
    ) -> Hold {
        Hold {
            lock: None,
            taken: Some(taken),
            written,
            submitter,
        }
    }

    /// The lock on the new copy of a job taken back.
    pub(super) fn set_lock(&mut self, lock: Flock<File>) {
        self.lock = Some(lock);
    }

    /// Holding only a lock: a job found in `running/` by recovery,
    /// submitted at `written` as far as it knows.
    pub(super) fn locked(
        lock: Flock<File>,
        written: Option<std::time::SystemTime>,
        submitter: Option<u32>,
    ) -> Hold {
        Hold {
            lock: Some(lock),
            taken: None,
            written,
            submitter,
        }
    }
}

/// A job this daemon now owns: its copy is in `running/` and locked.
pub struct Claim {
    /// The id it runs under: the one asked for, or a fresh one when that
    /// was taken.
    pub id: String,
    /// The job file's bytes, as copied (at most one byte past the limit).
    pub bytes: Vec<u8>,
    /// The lock on the copy, and the taken submission.
    pub hold: Hold,
}

/// A submission that is no file the daemon may read as a job: taken out of
/// `new/`, never read, to be recorded as rejected and then removed.
pub struct Refused {
    /// The id its record gets.
    pub id: String,
    /// What it is.
    pub what: Odd,
    /// The taken entry, removed by [`Spool::release`] once the record is
    /// in place.
    pub hold: Hold,
}

pub enum ClaimOutcome {
    Claimed(Claim),
    Refused(Refused),
    /// Someone else took it, or it was deleted.
    Gone,
    /// Another daemon is claiming it at this moment: look again after the
    /// settle time (it will be gone).
    Busy,
}

impl Spool {
    /// Claims the submission at `new/<name>` for job `want` (or a fresh id
    /// when `want` is taken in `running/` or `done/`): copies a regular
    /// file into `running/<id>.toml` and takes the submission out of
    /// `new/`; anything else is taken out unread. `Err` leaves the
    /// submission where it was.
    pub fn claim(&self, name: &str, want: &str, max_bytes: u64) -> io::Result<ClaimOutcome> {
        self.claim_seen(name, want, max_bytes, None)
    }

    /// [`Spool::claim`], taking `seen`'s bytes instead of reading the file
    /// again when it is still the very file they were read from.
    pub fn claim_seen(
        &self,
        name: &str,
        want: &str,
        max_bytes: u64,
        seen: Option<&Seen>,
    ) -> io::Result<ClaimOutcome> {
        let from = self.new_path(name);
        let (read, bytes) = match peek(&from, max_bytes, seen)? {
            Peek::Gone => return Ok(ClaimOutcome::Gone),
            Peek::Odd => return self.take_odd(name, self.free_id(want), max_bytes),
            Peek::Read(file, bytes) => (file, bytes),
        };
        let mut id = want.to_string();
        if self.done_record(&id).symlink_metadata().is_ok() {
            id = fresh_id();
        } else if self.running_job(&id).symlink_metadata().is_ok() {
            if self.being_claimed(&id, &bytes) {
                return Ok(ClaimOutcome::Busy);
            }
            id = fresh_id();
        }
        let (copy, lock) = self.write_locked_copy(&bytes, false)?;
        if let Err(e) = rename_noreplace(&copy, &self.running_job(&id)) {
            let _ = fs::remove_file(&copy);
            return match e.kind() {
                // Another daemon placed its copy first: look again later.
                io::ErrorKind::AlreadyExists => Ok(ClaimOutcome::Busy),
                _ => Err(io_context(
                    "rename into running/",
                    &self.running_job(&id),
                    e,
                )),
            };
        }
        let taken = self.private_dir().join(private::claim_name(&id));
        if let Err(e) = fs::rename(&from, &taken) {
            // Someone else took it (or it was deleted): the copy goes.
            let _ = fs::remove_file(self.running_job(&id));
            drop(lock);
            return match e.kind() {
                io::ErrorKind::NotFound => Ok(ClaimOutcome::Gone),
                _ => Err(io_context("take", &from, e)),
            };
        }
        if same_inode(&read, &taken) {
            // Ours now: the holder mark says so to other hosts, and keeps
            // the submission's time for a recovery after a crash.
            let meta = read.metadata().ok();
            let written = meta.as_ref().and_then(|m| m.modified().ok());
            let submitter = meta.as_ref().map(std::os::unix::fs::MetadataExt::uid);
            self.write_host(&id, &lock, written, submitter);
            let hold = Hold {
                lock: Some(lock),
                taken: Some(taken),
                written,
                submitter,
            };
            return Ok(ClaimOutcome::Claimed(Claim { id, bytes, hold }));
        }
        // Swapped between the look and the rename: what was taken is
        // another submission, looked at again now that it cannot change.
        let _ = fs::remove_file(self.running_job(&id));
        drop(lock);
        self.claim_taken(taken, name, id, max_bytes)
    }

    /// Takes `new/<name>`, found to be no file to read, out of `new/`
    /// unread, and looks at it again where nobody else can touch it.
    fn take_odd(&self, name: &str, id: String, max_bytes: u64) -> io::Result<ClaimOutcome> {
        let from = self.new_path(name);
        let taken = self.private_dir().join(private::claim_name(&id));
        match fs::rename(&from, &taken) {
            Ok(()) => self.claim_taken(taken, name, id, max_bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ClaimOutcome::Gone),
            Err(e) => Err(io_context("take", &from, e)),
        }
    }

    /// A submission taken into `.tmp/` (as `taken`, named for `id`): a
    /// regular file is copied into `running/`, anything else refused.
    fn claim_taken(
        &self,
        taken: PathBuf,
        name: &str,
        mut id: String,
        max_bytes: u64,
    ) -> io::Result<ClaimOutcome> {
        let mut hold = Hold {
            lock: None,
            taken: Some(taken),
            written: None,
            submitter: None,
        };
        let looked = match &hold.taken {
            Some(t) => look(t, max_bytes),
            None => Err(io::ErrorKind::NotFound.into()),
        };
        let bytes = match looked {
            Ok(Look::Bytes(b)) => b,
            Ok(Look::Odd(what)) => return Ok(ClaimOutcome::Refused(Refused { id, what, hold })),
            Err(e) => {
                self.put_back(hold, name);
                return Err(e);
            }
        };
        let copied = self
            .write_locked_copy(&bytes, false)
            .and_then(|(copy, lock)| {
                self.publish(&copy, &mut id, Some(&mut hold))?;
                Ok(lock)
            });
        match copied {
            Ok(lock) => {
                let meta = hold
                    .taken
                    .as_ref()
                    .and_then(|t| fs::symlink_metadata(t).ok());
                let when = meta.as_ref().and_then(|m| m.modified().ok());
                hold.submitter = meta.as_ref().map(std::os::unix::fs::MetadataExt::uid);
                self.write_host(&id, &lock, when, hold.submitter);
                hold.written = when;
                hold.lock = Some(lock);
                Ok(ClaimOutcome::Claimed(Claim { id, bytes, hold }))
            }
            Err(e) => {
                self.put_back(hold, name);
                Err(e)
            }
        }
    }

    /// Takes an entry of `running/` that is no job file of a daemon (found
    /// by recovery) into `.tmp/`, to be recorded for job `id` and removed.
    pub(super) fn refuse_running(&self, name: &str, id: &str) -> io::Result<Option<Refused>> {
        let from = self.running_dir().join(name);
        let taken = self.private_dir().join(private::claim_name(id));
        match fs::rename(&from, &taken) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_context("take", &from, e)),
        }
        let meta = fs::symlink_metadata(&taken).map_err(|e| io_context("stat", &taken, e))?;
        let what = odd(&taken, &meta, u64::MAX)?.unwrap_or(Odd::Unreadable {
            why: "a file that changed while it was looked at",
        });
        Ok(Some(Refused {
            id: id.to_string(),
            what,
            hold: Hold {
                lock: None,
                taken: Some(taken),
                written: None,
                submitter: None,
            },
        }))
    }

    /// `want`, unless a job of that id is running or has a record: then a
    /// fresh id.
    fn free_id(&self, want: &str) -> String {
        let taken = self.running_job(want).symlink_metadata().is_ok()
            || self.done_record(want).symlink_metadata().is_ok();
        if taken { fresh_id() } else { want.to_string() }
    }

    /// Whether `running/<id>.toml` is another daemon's copy of this very
    /// submission, placed a moment ago: it is claiming it right now (and
    /// one of the two renames out of `new/` will fail). A job of that id
    /// that has been running for a while is another job: the submission
    /// then gets a fresh id.
    fn being_claimed(&self, id: &str, bytes: &[u8]) -> bool {
        let path = self.running_job(id);
        let Ok(Some((file, meta))) = crate::fsio::open_regular(&path) else {
            return false;
        };
        let young = meta
            .modified()
            .ok()
            .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < CLAIMING);
        young && holds_exactly(&file, meta.len(), bytes)
    }

    /// Renames a locked copy into `running/<id>.toml` without replacing
    /// anything: an id taken meanwhile (another daemon) gets a fresh one,
    /// and an entry already taken for the old id is renamed after the new
    /// one, so that a crash tells the right id. The copy is removed when
    /// it cannot be placed.
    fn publish(&self, copy: &Path, id: &mut String, hold: Option<&mut Hold>) -> io::Result<()> {
        let mut hold = hold;
        for _ in 0..100 {
            let dest = self.running_job(id);
            match rename_noreplace(copy, &dest) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    *id = fresh_id();
                    if let Some(h) = hold.as_deref_mut()
                        && let Some(taken) = h.taken.take()
                    {
                        let renamed = self.private_dir().join(private::claim_name(id));
                        h.taken = Some(match fs::rename(&taken, &renamed) {
                            Ok(()) => renamed,
                            Err(_) => taken,
                        });
                    }
                }
                Err(e) => {
                    let _ = fs::remove_file(copy);
                    return Err(io_context("rename into running/", &dest, e));
                }
            }
        }
        let _ = fs::remove_file(copy);
        Err(io::Error::other(
            "claim: could not find a free job id after 100 tries",
        ))
    }

    /// A job file of the daemon's own in `.tmp/`, locked through a
    /// read-only descriptor (the task inherits it: it must not be able to
    /// write it), fsynced when `sync`.
    ///
    /// A claim's copy needs no fsync: what it copies stays in `.tmp/`
    /// until the job's record or requeued copy is durable, and a start
    /// after a power cut puts it back into `new/` when the copy lost its
    /// text (see `private`). Only a copy that replaces the last one
    /// (`take_over`) must survive on its own.
    pub(super) fn write_locked_copy(
        &self,
        bytes: &[u8],
        sync: bool,
    ) -> io::Result<(PathBuf, Flock<File>)> {
        let copy = self.write_private(bytes, "job", sync)?;
        let locked = open_nofollow(&copy).and_then(|f| {
            Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into())
        });
        match locked {
            Ok(lock) => Ok((copy, lock)),
            Err(e) => {
                let _ = fs::remove_file(&copy);
                Err(io_context("lock", &copy, e))
            }
        }
    }

    /// Puts a taken submission back into `new/<name>` after a claim failed
    /// (the file system refused the copy): through a hard link when it can
    /// (which announces itself as created, not renamed in, so the daemon
    /// looks again only after the settle time), else by a rename. Left in
    /// `.tmp/` when both fail: the next start puts it back.
    fn put_back(&self, hold: Hold, name: &str) {
        let Some(taken) = hold.taken else {
            return;
        };
        let mut dest = self.new_path(name);
        for _ in 0..10 {
            let r = match fs::hard_link(&taken, &dest) {
                Ok(()) => fs::remove_file(&taken),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
                Err(_) => rename_noreplace(&taken, &dest),
            };
            match r {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    dest = self.new_path(&format!("{name}~{}", &private::random_hex()[..8]));
                }
                Err(e) => {
                    crate::log!("new/{name}: cannot put it back: {e}");
                    return;
                }
            }
        }
    }

    /// Whether the job file in `running/<id>.toml` is still the one `hold`
    /// locked: `false` once a daemon of another host took the job back
    /// (this daemon was cut off longer than its lease), so that the job
    /// gets no second record from here. A hold without a lock (a refused
    /// entry) is always ours.
    pub fn still_ours(&self, id: &str, hold: &Hold) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(lock) = &hold.lock else {
            return true;
        };
        match (lock.metadata(), fs::symlink_metadata(self.running_job(id))) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            // Cannot tell: the record is written, as before leases.
            (Err(_), _) => true,
            (Ok(_), Err(e)) => e.kind() != io::ErrorKind::NotFound,
        }
    }

    /// Lets go of a job whose record or requeued copy is in place: removes
    /// what was taken out of `new/` (a folder is renamed aside first, so
    /// that a removal cut short is never put back as a new submission),
    /// then the lock.
    pub fn release(&self, hold: Hold) {
        if let Some(taken) = &hold.taken {
            let gone = match fs::symlink_metadata(taken) {
                Ok(m) if m.is_dir() => {
                    let trash = self.private_dir().join(private::name("trash"));
                    fs::rename(taken, &trash)
                        .map_err(|e| io_context("remove", taken, e))
                        .and_then(|()| remove_any(&trash))
                }
                Ok(_) => fs::remove_file(taken).map_err(|e| io_context("remove", taken, e)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_context("stat", taken, e)),
            };
            if let Err(e) = gone {
                crate::log!("release: {e}");
            }
        }
        drop(hold.lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        (dir, spool)
    }

    fn claimed(outcome: ClaimOutcome) -> Claim {
        match outcome {
            ClaimOutcome::Claimed(c) => c,
            ClaimOutcome::Refused(r) => panic!("refused: {:?}", r.what),
            ClaimOutcome::Gone | ClaimOutcome::Busy => panic!("not claimed"),
        }
    }

    fn refused(outcome: ClaimOutcome) -> Refused {
        match outcome {
            ClaimOutcome::Refused(r) => r,
            ClaimOutcome::Claimed(c) => panic!("claimed {}", c.id),
            ClaimOutcome::Gone | ClaimOutcome::Busy => panic!("not refused"),
        }
    }

    #[test]
    fn a_claim_is_a_locked_copy_of_the_daemons_own_and_the_taken_file_goes_at_release() {
        let (_d, spool) = spool();
        let path = spool.new_path("j.toml");
        let mut kept = File::create(&path).unwrap();
        kept.write_all(b"type = \"x\"\n").unwrap();
        let theirs = kept.metadata().unwrap().ino();
        let c = claimed(spool.claim("j.toml", "j", 100).unwrap());
        assert_eq!((c.id.as_str(), &c.bytes[..]), ("j", &b"type = \"x\"\n"[..]));
        assert!(!path.exists());
        let copy = fs::metadata(spool.running_job("j")).unwrap();
        assert_ne!(copy.ino(), theirs);
        assert_eq!(copy.mode() & 0o777, 0o644);
        // Locked, through a descriptor that cannot write.
        let other = File::open(spool.running_job("j")).unwrap();
        assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_err());
        let fd = c.hold.lock_fd().unwrap();
        // SAFETY: reading the flags of a descriptor the claim owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
        // Writing through the submitter's descriptor changes nothing of ours.
        kept.write_all(b"forged").unwrap();
        assert_eq!(fs::read(spool.running_job("j")).unwrap(), b"type = \"x\"\n");
        assert_eq!(spool.names(&spool.private_dir()).unwrap().len(), 1);
        spool.release(c.hold);
        assert!(spool.names(&spool.private_dir()).unwrap().is_empty());
        // The same text under the same id, a moment after: another daemon
        // is claiming it. Another text: a fresh id.
        fs::write(spool.new_path("j.toml"), "type = \"x\"\n").unwrap();
        assert!(matches!(
            spool.claim("j.toml", "j", 100).unwrap(),
            ClaimOutcome::Busy
        ));
        assert!(spool.new_path("j.toml").exists());
        fs::write(spool.new_path("j.toml"), "again").unwrap();
        let c = claimed(spool.claim("j.toml", "j", 100).unwrap());
        assert_ne!(c.id, "j");
        assert!(matches!(
            spool.claim("j.toml", "j", 100).unwrap(),
            ClaimOutcome::Gone
        ));
    }

    /// What was read on arrival is taken only while the file is the very
    /// one, unchanged: any write since (or another file at the name) means
    /// it is read again. (The bytes given here differ from the file's only
    /// to show which were taken.)
    #[test]
    fn bytes_read_on_arrival_stand_only_for_an_unchanged_file() {
        let (_d, spool) = spool();
        let path = spool.new_path("r.toml");
        fs::write(&path, "type = \"x\"\n").unwrap();
        let seen = Seen::of(&fs::metadata(&path).unwrap(), b"as-read-xx\n".to_vec());
        let c = claimed(spool.claim_seen("r.toml", "r", 100, Some(&seen)).unwrap());
        assert_eq!(c.bytes, b"as-read-xx\n");
        spool.release(c.hold);

        fs::write(&path, "type = \"x\"\n").unwrap();
        let seen = Seen::of(&fs::metadata(&path).unwrap(), b"as-read-xx\n".to_vec());
        // Written again, the same length: its times moved (set here too,
        // so that a clock too coarse to tell the two writes apart cannot
        // hide the change).
        fs::write(&path, "type = \"y\"\n").unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
            .unwrap();
        let c = claimed(spool.claim_seen("r.toml", "r2", 100, Some(&seen)).unwrap());
        assert_eq!(c.bytes, b"type = \"y\"\n");
        spool.release(c.hold);

        // Another file at the name.
        fs::write(spool.new_path("s.toml"), "type = \"x\"\n").unwrap();
        let seen = Seen::of(
            &fs::metadata(spool.new_path("s.toml")).unwrap(),
            b"old-bytes!\n".to_vec(),
        );
        fs::remove_file(spool.new_path("s.toml")).unwrap();
        fs::write(spool.new_path("s.toml"), "type = \"z\"\n").unwrap();
        let c = claimed(spool.claim_seen("s.toml", "s", 100, Some(&seen)).unwrap());
        assert_eq!(c.bytes, b"type = \"z\"\n");
    }

    #[test]
    fn hard_links_large_files_and_odd_entries_are_refused_unread() {
        let (d, spool) = spool();
        let secret = d.path().join("secret");
        fs::write(&secret, "SECRET").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        fs::hard_link(&secret, spool.new_path("l.toml")).unwrap();
        fs::write(spool.new_path("big.toml"), "x".repeat(101)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", spool.new_path("s.toml")).unwrap();
        nix::unistd::mkfifo(&spool.new_path("f.toml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        fs::create_dir(spool.new_path("d.toml")).unwrap();
        let cases = [
            ("l.toml", Odd::HardLink { links: 2, size: 6 }),
            (
                "big.toml",
                Odd::TooLarge {
                    size: 101,
                    max: 100,
                },
            ),
            (
                "s.toml",
                Odd::Symlink {
                    target: "/etc/passwd".into(),
                },
            ),
            ("f.toml", Odd::Other { kind: "FIFO" }),
            ("d.toml", Odd::Other { kind: "directory" }),
        ];
        for (name, want) in cases {
            let r = refused(spool.claim(name, "x", 100).unwrap());
            assert_eq!(r.what, want, "{name}");
            assert!(
                spool
                    .names(&spool.new_dir())
                    .unwrap()
                    .iter()
                    .all(|n| n != name)
            );
            spool.release(r.hold);
        }
        assert!(spool.names(&spool.private_dir()).unwrap().is_empty());
        assert_eq!(fs::read_to_string(&secret).unwrap(), "SECRET");
        assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
        assert!(spool.names(&spool.running_dir()).unwrap().is_empty());
    }

    #[test]
    fn a_job_taken_back_by_another_host_is_no_longer_ours() {
        let (_d, spool) = spool();
        fs::write(spool.new_path("t.toml"), "type = \"x\"\n").unwrap();
        let c = claimed(spool.claim("t.toml", "t", 100).unwrap());
        assert!(spool.still_ours("t", &c.hold));
        // Another host's take-back: renamed away, a new copy in its place.
        fs::rename(spool.running_job("t"), spool.private_dir().join("gone")).unwrap();
        assert!(!spool.still_ours("t", &c.hold));
        fs::write(spool.running_job("t"), "type = \"x\"\n").unwrap();
        assert!(!spool.still_ours("t", &c.hold));
    }

    #[test]
    fn a_hold_dropped_without_release_leaves_the_taken_file_for_the_next_start() {
        let (_d, spool) = spool();
        fs::write(spool.new_path("k.toml"), "type = \"x\"\n").unwrap();
        let c = claimed(spool.claim("k.toml", "k", 100).unwrap());
        drop(c.hold);
        assert_eq!(spool.names(&spool.private_dir()).unwrap().len(), 1);
    }
}
