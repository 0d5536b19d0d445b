//! Mail: one message per finished job that asked for it, sent from a thread
//! of its own.
//!
//! Takes the `[mail]` configuration once, then records (the daemon hands
//! over each record it wrote with `mail = "pending"`); reads the job's
//! output and files in `done/` through [`spool::query`](crate::spool::query)
//! (never through a symlink) to write the message; gives back, through
//! the callback passed to [`Mailer::start`], `sent` or `failed: <reason>`
//! for each record, which the daemon writes into the record's `mail` field.
//!
//! It never writes, moves or deletes anything in the spool (the daemon
//! rewrites the record), and it never makes its caller wait: [`Mailer::send`]
//! only queues. Every wait for a slow or dead server — connecting, its
//! replies, the pause before the next attempt — happens on the mail thread,
//! whose next attempt is a computed deadline on its channel, never a sleep.
//!
//! Delivery is at least once: transient failures (4xx replies, refused or
//! broken connections, timeouts) are tried again with doubling delays for
//! up to [`RETRY_FOR`]; a permanent failure (5xx) ends at once with the
//! server's words. When the daemon stops, a message not sent yet stays
//! `pending` in its record and the next run sends it.
//!
//! This file owns the thread and its channel. The rest, by concern:
//! - `outbox`: the retry schedule, pure, `now` as an argument.
//! - `compose`: the message, its body and its attachments.
//! - `transport`: SMTP or sendmail, and what a failure means.

mod compose;
mod outbox;
mod transport;

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::config::MailConfig;
use crate::record::Record;
use crate::spool::Spool;
use crate::threads::Threads;
use crate::time::format_duration;
use compose::Composer;
pub use outbox::RETRY_FOR;
use outbox::{Failure, Outbox, Step};
use transport::Relay;

/// The handle the daemon keeps: a queue into the mail thread.
pub struct Mailer {
    /// Records whose mail is pending; the thread ends when this is dropped.
    tx: Sender<Record>,
}

impl Mailer {
    /// Checks the transport (a bad `smtp` URL is an error here, so the
    /// daemon refuses to start) and starts the mail thread, supervised by
    /// `threads`. `done` is called
    /// on that thread with `(id, "sent" | "failed: <reason>")`.
    pub fn start<F>(
        threads: &Threads,
        config: &MailConfig,
        spool: Spool,
        done: F,
    ) -> Result<Mailer, String>
    where
        F: Fn(String, String) + Send + 'static,
    {
        let relay = Relay::new(&config.transport)?;
        let composer = Composer::new(config, spool)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        threads
            .spawn("mail", move || run(&rx, &relay, &composer, &done))
            .map_err(|e| format!("cannot start the mail thread: {e}"))?;
        Ok(Mailer { tx })
    }

    /// Queues a record's message. Never blocks.
    pub fn send(&self, record: Record) {
        let id = record.id.clone();
        if self.tx.send(record).is_err() {
            crate::log!("{id}: mail thread is gone; the mail stays pending until the next start");
        }
    }
}

/// The mail thread: queue what arrives, try what is due, report outcomes.
/// Returns when the daemon drops its [`Mailer`]; what is still queued then
/// stays `pending` in its record.
fn run(rx: &Receiver<Record>, relay: &Relay, composer: &Composer, done: &dyn Fn(String, String)) {
    let mut outbox = Outbox::default();
    loop {
        let got = match outbox.wakeup() {
            Some(at) => rx.recv_deadline(at),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(record) => queue(&mut outbox, record),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        loop {
            match rx.try_recv() {
                Ok(record) => queue(&mut outbox, record),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        // One attempt, then back to the channel: mail that arrives during a
        // slow attempt is queued before the next one.
        let Some(pending) = outbox.take_due(Instant::now()) else {
            continue;
        };
        let id = pending.record.id.clone();
        let result = composer
            .compose(&pending.record)
            .map_err(Failure::Permanent)
            .and_then(|message| relay.deliver(&message));
        match outbox.settle(pending, result, Instant::now()) {
            Step::Sent => done(id, "sent".into()),
            Step::Failed(reason) => done(id, format!("failed: {reason}")),
            Step::Retry { reason, after } => crate::log!(
                "{id}: mail not sent yet ({reason}); trying again in {}",
                format_duration(after)
            ),
        }
    }
}

fn queue(outbox: &mut Outbox, record: Record) {
    let id = record.id.clone();
    if let Err(why) = outbox.push(record, Instant::now()) {
        crate::log!("{id}: {why}");
    }
}
