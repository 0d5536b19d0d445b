//! The mail thread's retry schedule: which message to try next, and what
//! becomes of an attempt.
//!
//! Pure: no IO, no clock, no thread; every method takes `now`, so that the
//! schedule is tested by table. It never composes or sends a message and
//! never touches the spool: the mail thread does those and hands back a
//! [`Failure`] to [`Outbox::settle`].
//!
//! Invariants: a record's mail is queued once however often it is handed
//! over; a message is tried until it is sent, fails permanently, or has
//! been tried for [`RETRY_FOR`]; pauses double from [`FIRST_DELAY`] up to
//! [`MAX_DELAY`]; while the server as a whole is unreachable no message is
//! tried before the pause ends, and once it answers again every message
//! that was only waiting for it is due at once.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::record::Record;
use crate::time::format_duration;

/// The pause after the first transient failure; it doubles after each.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest pause between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(300);
/// How long a message is tried before it is given up as failed.
pub const RETRY_FOR: Duration = Duration::from_secs(3600);

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// Worth another try later. `server` when the server as a whole is
    /// unreachable or unwilling (no connection, TLS, timeout, 421), so that
    /// the other messages wait too instead of hammering it.
    Transient { reason: String, server: bool },
    /// Trying again would get the same answer.
    Permanent(String),
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Delivered (or taken by sendmail): the record's mail becomes `sent`.
    Sent,
    /// Given up, for good: the reason goes into the record.
    Failed(String),
    /// Queued again, `after` from now; only logged.
    Retry { reason: String, after: Duration },
}

/// A message waiting for its next attempt.
pub(super) struct Pending {
    /// The record whose mail this is: its id, addresses and outcome.
    pub(super) record: Record,
    /// When it was queued: the retry budget counts from here.
    first: Instant,
    /// The pause after its next transient failure.
    delay: Duration,
    /// Its last failure was the server being unreachable: when another
    /// message gets through, it is tried again at once.
    server_down: bool,
}

/// The queue of the mail thread, ordered by next attempt. Pure: every
/// method takes `now`.
pub(super) struct Outbox {
    /// Keyed by (next attempt, arrival): the first entry is the next to try,
    /// so a message that keeps failing goes behind the others.
    queue: BTreeMap<(Instant, u64), Pending>,
    /// Ids queued or being tried, so that a record handed over twice (at
    /// start, by the sweeper and by the job's own end) is mailed once.
    ids: HashSet<String>,
    /// Arrival order, so that two messages due at the same instant keep
    /// it and never share a key.
    seq: u64,
    /// While the server is unreachable, nothing is tried before this.
    paused_until: Option<Instant>,
    /// The pause after the next failure that takes the server as a whole.
    server_delay: Duration,
    /// Some queued message is marked `server_down`: worth a look when the
    /// server answers again.
    some_server_down: bool,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            queue: BTreeMap::new(),
            ids: HashSet::new(),
            seq: 0,
            paused_until: None,
            server_delay: FIRST_DELAY,
            some_server_down: false,
        }
    }
}

impl Outbox {
    /// Queues a record for an attempt now, unless its mail is queued
    /// already or is no longer pending (the daemon may hand over a record
    /// read from disk after its mail was sent).
    pub(super) fn push(&mut self, record: Record, now: Instant) -> Result<(), String> {
        if record.mail.as_deref() != Some("pending") {
            let mail = record.mail.as_deref().unwrap_or("none");
            return Err(format!("mail is {mail:?}, not pending; not sent again"));
        }
        if !self.ids.insert(record.id.clone()) {
            return Err("mail already queued; not queued twice".into());
        }
        let pending = Pending {
            record,
            first: now,
            delay: FIRST_DELAY,
            server_down: false,
        };
        self.insert(now, pending);
        Ok(())
    }

    fn insert(&mut self, at: Instant, pending: Pending) {
        self.seq += 1;
        self.queue.insert((at, self.seq), pending);
    }

    /// When the next attempt is due, if anything is queued.
    pub(super) fn wakeup(&self) -> Option<Instant> {
        let (&(next, _), _) = self.queue.first_key_value()?;
        Some(self.paused_until.map_or(next, |p| p.max(next)))
    }

    /// The message to try now, if one is due.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<Pending> {
        if self.wakeup()? > now {
            return None;
        }
        self.queue.pop_first().map(|(_, p)| p)
    }

    /// Files the outcome of an attempt at `p`.
    pub(super) fn settle(
        &mut self,
        mut p: Pending,
        result: Result<(), Failure>,
        now: Instant,
    ) -> Step {
        match result {
            Ok(()) => {
                self.ids.remove(&p.record.id);
                self.server_is_back(now);
                Step::Sent
            }
            Err(Failure::Permanent(reason)) => {
                self.ids.remove(&p.record.id);
                self.server_is_back(now);
                Step::Failed(reason)
            }
            Err(Failure::Transient { reason, server }) => {
                let after = p.delay;
                if now + after > p.first + RETRY_FOR {
                    self.ids.remove(&p.record.id);
                    let tried = format_duration(now.saturating_duration_since(p.first));
                    return Step::Failed(format!("gave up after {tried}: {reason}"));
                }
                if server {
                    self.paused_until = Some(now + self.server_delay);
                    self.server_delay = (self.server_delay * 2).min(MAX_DELAY);
                } else {
                    self.server_is_back(now);
                }
                p.delay = (p.delay * 2).min(MAX_DELAY);
                p.server_down = server;
                self.some_server_down |= server;
                self.insert(now + after, p);
                Step::Retry { reason, after }
            }
        }
    }

    /// The server answered: the pause is over, and messages that were only
    /// waiting for it are due now rather than after their own long delay.
    fn server_is_back(&mut self, now: Instant) {
        self.paused_until = None;
        self.server_delay = FIRST_DELAY;
        if !std::mem::take(&mut self.some_server_down) {
            return;
        }
        let waiting: Vec<(Instant, u64)> = self
            .queue
            .iter()
            .filter(|(key, p)| p.server_down && key.0 > now)
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            if let Some(mut p) = self.queue.remove(&key) {
                p.server_down = false;
                self.queue.insert((now, key.1), p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;

    fn record() -> Record {
        let mut r = Record::new("report-42", "make_report", Status::Failed);
        r.email = vec!["ann@example.com".into()];
        r.mail = Some("pending".into());
        r
    }

    fn transient(server: bool) -> Result<(), Failure> {
        Err(Failure::Transient {
            reason: "down".into(),
            server,
        })
    }

    #[test]
    fn transient_failures_back_off_doubling_then_give_up() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        assert!(o.push(record(), t0).is_ok());
        assert!(o.push(record(), t0).is_err(), "the same id is queued once");
        let mut sent = record();
        sent.id = "sent".into();
        sent.mail = Some("sent".into());
        assert!(o.push(sent, t0).unwrap_err().contains("not pending"));
        let mut now = t0;
        let mut pauses = Vec::new();
        let outcome = loop {
            let p = o.take_due(now).expect("due");
            match o.settle(p, transient(false), now) {
                Step::Retry { after, .. } => {
                    pauses.push(after.as_secs());
                    assert!(
                        o.take_due(now).is_none(),
                        "nothing due before the pause ends"
                    );
                    now = o.wakeup().unwrap();
                }
                other => break other,
            }
        };
        assert_eq!(&pauses[..10], &[1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert!(pauses.iter().all(|&s| s <= 300));
        assert!(now.duration_since(t0) <= RETRY_FOR);
        match outcome {
            Step::Failed(r) => assert!(
                r.starts_with("gave up after") && r.ends_with(": down"),
                "{r}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(o.wakeup().is_none());
        assert!(
            o.push(record(), now).is_ok(),
            "a finished id may be queued again"
        );
    }

    #[test]
    fn permanent_failures_end_at_once_and_success_is_sent() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(record(), t0).unwrap();
        let p = o.take_due(t0).unwrap();
        assert_eq!(
            o.settle(p, Err(Failure::Permanent("550 no".into())), t0),
            Step::Failed("550 no".into())
        );
        let mut r = record();
        r.id = "other".into();
        o.push(r, t0).unwrap();
        let p = o.take_due(t0).unwrap();
        assert_eq!(o.settle(p, Ok(()), t0), Step::Sent);
        assert!(o.wakeup().is_none());
    }

    #[test]
    fn a_failing_message_goes_behind_the_others() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        let mut a = record();
        a.id = "a".into();
        let mut b = record();
        b.id = "b".into();
        o.push(a, t0).unwrap();
        o.push(b, t0).unwrap();
        let p = o.take_due(t0).unwrap();
        assert_eq!(p.record.id, "a");
        o.settle(p, transient(false), t0);
        // A message-level 4xx does not hold the others back.
        assert_eq!(o.take_due(t0).unwrap().record.id, "b");
    }

    #[test]
    fn an_unreachable_server_pauses_everything_until_it_answers() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        let mut a = record();
        a.id = "a".into();
        o.push(a, t0).unwrap();
        for _ in 0..5 {
            let now = o.wakeup().unwrap();
            let p = o.take_due(now).unwrap();
            o.settle(p, transient(true), now);
        }
        let now = o.wakeup().unwrap() - Duration::from_millis(1);
        let mut b = record();
        b.id = "b".into();
        o.push(b, now).unwrap();
        assert!(
            o.take_due(now).is_none(),
            "a new message waits out the pause"
        );
        // The server answers again: "a" does not wait out its own delay.
        let now = o.wakeup().unwrap();
        let p = o.take_due(now).unwrap();
        let first = p.record.id.clone();
        assert_eq!(o.settle(p, Ok(()), now), Step::Sent);
        let next = o.take_due(now).expect("the other message is due at once");
        assert_ne!(next.record.id, first);
    }
}
