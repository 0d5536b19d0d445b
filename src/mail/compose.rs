//! The message for a finished job: who it is to, its subject, a plain
//! text body (status, times, what the task used, result, the tails of
//! stdout and stderr) and
//! the files the task left as attachments, within a budget.
//!
//! Reads only: the record it is given and the job's output and files in
//! `done/`, all through [`spool::query`](crate::spool::query) (output
//! tails through a bounded read, the files folder listed and each
//! attachment opened by name: never through a symlink, never blocking on
//! a FIFO, never past their planned size). It builds no spool path, never
//! writes, moves or deletes anything and never sends: the mail thread
//! hands the message to the transport. [`body`], [`plan_attachments`] and [`tail_lines`] are
//! pure and tested by table.
//!
//! Invariants: nothing a task or a submitter wrote can add a header (names
//! and text are cleaned, addresses parsed); a task that printed gigabytes
//! or left thousands of files costs no more than [`TAIL_BYTES`] per
//! output and [`MAX_ATTACHMENTS`] files; the same record gives the same
//! `Message-ID` on every attempt and after a restart.

use std::fmt::Write as _;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use lettre::Message;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};

use crate::config::MailConfig;
use crate::ids;
use crate::mime;
use crate::record::Record;
use crate::spool::Spool;
use crate::spool::query::{FileEntry, Query, Stage, Stream};
use crate::time::{self, format_duration};

/// Lines of stdout and stderr quoted in the body.
const TAIL_LINES: usize = 20;
/// The tail of an output file is read from at most this many last bytes,
/// so a task that printed gigabytes costs no more than one that printed a
/// line.
const TAIL_BYTES: u64 = 8 * 1024;
/// The result is quoted up to this many bytes; the record has all of it.
const RESULT_BYTES: usize = 16 * 1024;
/// At most this many files are attached, whatever their size: a task that
/// leaves thousands of small files must not make a message nobody can open.
const MAX_ATTACHMENTS: usize = 100;
/// At most this many left-out files are named in the body.
const MAX_LISTED: usize = 50;

/// `Auto-Submitted: auto-generated` (RFC 3834), so that vacation responders
/// do not answer the daemon.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// Writes messages from records and the files beside them.
pub(super) struct Composer {
    /// The sender, parsed once: `from` in `[mail]`; its domain names the
    /// `Message-ID`s.
    from: Mailbox,
    /// `max_attachment_bytes` in `[mail]`: the attachments' total.
    max_attachment_bytes: u64,
    /// Where a record's output and files are read from (`done/`).
    spool: Spool,
}

impl Composer {
    /// A composer for `[mail]`; a `from` that is not an address is an
    /// error here, so that the daemon refuses to start.
    pub(super) fn new(config: &MailConfig, spool: Spool) -> Result<Composer, String> {
        let from = config
            .from
            .parse()
            .map_err(|e| format!("from = {:?}: not a mail address ({e})", config.from))?;
        Ok(Composer {
            from,
            max_attachment_bytes: config.max_attachment_bytes,
            spool,
        })
    }

    /// The message for a record, read from `done/` as it is now. An `Err`
    /// is permanent: the same record would fail the same way.
    pub(super) fn compose(&self, rec: &Record) -> Result<Message, String> {
        // The id names files below done/: a record edited by hand must not
        // lead the mailer elsewhere.
        if !ids::valid_id(&rec.id) {
            return Err(format!("the record's id {:?} is not a valid id", rec.id));
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject(rec))
            .date_now()
            .message_id(Some(message_id(rec, self.from.email.domain())))
            .header(AutoSubmitted);
        if rec.email.is_empty() {
            return Err("the record has no email address".into());
        }
        for addr in &rec.email {
            let to: Mailbox = addr
                .parse()
                .map_err(|e| format!("email {addr:?}: not a valid address ({e})"))?;
            builder = builder.to(to);
        }

        // The mailer reads no job file: no bytes of one are needed.
        let q = self.spool.query(0);
        let id = rec.id.as_str();
        let out_path = q
            .output_path(Stage::Done, id, Stream::Out)
            .unwrap_or_default();
        let err_path = q
            .output_path(Stage::Done, id, Stream::Err)
            .unwrap_or_default();
        let stdout = tail_of(q.output_in(Stage::Done, id, Stream::Out));
        let stderr = tail_of(q.output_in(Stage::Done, id, Stream::Err));
        // A result taken from stdout is that same text: quote it once.
        let stdout_is_result = matches!(&rec.result, Some(toml::Value::String(s))
            if stdout.size == s.len() as u64 && !stdout.cut && stdout.raw == s.as_bytes());

        let (files, unlisted) = match q.files(id) {
            Ok(files) => (files, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let mut plan = plan_attachments(files, self.max_attachment_bytes, MAX_ATTACHMENTS);
        plan.unlisted = unlisted;
        let mut attachments = Vec::new();
        for f in std::mem::take(&mut plan.attach) {
            match read_attachment(&q, id, &f) {
                Ok(bytes) => attachments.push((f, bytes)),
                Err(e) => plan.left_out.push((f, LeftOut::Unreadable(e.to_string()))),
            }
        }
        plan.attach = attachments.iter().map(|(f, _)| f.clone()).collect();

        let outputs = Outputs {
            stdout: (&out_path, &stdout, stdout_is_result),
            stderr: (&err_path, &stderr),
        };
        let text = body(rec, &outputs, &plan, self.max_attachment_bytes);
        let result = if attachments.is_empty() {
            builder.singlepart(SinglePart::plain(text))
        } else {
            let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(text));
            for (f, bytes) in attachments {
                let kind = ContentType::parse(mime::of(&f.name))
                    .map_err(|e| format!("{}: {e}", f.name))?;
                // Base64 whatever the content: lettre would send a text file
                // as 7bit, and its line endings would not survive the trip.
                let body = Body::new_with_encoding(bytes, ContentTransferEncoding::Base64)
                    .unwrap_or_else(Body::new);
                parts = parts.singlepart(Attachment::new(f.name).body(body, kind));
            }
            builder.multipart(parts)
        };
        result.map_err(|e| format!("cannot write the message: {e}"))
    }
}

/// `[raccoond] <type> <id> <status>`.
fn subject(rec: &Record) -> String {
    format!("[raccoond] {} {} {}", rec.kind, rec.id, rec.status)
}

/// The same id on every attempt and after a restart, so that a receiver
/// can drop the copy a retry sends when the server had in fact taken the
/// first one.
fn message_id(rec: &Record, domain: &str) -> String {
    let finished = rec.finished_at().map_or(0, time::unix_millis);
    format!("<raccoond.{}.{finished}@{domain}>", rec.id)
}

/// The end of an output file.
#[derive(Debug, Default)]
struct Tail {
    /// The file's size; 0 when it is missing.
    size: u64,
    /// The last bytes read (at most [`TAIL_BYTES`]).
    raw: Vec<u8>,
    /// Whether the file goes on before `raw`.
    cut: bool,
    /// Why the file could not be read, when it exists but cannot be.
    error: Option<String>,
}

/// The tail of an output as the query opened it: none when there is no
/// regular file (missing, or a symlink or FIFO, never followed).
fn tail_of(opened: io::Result<Option<(File, Metadata)>>) -> Tail {
    let read = || -> io::Result<Tail> {
        let Some((file, meta)) = opened? else {
            return Ok(Tail::default());
        };
        read_tail(file, meta.len())
    };
    read().unwrap_or_else(|e| Tail {
        error: Some(e.to_string()),
        ..Tail::default()
    })
}

/// Reads at most the last [`TAIL_BYTES`] of a file of `size` bytes.
fn read_tail(mut f: File, size: u64) -> io::Result<Tail> {
    let start = size.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut raw = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut raw)?;
    Ok(Tail {
        size,
        raw,
        cut: start > 0,
        error: None,
    })
}

/// The last `n` lines of `raw`, as text fit for a mail body: a partial
/// first line (when the file was cut there) dropped, invalid UTF-8 and
/// control characters replaced. Also tells whether earlier lines exist.
fn tail_lines(raw: &[u8], cut: bool, n: usize) -> (Vec<String>, bool) {
    let text = String::from_utf8_lossy(raw);
    let mut text: &str = &text;
    let mut more = cut;
    if cut && let Some(nl) = text.find('\n') {
        text = &text[nl + 1..];
    }
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    if lines.len() > n {
        lines.drain(..lines.len() - n);
        more = true;
    }
    let clean = lines
        .into_iter()
        .map(|l| {
            l.strip_suffix('\r')
                .unwrap_or(l)
                .chars()
                .map(|c| {
                    if c.is_control() && c != '\t' {
                        '\u{fffd}'
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    (clean, more)
}

/// Why a file is not attached.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LeftOut {
    /// It would take the attachments past `max_attachment_bytes`.
    OverBudget,
    /// [`MAX_ATTACHMENTS`] files are attached already.
    TooMany,
    /// Not a regular file: never opened, never followed.
    NotRegular(&'static str),
    Unreadable(String),
}

/// What becomes of the files a task left.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// Attached, in name order.
    attach: Vec<FileEntry>,
    /// Named in the body, with why they are not attached.
    left_out: Vec<(FileEntry, LeftOut)>,
    /// Why the files folder could not be listed, when it could not.
    unlisted: Option<String>,
}

/// Which files to attach: regular files in name order, each while the
/// total stays within `budget` and the count within `max_files`; a file
/// too large for what is left is listed, and smaller ones after it may
/// still fit.
fn plan_attachments(mut files: Vec<FileEntry>, budget: u64, max_files: usize) -> Plan {
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut plan = Plan::default();
    let mut left = budget;
    for f in files {
        match f.other {
            Some(kind) => plan.left_out.push((f, LeftOut::NotRegular(kind))),
            None if plan.attach.len() >= max_files => plan.left_out.push((f, LeftOut::TooMany)),
            None if f.size <= left => {
                left -= f.size;
                plan.attach.push(f);
            }
            None => plan.left_out.push((f, LeftOut::OverBudget)),
        }
    }
    plan
}

/// Reads a regular file the plan chose: never through a symlink put in
/// its place since, never blocking on a FIFO, never past its planned size.
fn read_attachment(q: &Query, id: &str, f: &FileEntry) -> io::Result<Vec<u8>> {
    let Some((file, _)) = q.file(id, &f.name)? else {
        return Err(io::Error::other("no longer a regular file"));
    };
    let mut bytes = Vec::with_capacity(usize::try_from(f.size).unwrap_or(0));
    file.take(f.size).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The output files as the body quotes them: (path, tail, whether stdout
/// is already quoted as the result) and (path, tail).
struct Outputs<'a> {
    stdout: (&'a Path, &'a Tail, bool),
    stderr: (&'a Path, &'a Tail),
}

/// The plain-text body. Pure: everything it says comes from its arguments.
fn body(rec: &Record, out: &Outputs, plan: &Plan, budget: u64) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "Job {} (type {}) {}.",
        clean_name(&rec.id),
        clean_name(&rec.kind),
        rec.status
    );
    b.push('\n');
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(b, "{:<11} {}", format!("{name}:"), one_line(value));
    };
    field("Status", rec.status.as_str());
    if let Some(c) = rec.exit_code {
        field("Exit code", &c.to_string());
    }
    if let Some(s) = &rec.signal {
        field("Signal", s);
    }
    if let Some(e) = &rec.error {
        field("Error", e);
    }
    for (name, t) in [
        ("Submitted", &rec.submitted),
        ("Started", &rec.started),
        ("Finished", &rec.finished),
    ] {
        if let Some(t) = t {
            field(name, &t.to_string());
        }
    }
    if let Some(d) = rec.duration() {
        field("Duration", &format_duration(d));
    }
    if let Some(u) = &rec.usage {
        field("Used", &u.summary());
    }
    field("Attempts", &rec.attempts.to_string());

    if let Some(result) = &rec.result {
        let text = match result {
            toml::Value::String(s) => s.clone(),
            toml::Value::Table(t) => toml::to_string(t).unwrap_or_else(|_| result.to_string()),
            other => other.to_string(),
        };
        let from = if out.stdout.2 {
            " (the task's standard output)"
        } else {
            ""
        };
        let _ = writeln!(b, "\nResult{from}:");
        quote(
            &mut b,
            text.as_bytes(),
            RESULT_BYTES,
            &format!("done/{}.toml", rec.id),
        );
    }

    let (out_path, stdout, as_result) = out.stdout;
    if !as_result {
        output(&mut b, "Standard output", out_path, stdout);
    }
    let (err_path, stderr) = out.stderr;
    output(&mut b, "Standard error", err_path, stderr);

    if let Some(e) = &plan.unlisted {
        let _ = writeln!(b, "\nFiles: cannot be listed: {}", one_line(e));
    }
    if !plan.attach.is_empty() {
        let total: u64 = plan.attach.iter().map(|f| f.size).sum();
        let _ = writeln!(
            b,
            "\nAttached ({} files, {total} bytes):",
            plan.attach.len()
        );
        for f in &plan.attach {
            let _ = writeln!(b, "  {} ({} bytes)", clean_name(&f.name), f.size);
        }
    }
    if !plan.left_out.is_empty() {
        let _ = writeln!(
            b,
            "\nNot attached (they stay in the spool until the job expires):"
        );
        for (f, why) in plan.left_out.iter().take(MAX_LISTED) {
            let why = match why {
                LeftOut::OverBudget => {
                    format!("{} bytes, over max_attachment_bytes = {budget}", f.size)
                }
                LeftOut::TooMany => format!("{} bytes, past {MAX_ATTACHMENTS} attachments", f.size),
                LeftOut::NotRegular(kind) => format!("a {kind}, not a regular file"),
                LeftOut::Unreadable(e) => format!("cannot be read: {}", one_line(e)),
            };
            let _ = writeln!(
                b,
                "  {} ({why}): {}",
                clean_name(&f.name),
                clean_name(&f.path.to_string_lossy())
            );
        }
        if let Some(more) = plan
            .left_out
            .len()
            .checked_sub(MAX_LISTED)
            .filter(|&n| n > 0)
        {
            let dir = plan.left_out[0]
                .0
                .path
                .parent()
                .map(|d| d.to_string_lossy().into_owned());
            let _ = writeln!(
                b,
                "  … and {more} more in {}",
                clean_name(&dir.unwrap_or_default())
            );
        }
    }
    b
}

/// Quotes text indented by two spaces (so that no line of it can look
/// like a header, a `From ` line or the end of an SMTP message), cut at
/// `max` bytes with a note of where the rest is.
fn quote(b: &mut String, raw: &[u8], max: usize, rest_in: &str) {
    let cut = raw.len() > max;
    let raw = &raw[..raw.len().min(max)];
    let (lines, _) = tail_lines(raw, false, usize::MAX);
    for l in lines {
        let _ = writeln!(b, "  {l}");
    }
    if cut {
        let _ = writeln!(b, "  [… cut here; all of it is in {rest_in}]");
    }
}

fn output(b: &mut String, what: &str, path: &Path, tail: &Tail) {
    if let Some(e) = &tail.error {
        let _ = writeln!(b, "\n{what}: cannot be read: {}", one_line(e));
        return;
    }
    if tail.size == 0 {
        let _ = writeln!(b, "\n{what}: empty");
        return;
    }
    let (lines, more) = tail_lines(&tail.raw, tail.cut, TAIL_LINES);
    let which = if more {
        format!("last {} lines", lines.len())
    } else {
        "all of it".into()
    };
    let _ = writeln!(
        b,
        "\n{what} ({which}; {} bytes in {}):",
        tail.size,
        clean_name(&path.to_string_lossy())
    );
    for l in lines {
        let _ = writeln!(b, "  {l}");
    }
}

/// A file name as one printable line.
fn clean_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Text for a record field or a log line: one line, trimmed.
pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::fsio::open_regular;
    use crate::record::Status;

    fn record() -> Record {
        let mut r = Record::new("report-42", "make_report", Status::Failed);
        let t = |s: &str| Some(time::to_toml(time::parse_rfc3339(s).unwrap()));
        r.submitted = t("2026-11-22T10:00:00.125Z");
        r.started = t("2026-11-22T10:00:00.131Z");
        r.finished = t("2026-11-22T10:00:03.402Z");
        r.attempts = 2;
        r.exit_code = Some(3);
        r.error = Some("exited with status 3".into());
        r.email = vec!["ann@example.com".into()];
        r.mail = Some("pending".into());
        let mut res = toml::Table::new();
        res.insert("rows".into(), toml::Value::Integer(10));
        r.result = Some(toml::Value::Table(res));
        r.usage = Some(crate::record::Usage {
            cpu_seconds: 1.25,
            max_rss_bytes: 35_651_584,
            memory_peak_bytes: Some(41_943_040),
            oom_killed: Some(false),
        });
        r
    }

    fn file(name: &str, size: u64) -> FileEntry {
        FileEntry {
            name: name.into(),
            path: PathBuf::from("/spool/done/x.files").join(name),
            size,
            other: None,
        }
    }

    fn tail(text: &str) -> Tail {
        Tail {
            size: text.len() as u64,
            raw: text.as_bytes().to_vec(),
            cut: false,
            error: None,
        }
    }

    #[test]
    fn the_subject_names_type_id_and_status() {
        assert_eq!(
            subject(&record()),
            "[raccoond] make_report report-42 failed"
        );
    }

    #[test]
    fn the_body_has_status_times_exit_code_error_result_and_output() {
        let rec = record();
        let stdout = tail("one\ntwo\n");
        let stderr = tail("");
        let out = Outputs {
            stdout: (Path::new("/spool/done/report-42.out"), &stdout, false),
            stderr: (Path::new("/spool/done/report-42.err"), &stderr),
        };
        let plan = Plan {
            attach: vec![file("a.csv", 3)],
            left_out: vec![(file("big.bin", 99), LeftOut::OverBudget)],
            unlisted: None,
        };
        let b = body(&rec, &out, &plan, 10);
        for want in [
            "Job report-42 (type make_report) failed.",
            "Status:     failed",
            "Exit code:  3",
            "Error:      exited with status 3",
            "Submitted:  2026-11-22T10:00:00.125Z",
            "Finished:   2026-11-22T10:00:03.402Z",
            "Duration:   3.3s",
            "Used:       1.2s CPU, 34 MiB max RSS, 40 MiB memory peak\n",
            "Attempts:   2",
            "Result:\n  rows = 10\n",
            "Standard output (all of it; 8 bytes in /spool/done/report-42.out):\n  one\n  two\n",
            "Standard error: empty",
            "Attached (1 files, 3 bytes):\n  a.csv (3 bytes)",
            "big.bin (99 bytes, over max_attachment_bytes = 10): /spool/done/x.files/big.bin",
        ] {
            assert!(b.contains(want), "missing {want:?} in:\n{b}");
        }
        assert!(!b.contains("Files:"), "{b}");
        let unlisted = Plan {
            unlisted: Some("list /spool/done/x.files: Permission denied".into()),
            ..Plan::default()
        };
        let b = body(&rec, &out, &unlisted, 10);
        assert!(
            b.contains("\nFiles: cannot be listed: list /spool/done/x.files: Permission denied\n"),
            "{b}"
        );
    }

    #[test]
    fn a_long_list_of_left_out_files_is_cut() {
        let empty = tail("");
        let out = Outputs {
            stdout: (Path::new("/o"), &empty, false),
            stderr: (Path::new("/e"), &empty),
        };
        let plan = Plan {
            attach: Vec::new(),
            left_out: (0..MAX_LISTED + 10)
                .map(|i| (file(&format!("f{i:03}"), 1), LeftOut::TooMany))
                .collect(),
            unlisted: None,
        };
        let b = body(&record(), &out, &plan, 10);
        assert_eq!(b.matches("past 100 attachments").count(), MAX_LISTED, "{b}");
        assert!(
            b.contains("  … and 10 more in /spool/done/x.files\n"),
            "{b}"
        );
    }

    #[test]
    fn a_result_that_is_the_stdout_is_quoted_once() {
        let mut rec = record();
        rec.result = Some(toml::Value::String("hello\n".into()));
        let stdout = tail("hello\n");
        let stderr = tail("");
        let out = Outputs {
            stdout: (Path::new("/o"), &stdout, true),
            stderr: (Path::new("/e"), &stderr),
        };
        let b = body(&rec, &out, &Plan::default(), 10);
        assert_eq!(b.matches("hello").count(), 1, "{b}");
        assert!(
            b.contains("Result (the task's standard output):\n  hello\n"),
            "{b}"
        );
    }

    #[test]
    fn tails_keep_the_last_lines_and_clean_them() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let (lines, more) = tail_lines(text.as_bytes(), false, 20);
        assert_eq!(lines.len(), 20);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines[19], "line 30");
        assert!(more);
        // Cut inside a line: the partial line goes.
        let (lines, more) = tail_lines(b"ne 7\nline 8\r\nbell\x07 \xff end", true, 20);
        assert_eq!(lines, vec!["line 8", "bell\u{fffd} \u{fffd} end"]);
        assert!(more);
        let (lines, more) = tail_lines(b"a\nb\n", false, 20);
        assert_eq!(
            (lines, more),
            (vec!["a".to_string(), "b".to_string()], false)
        );
    }

    #[test]
    fn a_long_output_costs_only_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.out");
        let mut text = "x".repeat(3 * TAIL_BYTES as usize);
        text.push_str("\nlast\n");
        fs::write(&path, &text).unwrap();
        let t = tail_of(open_regular(&path));
        assert_eq!(t.size, text.len() as u64);
        assert_eq!(t.raw.len() as u64, TAIL_BYTES);
        assert!(t.cut);
        assert_eq!(tail_lines(&t.raw, t.cut, 20).0, vec!["last"]);
        let missing = tail_of(open_regular(&dir.path().join("none")));
        assert_eq!((missing.size, missing.error), (0, None));
        let failed = tail_of(Err(io::Error::other("broken disk")));
        assert_eq!(failed.error.as_deref(), Some("broken disk"));
    }

    #[test]
    fn every_attachment_type_is_one_lettre_takes() {
        for (name, want) in [
            ("report.txt", "text/plain"),
            ("data.CSV", "text/csv"),
            ("r.json", "application/json"),
            ("doc.pdf", "application/pdf"),
            ("chart.png", "image/png"),
            ("p.JPEG", "image/jpeg"),
            ("a.tar.gz", "application/gzip"),
            (
                "sheet.xlsx",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            ),
            ("noext", "application/octet-stream"),
            (".hidden", "application/octet-stream"),
            ("blob.weird", "application/octet-stream"),
        ] {
            assert_eq!(mime::of(name), want, "{name}");
            assert!(ContentType::parse(mime::of(name)).is_ok(), "{name}");
        }
    }

    #[test]
    fn attachments_stay_within_the_budget_in_name_order() {
        let mut link = file("link", 0);
        link.other = Some("symlink");
        let plan = plan_attachments(
            vec![file("c.bin", 4), file("a.bin", 6), file("b.bin", 5), link],
            10,
            9,
        );
        let names = |v: &[FileEntry]| v.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&plan.attach), vec!["a.bin", "c.bin"]);
        let left: Vec<_> = plan
            .left_out
            .iter()
            .map(|(f, w)| (f.name.as_str(), w.clone()))
            .collect();
        assert_eq!(
            left,
            vec![
                ("b.bin", LeftOut::OverBudget),
                ("link", LeftOut::NotRegular("symlink"))
            ]
        );
        assert!(plan_attachments(vec![file("a", 1)], 0, 9).attach.is_empty());
        assert_eq!(
            plan_attachments(vec![file("empty", 0)], 0, 9).attach.len(),
            1
        );
        let many: Vec<FileEntry> = (0..5).map(|i| file(&format!("f{i}"), 1)).collect();
        let plan = plan_attachments(many, 100, 3);
        assert_eq!(names(&plan.attach), vec!["f0", "f1", "f2"]);
        assert_eq!(plan.left_out.len(), 2);
        assert!(plan.left_out.iter().all(|(_, w)| *w == LeftOut::TooMany));
    }

    fn composer(dir: &Path, budget: u64) -> Composer {
        Composer {
            from: "raccoond <raccoon@example.org>".parse().unwrap(),
            max_attachment_bytes: budget,
            spool: Spool::at(dir),
        }
    }

    fn header_names(formatted: &str) -> Vec<String> {
        let head = formatted.split("\r\n\r\n").next().unwrap();
        head.split("\r\n")
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
            .collect()
    }

    #[test]
    fn the_message_carries_files_and_no_injected_headers() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), false).unwrap();
        let done = spool.root().join("done");
        let files = done.join("report-42.files");
        fs::create_dir_all(&files).unwrap();
        fs::write(files.join("a.csv"), b"x,y\r\n1,2\n").unwrap();
        // A task may name a file anything, newlines included.
        fs::write(files.join("evil\r\nBcc: eve@evil.test\r\n.csv"), b"1").unwrap();
        fs::write(files.join("zz-big.bin"), vec![0u8; 100]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", files.join("passwd")).unwrap();
        fs::write(done.join("report-42.out"), "hello\n").unwrap();
        // An output that is a link is not followed (nor quoted).
        std::os::unix::fs::symlink("/etc/passwd", done.join("report-42.err")).unwrap();
        let mut rec = record();
        rec.kind = "kind\r\nBcc: eve@evil.test".into();
        let c = composer(dir.path(), 50);
        let m = c.compose(&rec).unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        let names = header_names(&text);
        assert!(!names.iter().any(|n| n == "bcc"), "{text}");
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(
            !text.contains("root:x:0"),
            "a symlink was followed:\n{text}"
        );
        assert!(names.contains(&"message-id".to_string()), "{text}");
        assert!(names.contains(&"date".to_string()), "{text}");
        assert!(text.contains("Auto-Submitted: auto-generated"), "{text}");
        let millis = time::unix_millis(rec.finished_at().unwrap());
        assert!(
            text.contains(&format!("<raccoond.report-42.{millis}@example.org>")),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/csv"), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: base64"), "{text}");
        assert!(text.contains(&lettre_b64(b"x,y\r\n1,2\n")), "{text}");
        assert_eq!(m.envelope().to().len(), 1);
    }

    fn lettre_b64(bytes: &[u8]) -> String {
        // Standard base64, short enough here to fit one line.
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn a_record_with_a_bad_id_or_address_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = composer(dir.path(), 50);
        let mut rec = record();
        rec.id = "../../etc".into();
        assert!(c.compose(&rec).unwrap_err().contains("not a valid id"));
        let mut rec = record();
        rec.email = vec!["ann@example.com\r\nBcc: eve@evil.test".into()];
        assert!(c.compose(&rec).unwrap_err().contains("not a valid address"));
    }
}
