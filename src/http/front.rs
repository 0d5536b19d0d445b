//! The bounded front of the HTTP server: one event thread (mio) that holds
//! every open connection between requests, reads request heads and bodies
//! within their limits, and hands each whole request to the worker pool.
//!
//! Takes connections from the listener and connections given back by the
//! workers after an answer (keep-alive); gives complete [`Request`]s to
//! the workers through the [`Link`]. It never runs a handler, never
//! touches the spool, never blocks: every socket here is non-blocking, and
//! the only writes are a `100 Continue` and the refusal of a request that
//! no handler will see (431, 400), both a few bytes, tried once.
//!
//! Limits (SPEC §9), each a constant or a key of `[http]`:
//! - a head (request line and headers) of at most `request::HEAD_MAX`
//!   bytes, else 431 and close; nothing beyond that is kept for it;
//! - a body kept up to `max_job_bytes` (the handler answers 413 past it,
//!   and the rest is thrown away here);
//! - at most `max_connections` connections open, counting those with a
//!   worker. At the limit, a new connection closes the one that has been
//!   idle longest among those here (no request with a worker), so that a
//!   fresh `/healthz` gets through however many idle clients there are;
//!   when every connection has a request in flight, new ones wait in the
//!   listen backlog;
//! - a connection that has sent no complete request for `idle_timeout`
//!   since it was opened or last answered is closed.
//!
//! An idle connection costs a file descriptor and a small struct, never a
//! thread: the thread count is fixed whatever clients do.
//!
//! Architecture Invariant: the front's memory is bounded by
//! `max_connections × (HEAD_MAX + max_job_bytes)` plus one read buffer,
//! whatever clients send.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::request::{Reader, Request, Step};
use super::response::{self, Body, Manner, WRITE_TIMEOUT};
use crate::status::Board;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection tokens start here; a connection's token is its slot + FIRST.
const FIRST: usize = 2;
/// How much is read from a socket at a time.
const READ_CHUNK: usize = 64 << 10;
/// After accept fails for lack of descriptors or memory, when to try again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A whole request and the connection it came on, for a worker.
pub struct Handoff {
    /// Blocking, with [`WRITE_TIMEOUT`] on writes.
    pub stream: std::net::TcpStream,
    pub request: Request,
    /// Where the connection is in reading its next request (throwing away
    /// the rest of a refused body, or at a fresh head).
    pub reader: Reader,
    /// Bytes received after the request (a pipelined next one).
    pub buf: Vec<u8>,
}

/// A connection given back after its answer, for its next request.
pub struct Back {
    pub stream: std::net::TcpStream,
    pub reader: Reader,
    pub buf: Vec<u8>,
}

/// What a worker is given.
pub enum Work {
    Serve(Handoff),
    /// Leave: the server stops.
    Stop,
}

/// An answer on its way out, with the connection it goes to and what the
/// connection needs for its next request.
pub struct Sending {
    pub stream: std::net::TcpStream,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    pub manner: Manner,
    pub reader: Reader,
    pub buf: Vec<u8>,
}

/// What the front, the workers and the senders share. Outlives any one of
/// their threads, so that a thread started again finds it as it was.
pub struct Link {
    /// Whole requests, from the front to the workers.
    pub work: (Sender<Work>, Receiver<Work>),
    /// Answers too long for a worker, to the senders; `None` tells a
    /// sender to leave.
    pub long: (Sender<Option<Sending>>, Receiver<Option<Sending>>),
    /// Connections answered and kept alive, back to the front.
    pub back: (Sender<Back>, Receiver<Back>),
    /// Wakes the front's poll when a connection comes back or the server
    /// stops; replaced each time the front thread starts.
    waker: Mutex<Option<Arc<Waker>>>,
    /// Connections with a worker or a sender now: they count against
    /// `max_connections` though the front does not hold them.
    pub in_flight: AtomicUsize,
    /// Set once the server is dropped: threads leave instead of serving.
    pub stopping: Arc<AtomicBool>,
}

impl Link {
    pub fn new() -> Link {
        Link {
            work: crossbeam_channel::unbounded(),
            long: crossbeam_channel::unbounded(),
            back: crossbeam_channel::unbounded(),
            waker: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Wakes the front thread, if one runs.
    pub fn wake(&self) {
        let waker = match self.waker.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(w) = waker {
            let _ = w.wake();
        }
    }

    /// Gives an answered connection back to the front for its next
    /// request; closes it instead when the server stops.
    pub fn give_back(&self, back: Back) {
        if self.stopping.load(Ordering::SeqCst) || self.back.0.send(back).is_err() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        self.wake();
    }

    /// A connection a worker or sender is done with, closed by it.
    pub fn closed(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        // The front may be waiting for room to accept.
        self.wake();
    }

    fn set_waker(&self, w: Option<Arc<Waker>>) {
        match self.waker.lock() {
            Ok(mut g) => *g = w,
            Err(p) => *p.into_inner() = w,
        }
    }
}

/// One connection between requests.
struct Conn {
    stream: TcpStream,
    reader: Reader,
    /// Received and not used yet: part of a head, or what follows a
    /// request.
    buf: Vec<u8>,
    /// When it was opened or last given back: the idle clock.
    since: Instant,
}

/// The event thread's state; rebuilt whole when the thread starts again.
struct Front {
    poll: Poll,
    listener: TcpListener,
    /// Connections by slot; `None` for a free slot.
    conns: Vec<Option<Conn>>,
    /// Free slots, reused before the table grows.
    free: Vec<usize>,
    /// Every connection here by when it went idle: the first is the next
    /// to time out and the first to give way to a new one.
    idle: BTreeSet<(Instant, usize)>,
    /// How many connections are here (the `Some` slots).
    open: usize,
    link: Arc<Link>,
    board: Board,
    /// Connections may be waiting in the listen backlog: accept them when
    /// there is room.
    backlog: bool,
    /// Accepting failed for lack of descriptors or memory: not before then.
    accept_after: Option<Instant>,
    /// Whether that failure has been logged (once per episode).
    accept_failing: bool,
    /// The read buffer every connection reads through.
    chunk: Vec<u8>,
}

/// The event thread's body: serves until the server stops. Returns early
/// (and the keeper starts it again) when it cannot set up its poll.
pub fn run(listener: &std::net::TcpListener, board: &Board, link: &Arc<Link>) {
    let mut front = match Front::new(listener, board, link) {
        Ok(f) => f,
        Err(e) => {
            crate::log!("http: cannot start the event thread: {e}");
            return;
        }
    };
    front.serve();
    link.set_waker(None);
}

impl Front {
    fn new(listener: &std::net::TcpListener, board: &Board, link: &Arc<Link>) -> io::Result<Front> {
        let poll = Poll::new()?;
        let std_listener = listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(std_listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        link.set_waker(Some(waker));
        Ok(Front {
            poll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            idle: BTreeSet::new(),
            open: 0,
            link: link.clone(),
            board: board.clone(),
            backlog: true,
            accept_after: None,
            accept_failing: false,
            chunk: vec![0; READ_CHUNK],
        })
    }

    fn serve(&mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let config = self.board.config();
            let idle_timeout = config.http.idle_timeout;
            let now = Instant::now();
            let next_idle = self.idle.first().map(|(since, _)| *since + idle_timeout);
            let wake_at = match (next_idle, self.accept_after.filter(|_| self.backlog)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = wake_at.map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                crate::log!("http: poll failed: {e}");
                return;
            }
            if self.link.stopping.load(Ordering::SeqCst) {
                return;
            }
            let limits = Limits {
                max_connections: config.http.max_connections,
                body: config.max_job_bytes,
            };
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.backlog = true,
                    WAKER => {}
                    Token(t) => self.readable(t.wrapping_sub(FIRST), &limits),
                }
            }
            self.take_back(&limits);
            self.expire(Instant::now(), idle_timeout);
            if self.backlog && self.accept_after.is_none_or(|t| t <= Instant::now()) {
                self.accept(&limits);
            }
        }
    }

    /// Connections open, here and with the workers.
    fn total(&self) -> usize {
        self.open + self.link.in_flight.load(Ordering::SeqCst)
    }

    /// Accepts what waits in the backlog while there is room, making room
    /// by closing the idlest connection here.
    fn accept(&mut self, limits: &Limits) {
        loop {
            if self.total() >= limits.max_connections && !self.evict_idlest() {
                // Every connection has a request in flight: the new ones
                // wait in the backlog until one of them is done.
                return;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accept_after = None;
                    if self.accept_failing {
                        self.accept_failing = false;
                        crate::log!("http: accepting connections again");
                    }
                    let _ = stream.set_nodelay(true);
                    // What it sent already raises an event once registered.
                    self.insert(stream, Reader::default(), Vec::new());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO)) => {}
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory: the
                    // connection stays in the backlog. Give up the idlest
                    // one here and try again shortly; the listener will
                    // not say it is still readable.
                    if !self.accept_failing {
                        self.accept_failing = true;
                        crate::log!("http: cannot accept a connection: {e}; closing idle ones");
                    }
                    self.evict_idlest();
                    self.accept_after = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Registers a connection; `None` (and it is closed) when the poll
    /// refuses it.
    fn insert(&mut self, mut stream: TcpStream, reader: Reader, buf: Vec<u8>) -> Option<usize> {
        let slot = self.free.pop().unwrap_or(self.conns.len());
        if self
            .poll
            .registry()
            .register(&mut stream, Token(slot + FIRST), Interest::READABLE)
            .is_err()
        {
            self.free.push(slot);
            return None;
        }
        let since = Instant::now();
        let conn = Conn {
            stream,
            reader,
            buf,
            since,
        };
        if slot == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[slot] = Some(conn);
        }
        self.idle.insert((since, slot));
        self.open += 1;
        Some(slot)
    }

    /// Takes a connection out of the table (and the poll).
    fn remove(&mut self, slot: usize) -> Option<Conn> {
        let mut conn = self.conns.get_mut(slot)?.take()?;
        self.idle.remove(&(conn.since, slot));
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free.push(slot);
        self.open -= 1;
        Some(conn)
    }

    /// Closes the connection idle longest; false when there is none here.
    fn evict_idlest(&mut self) -> bool {
        match self.idle.first().copied() {
            Some((_, slot)) => {
                self.remove(slot);
                true
            }
            None => false,
        }
    }

    /// Closes the connections that have sent no complete request in time.
    fn expire(&mut self, now: Instant, idle_timeout: Duration) {
        while let Some(&(since, slot)) = self.idle.first() {
            if since + idle_timeout > now {
                return;
            }
            self.remove(slot);
        }
    }

    /// Takes in the connections the workers gave back, and reads what
    /// they may have sent meanwhile.
    fn take_back(&mut self, limits: &Limits) {
        while let Ok(back) = self.link.back.1.try_recv() {
            self.link.in_flight.fetch_sub(1, Ordering::SeqCst);
            if back.stream.set_nonblocking(true).is_err() {
                continue;
            }
            let stream = TcpStream::from_std(back.stream);
            if let Some(slot) = self.insert(stream, back.reader, back.buf) {
                // A pipelined request may be whole already, and what came
                // while the worker had it raised no event here.
                self.readable(slot, limits);
            }
        }
    }

    /// Reads what a connection sent and acts on what it makes.
    fn readable(&mut self, slot: usize, limits: &Limits) {
        // What is already buffered first (a pipelined request).
        if self.advance(slot, limits) {
            return;
        }
        loop {
            let Some(Some(conn)) = self.conns.get_mut(slot) else {
                return;
            };
            match conn.stream.read(&mut self.chunk) {
                Ok(0) => {
                    // The client is done sending: a request it completed
                    // before is answered (advance ran above), nothing more.
                    self.remove(slot);
                    return;
                }
                Ok(n) => {
                    conn.buf.extend_from_slice(&self.chunk[..n]);
                    if self.advance(slot, limits) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(slot);
                    return;
                }
            }
        }
    }

    /// Runs the connection's reader over its buffer. True when the
    /// connection has left the front (handed off or closed).
    fn advance(&mut self, slot: usize, limits: &Limits) -> bool {
        loop {
            let Some(Some(conn)) = self.conns.get_mut(slot) else {
                return true;
            };
            match conn.reader.advance(&mut conn.buf, limits.body) {
                Step::More => return false,
                Step::Continue => {
                    // Tried once: a client that cannot take 25 bytes now
                    // sends its body after its own wait anyway.
                    let _ = conn.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                Step::Request(request) => {
                    self.hand_off(slot, request);
                    return true;
                }
                Step::Refuse(status, msg) => {
                    let _ = conn.stream.write(&response::refusal(status, &msg));
                    self.remove(slot);
                    return true;
                }
                Step::Close => {
                    self.remove(slot);
                    return true;
                }
            }
        }
    }

    /// Gives a whole request and its connection to the workers.
    fn hand_off(&mut self, slot: usize, request: Request) {
        let Some(conn) = self.remove(slot) else {
            return;
        };
        let stream: std::net::TcpStream = conn.stream.into();
        if stream.set_nonblocking(false).is_err()
            || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
        {
            return;
        }
        self.link.in_flight.fetch_add(1, Ordering::SeqCst);
        let work = Work::Serve(Handoff {
            stream,
            request,
            reader: conn.reader,
            buf: conn.buf,
        });
        if self.link.work.0.send(work).is_err() {
            self.link.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The limits in force for one turn of the loop (they change on SIGHUP).
struct Limits {
    max_connections: usize,
    /// The largest body kept (`max_job_bytes`).
    body: u64,
}
