//! Serving what jobs leave: their output (`/jobs/<id>/output|stderr`, and
//! `/done|running/<id>.out|.err`, the report's relative links) and the
//! files a task left (`/jobs/<id>/files/<name>`).
//!
//! Reads only, and only through [`fsio`]: never through a symlink, never
//! blocking on a FIFO, never outside the job's own folder. It never
//! writes, renames or deletes anything.
//!
//! Invariants: an id or a file name is checked before any path is built
//! from it (an invalid one is a 404, like a missing one); a task's file is
//! served with `Content-Security-Policy: sandbox`, so an HTML file cannot
//! script this origin; output is sent as open files, only the length seen
//! when opened, because a running job's output grows.

use std::borrow::Cow;
use std::fs::File;

use super::{Answer, Api, Body, Reply, TEXT, internal, not_found};
use crate::fsio;
use crate::ids;
use crate::mime;

impl Api {
    /// `GET /jobs/<id>/output|stderr`: the file while the job runs, then
    /// from `done/`; empty for a job that has none (yet).
    pub(super) fn stream(&self, id: &str, stderr: bool) -> Answer {
        if !ids::valid_id(id) {
            return Err(not_found(format!("no job {id:?}")));
        }
        let (running, done) = if stderr {
            (self.spool.running_err(id), self.spool.done_err(id))
        } else {
            (self.spool.running_out(id), self.spool.done_out(id))
        };
        for path in [running, done] {
            if let Some((file, meta)) = fsio::open_regular(&path).map_err(internal)? {
                return Ok(file_reply(file, meta.len(), TEXT));
            }
        }
        match self.find(id)? {
            Some(_) => Ok(Reply::new(200, TEXT, "")),
            None => Err(not_found(format!("no job {id:?}"))),
        }
    }

    /// `GET /done/<id>.out` and friends: the report's links over HTTP.
    pub(super) fn spool_output(&self, dir: &str, name: &str) -> Answer {
        let nope = || not_found(format!("no such file: /{dir}/{name}"));
        let (id, err) = match (name.strip_suffix(".out"), name.strip_suffix(".err")) {
            (Some(id), _) => (id, false),
            (_, Some(id)) => (id, true),
            _ => return Err(nope()),
        };
        if !ids::valid_id(id) {
            return Err(nope());
        }
        let path = match (dir, err) {
            ("running", false) => self.spool.running_out(id),
            ("running", true) => self.spool.running_err(id),
            (_, false) => self.spool.done_out(id),
            (_, true) => self.spool.done_err(id),
        };
        match fsio::open_regular(&path).map_err(internal)? {
            Some((file, meta)) => Ok(file_reply(file, meta.len(), TEXT)),
            None => Err(nope()),
        }
    }

    /// `GET /jobs/<id>/files/<name>`: a file the task left, from
    /// `running/<id>.files/` while it runs, then from `done/<id>.files/`.
    pub(super) fn file(&self, id: &str, name: &str) -> Answer {
        if !ids::valid_id(id) {
            return Err(not_found(format!("no job {id:?}")));
        }
        if !valid_file_name(name) {
            return Err(not_found(format!("no file {name:?}")));
        }
        for dir in [self.spool.running_files(id), self.spool.done_files(id)] {
            if let Some((file, meta)) = fsio::open_regular_in(&dir, name).map_err(internal)? {
                let reply = file_reply(file, meta.len(), content_type(name))
                    .header("Content-Security-Policy", "sandbox");
                return Ok(reply);
            }
        }
        Err(not_found(format!("job {id:?} has no file {name:?}")))
    }
}

/// A name a task may have given a file: one path component, not hidden.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.bytes().any(|b| b == b'/' || b == 0)
}

/// The content type a task's file is served with: its media type, with
/// `charset=utf-8` when it is text.
fn content_type(name: &str) -> Cow<'static, str> {
    let media = mime::of(name);
    if mime::is_text(media) {
        Cow::Owned(format!("{media}; charset=utf-8"))
    } else {
        Cow::Borrowed(media)
    }
}

/// `len` bytes of an open file (its size when it was opened).
fn file_reply(file: File, len: u64, content_type: impl Into<Cow<'static, str>>) -> Reply {
    Reply {
        status: 200,
        content_type: content_type.into(),
        body: Body::File(file, len),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_one_visible_component() {
        for ok in ["report.pdf", "a", "x..y", "résumé.txt"] {
            assert!(valid_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "/etc/passwd",
            "a\0b",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn text_files_are_served_as_utf_8() {
        for (name, want) in [
            ("R.PDF", "application/pdf"),
            ("noext", "application/octet-stream"),
            ("a.csv", "text/csv; charset=utf-8"),
            ("r.json", "application/json; charset=utf-8"),
            ("chart.png", "image/png"),
        ] {
            assert_eq!(content_type(name), want, "{name}");
        }
    }
}
