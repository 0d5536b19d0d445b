//! Ending jobs on disk: records, requeued copies, the report, and deleting
//! a finished job.
//!
//! Owns [`Spool::finish_all`] (a group of records with their outputs and
//! files), [`Spool::requeue`], [`Spool::rewrite_record`],
//! [`Spool::write_report`] and [`Spool::delete_finished`]. Every file it
//! publishes is written whole before a rename puts it in place: in `.tmp/`
//! (the daemon's own folder), or, for a record, over the daemon's own copy
//! of the job in `running/` while the submission it copies is kept (see
//! [`Present::copy`]). Nothing it writes was ever a submitter's or a
//! task's file.
//!
//! Never decides how a job ends (the daemon did), and never writes through
//! `tmp/`, which submitters share.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::ledger::Ledger;
use super::{Spool, private, remove_any, rename_noreplace};
use crate::fsio::io_context;
use crate::record::Record;

/// What a finished job left in `running/`, as far as the commit knows:
/// what was never made is not moved (a silent task's absent outputs cost
/// two failed renames a job), and the daemon's copy of the job may become
/// the record. Outputs `true` when unknown.
#[derive(Debug, Clone, Copy)]
pub struct Present<'a> {
    /// `<id>.out`.
    pub out: bool,
    /// `<id>.err`.
    pub err: bool,
    /// The daemon's copy `running/<id>.toml`, open (its claim's lock),
    /// when its submission is still kept in `.tmp/`: its inode becomes
    /// the record (written over, then renamed into `done/`), which saves
    /// a file made and one removed a job. Only then: should the daemon
    /// die between the two, the kept submission runs again (see
    /// `private`), as after any crash before a record.
    pub copy: Option<&'a File>,
}

impl Default for Present<'_> {
    fn default() -> Self {
        Present {
            out: true,
            err: true,
            copy: None,
        }
    }
}

/// A record ready to be renamed into `done/`.
struct Staged {
    path: PathBuf,
    /// Whether it is the job's copy in `running/` (else a new file in
    /// `.tmp/`, removed when it cannot be placed).
    in_place: bool,
}

impl Spool {
    /// Ends jobs: freezes and moves each one's output and files into
    /// `done/`, writes its record (the commit point), then removes what is
    /// left in `running/`. A group commit: with `fsync = true`, one
    /// `syncfs(2)` makes every output and record durable before the
    /// renames that publish the records, and one fsync of `done/` makes
    /// the renames durable, however many jobs are in the batch. Returns,
    /// per record, whether it was written.
    /// `present[i]` says what record `i`'s job may have left (missing:
    /// anything).
    pub fn finish_all(
        &self,
        records: &[Record],
        present: &[Present],
        ledger: Option<&mut Ledger>,
    ) -> Vec<io::Result<()>> {
        let left = |i: usize| present.get(i).copied().unwrap_or_default();
        let staged: Vec<io::Result<Staged>> = records
            .iter()
            .enumerate()
            .map(|(i, r)| self.stage(r, left(i)))
            .collect();
        // Their lines before their renames (and before the group's
        // `syncfs`): a reader that sees a record sees its line.
        if let Some(ledger) = ledger {
            let placed: Vec<&Record> = records
                .iter()
                .zip(&staged)
                .filter(|(_, s)| s.is_ok())
                .map(|(r, _)| r)
                .collect();
            ledger.append(&placed, self.fsync);
        }
        if self.fsync {
            self.sync_fs();
        }
        let in_place: Vec<bool> = staged
            .iter()
            .map(|s| s.as_ref().is_ok_and(|s| s.in_place))
            .collect();
        let results: Vec<io::Result<()>> = records
            .iter()
            .zip(staged)
            .map(|(rec, staged)| {
                let staged = staged?;
                let dest = self.done_record(&rec.id);
                fs::rename(&staged.path, &dest).map_err(|e| {
                    if !staged.in_place {
                        let _ = fs::remove_file(&staged.path);
                    }
                    io_context("rename into place", &dest, e)
                })
            })
            .collect();
        if let Err(e) = self.sync_dir(&self.done_dir()) {
            crate::log!("{e}");
        }
        for (i, (rec, r)) in records.iter().zip(&results).enumerate() {
            if r.is_ok() {
                // Output and files were moved: only these can be left
                // (the job file too, unless it became the record).
                let _ = fs::remove_file(self.running_result(&rec.id));
                if !in_place[i] {
                    let _ = fs::remove_file(self.running_job(&rec.id));
                }
                self.remove_host(&rec.id);
            }
        }
        results
    }

    /// Moves a job's output and (frozen) files into `done/` and writes its
    /// record into `.tmp/`, ready to be renamed into place.
    fn stage(&self, record: &Record, present: Present) -> io::Result<Staged> {
        let id = record.id.as_str();
        for (from, to, _) in [
            (self.running_out(id), self.done_out(id), present.out),
            (self.running_err(id), self.done_err(id), present.err),
        ]
        .into_iter()
        .filter(|(_, _, there)| *there)
        {
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_context("move output", &from, e)),
            }
        }
        let removed = self.freeze_files(id)?;
        if !removed.is_empty() {
            crate::log!(
                "{id}: removed from its files (only regular files and folders are kept): {}",
                removed.join(", ")
            );
        }
        let files = self.running_files(id);
        let done_files = self.done_files(id);
        match fs::rename(&files, &done_files) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) if done_files.symlink_metadata().is_ok() => {
                // Left by an earlier attempt that crashed before its record.
                remove_any(&done_files)?;
                fs::rename(&files, &done_files)
                    .map_err(|e| io_context("move files folder", &files, e))?;
            }
            Err(e) => return Err(io_context("move files folder", &files, e)),
        }
        let text = record.to_toml().map_err(io::Error::other)?;
        if let Some(copy) = present.copy {
            match self.write_over_copy(id, copy, text.as_bytes()) {
                Ok(path) => {
                    return Ok(Staged {
                        path,
                        in_place: true,
                    });
                }
                Err(e) => crate::log!("{id}: the record goes into a new file: {e}"),
            }
        }
        // Not fsynced here: the group's syncfs covers every record at once.
        Ok(Staged {
            path: self.write_private(text.as_bytes(), "rec", false)?,
            in_place: false,
        })
    }

    /// Writes `bytes` over the job's copy `running/<id>.toml`, which must
    /// be the very file `copy` is (the daemon's own, one link): the record
    /// in the copy's inode, its holder mark gone.
    fn write_over_copy(&self, id: &str, copy: &File, bytes: &[u8]) -> io::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let path = self.running_job(id);
        // No O_TRUNC: nothing is cut before it is known to be the copy.
        let f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io_context("open", &path, e))?;
        let (at_name, ours) = (f.metadata()?, copy.metadata()?);
        if (at_name.dev(), at_name.ino()) != (ours.dev(), ours.ino()) || at_name.nlink() != 1 {
            return Err(io::Error::other(format!(
                "{} is no longer the daemon's copy",
                path.display()
            )));
        }
        f.set_len(0)
            .and_then(|()| (&f).write_all(bytes))
            .map_err(|e| io_context("write", &path, e))?;
        super::lease::clear_mark(&f);
        Ok(path)
    }

    /// Flushes the whole file system the spool is on (`syncfs(2)`).
    fn sync_fs(&self) {
        let dir = self.private_dir();
        match File::open(&dir) {
            // SAFETY: syncfs on a descriptor we own.
            Ok(d) => unsafe {
                use std::os::fd::AsRawFd;
                if libc::syncfs(d.as_raw_fd()) < 0 {
                    crate::log!(
                        "syncfs {}: {}",
                        self.root.display(),
                        io::Error::last_os_error()
                    );
                }
            },
            Err(e) => crate::log!("syncfs: cannot open {}: {e}", dir.display()),
        }
    }

    /// Replaces `dest` (a path only the daemon writes) with `bytes` in one
    /// rename from `.tmp/`.
    pub(super) fn write_replacing(&self, dest: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.write_private(bytes, "rec", self.fsync)?;
        fs::rename(&tmp, dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_context("rename into place", dest, e)
        })?;
        if let Some(dir) = dest.parent() {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    /// Replaces `report.html`. Never fsynced: it is rebuilt from state.
    pub fn write_report(&self, html: &[u8]) -> io::Result<()> {
        self.with_fsync(false)
            .write_replacing(&self.report_path(), html)
    }

    /// Rewrites an existing record (its `mail` field changes after mail).
    pub fn rewrite_record(&self, record: &Record) -> io::Result<()> {
        let path = self.done_record(&record.id);
        if path.symlink_metadata().is_err() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("rewrite {}: the record is gone", path.display()),
            ));
        }
        let text = record.to_toml().map_err(io::Error::other)?;
        self.write_replacing(&path, text.as_bytes())
    }

    /// Puts a job back into `new/<id>.toml` with the given text (a copy of
    /// the daemon's own), then removes its leftovers from `running/`. A
    /// requeued copy already there (another daemon's, or an earlier try's)
    /// is replaced; a submitter's file squatting the name is renamed aside
    /// (`<id>.toml~<random>`), where it is still a submission.
    pub fn requeue(&self, id: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.write_private(bytes, "job", self.fsync)?;
        let name = format!("{id}.toml");
        let dest = self.new_path(&name);
        let mut placed = Err(io::Error::other("requeue: no free name"));
        for _ in 0..10 {
            placed = match rename_noreplace(&tmp, &dest) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if Spool::is_own_file(&dest) {
                        fs::rename(&tmp, &dest)
                    } else {
                        self.move_aside(&name);
                        continue;
                    }
                }
                other => other,
            };
            break;
        }
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(io_context("rename into new/", &dest, e));
        }
        self.sync_dir(&self.new_dir())?;
        self.remove_running(id);
        Ok(())
    }

    /// Renames `new/<name>`, someone else's file, to `new/<name>~<random>`:
    /// out of the way of a job the daemon puts back under that name, and
    /// still a submission.
    fn move_aside(&self, name: &str) {
        let from = self.new_path(name);
        let aside = format!("{name}~{}", &private::random_hex()[..8]);
        match rename_noreplace(&from, &self.new_path(&aside)) {
            Ok(()) => crate::log!("new/{name}: moved aside to new/{aside}"),
            Err(e) => crate::log!("new/{name}: cannot move it aside: {e}"),
        }
    }

    /// Removes a job's files from `running/`, the job file last.
    pub(super) fn remove_running(&self, id: &str) {
        let _ = fs::remove_file(self.running_out(id));
        let _ = fs::remove_file(self.running_err(id));
        let _ = fs::remove_file(self.running_result(id));
        let _ = remove_any(&self.running_files(id));
        let _ = fs::remove_file(self.running_job(id));
        self.remove_host(id);
    }

    /// Deletes a finished job: its record, output and files.
    pub fn delete_finished(&self, id: &str) -> io::Result<()> {
        let _ = fs::remove_file(self.done_out(id));
        let _ = fs::remove_file(self.done_err(id));
        remove_any(&self.done_files(id))?;
        match fs::remove_file(self.done_record(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_context("remove", &self.done_record(id), e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn records_and_requeued_copies_are_new_files_of_the_daemons_own() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        fs::write(spool.running_job("a"), "type = \"x\"\n").unwrap();
        let job_ino = fs::metadata(spool.running_job("a")).unwrap().ino();
        fs::write(spool.running_out("a"), "out").unwrap();
        let results = spool.finish_all(&[Record::new("a", "x", Status::Succeeded)], &[], None);
        assert!(results[0].is_ok());
        assert!(spool.names(&spool.running_dir()).unwrap().is_empty());
        assert_eq!(fs::read_to_string(spool.done_out("a")).unwrap(), "out");
        let rec = fs::metadata(spool.done_record("a")).unwrap();
        assert_ne!(rec.ino(), job_ino);
        assert_eq!(spool.read_record("a").unwrap().status, Status::Succeeded);

        // A requeue replaces a copy of the daemon's own; a file of someone
        // else under the name is moved aside, not lost. (As root, files
        // made here are the daemon's own: make one that is not.)
        fs::write(spool.running_job("b"), "type = \"x\"\n").unwrap();
        spool.requeue("b", b"type = \"x\"\nattempts = 1\n").unwrap();
        spool.requeue("b", b"type = \"x\"\nattempts = 2\n").unwrap();
        assert_eq!(
            fs::read_to_string(spool.new_path("b.toml")).unwrap(),
            "type = \"x\"\nattempts = 2\n"
        );
        fs::remove_file(spool.new_path("b.toml")).unwrap();
        fs::write(spool.new_path("b.toml"), "theirs").unwrap();
        fs::hard_link(spool.new_path("b.toml"), dir.path().join("second-link")).unwrap();
        spool.requeue("b", b"ours").unwrap();
        assert_eq!(
            fs::read_to_string(spool.new_path("b.toml")).unwrap(),
            "ours"
        );
        let names = spool.names(&spool.new_dir()).unwrap();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(spool.names(&spool.private_dir()).unwrap().is_empty());
    }

    /// A claimed job's copy becomes its record: the same inode, written
    /// over and renamed into `done/`, its holder mark gone; one that is no
    /// longer the copy at its name is left alone, and the record is a new
    /// file.
    #[test]
    fn a_claimed_copy_becomes_its_record_unless_it_was_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        fs::write(spool.new_path("c.toml"), "type = \"x\"\n").unwrap();
        let claim = match spool.claim("c.toml", "c", 100).unwrap() {
            super::super::ClaimOutcome::Claimed(c) => c,
            _ => panic!("not claimed"),
        };
        let copy = claim.hold.copy_with_claim().unwrap();
        let ino = copy.metadata().unwrap().ino();
        let rec = Record::new("c", "x", Status::Succeeded);
        let present = Present {
            out: false,
            err: false,
            copy: Some(copy),
        };
        assert!(spool.finish_all(&[rec], &[present], None)[0].is_ok());
        let done = fs::metadata(spool.done_record("c")).unwrap();
        assert_eq!(done.ino(), ino);
        assert_eq!(spool.read_record("c").unwrap().status, Status::Succeeded);
        assert!(!spool.running_job("c").exists());
        let mark =
            std::ffi::CString::new(spool.done_record("c").into_os_string().into_encoded_bytes())
                .unwrap();
        // SAFETY: a NUL-terminated path and name; no buffer (size query).
        let has_mark = unsafe {
            libc::lgetxattr(
                mark.as_ptr(),
                c"user.raccoond".as_ptr(),
                std::ptr::null_mut(),
                0,
            )
        };
        assert!(has_mark < 0, "the record kept its holder mark");
        spool.release(claim.hold);
        assert!(spool.names(&spool.private_dir()).unwrap().is_empty());

        // Swapped for another file (nobody but the daemon writes running/,
        // but a same-user task could): that file is not written.
        fs::write(spool.new_path("s.toml"), "type = \"x\"\n").unwrap();
        let claim = match spool.claim("s.toml", "s", 100).unwrap() {
            super::super::ClaimOutcome::Claimed(c) => c,
            _ => panic!("not claimed"),
        };
        fs::remove_file(spool.running_job("s")).unwrap();
        fs::write(spool.running_job("s"), "someone else's").unwrap();
        let other = fs::metadata(spool.running_job("s")).unwrap().ino();
        let present = Present {
            out: false,
            err: false,
            copy: claim.hold.copy_with_claim(),
        };
        let rec = Record::new("s", "x", Status::Succeeded);
        assert!(spool.finish_all(&[rec], &[present], None)[0].is_ok());
        assert_ne!(fs::metadata(spool.done_record("s")).unwrap().ino(), other);
        assert_eq!(spool.read_record("s").unwrap().status, Status::Succeeded);
    }
}
