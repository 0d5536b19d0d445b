//! The HTTP API (SPEC §9): a door onto the spool for programs that would
//! rather not write files.
//!
//! Takes requests from tiny_http on a small pool of worker threads; reads
//! jobs, their output and their files through
//! [`spool::query`](crate::spool::query) (the spool's one read side, which
//! the client asks too; this module builds no spool path), and the
//! snapshot the daemon publishes on its [`Board`]; writes exactly two things, both through [`Spool`]: a
//! submission (`tmp/` → `new/`, the same path as a file drop, checked by
//! the same `job::parse`) and a cancel request (`cancel/<id>`). It never
//! moves a job and never decides anything about one.
//!
//! This file owns the [`Server`], its worker pool and the plumbing of one
//! exchange (reading a body through a limit, sending an answer, spelling
//! an error). The rest, by concern:
//! - `routes`: which handler answers which request; the native API.
//! - `compat`: Raccoon's and flask-tasks' request and answer shapes.
//! - `auth`: the bearer token, CORS and preflights.
//! - `files`: job output and the files a task left.
//! - `shape`: what a job looks like as JSON.
//!
//! Architecture Invariant: nothing in the daemon waits on an HTTP thread.
//! The main loop only swaps snapshots into the board; `/healthz` asks it
//! for a ping and gives up after 2 s, and answers 503 naming every part
//! that is not working (the loop, a dead thread, records waiting for room).
//!
//! The workers are supervised threads ([`Threads`]): one that ends (when
//! tiny_http's accept thread has died, nothing more would be served) is
//! reported, and the daemon exits 75 to be started again. A submission
//! refused because the spool's file system is full is a 507, not a 500. tiny_http has no timeouts, so a slow
//! or silent client ties up a thread: tiny_http's own for that connection
//! while it sends headers, and one of ours while it sends a body or reads
//! a large answer, never one of the pool's workers and never the
//! scheduler.
//!
//! Choices the SPEC leaves open, as users see them:
//! - Path segments are split on `/` first and percent-decoded after, so
//!   `%2F` never makes a new segment. An id that is not a valid job id
//!   (`..`, `a/b`, too long) gets 404, like any id no job has; it is
//!   checked before any file is named after it.
//! - `GET /jobs` answers `{"jobs": [...]}`. A finished job appears as its
//!   record (without `source`, which `GET /jobs/<id>` has); a queued or
//!   running one as `GET /jobs/<id>` shows it. Newest first by each job's
//!   latest step, as `raccoon list` orders them: queued and running jobs
//!   by when their file was written, finished jobs by when they finished.
//!   `limit` above 1000 is taken as 1000; a `limit` that is not a number
//!   or a `status` that is not one of the seven is a 400.
//! - The output of a job that has none yet (queued, rejected) is empty.
//! - `GET /done/<id>.out|.err` and `/running/<id>.out|.err` serve those
//!   files, so that the report's relative links (`done/<id>.out`) work over
//!   HTTP exactly as they do from `file://`.
//! - With a token, every request needs `Authorization: Bearer <token>`,
//!   except CORS preflights (browsers never send credentials with those).
//! - Files a task left (`/jobs/<id>/files/<name>`) come from
//!   `running/<id>.files/` while it runs, then from `done/<id>.files/`;
//!   `name` is one visible path component, opened with `openat` and
//!   `O_NOFOLLOW` (a symlink is a 404), and served with
//!   `Content-Security-Policy: sandbox`, so an HTML file cannot script
//!   this origin. Text files are served with `charset=utf-8`.

mod auth;
mod compat;
mod files;
mod routes;
mod shape;

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::spool::Spool;
use crate::status::Board;
use crate::threads::{Stopped, Threads};

/// Worker threads taking requests off tiny_http's queue. Enough that a few
/// slow uploads or `/healthz` calls waiting on the main loop do not stall
/// the rest; requests are short otherwise.
const WORKERS: usize = 8;
/// How much of a refused chunked upload is read and thrown away, so that
/// the client reads our answer rather than a connection reset.
const DRAIN_MAX: u64 = 16 << 20;
/// tiny_http reads bodies up to this size before handing the request over;
/// larger ones (and chunked ones) are still on the socket.
const BUFFERED_BODY: usize = 1024;
/// Answers larger than this (job output, files) are sent from a thread of
/// their own: a client that reads slowly would otherwise hold a worker.
const LARGE_ANSWER: usize = 256 << 10;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// The running server. Dropping it stops the workers.
pub struct Server {
    /// tiny_http's server, shared with the workers that take requests off
    /// it; the last of them to leave drops it, which stops accepting.
    inner: Arc<tiny_http::Server>,
    /// What the workers share; kept here to tell them to stop.
    api: Arc<Api>,
    /// The address bound, for the log and for tests on port 0.
    addr: String,
    /// How many workers started: each needs one unblock to leave.
    workers: usize,
}

impl Server {
    /// Binds `listen` (port 0 picks a free port) and starts the workers
    /// (supervised by `threads`). `check` says which parts of the daemon
    /// are not working, none when all are (for `/healthz`).
    pub fn start<C>(
        threads: &Threads,
        listen: &str,
        board: Board,
        spool: Spool,
        check: C,
    ) -> io::Result<Server>
    where
        C: Fn() -> Vec<Stopped> + Send + Sync + 'static,
    {
        let inner = tiny_http::Server::http(listen).map_err(|e| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("cannot listen on {listen}: {e}"),
            )
        })?;
        let addr = inner
            .server_addr()
            .to_ip()
            .map_or_else(|| listen.to_string(), |a| a.to_string());
        let inner = Arc::new(inner);
        let api = Arc::new(Api {
            board,
            spool,
            check: Box::new(check),
            stopping: AtomicBool::new(false),
        });
        let mut server = Server {
            inner,
            api,
            addr,
            workers: 0,
        };
        for n in 0..WORKERS {
            let (tiny, api) = (server.inner.clone(), server.api.clone());
            threads
                .spawn(&format!("http-{n}"), move || work(&tiny, &api))
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot start HTTP worker thread: {e}"))
                })?;
            // Counted as they start, so that a failure stops those started.
            server.workers += 1;
        }
        Ok(server)
    }

    /// The address actually bound, with port 0 resolved.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Each unblock releases one worker once the requests queued before
        // it are answered; the last worker to leave drops tiny_http's
        // server, which stops accepting. Nobody waits for that.
        self.api.stopping.store(true, Ordering::SeqCst);
        for _ in 0..self.workers {
            self.inner.unblock();
        }
    }
}

fn work(tiny: &tiny_http::Server, api: &Arc<Api>) {
    loop {
        let req = match tiny.recv() {
            Ok(req) => req,
            Err(_) if api.stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                // tiny_http's accept thread ends on its first error (for
                // example EMFILE with many idle connections): from now on
                // no new connection is served. The worker's end is
                // reported, and the daemon restarts.
                eprintln!("http: no longer accepting connections: {e}");
                return;
            }
        };
        let ex = Exchange::new(req, false);
        if !ex.unread {
            guarded(api, ex);
            continue;
        }
        // The body is still on the socket and arrives as slowly as the
        // client likes: such a request gets a thread of its own, so that
        // slow uploads never hold up the pool (tiny_http already spends a
        // thread per connection; this adds at most one more).
        let mine = api.clone();
        let spawned = std::thread::Builder::new()
            .name("http-body".into())
            .spawn(move || {
                guarded(
                    &mine,
                    Exchange {
                        detached: true,
                        ..ex
                    },
                )
            });
        if let Err(e) = spawned {
            eprintln!("http: cannot start a thread for a request body: {e}; answered 500");
        }
    }
}

/// Serves one request. A bug in a handler must not shrink the pool: the
/// request is dropped (tiny_http then answers 500) and the thread goes on.
fn guarded(api: &Api, ex: Exchange) {
    if panic::catch_unwind(AssertUnwindSafe(|| api.handle(ex))).is_err() {
        eprintln!("http: a request handler panicked; answered 500");
    }
}

/// What every worker shares.
struct Api {
    /// The latest snapshot (report, metrics, running jobs' pids) and the
    /// configuration in force (token, limits, `max_job_bytes`).
    board: Board,
    /// Where jobs are read from and submissions and cancels written to.
    spool: Spool,
    /// Which parts of the daemon are not working, for `/healthz`: asks
    /// the main loop for an answer (giving up after a deadline of its own
    /// rather than wait on it) and reads the board of dead threads.
    check: Box<dyn Fn() -> Vec<Stopped> + Send + Sync>,
    /// Set when the server is dropped, so that workers tell the wake-up
    /// that stops them from a failure.
    stopping: AtomicBool,
}

impl Api {
    /// Answers one request: the error dialect by its path, the token, then
    /// the route. Errors of the daemon's own (500s) are logged.
    fn handle(&self, mut ex: Exchange) {
        let config = self.board.config();
        let cors = config.http.cors_origin.clone();
        let method = ex.req.method().clone();
        let url = ex.req.url().to_string();
        let (raw_path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let dialect = if raw_path.starts_with("/api/") {
            Dialect::Raccoon
        } else {
            Dialect::Native
        };
        let answer = if method == Method::Options {
            // A CORS preflight carries no credentials: answer it unasked.
            Ok(auth::preflight(cors.is_some()))
        } else if let Some(token) = &config.http.token
            && !auth::authorized(&ex.req, token)
        {
            Err(fail(
                401,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            ))
        } else {
            match routes::split_path(raw_path) {
                Ok(segs) => {
                    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                    self.route(&method, &segs, query, &mut ex, &config)
                }
                Err(e) => Err(e),
            }
        };
        let reply = match answer {
            Ok(r) => r,
            Err(f) => {
                // A full disk is the disk's state, said once by the
                // commit thread: not one line per refused submission.
                if f.status >= 500 && f.status != 507 {
                    eprintln!("http: {method} {raw_path}: {}", f.msg);
                }
                f.reply(dialect)
            }
        };
        ex.respond(reply, cors.as_deref());
    }
}

/// An answer before it is turned into tiny_http's type.
struct Reply {
    status: u16,
    /// Owned for a file whose media type gets a charset.
    content_type: Cow<'static, str>,
    body: Body,
    headers: Vec<(&'static str, String)>,
}

/// What an answer sends.
enum Body {
    Bytes(Vec<u8>),
    /// An open file and how many bytes of it to send: a running job's
    /// output grows, and tiny_http must send exactly the length announced.
    File(File, u64),
}

impl Reply {
    fn new(
        status: u16,
        content_type: impl Into<Cow<'static, str>>,
        body: impl Into<Vec<u8>>,
    ) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            body: Body::Bytes(body.into()),
            headers: Vec::new(),
        }
    }

    fn json(status: u16, v: &Value) -> Reply {
        let mut text = v.to_string();
        text.push('\n');
        Reply::new(status, JSON, text)
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// How errors are spelled: Raccoon's clients expect their own shape.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Native,
    Raccoon,
}

/// A failed request: its status and what is wrong, in words.
struct ApiError {
    status: u16,
    msg: String,
    /// For 405: the methods the path takes.
    allow: Option<&'static str>,
}

fn fail(status: u16, msg: impl Into<String>) -> ApiError {
    ApiError {
        status,
        msg: msg.into(),
        allow: None,
    }
}

impl ApiError {
    fn reply(self, dialect: Dialect) -> Reply {
        let ApiError { status, msg, allow } = self;
        let reply = match dialect {
            Dialect::Native => Reply::json(status, &json!({ "error": msg })),
            // `error` too, so that every error of this API has it.
            Dialect::Raccoon => Reply::json(
                status,
                &json!({ "status": "ERROR", "error_code": 100, "error_msg": msg, "error": msg }),
            ),
        };
        match (status, allow) {
            (401, _) => reply.header("WWW-Authenticate", "Bearer realm=\"raccoond\""),
            (_, Some(methods)) => reply.header("Allow", methods),
            _ => reply,
        }
    }
}

fn not_found(what: impl std::fmt::Display) -> ApiError {
    fail(404, what.to_string())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    fail(500, e.to_string())
}

type Answer = Result<Reply, ApiError>;

/// A request's body, read at most once, through a limit.
struct Exchange {
    req: Request,
    /// Whether some of the body may still be on the socket.
    unread: bool,
    /// Whether this runs on a thread of its own rather than a worker.
    detached: bool,
}

impl Exchange {
    fn new(req: Request, detached: bool) -> Exchange {
        let chunked = req
            .headers()
            .iter()
            .any(|h| h.field.equiv("Transfer-Encoding"));
        let unread = chunked || req.body_length().is_some_and(|n| n > BUFFERED_BODY);
        Exchange {
            req,
            unread,
            detached,
        }
    }

    /// The body, or 413 when it is longer than `limit`, plain or chunked.
    fn body(&mut self, limit: u64) -> Result<Vec<u8>, ApiError> {
        let too_large = || {
            fail(
                413,
                format!("the body is larger than max_job_bytes = {limit}"),
            )
        };
        if self.req.body_length().is_some_and(|n| n as u64 > limit) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        self.req
            .as_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| fail(400, format!("cannot read the body: {e}")))?;
        if bytes.len() as u64 > limit {
            return Err(too_large());
        }
        self.unread = false;
        Ok(bytes)
    }

    fn respond(self, reply: Reply, cors: Option<&str>) {
        // nosniff: a job's output is shown as the text it is, never run
        // as the HTML or script a browser might guess it to be.
        let mut headers = vec![
            header("Content-Type", &reply.content_type),
            header("X-Content-Type-Options", "nosniff"),
        ];
        if let Some(origin) = cors {
            headers.extend(auth::cors_headers(origin).map(|(n, v)| header(n, v)));
        }
        for (name, value) in &reply.headers {
            headers.push(header(name, value));
        }
        let headers: Vec<Header> = headers.into_iter().flatten().collect();
        let (reader, len): (Box<dyn Read + Send>, usize) = match reply.body {
            Body::Bytes(b) => {
                let n = b.len();
                (Box::new(io::Cursor::new(b)), n)
            }
            Body::File(f, n) => (
                Box::new(f.take(n)),
                usize::try_from(n).unwrap_or(usize::MAX),
            ),
        };
        let response = Response::new(StatusCode(reply.status), headers, reader, Some(len), None);
        let Exchange {
            mut req,
            unread,
            detached,
        } = self;
        if unread && req.body_length().is_none() {
            // A chunked body we stopped reading: read (some of) the rest,
            // or the client may see a reset instead of our answer. A plain
            // body is read to its end by tiny_http when the request drops.
            // Either waits on the client: this runs on its own thread.
            let _ = io::copy(&mut req.as_reader().take(DRAIN_MAX), &mut io::sink());
        }
        if detached || len <= LARGE_ANSWER {
            let _ = req.respond(response);
            return;
        }
        // A large file to a client that may read it slowly: not on a worker.
        let spawned = std::thread::Builder::new()
            .name("http-send".into())
            .spawn(move || {
                let _ = req.respond(response);
            });
        if let Err(e) = spawned {
            eprintln!("http: cannot start a thread to send an answer: {e}");
        }
    }
}

/// A header from text we made; `None` when it is not plain ASCII on one
/// line (so that nothing can inject a header).
fn header(name: &str, value: &str) -> Option<Header> {
    if value.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    /// One request on a fresh connection; the status and the body.
    fn ask(addr: &str, target: &str) -> (u16, String) {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    #[test]
    fn healthz_says_503_naming_what_is_not_working() {
        let dir = tempfile::tempdir().unwrap();
        let over = crate::config::Overrides::default();
        let config = Config::from_text(None, "", dir.path(), &over).unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let threads = Threads::new(|_| {});
        let health = threads.health();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = alive.clone();
        let board = health.clone();
        let server = Server::start(
            &threads,
            "127.0.0.1:0",
            Board::new(Arc::new(config)),
            spool,
            move || {
                let mut out = board.problems();
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    out.push(Stopped {
                        name: "scheduler".into(),
                        why: "did not answer within 2 s".into(),
                    });
                }
                out
            },
        )
        .unwrap();
        assert!(
            !server.addr().ends_with(":0"),
            "port 0 is resolved: {}",
            server.addr()
        );
        assert_eq!(ask(server.addr(), "/healthz"), (200, "ok\n".to_string()));
        alive.store(false, std::sync::atomic::Ordering::SeqCst);
        let (status, body) = ask(server.addr(), "/healthz");
        assert_eq!(status, 503);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("scheduler"), "{body}");
        alive.store(true, std::sync::atomic::Ordering::SeqCst);
        health.set("commit", "the spool's file system is full");
        let (status, body) = ask(server.addr(), "/healthz");
        assert_eq!(status, 503);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["stopped"][0]["name"], "commit", "{body}");
        assert!(v["error"].as_str().unwrap().contains("full"), "{body}");
        health.clear("commit");
        assert_eq!(ask(server.addr(), "/healthz").0, 200);
        threads.closing();

        // Dropped, it stops listening (the workers leave, then tiny_http).
        let addr = server.addr().to_string();
        drop(server);
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_ok() {
            assert!(std::time::Instant::now() < end, "still listening on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
