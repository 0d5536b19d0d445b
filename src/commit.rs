//! The commit thread: the one writer of records.
//!
//! Takes the records the main loop decided, in the order it decided them;
//! for each it reads the task's result (its `RACCOON_RESULT` file, else a
//! short stdout) through [`spool::query`](crate::spool::query), moves its output and (frozen)
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
//! A full file system is a state, not an error (SPEC §8): a record that
//! cannot be written for want of room (`ENOSPC`, `EDQUOT`) stays in memory,
//! its job's lock held, and is tried again, in order with those that came
//! after it: at once when room is seen to free up (the room left is looked
//! at every [`space::PROBE_EVERY`]), else after a wait doubling from
//! [`space::FIRST_RETRY`] to [`space::MAX_RETRY`]. The loop is told when the
//! condition begins and ends (`on_full(true/false)`), and stops starting
//! jobs meanwhile; it may also report a full disk it met itself
//! ([`Committer::report_full`]), which this thread then waits out the same
//! way. One log line when it begins, one when it ends; `/healthz` says
//! `commit` is not working in between.
//!
//! Never decides how a job ends (the loop did), never turns a full disk
//! into a failed job, never touches `new/` (requeues are the loop's), never
//! renames or deletes a path itself (the spool module does, on its behalf).
//!
//! Architecture Invariant: records are written by this thread only, so a
//! record is never written by two threads at once.
//!
//! Never opens a spool path itself: the result and the stdout are the
//! task's to write, and a task may leave a symlink (to `/etc/shadow`, say)
//! or a FIFO in their place; the query opens regular files only, never
//! through a link, never blocking, and each is read up to a bound.
//!
//! Architecture Invariant: a job's lock is released, and the submission
//! taken out of `new/` removed, only after its record is in place, so a
//! daemon recovering `running/` never mistakes a job being committed for
//! an orphan, and a crash never loses a submission before its record.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::mail::Mailer;
use crate::record::Record;
use crate::runner::Output;
use crate::space::{self, Room};
use crate::spool::ledger::Ledger;
use crate::spool::query::{Stage, Stream};
use crate::spool::{Hold, Present, Spool};
use crate::threads::{Health, Threads};
use crate::time::format_duration;
use crate::values;

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
    /// The loop met a full file system (starting a task): wait until it
    /// has room again, and say so.
    Full(String),
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

/// Where the commit thread's records go besides `done/`.
pub struct Peers {
    /// Told `(id, expires)` of every record written.
    pub sweeper: Sender<(String, SystemTime)>,
    /// Handed each record to mail; `None` without a `[mail]` section.
    pub mailer: Option<Mailer>,
    /// Told `true` when records start waiting for room, `false` once
    /// every one is written and the file system has room again.
    pub on_full: Box<dyn Fn(bool) + Send>,
}

impl Committer {
    /// Starts the thread (named `commit`, supervised by `threads`) on
    /// `inbox`; it tells its `peers` of every record written.
    pub fn start(
        threads: &Threads,
        inbox: Inbox,
        spool: Spool,
        peers: Peers,
    ) -> std::io::Result<Committer> {
        let Inbox { tx, rx } = inbox;
        let Peers {
            sweeper,
            mailer,
            on_full,
        } = peers;
        // Without a ledger, `raccoon list --limit` may not see this
        // daemon's records while other daemons keep theirs: said once.
        let ledger = spool
            .open_ledger()
            .map_err(|e| {
                crate::log!("ledger: {e}; `raccoon list --limit` may miss this daemon's jobs")
            })
            .ok();
        let writer = Writer {
            ledger,
            spool,
            sweeper,
            mailer,
            mailing: HashSet::new(),
            batch: Vec::new(),
            full: None,
            unsaid: Vec::new(),
            on_full,
            health: threads.health(),
        };
        let thread = threads.spawn("commit", move || writer.run(&rx))?;
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

    /// The loop met a full file system (`why`): records and starts wait
    /// until it has room again, which this thread says (`on_full(false)`).
    pub fn report_full(&self, why: String) {
        let _ = self.tx.send(Message::Full(why));
    }

    /// Waits until everything handed over is on disk, then ends the
    /// thread (and with it the mailer: mail not sent yet stays `pending`).
    /// Records still waiting for room then are given up: their jobs stay
    /// in `running/` and run again at the next start.
    pub fn flush(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(Message::Stop);
            let _ = t.join();
        }
    }

    /// Leaves the thread to die with the process, without waiting for it:
    /// for an exit after another thread died. What it has not written is
    /// recovered at the next start, as after a crash.
    pub fn abandon(&mut self) {
        let _ = self.tx.send(Message::Stop);
        self.thread = None;
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
    /// This daemon's log in `.finished/` (`None`: it could not be made).
    ledger: Option<Ledger>,
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
    /// Set while the spool's file system is full: records wait in `batch`.
    full: Option<Full>,
    /// Mail outcomes that came while the file system was full, written
    /// into their records once it has room.
    unsaid: Vec<(String, String)>,
    /// Tells the loop that records wait for room (`true`) or that none do
    /// any more (`false`).
    on_full: Box<dyn Fn(bool) + Send>,
    /// Where `/healthz` learns that records wait for room.
    health: Health,
}

/// The commit thread while the spool's file system is full.
struct Full {
    /// When it began: the log line at its end says how long it lasted.
    since: Instant,
    /// The room left when the last try failed: more than this means
    /// something was freed, and the next try is due at once.
    room: Option<Room>,
    /// When to try again whatever the room says (a quota, or a file
    /// system whose counts do not tell).
    retry_at: Instant,
    /// The wait before the try after that one.
    delay: Duration,
    /// Records written since it began, for the log line at its end.
    written: usize,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Message>) {
        loop {
            // While full, wake up to look at the room left; else sleep
            // until something arrives.
            let first = match &self.full {
                Some(f) => {
                    let probe = Instant::now() + space::PROBE_EVERY;
                    rx.recv_deadline(f.retry_at.min(probe))
                }
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let mut messages = Vec::new();
            match first {
                Ok(m) => {
                    // Everything already waiting goes in one group commit.
                    messages.push(m);
                    messages.extend(rx.try_iter().take(BATCH));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return;
                }
            }
            for m in messages {
                match m {
                    Message::Finish(f) => self.batch.push(f),
                    // Keep the order the loop decided: what came first is
                    // committed first (unless it waits for room).
                    Message::MailPending(ids) => {
                        self.commit_unless_full();
                        self.mail_pending(ids);
                    }
                    Message::Spool(s) => {
                        self.commit_unless_full();
                        self.spool = s;
                    }
                    // About a record written before it was mailed: it need
                    // not wait for the batch.
                    Message::Mailed { id, outcome } => {
                        if self.full.is_some() {
                            self.unsaid.push((id, outcome));
                        } else {
                            self.mailed(&id, &outcome);
                        }
                    }
                    Message::Full(why) => self.became_full(&why),
                    Message::Stop => {
                        self.stop();
                        return;
                    }
                }
            }
            self.commit_unless_full();
            if self.full.is_some() {
                self.retry_if_due();
            }
        }
    }

    /// Commits the batch, unless records already wait for room: new ones
    /// then wait behind them, and the retry writes them all in order.
    fn commit_unless_full(&mut self) {
        if self.full.is_none() {
            self.commit();
        }
    }

    /// Commits the batch, then lets go of what held the jobs and tells the
    /// sweeper and the mailer. Records that could not be written for want
    /// of room stay in the batch, in order, and the file system is taken
    /// to be full.
    fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let spool = &self.spool;
        let mut records: Vec<Record> = Vec::with_capacity(self.batch.len());
        let mut streams: Vec<(bool, bool)> = Vec::with_capacity(self.batch.len());
        for f in self.batch.iter_mut() {
            let placeholder = Record::new("", "", f.record.status);
            let mut rec = std::mem::replace(&mut f.record, placeholder);
            let mut left = (true, true);
            // Read once: a retry finds the output moved to done/ already.
            if let Some(output) = f.output.take() {
                // Outputs are made at their first byte (a cut one may be
                // empty); a second attempt at this batch knows nothing.
                left = (
                    output.stdout_bytes > 0 || output.cut,
                    output.stderr_bytes > 0 || output.cut,
                );
                rec.result = result_of(spool, &rec.id, output);
            }
            records.push(rec);
            streams.push(left);
        }
        // A copy becomes its record only while there is room: on a full
        // file system records wait, in order, as they always did (a record
        // written over its copy needs no new inode, and would slip past
        // the records waiting before it).
        let roomy = self.full.is_none()
            && crate::space::Room::of(spool.root()).is_ok_and(|r| !r.is_short());
        let present: Vec<Present> = self
            .batch
            .iter()
            .zip(streams)
            .map(|(f, (out, err))| Present {
                out,
                err,
                copy: f
                    .hold
                    .as_ref()
                    .and_then(Hold::copy_with_claim)
                    .filter(|_| roomy),
            })
            .collect();
        let results = spool.finish_all(&records, &present, self.ledger.as_mut());
        let mut waiting = Vec::new();
        let mut no_room: Option<String> = None;
        let batch = std::mem::take(&mut self.batch);
        for ((mut f, rec), written) in batch.into_iter().zip(records).zip(results) {
            match written {
                Ok(()) => {}
                Err(e) if space::is_full(&e) => {
                    no_room.get_or_insert_with(|| e.to_string());
                    f.record = rec;
                    waiting.push(f);
                    continue;
                }
                Err(e) => {
                    // The job stays in running/; recovery will run it again.
                    crate::log!("{}: cannot write the record: {e}", rec.id);
                    continue;
                }
            }
            if let Some(full) = &mut self.full {
                full.written += 1;
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
        self.batch = waiting;
        if let Some(why) = no_room {
            self.became_full(&why);
        }
    }

    /// A write failed for want of room (`why`): the condition begins (one
    /// log line, the loop told), or the next try is put off.
    fn became_full(&mut self, why: &str) {
        let now = Instant::now();
        let room = Room::of(self.spool.root()).ok();
        match &mut self.full {
            Some(f) => {
                f.room = room;
                f.retry_at = now + f.delay;
                f.delay = space::next_delay(f.delay);
            }
            None => {
                crate::log!(
                    "spool: the file system is full ({why}); {} record(s) wait in memory and no job starts until there is room again",
                    self.batch.len()
                );
                self.full = Some(Full {
                    since: now,
                    room,
                    retry_at: now + space::FIRST_RETRY,
                    delay: space::next_delay(space::FIRST_RETRY),
                    written: 0,
                });
                (self.on_full)(true);
            }
        }
        self.health.set(
            "commit",
            format!(
                "the spool's file system is full: {} record(s) wait to be written",
                self.batch.len()
            ),
        );
    }

    /// While full: when a try is due, writes the waiting records, then
    /// checks that a small file fits and that the room left is above the
    /// reserve; if so, the condition ends (one log line, the loop told).
    fn retry_if_due(&mut self) {
        let Some(full) = &self.full else {
            return;
        };
        let room = Room::of(self.spool.root()).ok();
        if !space::due(Instant::now(), full.retry_at, room, full.room) {
            return;
        }
        self.commit();
        if !self.batch.is_empty() {
            return;
        }
        let roomy = Room::of(self.spool.root()).map_or(true, |r| !r.is_short());
        let ok = match self.spool.probe_space() {
            Ok(()) if roomy => true,
            Ok(()) => false,
            Err(e) if space::is_full(&e) => false,
            Err(e) => {
                // Not a matter of room: say so, and go by the records.
                crate::log!("spool: {e}");
                roomy
            }
        };
        if !ok {
            self.became_full("the room left is below the reserve");
            return;
        }
        let Some(full) = self.full.take() else {
            return;
        };
        self.health.clear("commit");
        crate::log!(
            "spool: the file system has room again after {}; {} waiting record(s) written; jobs start again",
            format_duration(full.since.elapsed()),
            full.written
        );
        (self.on_full)(false);
        for (id, outcome) in std::mem::take(&mut self.unsaid) {
            self.mailed(&id, &outcome);
        }
    }

    /// At the end of the thread: commits what came before; records still
    /// waiting for room are given up (their jobs stay in `running/`, and
    /// the next start runs them again).
    fn stop(&mut self) {
        self.commit();
        if !self.batch.is_empty() {
            crate::log!(
                "spool: still full at shutdown: {} record(s) not written; their jobs run again at the next start",
                self.batch.len()
            );
            self.batch.clear();
        }
        for (id, outcome) in std::mem::take(&mut self.unsaid) {
            self.mailed(&id, &outcome);
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
                    // Said once there is room (unless the daemon stops first).
                    Err(e) if space::is_full(&e) && self.full.is_none() => {
                        self.mailing.insert(id.to_string());
                        self.unsaid.push((id.to_string(), outcome.to_string()));
                        self.became_full(&e.to_string());
                    }
                    Err(e) => {
                        crate::log!("{id}: mail {outcome}, but the record cannot say so: {e}")
                    }
                }
            }
            Err(e) => crate::log!("{id}: mail {outcome}, but the record is gone: {e}"),
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
        let mut o = Output::default();
        o.stdout_bytes = stdout_bytes;
        o
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
