//! Tick markers: `.ticks/<schedule>/<stamp>`, the spool's memory of which
//! ticks of a schedule were fired, and the one step that decides which
//! daemon fires one.
//!
//! Owns the `.ticks/` folder: claiming a tick (creating its marker with
//! `O_CREAT | O_EXCL`), giving a claim back when its job could not be
//! submitted, listing a schedule's markers (the daemon, and the client's
//! "last fired"), and pruning all but the newest. Never decides *whether*
//! a tick is due (that is `schedule`) and never submits a job (the daemon
//! does, through [`Spool::submit`], once it holds the claim).
//!
//! Invariants:
//! - a marker is created by exactly one process: `O_EXCL` creation is
//!   atomic on local file systems and on NFSv4 (the server decides), so
//!   of several daemons sharing a spool exactly one gets `true` from
//!   [`Spool::claim_tick`] for a tick, whatever their clocks say; nothing
//!   here checks and then creates;
//! - with `fsync = true` the marker's folder is fsynced before the claim
//!   returns, so that a job submitted after it never outlives its marker
//!   in a power cut (a lost marker would let a later start submit the
//!   tick again);
//! - `.ticks/` is the daemon's own (SPEC §1: names that start with `.`):
//!   nobody else writes there; it is created when the first schedule
//!   fires, readable by the spool's group, and a name in it that is not a
//!   folder (a symlink) is never written through.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Spool;
use crate::fsio::io_context;
use crate::schedule::{self, Tick};

impl Spool {
    /// `.ticks/`: the markers of every schedule.
    fn ticks_root(&self) -> PathBuf {
        self.root.join(".ticks")
    }

    /// `.ticks/<schedule>/`, once the name is known to be a schedule's.
    fn ticks_dir(&self, schedule: &str) -> io::Result<PathBuf> {
        if !schedule::valid_name(schedule) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ticks: {schedule:?} is not a schedule name"),
            ));
        }
        Ok(self.ticks_root().join(schedule))
    }

    /// The ticks fired for a schedule (those whose markers are kept),
    /// oldest first; none when it never fired. Names that are not stamps
    /// are left out.
    pub fn fired_ticks(&self, schedule: &str) -> io::Result<Vec<Tick>> {
        let dir = self.ticks_dir(schedule)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_context("list", &dir, e)),
        };
        let mut ticks = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_context("list", &dir, e))?;
            if let Some(t) = entry.file_name().to_str().and_then(Tick::parse_stamp) {
                ticks.push(t);
            }
        }
        ticks.sort();
        Ok(ticks)
    }

    /// Claims a tick for this process: creates its marker, which fails if
    /// it exists. `true`: this call created it, and the caller submits the
    /// tick's job; `false`: someone did before.
    pub fn claim_tick(&self, schedule: &str, tick: Tick) -> io::Result<bool> {
        let dir = self.ticks_dir(schedule)?;
        self.ready_ticks_dir(&dir)?;
        let path = dir.join(tick.stamp());
        let made = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        match made {
            Ok(_) => {
                self.sync_dir(&dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_context("create", &path, e)),
        }
    }

    /// Gives a claimed tick back: its job could not be submitted, so the
    /// tick may be claimed again (by this daemon's retry or another).
    pub fn release_tick(&self, schedule: &str, tick: Tick) -> io::Result<()> {
        let path = self.ticks_dir(schedule)?.join(tick.stamp());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_context("remove", &path, e)),
            _ => Ok(()),
        }
    }

    /// Removes the markers of `fired` (as [`Spool::fired_ticks`] listed
    /// them) but the newest `keep`. A marker another daemon removed first
    /// is no error.
    pub fn prune_ticks(&self, schedule: &str, fired: &[Tick], keep: usize) -> io::Result<()> {
        let dir = self.ticks_dir(schedule)?;
        let old = fired.len().saturating_sub(keep);
        for t in &fired[..old] {
            let path = dir.join(t.stamp());
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_context("remove", &path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes sure `.ticks/` and a schedule's folder in it are folders
    /// (not links to elsewhere), creating them, readable by the spool's
    /// group, when missing. Two looks at the names per claim: a claim is
    /// made at most once a second per schedule.
    fn ready_ticks_dir(&self, dir: &Path) -> io::Result<()> {
        let root = self.ticks_root();
        for d in [root.as_path(), dir] {
            let meta = match fs::symlink_metadata(d) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match DirBuilder::new().mode(0o755).create(d) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                            return Err(io_context("create folder", d, e));
                        }
                        _ => {}
                    }
                    self.sync_dir(d.parent().unwrap_or(&self.root))?;
                    fs::symlink_metadata(d)
                }
                other => other,
            }
            .map_err(|e| io_context("stat", d, e))?;
            if !meta.is_dir() {
                return Err(io::Error::other(format!(
                    "{}: not a folder; the spool's .ticks/ is raccoond's own",
                    d.display()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(s: i64) -> Tick {
        Tick::from_secs(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn a_tick_is_claimed_once_released_and_pruned_to_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), true).unwrap();
        assert_eq!(spool.fired_ticks("s").unwrap(), []);
        assert!(spool.claim_tick("s", tick(0)).unwrap());
        assert!(!spool.claim_tick("s", tick(0)).unwrap(), "claimed twice");
        // Another handle (another daemon) on the same spool.
        let other = Spool::open(spool.root(), false).unwrap();
        assert!(!other.claim_tick("s", tick(0)).unwrap());
        assert!(other.claim_tick("s", tick(1)).unwrap());
        for s in 2..10 {
            assert!(spool.claim_tick("s", tick(s)).unwrap());
        }
        fs::write(spool.ticks_root().join("s").join("junk"), "").unwrap();
        let fired = spool.fired_ticks("s").unwrap();
        assert_eq!(fired, (0..10).map(tick).collect::<Vec<_>>());
        spool.prune_ticks("s", &fired, 3).unwrap();
        assert_eq!(spool.fired_ticks("s").unwrap(), [tick(7), tick(8), tick(9)]);
        // Pruning what a peer pruned already is no error.
        spool.prune_ticks("s", &fired, 3).unwrap();
        spool.release_tick("s", tick(9)).unwrap();
        spool.release_tick("s", tick(9)).unwrap();
        assert!(
            other.claim_tick("s", tick(9)).unwrap(),
            "released, claimable"
        );
        // Schedules are apart.
        assert!(spool.claim_tick("t", tick(9)).unwrap());
    }

    #[test]
    fn only_schedule_names_and_real_folders_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        for bad in ["", "..", "../new", "a/b", ".hidden"] {
            assert!(spool.claim_tick(bad, tick(0)).is_err(), "{bad:?}");
            assert!(spool.fired_ticks(bad).is_err(), "{bad:?}");
        }
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, spool.ticks_root()).unwrap();
        let e = spool.claim_tick("s", tick(0)).unwrap_err();
        assert!(e.to_string().contains("not a folder"), "{e}");
    }
}
