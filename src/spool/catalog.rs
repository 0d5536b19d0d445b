//! `types.json` on disk: the daemon's description of what it accepts
//! (its shape is [`crate::catalog`]), written and read.
//!
//! Owns writing it (the daemon, at start and on reload) and reading it
//! (the client), and telling whether the process that wrote it still runs.
//! Never decides what the description says.
//!
//! Invariant: the file is replaced in one rename from `.tmp/`, a folder
//! only the daemon can write: a submitter can neither plant nor swap the
//! temporary file, and a reader sees the old description or the new one,
//! never half of one. It is read without following a symlink, never from
//! a FIFO, and at most [`catalog::MAX_BYTES`] of it.

use std::io::{self, Read};
use std::path::PathBuf;

use super::Spool;
use super::private::process_start;
use crate::catalog::{self, Writer};
use crate::fsio::{io_context, open_regular};

impl Spool {
    fn catalog_path(&self) -> PathBuf {
        self.root.join(catalog::FILE)
    }

    /// Replaces `types.json` with `bytes`, in one rename from the
    /// daemon's own folder.
    pub fn write_catalog(&self, bytes: &[u8]) -> io::Result<()> {
        self.write_replacing(&self.catalog_path(), bytes)
    }

    /// The bytes of `types.json`; `None` when there is none (or it is not
    /// a regular file).
    pub fn read_catalog(&self) -> io::Result<Option<Vec<u8>>> {
        let path = self.catalog_path();
        let Some((file, _)) = open_regular(&path)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(catalog::MAX_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| io_context("read", &path, e))?;
        Ok(Some(bytes))
    }
}

/// This process, as the writer of a catalog.
pub fn this_writer() -> Writer {
    let pid = std::process::id();
    Writer {
        host: crate::ids::hostname(),
        pid,
        pid_start: i32::try_from(pid).ok().and_then(process_start),
    }
}

/// Whether a process of this host with this pid runs, and is the one that
/// started at `start` (clock ticks after boot) when that is known: a pid
/// alone may have been given to another process since.
pub fn writer_alive(pid: u32, start: Option<u64>) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match (start, process_start(pid)) {
        (Some(want), Some(now)) => want == now,
        (None, Some(_)) => true,
        // Not readable in /proc (hidepid): ask the kernel whether it exists.
        (_, None) => matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_replaced_whole_and_read_back_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        assert_eq!(spool.read_catalog().unwrap(), None);
        spool.write_catalog(b"{\"one\": 1}").unwrap();
        spool.write_catalog(b"{\"two\": 2}").unwrap();
        assert_eq!(spool.read_catalog().unwrap().unwrap(), b"{\"two\": 2}");
        assert!(
            spool.names(&spool.private_dir()).unwrap().is_empty(),
            "no temporary file is left"
        );
        std::fs::remove_file(spool.catalog_path()).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", spool.catalog_path()).unwrap();
        assert_eq!(spool.read_catalog().unwrap(), None);
    }

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_not() {
        let me = this_writer();
        assert!(me.pid_start.is_some());
        assert!(writer_alive(me.pid, me.pid_start));
        assert!(writer_alive(me.pid, None));
        assert!(!writer_alive(me.pid, me.pid_start.map(|s| s + 1)));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!writer_alive(pid, None), "a reaped child is gone");
    }
}
