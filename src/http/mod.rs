//! The HTTP API (SPEC §9): a door onto the spool for programs that would
//! rather not write files.
//!
//! Requests come in through a bounded front (`front`: one mio event
//! thread holds every connection and reads each request whole, within the
//! limits of SPEC §9) and are answered by a fixed pool of workers
//! (`workers`); a keeper (`keeper`) starts any of these threads again if
//! it dies. Handlers read jobs, their output and their files through
//! [`spool::query`](crate::spool::query) (the spool's one read side, which
//! the client asks too; this module builds no spool path), and the
//! snapshot the daemon publishes on its [`Board`]; they write exactly two
//! things, both through [`Spool`]: a submission (`tmp/` → `new/`, the same
//! path as a file drop, checked by the same `job::parse`) and a cancel
//! request (`cancel/<id>`). Nothing here moves a job or decides anything
//! about one.
//!
//! This file owns the [`Server`] (its threads and their stop) and the
//! plumbing of one exchange (the body through its limit, the headers
//! every answer carries, how an error is spelled). The rest, by concern:
//! - `front`: the event thread: connections, limits, idle timeouts.
//! - `request`: reading one request (head and body) within limits; pure.
//! - `response`: writing one answer (bytes, a file, a stream).
//! - `workers`: the worker pool and the senders of long answers.
//! - `keeper`: restarting a thread that died, with backoff.
//! - `routes`: which handler answers which request; the native API.
//! - `compat`: Raccoon's and flask-tasks' request and answer shapes.
//! - `auth`: the bearer token, CORS and preflights.
//! - `files`: job output and the files a task left.
//! - `follow`: a job's output streamed as it is written (`?follow=1`).
//! - `shape`: what a job looks like as JSON.
//!
//! Architecture Invariant: nothing in the daemon waits on an HTTP thread.
//! The main loop only swaps snapshots into the board; `/healthz` asks it
//! for a ping and gives up after 2 s, and answers 503 naming every part
//! that is not working (the loop, a dead thread, records waiting for
//! room). A submission refused because the spool's file system is full
//! is a 507, not a 500. No client can hold a thread by keeping a
//! connection open or sending slowly: the front holds every connection
//! until its request is whole, a worker only answers, and a client that
//! does not read its answer loses it after the write timeout. An HTTP
//! thread that dies is started again by the keeper; the daemon goes on
//! (the keeper itself is a supervised thread: if it dies, the daemon
//! exits 75).
//!
//! Choices the SPEC leaves open, as users see them:
//! - A head longer than 16 KiB (or with more than 100 headers) is answered
//!   431 `{"error": …}` and the connection closed; a malformed head 400, a
//!   `Transfer-Encoding` other than chunked 501, both closed too.
//! - Connections are kept alive as HTTP/1.1 says (HTTP/1.0: with
//!   `Connection: keep-alive`); pipelined requests are answered in order.
//!   `Expect: 100-continue` gets `100 Continue`, unless the length
//!   announced is already past `max_job_bytes` (then 413 at once). After
//!   a 413 the rest of the body is read and thrown away (up to 16 MiB) and
//!   the connection closed.
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
//!   or a `status` that is not one of the seven is a 400. Finished jobs
//!   are those the daemon knows: the records in `done/` when it started
//!   and those it wrote since. With several daemons on one spool, a job
//!   another daemon finished later shows in this daemon's listing only
//!   once the listing reaches past its index (or after a restart);
//!   `GET /jobs/<id>` and `raccoon list` read the folders and always
//!   show it.
//! - The output of a job that has none yet (queued, rejected) is empty.
//! - `?follow=1` (or `follow`, `true`, `yes`; `0`, `false`, `no` turn it
//!   off, anything else is a 400) streams the output as it is written,
//!   chunked (to HTTP/1.0: until the close), with `Cache-Control:
//!   no-store`; the stream ends with the job, when the client goes away,
//!   when the server stops, or after 24 h. At most six at once; past that
//!   503 with `Retry-After: 5`, not logged. See `follow`.
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
mod follow;
mod front;
mod keeper;
mod request;
mod response;
mod routes;
mod shape;
mod workers;

use std::borrow::Cow;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::spool::Spool;
use crate::status::Board;
use crate::threads::{Stopped, Threads};
use front::{Link, Work};
use keeper::{Keeper, Kept};
use request::{Method, Request, Upload};
use response::Body;

/// Worker threads answering requests. Enough that a few `/healthz` calls
/// waiting on the main loop, or submissions waiting on fsync, do not stall
/// the rest; requests are short otherwise.
const WORKERS: usize = 8;
/// Sender threads writing long answers (large files, streams) to clients
/// that may read them slowly.
const SENDERS: usize = 8;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// The running server. Dropping it stops its threads and closes the
/// listening socket.
pub struct Server {
    /// What the threads share; told here to stop.
    link: Arc<Link>,
    /// Restarts a thread that dies; told here to stop doing so.
    keeper: Keeper,
    /// The address bound, for the log and for tests on port 0.
    addr: String,
}

impl Server {
    /// Binds `listen` (port 0 picks a free port) and starts the threads
    /// (their keeper supervised by `threads`). `check` says which parts of
    /// the daemon are not working, none when all are (for `/healthz`).
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
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_or_else(|_| listen.to_string(), |a| a.to_string());
        let link = Arc::new(Link::new());
        let api = Arc::new(Api {
            board: board.clone(),
            spool,
            check: Box::new(check),
        });
        let listener = Arc::new(listener);
        let mut kept = Vec::new();
        let (l, b, k) = (listener, board, link.clone());
        kept.push(Kept {
            name: "http-front".into(),
            body: Arc::new(move || front::run(&l, &b, &k)),
        });
        for n in 0..WORKERS {
            let (api, k) = (api.clone(), link.clone());
            kept.push(Kept {
                name: format!("http-{n}"),
                body: Arc::new(move || workers::work(&api, &k)),
            });
        }
        for n in 0..SENDERS {
            let k = link.clone();
            kept.push(Kept {
                name: format!("http-send-{n}"),
                body: Arc::new(move || workers::send_long(&k)),
            });
        }
        match Keeper::start(kept, link.stopping.clone(), threads) {
            Ok(keeper) => Ok(Server { link, keeper, addr }),
            Err(e) => {
                stop(&link);
                Err(e)
            }
        }
    }

    /// The address actually bound, with port 0 resolved.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.keeper.stop();
        stop(&self.link);
    }
}

/// Tells every HTTP thread to leave: the front at once (it closes its
/// connections and the listener), workers and senders once what was
/// handed to them before is answered. Nobody waits for them.
fn stop(link: &Link) {
    link.stopping.store(true, Ordering::SeqCst);
    link.wake();
    for _ in 0..WORKERS {
        let _ = link.work.0.send(Work::Stop);
    }
    for _ in 0..SENDERS {
        let _ = link.long.0.send(None);
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
}

impl Api {
    /// The answer to one request, with the headers every answer carries.
    /// A handler that panics costs this request a 500, nothing more.
    fn answer(&self, req: Request) -> (u16, Vec<(&'static str, String)>, Body) {
        let cors = self.board.config().http.cors_origin.clone();
        let mut ex = Exchange { req };
        let reply =
            panic::catch_unwind(AssertUnwindSafe(|| self.handle(&mut ex))).unwrap_or_else(|_| {
                eprintln!("http: a request handler panicked; answered 500");
                fail(500, "the request could not be answered").reply(Dialect::Native)
            });
        // nosniff: a job's output is shown as the text it is, never run
        // as the HTML or script a browser might guess it to be.
        let mut headers = vec![
            ("Content-Type", reply.content_type.into_owned()),
            ("X-Content-Type-Options", "nosniff".to_string()),
        ];
        if let Some(origin) = &cors {
            headers.extend(auth::cors_headers(origin).map(|(n, v)| (n, v.to_string())));
        }
        headers.extend(reply.headers);
        (reply.status, headers, reply.body)
    }

    /// Answers one request: the error dialect by its path, the token, then
    /// the route. Errors of the daemon's own (500s) are logged.
    fn handle(&self, ex: &mut Exchange) -> Reply {
        let config = self.board.config();
        let cors = config.http.cors_origin.is_some();
        let method = ex.req.method.clone();
        let url = ex.req.target.clone();
        let (raw_path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
        let dialect = if raw_path.starts_with("/api/") {
            Dialect::Raccoon
        } else {
            Dialect::Native
        };
        let answer = if method == Method::Options {
            // A CORS preflight carries no credentials: answer it unasked.
            Ok(auth::preflight(cors))
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
                    self.route(&method, &segs, query, ex, &config)
                }
                Err(e) => Err(e),
            }
        };
        match answer {
            Ok(r) => r,
            Err(f) => {
                // A full disk is the disk's state, said once by the
                // commit thread: not one line per refused submission.
                if f.status >= 500 && f.status != 507 {
                    eprintln!("http: {method} {raw_path}: {}", f.msg);
                }
                f.reply(dialect)
            }
        }
    }
}

/// An answer, before the headers every answer carries are added.
struct Reply {
    status: u16,
    /// Owned for a file whose media type gets a charset.
    content_type: Cow<'static, str>,
    body: Body,
    headers: Vec<(&'static str, String)>,
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

/// A request being answered; its body was read by the front, within
/// `max_job_bytes`.
struct Exchange {
    req: Request,
}

impl Exchange {
    /// The body, or 413 when it is longer than `limit`, plain or chunked.
    fn body(&mut self, limit: u64) -> Result<Vec<u8>, ApiError> {
        let too_large = || {
            fail(
                413,
                format!("the body is larger than max_job_bytes = {limit}"),
            )
        };
        match std::mem::replace(&mut self.req.body, Upload::Complete(Vec::new())) {
            Upload::Complete(bytes) if bytes.len() as u64 <= limit => Ok(bytes),
            Upload::Complete(_) | Upload::TooLarge => Err(too_large()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    /// One request on a fresh connection; the status and the body.
    fn ask(addr: &str, target: &str) -> (u16, String) {
        use std::io::{Read, Write};
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

        // Dropped, it stops listening (the front and the keeper leave).
        let addr = server.addr().to_string();
        drop(server);
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_ok() {
            assert!(std::time::Instant::now() < end, "still listening on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
