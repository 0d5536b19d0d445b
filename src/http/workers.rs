//! The worker pool and the senders: the threads that answer the requests
//! the front hands over.
//!
//! A worker takes a whole request (head and body already read), asks the
//! [`Api`] for the answer, writes it when it is short, and gives the
//! connection back to the front for its next request (keep-alive) or
//! closes it. A long answer (a large file, a stream) goes to a sender
//! instead, so that a client that reads slowly holds a sender and never a
//! worker: submissions and `/healthz` keep their workers whatever
//! downloads are under way.
//!
//! Never reads a request off a socket (the front does) and never waits on
//! a client except in a write, which [`WRITE_TIMEOUT`](super::response::WRITE_TIMEOUT)
//! bounds. A sender writing a stream (a followed output) also waits for
//! the stream between writes: the stream is handed the connection, and
//! ends when its client goes away or the server stops. A handler that panics costs its request (answered 500), never
//! the thread.

use std::sync::atomic::Ordering;

use super::Api;
use super::front::{Back, Handoff, Link, Sending, Work};
use super::request::Method;
use super::response::{self, Body, Manner};

/// A worker's body: answers requests until the server stops.
pub fn work(api: &Api, link: &Link) {
    while let Ok(Work::Serve(handoff)) = link.work.1.recv() {
        serve(api, link, handoff);
    }
}

/// A sender's body: writes long answers until the server stops (`None`).
pub fn send_long(link: &Link) {
    while let Ok(Some(sending)) = link.long.1.recv() {
        deliver(link, sending);
    }
}

fn serve(api: &Api, link: &Link, handoff: Handoff) {
    let Handoff {
        stream,
        request,
        reader,
        buf,
    } = handoff;
    let manner = Manner {
        head_only: request.method == Method::Head,
        minor: request.minor,
        keep_alive: request.keep_alive && !link.stopping.load(Ordering::SeqCst),
    };
    let (status, headers, body) = api.answer(request);
    let sending = Sending {
        stream,
        status,
        headers,
        body,
        manner,
        reader,
        buf,
    };
    if sending.body.is_long() && !manner.head_only {
        if let Err(back) = link.long.0.send(Some(sending)) {
            // No sender will take it (the server stops): write it here.
            if let Some(sending) = back.into_inner() {
                deliver(link, sending);
            }
        }
        return;
    }
    deliver(link, sending);
}

/// Writes the answer, then gives the connection back to the front (kept
/// alive, or with a refused body to throw away) or closes it.
fn deliver(link: &Link, sending: Sending) {
    let Sending {
        mut stream,
        status,
        headers,
        body,
        manner,
        reader,
        buf,
    } = sending;
    let mut body = body;
    // A stream that waits between reads (a followed output) watches the
    // connection, so that a client that leaves ends it at once.
    if let Body::Stream(source) = &mut body
        && let Ok(peer) = stream.try_clone()
    {
        source.attach(peer.into(), link.stopping.clone());
    }
    match response::send(&mut stream, status, &headers, body, manner) {
        Ok(keep) if keep || reader.discarding() => link.give_back(Back {
            stream,
            reader,
            buf,
        }),
        _ => {
            drop(stream);
            link.closed();
        }
    }
}
