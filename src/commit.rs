//! Commits the end of a job, on a thread of its own.
//!
//! Takes finished records from the main loop; reads the task's result
//! (its `RACCOON_RESULT` file, else a short stdout) through
//! [`spool::query`](crate::spool::query), moves its output and files into
//! `done/`, writes the record (the commit point), then lets go of the
//! job's lock and tells the sweeper and the mailer. The main loop frees the job's slot as
//! soon as the task exits, so the next task starts while this thread does
//! the file system work of the last one: on two cores, half the work.
//!
//! Never opens a spool path itself: the result and the stdout are the
//! task's to write, and a task may leave a symlink (to `/etc/shadow`, say)
//! or a FIFO in their place; the query opens regular files only, never
//! through a link, never blocking, and each is read up to a bound.
//!
//! Architecture Invariant: a job's lock is released only after its record
//! is in place, so a daemon recovering `running/`
//! never mistakes a job being committed for an orphan.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::thread::JoinHandle;
use std::time::SystemTime;

use crossbeam_channel::Sender;
use nix::fcntl::Flock;

use crate::mail::Mailer;
use crate::record::Record;
use crate::runner::Output;
use crate::spool::query::{Stage, Stream};
use crate::spool::{Spares, Spool};
use crate::values;

/// A task's stdout becomes its `result` when it is shorter than this and
/// it wrote no `RACCOON_RESULT`.
const STDOUT_RESULT_MAX: u64 = 64 * 1024;
/// `RACCOON_RESULT` files are read up to this size.
const RESULT_MAX: u64 = 1 << 20;
/// At most this many jobs go into one group commit.
const BATCH: usize = 256;

/// What the main loop hands over.
pub enum Work {
    Finish(Finish),
    /// Mail a record written earlier (still `pending` after a restart).
    Mail(Record),
    /// The configuration changed (`fsync` may have).
    Spool(Spool),
}

pub struct Finish {
    pub record: Record,
    pub lock: Option<Flock<File>>,
    /// For a task that ran: where its result may come from.
    pub output: Option<Output>,
    /// Whether to mail the record once written.
    pub mail: bool,
}

pub struct Committer {
    tx: Option<Sender<Work>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub fn start(
        spool: Spool,
        sweeper: Sender<(String, SystemTime)>,
        mailer: Option<Mailer>,
    ) -> std::io::Result<Committer> {
        let (tx, rx) = crossbeam_channel::unbounded::<Work>();
        let thread = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                let mut spool = spool;
                let mut batch: Vec<Finish> = Vec::new();
                let mut spares = Spares::default();
                while let Ok(first) = rx.recv() {
                    // Everything already waiting goes in one group commit.
                    let mut work = vec![first];
                    work.extend(rx.try_iter().take(BATCH));
                    for w in work {
                        let other = match w {
                            Work::Finish(f) => {
                                batch.push(f);
                                continue;
                            }
                            other => other,
                        };
                        // Keep the order the loop decided: finish what came first.
                        finish(&spool, &sweeper, mailer.as_ref(), &mut batch, &mut spares);
                        match other {
                            Work::Mail(rec) => {
                                if let Some(m) = &mailer {
                                    m.send(rec);
                                }
                            }
                            Work::Spool(s) => spool = s,
                            Work::Finish(_) => {}
                        }
                    }
                    finish(&spool, &sweeper, mailer.as_ref(), &mut batch, &mut spares);
                }
            })?;
        Ok(Committer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn send(&self, work: Work) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(work);
        }
    }

    /// Waits until everything handed over is on disk.
    pub fn flush(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Commits a batch of finished jobs, then lets go of their locks and
/// tells the sweeper and the mailer.
fn finish(
    spool: &Spool,
    sweeper: &Sender<(String, SystemTime)>,
    mailer: Option<&Mailer>,
    batch: &mut Vec<Finish>,
    spares: &mut Spares,
) {
    if batch.is_empty() {
        return;
    }
    let mut records: Vec<Record> = Vec::with_capacity(batch.len());
    for f in batch.iter_mut() {
        let placeholder = Record::new("", "", f.record.status);
        let mut rec = std::mem::replace(&mut f.record, placeholder);
        if let Some(output) = f.output {
            rec.result = result_of(spool, &rec.id, output);
        }
        records.push(rec);
    }
    let results = spool.finish_all(&records, spares);
    for ((f, rec), written) in batch.drain(..).zip(records).zip(results) {
        if let Err(e) = written {
            // The job stays in running/; recovery will run it again.
            crate::log!("{}: cannot write the record: {e}", rec.id);
            continue;
        }
        drop(f.lock);
        if let Some(exp) = rec.expires_at() {
            let _ = sweeper.send((rec.id.clone(), exp));
        }
        if f.mail
            && let Some(m) = mailer
        {
            m.send(rec);
        }
    }
}

/// `RACCOON_RESULT` as TOML or JSON; else a short stdout as text. Either
/// is read only when it is a regular file, never through a symlink.
fn result_of(spool: &Spool, id: &str, output: Output) -> Option<toml::Value> {
    // The commit reads no job file: no bytes of one are needed.
    let q = spool.query(0);
    let mut text = String::new();
    if let Some(mut f) = bounded(q.result(id), RESULT_MAX) {
        let _ = f.read_to_string(&mut text);
    }
    if !text.trim().is_empty() {
        return Some(parse_result(&text));
    }
    if output.cut || output.stdout_bytes == 0 || output.stdout_bytes >= STDOUT_RESULT_MAX {
        return None;
    }
    let mut out = Vec::new();
    bounded(
        q.output_in(Stage::Running, id, Stream::Out),
        STDOUT_RESULT_MAX,
    )?
    .read_to_end(&mut out)
    .ok()?;
    String::from_utf8(out).ok().map(toml::Value::String)
}

/// An opened file, to be read up to `max` bytes; `None` when there was
/// none to open or it could not be (a result is optional: the record is
/// written without one).
fn bounded(opened: io::Result<Option<(File, Metadata)>>, max: u64) -> Option<io::Take<File>> {
    opened.ok().flatten().map(|(f, _)| f.take(max))
}

/// A result file: JSON when it looks like JSON, else TOML, else text.
fn parse_result(text: &str) -> toml::Value {
    let t = text.trim_start();
    let json = || {
        serde_json::from_str::<serde_json::Value>(t)
            .ok()
            .and_then(|v| values::json_to_toml(&v, "result").ok())
    };
    if (t.starts_with('{') || t.starts_with('['))
        && let Some(v) = json()
    {
        return v;
    }
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        return toml::Value::Table(table);
    }
    json().unwrap_or_else(|| toml::Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    fn output(stdout_bytes: u64) -> Output {
        Output {
            stdout_bytes,
            stderr_bytes: 0,
            cut: false,
        }
    }

    #[test]
    fn a_result_or_stdout_that_is_a_symlink_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let running = spool.root().join("running");
        let secret = dir.path().join("shadow");
        fs::write(&secret, "root = \"$6$secret\"\n").unwrap();

        // A task planted a link at $RACCOON_RESULT: its stdout is the
        // result, as if it had written none.
        symlink(&secret, running.join("a.result")).unwrap();
        fs::write(running.join("a.out"), "hello\n").unwrap();
        assert_eq!(
            result_of(&spool, "a", output(6)),
            Some(toml::Value::String("hello\n".into()))
        );
        // A link as its stdout too: no result at all.
        symlink(&secret, running.join("b.result")).unwrap();
        symlink(&secret, running.join("b.out")).unwrap();
        assert_eq!(result_of(&spool, "b", output(20)), None);
        // A FIFO is not waited on.
        nix::unistd::mkfifo(&running.join("c.result"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(result_of(&spool, "c", output(0)), None);
        // A regular result file is read.
        fs::write(running.join("d.result"), "rows = 10\n").unwrap();
        let rows = result_of(&spool, "d", output(0)).and_then(|v| v["rows"].as_integer());
        assert_eq!(rows, Some(10));
    }

    #[test]
    fn results_are_json_toml_or_text() {
        assert_eq!(
            parse_result("{\"rows\": 10}")["rows"].as_integer(),
            Some(10)
        );
        assert_eq!(parse_result("rows = 10\n")["rows"].as_integer(), Some(10));
        assert_eq!(parse_result("just words").as_str(), Some("just words"));
        assert_eq!(parse_result("[1, 2]").as_array().map(Vec::len), Some(2));
    }
}
