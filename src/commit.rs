//! The commit thread: the one writer of records.
//!
//! Takes the records the main loop decided, in the order it decided them;
//! for each it reads the task's result, moves its output and (frozen)
//! files into `done/`, writes the record (the commit point: many at once,
//! see `Spool::finish_all`), then lets go of what held the job (its lock,
//! and what was taken out of `new/`: `Spool::release`) and hands the
//! record to the sweeper (its expiry) and to the mailer. The mailer reports
//! each outcome back here, and this thread rewrites the record's `mail`
//! field; it also re-sends, once, the mail that an earlier run left
//! `pending`. The main loop frees the job's slot as soon as the task
//! exits, so the next task starts while this thread does the file system
//! work of the last one: on two cores, half the work.
//!
//! Never decides how a job ends (the loop did), never touches `new/`
//! (requeues are the loop's), never renames or deletes a path itself (the
//! spool module does, on its behalf).
//!
//! Architecture Invariant: records are written by this thread only, so a
//! record is never written by two threads at once.
//!
//! Architecture Invariant: a job's lock is released, and the submission
//! taken out of `new/` removed, only after its record is in place, so a
//! daemon recovering `running/` never mistakes a job being committed for
//! an orphan, and a crash never loses a submission before its record.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::thread::JoinHandle;
use std::time::SystemTime;

use crate::mail::Mailer;
use crate::record::Record;
use crate::runner::Output;
use crate::spool::{Hold, Spool};
use crate::values;
use crossbeam_channel::{Receiver, Sender};

/// A task's stdout becomes its `result` when it is shorter than this and
/// it wrote no `RACCOON_RESULT`.
const STDOUT_RESULT_MAX: u64 = 64 * 1024;
/// `RACCOON_RESULT` files are read up to this size.
const RESULT_MAX: u64 = 1 << 20;
/// At most this many jobs go into one group commit.
const BATCH: usize = 256;

/// A job the loop has ended: its record, to be written.
pub struct Finish {
    /// The record as the loop made it; its `result` is filled in here.
    pub record: Record,
    /// What keeps the job from being taken up again (its lock, what was
    /// taken out of `new/`), released once the record is in place; `None`
    /// when nothing holds it.
    pub hold: Option<Hold>,
    /// For a task that ran: where its result may come from.
    pub output: Option<Output>,
    /// Whether to mail the record once written.
    pub mail: bool,
}

/// What reaches the commit thread, in the order it was sent.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is a Finish: boxing it would cost an allocation per job"
)]
enum Message {
    Finish(Finish),
    /// The first scan of `done/` found these records' mail still
    /// `pending`: mail those this run has not handed to the mailer.
    MailPending(Vec<String>),
    /// The configuration changed (`fsync` may have).
    Spool(Spool),
    /// The mailer is done with a record: `sent` or `failed: …`.
    Mailed {
        id: String,
        outcome: String,
    },
    /// Commit what came before, then end the thread.
    Stop,
}

/// The commit thread's channel, made before the thread so that the mailer
/// (started in between, and owned by the thread) can report into it.
pub struct Inbox {
    /// Cloned for the mailer, then the loop's handle's.
    tx: Sender<Message>,
    /// The thread's.
    rx: Receiver<Message>,
}

impl Default for Inbox {
    fn default() -> Inbox {
        let (tx, rx) = crossbeam_channel::unbounded();
        Inbox { tx, rx }
    }
}

impl Inbox {
    /// What the mailer calls with `(id, outcome)`: the outcome goes to the
    /// commit thread, which writes it into the record.
    pub fn mail_outcomes(&self) -> impl Fn(String, String) + Send + 'static {
        let tx = self.tx.clone();
        move |id, outcome| {
            // After the thread has stopped the outcome is lost and the
            // record stays `pending`: the next run mails it again.
            let _ = tx.send(Message::Mailed { id, outcome });
        }
    }
}

/// The loop's handle on the commit thread.
pub struct Committer {
    /// Into the thread; every method only sends.
    tx: Sender<Message>,
    /// Joined by `flush`; `None` once it has been.
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the thread on `inbox`; it tells `sweeper` of every record
    /// written and hands records to `mailer` when there is one.
    pub fn start(
        inbox: Inbox,
        spool: Spool,
        sweeper: Sender<(String, SystemTime)>,
        mailer: Option<Mailer>,
    ) -> std::io::Result<Committer> {
        let Inbox { tx, rx } = inbox;
        let writer = Writer {
            spool,
            sweeper,
            mailer,
            mailing: HashSet::new(),
            batch: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Committer {
            tx,
            thread: Some(thread),
        })
    }

    /// Writes a record (with the job's output), after those sent before.
    pub fn finish(&self, finish: Finish) {
        let _ = self.tx.send(Message::Finish(finish));
    }

    /// Mails the records in `ids` still `pending` that this run has not
    /// handed to the mailer already.
    pub fn mail_pending(&self, ids: Vec<String>) {
        let _ = self.tx.send(Message::MailPending(ids));
    }

    /// Writes later records through `spool` (its `fsync` may differ).
    pub fn set_spool(&self, spool: Spool) {
        let _ = self.tx.send(Message::Spool(spool));
    }

    /// Waits until everything handed over is on disk, then ends the
    /// thread (and with it the mailer: mail not sent yet stays `pending`).
    pub fn flush(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(Message::Stop);
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The commit thread's state.
struct Writer {
    /// Every write goes through it; replaced when the configuration is.
    spool: Spool,
    /// Told `(id, expires)` of every record written.
    sweeper: Sender<(String, SystemTime)>,
    /// `None` without a `[mail]` section.
    mailer: Option<Mailer>,
    /// Records handed to the mailer by this run and not yet reported back,
    /// so that the first scan of `done/` (which may still read them as
    /// `pending`) does not mail them a second time.
    mailing: HashSet<String>,
    /// Finished jobs waiting for the next group commit.
    batch: Vec<Finish>,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Message>) {
        while let Ok(first) = rx.recv() {
            // Everything already waiting goes in one group commit.
            let mut messages = vec![first];
            messages.extend(rx.try_iter().take(BATCH));
            for m in messages {
                match m {
                    Message::Finish(f) => self.batch.push(f),
                    // Keep the order the loop decided: what came first is
                    // committed first.
                    Message::MailPending(ids) => {
                        self.commit();
                        self.mail_pending(ids);
                    }
                    Message::Spool(s) => {
                        self.commit();
                        self.spool = s;
                    }
                    // About a record written before it was mailed: it need
                    // not wait for the batch.
                    Message::Mailed { id, outcome } => self.mailed(&id, &outcome),
                    Message::Stop => {
                        self.commit();
                        return;
                    }
                }
            }
            self.commit();
        }
    }

    /// Commits the batch, then lets go of what held the jobs and tells the
    /// sweeper and the mailer.
    fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let spool = &self.spool;
        let mut records: Vec<Record> = Vec::with_capacity(self.batch.len());
        for f in self.batch.iter_mut() {
            let placeholder = Record::new("", "", f.record.status);
            let mut rec = std::mem::replace(&mut f.record, placeholder);
            if let Some(output) = f.output {
                rec.result = result_of(spool, &rec.id, output);
            }
            records.push(rec);
        }
        let results = spool.finish_all(&records);
        for ((f, rec), written) in self.batch.drain(..).zip(records).zip(results) {
            if let Err(e) = written {
                // The job stays in running/; recovery will run it again.
                crate::log!("{}: cannot write the record: {e}", rec.id);
                continue;
            }
            if let Some(hold) = f.hold {
                spool.release(hold);
            }
            if let Some(exp) = rec.expires_at() {
                let _ = self.sweeper.send((rec.id.clone(), exp));
            }
            if f.mail
                && let Some(m) = &self.mailer
            {
                self.mailing.insert(rec.id.clone());
                m.send(rec);
            }
        }
    }

    fn mail_pending(&mut self, ids: Vec<String>) {
        let Some(m) = &self.mailer else {
            return;
        };
        for id in ids {
            if self.mailing.contains(&id) {
                continue;
            }
            if let Ok(rec) = self.spool.read_record(&id)
                && rec.mail.as_deref() == Some("pending")
            {
                crate::log!("{id}: mail still pending from an earlier run; sending");
                self.mailing.insert(id);
                m.send(rec);
            }
        }
    }

    /// Writes the mailer's outcome into the record's `mail` field.
    fn mailed(&mut self, id: &str, outcome: &str) {
        self.mailing.remove(id);
        match self.spool.read_record(id) {
            Ok(mut rec) => {
                rec.mail = Some(outcome.to_string());
                match self.spool.rewrite_record(&rec) {
                    Ok(()) => crate::log!("{id}: mail {outcome}"),
                    Err(e) => {
                        crate::log!("{id}: mail {outcome}, but the record cannot say so: {e}")
                    }
                }
            }
            Err(e) => crate::log!("{id}: mail {outcome}, but the record is gone: {e}"),
        }
    }
}

/// `RACCOON_RESULT` as TOML or JSON; else a short stdout as text.
fn result_of(spool: &Spool, id: &str, output: Output) -> Option<toml::Value> {
    let mut text = String::new();
    if let Ok(f) = File::open(spool.running_result(id)) {
        let _ = f.take(RESULT_MAX).read_to_string(&mut text);
    }
    if !text.trim().is_empty() {
        return Some(parse_result(&text));
    }
    if output.cut || output.stdout_bytes == 0 || output.stdout_bytes >= STDOUT_RESULT_MAX {
        return None;
    }
    let out = std::fs::read(spool.running_out(id)).ok()?;
    String::from_utf8(out).ok().map(toml::Value::String)
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
    use super::*;

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
