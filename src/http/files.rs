//! Serving what jobs leave: their output (`/jobs/<id>/output|stderr`, and
//! `/done|running/<id>.out|.err`, the report's relative links) and the
//! files a task left (`/jobs/<id>/files/<name>`).
//!
//! Reads only, and only through [`spool::query`](crate::spool::query),
//! which opens files never through a symlink, never blocking on a FIFO,
//! never outside the job's own folder. It never builds a spool path and
//! never writes, renames or deletes anything; what is left here is HTTP:
//! which request names which output, the 404s' words, the content type.
//!
//! Invariants: an invalid id or file name is a 404, like a missing one
//! (the query never builds a path from either); a task's file is
//! served with `Content-Security-Policy: sandbox`, so an HTML file cannot
//! script this origin; output is sent as open files, only the length seen
//! when opened, because a running job's output grows.

use std::borrow::Cow;
use std::fs::File;

use super::{Answer, Api, Body, Reply, TEXT, internal, not_found};
use crate::ids;
use crate::mime;
use crate::spool::query::{Stage, Stream, valid_file_name};

impl Api {
    /// `GET /jobs/<id>/output|stderr`: the file while the job runs, then
    /// from `done/`; empty for a job that has none (yet).
    pub(super) fn stream(&self, id: &str, stream: Stream) -> Answer {
        let q = self.query();
        if let Some((file, meta)) = q.output(id, stream).map_err(internal)? {
            return Ok(file_reply(file, meta.len(), TEXT));
        }
        match q.find(id).map_err(internal)? {
            Some(_) => Ok(Reply::new(200, TEXT, "")),
            None => Err(not_found(format!("no job {id:?}"))),
        }
    }

    /// `GET /done/<id>.out` and friends: the report's links over HTTP. A
    /// job that printed nothing has no file: its link answers empty.
    pub(super) fn spool_output(&self, stage: Stage, name: &str) -> Answer {
        let dir = match stage {
            Stage::Running => "running",
            Stage::Done => "done",
        };
        let nope = || not_found(format!("no such file: /{dir}/{name}"));
        let (id, stream) = match (name.strip_suffix(".out"), name.strip_suffix(".err")) {
            (Some(id), _) => (id, Stream::Out),
            (_, Some(id)) => (id, Stream::Err),
            _ => return Err(nope()),
        };
        let q = self.query();
        match q.output_in(stage, id, stream).map_err(internal)? {
            Some((file, meta)) => Ok(file_reply(file, meta.len(), TEXT)),
            None if q.find(id).map_err(internal)?.is_some() => Ok(Reply::new(200, TEXT, "")),
            None => Err(nope()),
        }
    }

    /// `GET /jobs/<id>/files/<name>`: a file the task left, from
    /// `running/<id>.files/` while it runs, then from `done/<id>.files/`.
    pub(super) fn file(&self, id: &str, name: &str) -> Answer {
        // Checked here too, for the 404's words: the query refuses both.
        if !ids::valid_id(id) {
            return Err(not_found(format!("no job {id:?}")));
        }
        if !valid_file_name(name) {
            return Err(not_found(format!("no file {name:?}")));
        }
        match self.query().file(id, name).map_err(internal)? {
            Some((file, meta)) => Ok(file_reply(file, meta.len(), content_type(name))
                .header("Content-Security-Policy", "sandbox")),
            None => Err(not_found(format!("job {id:?} has no file {name:?}"))),
        }
    }
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
    fn the_files_served_are_named_by_one_visible_component() {
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
