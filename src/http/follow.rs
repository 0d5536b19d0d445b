//! `GET /jobs/<id>/output?follow=1` (and `/stderr?follow=1`): a job's
//! output streamed as its task writes it, chunked, the stream ending when
//! the job ends (SPEC §13, Follow). Without `follow`, the output as it is
//! now (`files`).
//!
//! The bytes come from a [`Follower`] (`crate::follow`), which reads
//! through `spool::query` and waits on inotify; this module only decides
//! who may stream and for how long. A stream holds a sender thread for
//! as long as it lasts, so at most [`STREAMS`] run at once (two senders
//! are always left for large files; past that, 503 with `Retry-After`),
//! and each counts against `max_connections` like any connection with an
//! answer under way.
//!
//! A stream ends at the job's end (after everything the task wrote), when
//! its client goes away (the follower watches the connection, so even a
//! job that prints nothing for hours does not keep a sender for a client
//! that left), when the server stops, or after [`STREAM_MAX`], whichever
//! comes first. Ended by the cap, the stream ends as cleanly as at the
//! job's end: `GET /jobs/<id>` tells the two apart.
//!
//! Never writes anything, never builds a spool path.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::response::Source;
use super::{Answer, Api, ApiError, Body, Reply, SENDERS, TEXT, fail, internal, not_found};
use crate::follow::Follower;
use crate::spool::query::Stream;

/// Follow streams at once, per process (one server per daemon): the
/// senders but two.
pub const STREAMS: usize = SENDERS - 2;
/// The longest a stream lasts, job ended or not: a day.
pub const STREAM_MAX: Duration = Duration::from_secs(24 * 3600);

/// Streams under way now.
static OPEN: AtomicUsize = AtomicUsize::new(0);

impl Api {
    /// `GET /jobs/<id>/output|stderr`, followed when the query says
    /// `follow=1` (or `follow`, `true`, `yes`).
    pub(super) fn output(&self, id: &str, stream: Stream, query: &str) -> Answer {
        if follows(query)? {
            self.follow(id, stream)
        } else {
            self.stream(id, stream)
        }
    }

    fn follow(&self, id: &str, stream: Stream) -> Answer {
        let Some(slot) = Slot::take() else {
            // Not an error of the daemon's: answered, not logged.
            let msg = format!("{STREAMS} outputs are being followed already; try again later");
            return Ok(Reply::json(503, &json!({ "error": msg })).header("Retry-After", "5"));
        };
        let follower = Follower::start(&self.spool, id, stream)
            .map_err(internal)?
            .ok_or_else(|| not_found(format!("no job {id:?}")))?
            .until(Instant::now() + STREAM_MAX);
        let body = Followed {
            follower,
            _slot: slot,
        };
        Ok(Reply {
            status: 200,
            content_type: TEXT.into(),
            body: Body::Stream(Box::new(body)),
            headers: vec![("Cache-Control", "no-store".to_string())],
        })
    }
}

/// Whether the query asks to follow: `follow`, `follow=1|true|yes`; off
/// with `0|false|no`; anything else is a 400. Other parameters are
/// ignored, as everywhere in this API.
fn follows(query: &str) -> Result<bool, ApiError> {
    let mut on = false;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "follow" {
            continue;
        }
        on = match v {
            "" | "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => {
                return Err(fail(
                    400,
                    format!("follow={v}: expected 1 or 0 (true/false, yes/no)"),
                ));
            }
        };
    }
    Ok(on)
}

/// One of the [`STREAMS`] places, given back when dropped (the stream
/// ended, or its answer was dropped unsent).
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        OPEN.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < STREAMS).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A followed output as a stream's body, holding its place.
struct Followed {
    follower: Follower,
    _slot: Slot,
}

impl Read for Followed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.follower.read(buf)
    }
}

impl Source for Followed {
    fn attach(&mut self, peer: OwnedFd, stopping: Arc<AtomicBool>) {
        self.follower.watch_peer(peer);
        self.follower.stop_on(stopping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_is_asked_for_by_the_query() {
        for (query, want) in [
            ("", Some(false)),
            ("follow", Some(true)),
            ("follow=1", Some(true)),
            ("a=b&follow=yes", Some(true)),
            ("follow=1&follow=0", Some(false)),
            ("follow=false", Some(false)),
            ("followers=1", Some(false)),
            ("follow=maybe", None),
        ] {
            assert_eq!(follows(query).ok(), want, "{query:?}");
        }
    }

    #[test]
    fn streams_are_counted_and_their_places_given_back() {
        let held: Vec<Slot> = std::iter::from_fn(Slot::take).take(STREAMS + 5).collect();
        assert_eq!(held.len(), STREAMS);
        assert!(Slot::take().is_none());
        drop(held);
        assert!(Slot::take().is_some());
    }
}
