//! The HTTP API (SPEC §9): a door onto the spool for programs that would
//! rather not write files.
//!
//! Takes requests from tiny_http on a small pool of worker threads; reads
//! the spool's files and the snapshot the daemon publishes on its
//! [`Board`]; writes exactly two things, both through [`Spool`]: a
//! submission (`tmp/` → `new/`, the same path as a file drop, checked by
//! the same [`job::parse`]) and a cancel request (`cancel/<id>`). It never
//! moves a job and never decides anything about one.
//!
//! Architecture Invariant: nothing in the daemon waits on an HTTP thread.
//! The main loop only swaps snapshots into the board; `/healthz` asks it
//! for a ping and gives up after 2 s. tiny_http has no timeouts, so a slow
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
//!   this origin.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::config::Config;
use crate::fsio;
use crate::ids;
use crate::job;
use crate::metrics;
use crate::record::{Record, Status};
use crate::report;
use crate::spool::{Entry, Spool};
use crate::status::{Board, Snapshot};
use crate::time;
use crate::values;

/// Worker threads taking requests off tiny_http's queue. Enough that a few
/// slow uploads or `/healthz` calls waiting on the main loop do not stall
/// the rest; requests are short otherwise.
const WORKERS: usize = 8;
/// `GET /jobs` without `limit`.
const LIST_DEFAULT: usize = 100;
/// The largest `limit` honoured.
const LIST_MAX: usize = 1000;
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
const HTML: &str = "text/html; charset=utf-8";
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running server. Dropping it stops the workers.
pub struct Server {
    inner: Arc<tiny_http::Server>,
    api: Arc<Api>,
    addr: String,
    workers: usize,
}

impl Server {
    /// Binds `listen` (port 0 picks a free port) and starts the workers.
    /// `ping` answers whether the main loop is alive (for `/healthz`).
    pub fn start<P>(listen: &str, board: Board, spool: Spool, ping: P) -> io::Result<Server>
    where
        P: Fn() -> bool + Send + Sync + 'static,
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
            ping: Box::new(ping),
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
            std::thread::Builder::new()
                .name(format!("http-{n}"))
                .spawn(move || work(&tiny, &api))
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
                // no new connection is served.
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
    board: Board,
    spool: Spool,
    ping: Box<dyn Fn() -> bool + Send + Sync>,
    /// Set when the server is dropped, so that workers tell the wake-up
    /// that stops them from a failure.
    stopping: AtomicBool,
}

/// An answer before it is turned into tiny_http's type.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Body,
    headers: Vec<(&'static str, String)>,
}

enum Body {
    Bytes(Vec<u8>),
    /// An open file and how many bytes of it to send: a running job's
    /// output grows, and tiny_http must send exactly the length announced.
    File(File, u64),
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
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
struct Fail {
    status: u16,
    msg: String,
    /// For 405: the methods the path takes.
    allow: Option<&'static str>,
}

fn fail(status: u16, msg: impl Into<String>) -> Fail {
    Fail {
        status,
        msg: msg.into(),
        allow: None,
    }
}

impl Fail {
    fn reply(self, dialect: Dialect) -> Reply {
        let Fail { status, msg, allow } = self;
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

fn not_found(what: impl std::fmt::Display) -> Fail {
    fail(404, what.to_string())
}

fn internal(e: impl std::fmt::Display) -> Fail {
    fail(500, e.to_string())
}

type Answer = Result<Reply, Fail>;

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
    fn body(&mut self, limit: u64) -> Result<Vec<u8>, Fail> {
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
            header("Content-Type", reply.content_type),
            header("X-Content-Type-Options", "nosniff"),
        ];
        if let Some(origin) = cors {
            headers.push(header("Access-Control-Allow-Origin", origin));
            headers.push(header("Vary", "Origin"));
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

/// Where a job is now, with what its file or record says.
enum Found {
    Queued {
        table: toml::Table,
        written: SystemTime,
    },
    Running {
        table: toml::Table,
        written: SystemTime,
        /// When the file was renamed into `running/` (its ctime): the
        /// start time until the daemon's snapshot has the real one.
        claimed: SystemTime,
    },
    Done(Box<Record>),
}

impl Found {
    fn status(&self) -> Status {
        match self {
            Found::Queued { .. } => Status::Queued,
            Found::Running { .. } => Status::Running,
            Found::Done(r) => r.status,
        }
    }
}

impl Api {
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
            Ok(preflight(cors.is_some()))
        } else if let Some(token) = &config.http.token
            && !authorized(&ex.req, token)
        {
            Err(fail(
                401,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            ))
        } else {
            match split_path(raw_path) {
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
                if f.status >= 500 {
                    eprintln!("http: {method} {raw_path}: {}", f.msg);
                }
                f.reply(dialect)
            }
        };
        ex.respond(reply, cors.as_deref());
    }

    fn route(
        &self,
        method: &Method,
        segs: &[&str],
        query: &str,
        ex: &mut Exchange,
        config: &Config,
    ) -> Answer {
        use Method::{Delete, Get, Head, Post};
        let get = matches!(method, Get | Head);
        let allow = |methods: &'static str| Fail {
            status: 405,
            msg: format!("{method} is not allowed on this path (allowed: {methods})"),
            allow: Some(methods),
        };
        let only_get = |f: &dyn Fn() -> Answer| if get { f() } else { Err(allow("GET, HEAD")) };
        match segs {
            [] | ["report.html"] => only_get(&|| Ok(self.report())),
            ["jobs"] => match method {
                Get | Head => self.list(query),
                Post => self.post_job(ex, config),
                _ => Err(allow("GET, HEAD, POST")),
            },
            ["jobs", id] => match method {
                Get | Head => self.show(id),
                Delete => self.cancel(id),
                _ => Err(allow("GET, HEAD, DELETE")),
            },
            ["jobs", id, "output"] => only_get(&|| self.stream(id, false)),
            ["jobs", id, "stderr"] => only_get(&|| self.stream(id, true)),
            ["jobs", id, "files", name] => only_get(&|| self.file(id, name)),
            ["done" | "running", name] => only_get(&|| self.spool_output(segs[0], name)),
            ["metrics"] => only_get(&|| {
                Ok(Reply::new(
                    200,
                    METRICS,
                    metrics::render(&self.board.snapshot(), config),
                ))
            }),
            ["healthz"] => only_get(&|| Ok(self.health())),
            ["api", "tasks"] => match method {
                Post => self.raccoon_submit(ex, config),
                _ => Err(allow("POST")),
            },
            ["task", "new"] => match method {
                Post => self.flask_submit(ex, config),
                _ => Err(allow("POST")),
            },
            ["task", id, "view"] => only_get(&|| self.flask_view(id)),
            _ => Err(not_found(format!("no such path: /{}", segs.join("/")))),
        }
    }

    // ---- reading the spool ----------------------------------------------

    /// Looks for a job: its record first (the commit point: leftovers in
    /// `running/` may outlive it for a moment), then `running/`, then
    /// `new/`; and once more when it was nowhere, as a job may have moved
    /// on (or been put back) between two looks.
    fn find(&self, id: &str) -> Result<Option<Found>, Fail> {
        if !ids::valid_id(id) {
            return Ok(None);
        }
        let max = self.board.config().max_job_bytes;
        for _ in 0..2 {
            match self.spool.read_record(id) {
                Ok(r) => return Ok(Some(Found::Done(Box::new(r)))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(internal(e)),
            }
            match open_regular(&self.spool.running_job(id)) {
                Ok(Some((file, meta))) => {
                    let claimed = SystemTime::UNIX_EPOCH
                        + Duration::new(
                            u64::try_from(meta.ctime()).unwrap_or(0),
                            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
                        );
                    return Ok(Some(Found::Running {
                        table: read_table(file, max),
                        written: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        claimed,
                    }));
                }
                Ok(None) => {}
                Err(e) => return Err(internal(e)),
            }
            for name in [format!("{id}.toml"), id.to_string()] {
                match self.spool.open_new(&name) {
                    Ok(Entry::Regular { file, meta }) => {
                        return Ok(Some(Found::Queued {
                            table: read_table(file, max),
                            written: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        }));
                    }
                    // Not a file: still a submission, which the daemon
                    // will reject with a record.
                    Ok(Entry::Other(_)) => {
                        return Ok(Some(Found::Queued {
                            table: toml::Table::new(),
                            written: SystemTime::UNIX_EPOCH,
                        }));
                    }
                    Ok(Entry::Gone) => {}
                    Err(e) => return Err(internal(e)),
                }
            }
        }
        Ok(None)
    }

    /// A job as JSON: the record of a finished job; for a queued or running
    /// one, what its file says, with its id and status first.
    fn job_json(&self, id: &str, found: Found, snapshot: &Snapshot) -> Value {
        let (table, written, claimed) = match found {
            Found::Done(r) => return r.to_json(),
            Found::Queued { table, written } => (table, written, None),
            Found::Running {
                table,
                written,
                claimed,
            } => (table, written, Some(claimed)),
        };
        let status = if claimed.is_some() {
            Status::Running
        } else {
            Status::Queued
        };
        let mut obj = Map::new();
        obj.insert("id".into(), json!(id));
        obj.insert(
            "type".into(),
            table.get("type").map_or(Value::Null, values::toml_to_json),
        );
        obj.insert("status".into(), json!(status.as_str()));
        let submitted = match table.get("submitted") {
            Some(v) => values::toml_to_json(v),
            None if written > SystemTime::UNIX_EPOCH => json!(time::format_rfc3339(written)),
            None => Value::Null,
        };
        obj.insert("submitted".into(), submitted);
        let row = snapshot.running.iter().find(|r| r.id == id);
        if let Some(started) = row.map(|r| r.started).or(claimed) {
            obj.insert("started".into(), json!(time::format_rfc3339(started)));
        }
        if let Some(row) = row {
            obj.insert("attempt".into(), json!(row.attempt));
            obj.insert("pid".into(), json!(row.pid));
        }
        for (k, v) in &table {
            if !obj.contains_key(k) {
                obj.insert(k.clone(), values::toml_to_json(v));
            }
        }
        Value::Object(obj)
    }

    fn show(&self, id: &str) -> Answer {
        let found = self
            .find(id)?
            .ok_or_else(|| not_found(format!("no job {id:?}")))?;
        Ok(Reply::json(
            200,
            &self.job_json(id, found, &self.board.snapshot()),
        ))
    }

    fn list(&self, query: &str) -> Answer {
        let mut want_status = None;
        let mut want_type = None;
        let mut limit = LIST_DEFAULT;
        for (k, v) in parse_query(query)? {
            match k.as_str() {
                "status" if !v.is_empty() => {
                    want_status = Some(Status::parse(&v).ok_or_else(|| {
                        fail(
                            400,
                            format!(
                                "status={v}: not a status (queued, running, succeeded, failed, timed_out, cancelled, rejected)"
                            ),
                        )
                    })?);
                }
                "type" if !v.is_empty() => want_type = Some(v),
                "limit" if !v.is_empty() => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| fail(400, format!("limit={v}: not a whole number")))?;
                    limit = n.min(LIST_MAX);
                }
                // Unknown parameters are ignored, as HTTP servers do
                // (cache busters, tracking).
                _ => {}
            }
        }
        let wants = |s: Status| want_status.is_none_or(|w| w == s);
        let type_ok = |t: &str| want_type.as_deref().is_none_or(|w| w == t);

        // Candidates first, cheaply (a stat each), then the newest few are
        // read; records are read all, as their finish time is inside.
        // `None`: a queued or running job, read once it is among the newest.
        let mut cands: Vec<(SystemTime, String, Option<Box<Record>>)> = Vec::new();
        if wants(Status::Queued) {
            for name in self.spool.names(&self.spool.new_dir()).map_err(internal)? {
                let Some(id) = ids::id_from_name(&name) else {
                    continue;
                };
                let Ok(meta) = self.spool.new_path(&name).symlink_metadata() else {
                    continue;
                };
                let when = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                cands.push((when, id.to_string(), None));
            }
        }
        if wants(Status::Running) {
            for name in self
                .spool
                .names(&self.spool.running_dir())
                .map_err(internal)?
            {
                let Some(id) = name.strip_suffix(".toml").filter(|i| ids::valid_id(i)) else {
                    continue;
                };
                let Ok(meta) = self.spool.running_job(id).symlink_metadata() else {
                    continue;
                };
                let when = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                cands.push((when, id.to_string(), None));
            }
        }
        if want_status.is_none_or(Status::is_final) {
            for id in self.spool.done_ids().map_err(internal)? {
                if !ids::valid_id(&id) {
                    continue;
                }
                // Gone since the listing (expired), or being rewritten.
                let Ok(rec) = self.spool.read_record(&id) else {
                    continue;
                };
                if !wants(rec.status) || !type_ok(&rec.kind) {
                    continue;
                }
                let when = rec.finished_at().unwrap_or(SystemTime::UNIX_EPOCH);
                cands.push((when, id, Some(Box::new(rec))));
            }
        }
        cands.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));

        let snapshot = self.board.snapshot();
        let mut jobs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (_, id, rec) in cands {
            if jobs.len() >= limit {
                break;
            }
            let mut v = match rec {
                Some(rec) => rec.to_json(),
                None => {
                    // Read now: it may have moved on since the listing.
                    let Some(found) = self.find(&id)? else {
                        continue;
                    };
                    if !wants(found.status()) {
                        continue;
                    }
                    let v = self.job_json(&id, found, &snapshot);
                    if !type_ok(v["type"].as_str().unwrap_or("")) {
                        continue;
                    }
                    v
                }
            };
            // The list stays small: a rejected job's `source` may be large.
            if let Value::Object(o) = &mut v {
                o.remove("source");
            }
            // A job that moved from running/ to done/ since the listing
            // can come up twice.
            if !seen.insert(v["id"].as_str().unwrap_or_default().to_string()) {
                continue;
            }
            jobs.push(v);
        }
        Ok(Reply::json(200, &json!({ "jobs": jobs })))
    }

    /// `GET /jobs/<id>/output|stderr`: the file while the job runs, then
    /// from `done/`; empty for a job that has none (yet).
    fn stream(&self, id: &str, stderr: bool) -> Answer {
        if !ids::valid_id(id) {
            return Err(not_found(format!("no job {id:?}")));
        }
        let (running, done) = if stderr {
            (self.spool.running_err(id), self.spool.done_err(id))
        } else {
            (self.spool.running_out(id), self.spool.done_out(id))
        };
        for path in [running, done] {
            if let Some((file, meta)) = open_regular(&path).map_err(internal)? {
                return Ok(file_reply(file, meta.len(), TEXT));
            }
        }
        match self.find(id)? {
            Some(_) => Ok(Reply::new(200, TEXT, "")),
            None => Err(not_found(format!("no job {id:?}"))),
        }
    }

    /// `GET /done/<id>.out` and friends: the report's links over HTTP.
    fn spool_output(&self, dir: &str, name: &str) -> Answer {
        let nope = || not_found(format!("no such file: /{dir}/{name}"));
        let (id, err) = match (name.strip_suffix(".out"), name.strip_suffix(".err")) {
            (Some(id), _) => (id, false),
            (_, Some(id)) => (id, true),
            _ => return Err(nope()),
        };
        if !ids::valid_id(id) {
            return Err(nope());
        }
        let path = match (dir, err) {
            ("running", false) => self.spool.running_out(id),
            ("running", true) => self.spool.running_err(id),
            (_, false) => self.spool.done_out(id),
            (_, true) => self.spool.done_err(id),
        };
        match open_regular(&path).map_err(internal)? {
            Some((file, meta)) => Ok(file_reply(file, meta.len(), TEXT)),
            None => Err(nope()),
        }
    }

    /// `GET /jobs/<id>/files/<name>`: a file the task left, never through
    /// a symlink, never outside its folder.
    fn file(&self, id: &str, name: &str) -> Answer {
        if !ids::valid_id(id) {
            return Err(not_found(format!("no job {id:?}")));
        }
        if !valid_file_name(name) {
            return Err(not_found(format!("no file {name:?}")));
        }
        for dir in [self.spool.running_files(id), self.spool.done_files(id)] {
            if let Some((file, meta)) = open_in(&dir, name).map_err(internal)? {
                let reply = file_reply(file, meta.len(), content_type(name))
                    .header("Content-Security-Policy", "sandbox");
                return Ok(reply);
            }
        }
        Err(not_found(format!("job {id:?} has no file {name:?}")))
    }

    fn report(&self) -> Reply {
        Reply::new(
            200,
            HTML,
            report::render(&self.board.snapshot(), time::now()),
        )
    }

    fn health(&self) -> Reply {
        if (self.ping)() {
            Reply::new(200, TEXT, "ok\n")
        } else {
            fail(503, "the scheduler did not answer within 2 s").reply(Dialect::Native)
        }
    }

    // ---- writing: submissions and cancels -------------------------------

    /// Reads a JSON object from the body: 413 too large, 400 not JSON,
    /// 422 JSON but not an object.
    fn json_body(ex: &mut Exchange, config: &Config) -> Result<Map<String, Value>, Fail> {
        let bytes = ex.body(config.max_job_bytes)?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| fail(400, format!("malformed JSON: {e}")))?;
        match value {
            Value::Object(o) => Ok(o),
            other => Err(fail(
                422,
                format!("the body must be a JSON object, not {}", json_kind(&other)),
            )),
        }
    }

    /// Checks a job exactly as a file drop is checked, then writes it
    /// through `tmp/` into `new/`. Returns its id once it is there (and
    /// durable, with `fsync = true`).
    fn submit(&self, job: Map<String, Value>, config: &Config) -> Result<String, Fail> {
        let text = values::json_job_to_toml(&Value::Object(job)).map_err(|e| fail(422, e))?;
        if text.len() as u64 > config.max_job_bytes {
            return Err(fail(
                413,
                format!(
                    "the job is {} bytes as TOML, more than max_job_bytes = {}",
                    text.len(),
                    config.max_job_bytes
                ),
            ));
        }
        job::parse(text.as_bytes(), config).map_err(|e| fail(422, e))?;
        let id = self
            .spool
            .with_fsync(config.fsync)
            .submit(None, text.as_bytes())
            .map_err(|e| internal(format!("cannot queue the job: {e}")))?;
        Ok(id)
    }

    fn post_job(&self, ex: &mut Exchange, config: &Config) -> Answer {
        let body = Self::json_body(ex, config)?;
        let id = self.submit(body, config)?;
        Ok(Reply::json(201, &json!({ "id": id, "status": "queued" }))
            .header("Location", format!("/jobs/{id}")))
    }

    fn cancel(&self, id: &str) -> Answer {
        match self.find(id)? {
            None => Err(not_found(format!("no job {id:?}"))),
            Some(Found::Done(r)) => Err(fail(
                409,
                format!("job {id:?} already finished ({})", r.status),
            )),
            Some(_) => {
                self.spool
                    .request_cancel(id)
                    .map_err(|e| internal(format!("cannot request the cancel: {e}")))?;
                Ok(Reply::json(
                    202,
                    &json!({ "id": id, "status": "cancelling" }),
                ))
            }
        }
    }

    /// `POST /api/tasks/`, Raccoon's shape: `{"type", "params", "email"}`.
    fn raccoon_submit(&self, ex: &mut Exchange, config: &Config) -> Answer {
        let mut body = Self::json_body(ex, config)?;
        // Raccoon's clients send `"email": null` for "no mail".
        body.retain(|_, v| !v.is_null());
        let id = self.submit(body, config)?;
        Ok(Reply::json(201, &json!({ "status": "OK", "id": id })))
    }

    /// `POST /task/new`, flask-tasks' shape: `{"type", "args"}` where args
    /// are the params.
    fn flask_submit(&self, ex: &mut Exchange, config: &Config) -> Answer {
        let mut body = Self::json_body(ex, config)?;
        let args = match body.remove("args") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o,
            Some(other) => {
                return Err(fail(
                    422,
                    format!(
                        "args: expected an object of params, not {}",
                        json_kind(&other)
                    ),
                ));
            }
        };
        if !args.is_empty() {
            body.insert("params".into(), Value::Object(args.clone()));
        }
        let id = self.submit(body, config)?;
        Ok(Reply::json(
            201,
            &json!({
                "id": id,
                "result": null,
                "args": args,
                "status": "waiting",
                "expire": null,
                "created": time::unix_secs(time::now()),
            }),
        ))
    }

    /// `GET /task/<id>/view`, flask-tasks' shape.
    fn flask_view(&self, id: &str) -> Answer {
        let found = self
            .find(id)?
            .ok_or_else(|| not_found(format!("no job {id:?}")))?;
        let v = match found {
            Found::Done(r) => {
                let created = r
                    .submitted
                    .as_ref()
                    .and_then(|d| time::from_toml(d).ok())
                    .map_or(Value::Null, |t| json!(time::unix_secs(t)));
                json!({
                    "id": id,
                    "result": r.result.as_ref().map_or(Value::Null, values::toml_to_json),
                    "args": r.params.as_ref().map_or(json!({}), |p| values::toml_to_json(&toml::Value::Table(p.clone()))),
                    "status": "done",
                    "expire": r.expires_at().map_or(Value::Null, |t| json!(time::unix_secs(t))),
                    "created": created,
                })
            }
            Found::Queued { table, written } => pending_view(id, "waiting", &table, written),
            Found::Running { table, written, .. } => pending_view(id, "running", &table, written),
        };
        Ok(Reply::json(200, &v))
    }
}

/// flask-tasks' view of a job that has not finished.
fn pending_view(id: &str, status: &str, table: &toml::Table, written: SystemTime) -> Value {
    let submitted = table
        .get("submitted")
        .and_then(toml::Value::as_datetime)
        .and_then(|d| time::from_toml(d).ok());
    let created = match submitted {
        Some(t) => json!(time::unix_secs(t)),
        None if written > SystemTime::UNIX_EPOCH => json!(time::unix_secs(written)),
        None => Value::Null,
    };
    json!({
        "id": id,
        "result": null,
        "args": table.get("params").map_or(json!({}), values::toml_to_json),
        "status": status,
        "expire": null,
        "created": created,
    })
}

fn preflight(cors: bool) -> Reply {
    let r = Reply::new(204, TEXT, "").header("Allow", "GET, HEAD, POST, DELETE, OPTIONS");
    if !cors {
        return r;
    }
    r.header(
        "Access-Control-Allow-Methods",
        "GET, HEAD, POST, DELETE, OPTIONS",
    )
    .header(
        "Access-Control-Allow-Headers",
        "Authorization, Content-Type",
    )
    .header("Access-Control-Max-Age", "600")
}

/// Whether the request carries the token, compared in constant time.
fn authorized(req: &Request, token: &str) -> bool {
    let Some(h) = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
    else {
        return false;
    };
    let value = h.value.as_str().trim();
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && same_secret(given.trim().as_bytes(), token.as_bytes())
}

/// Compares a secret in time that depends only on the secret's length, so
/// that response times do not tell how much of a guess was right.
fn same_secret(given: &[u8], want: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != want.len());
    for (i, w) in want.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ w;
    }
    std::hint::black_box(diff) == 0
}

/// The path's segments, percent-decoded one by one (so `%2F` stays inside
/// its segment). A trailing slash is ignored.
fn split_path(path: &str) -> Result<Vec<String>, Fail> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(fail(400, format!("not an absolute path: {path:?}")));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|s| {
            percent_decode(s, false)
                .ok_or_else(|| fail(400, format!("bad percent-encoding in {path:?}")))
        })
        .collect()
}

fn parse_query(query: &str) -> Result<Vec<(String, String)>, Fail> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (percent_decode(k, true), percent_decode(v, true)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(fail(
                    400,
                    format!("bad percent-encoding in the query: {p:?}"),
                )),
            }
        })
        .collect()
}

/// `%XX` to bytes (and `+` to a space in a query); `None` for a broken
/// escape or a result that is not UTF-8.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A name a task may have given a file: one path component, not hidden.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.bytes().any(|b| b == b'/' || b == 0)
}

/// Opens a file for reading if it is a regular file: never through a
/// symlink, never blocking on a FIFO. `None` when there is none.
fn open_regular(path: &Path) -> io::Result<Option<(File, std::fs::Metadata)>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(fsio::io_context("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| fsio::io_context("stat", path, e))?;
    Ok(meta.is_file().then_some((file, meta)))
}

/// Opens `name` inside `dir`, following no symlink for either.
fn open_in(dir: &Path, name: &str) -> io::Result<Option<(File, std::fs::Metadata)>> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let d = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(d) => d,
        Err(e) if is_absent(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) => return Err(fsio::io_context("open", dir, e)),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match openat(&d, name, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            let e = io::Error::from(e);
            if is_absent(&e) {
                return Ok(None);
            }
            return Err(fsio::io_context("open", &dir.join(name), e));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| fsio::io_context("stat", &dir.join(name), e))?;
    Ok(meta.is_file().then_some((file, meta)))
}

/// Errors that mean "nothing to serve here": missing, or a symlink where a
/// file should be (`O_NOFOLLOW` answers ELOOP).
fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP)
}

fn file_reply(file: File, len: u64, content_type: &'static str) -> Reply {
    Reply {
        status: 200,
        content_type,
        body: Body::File(file, len),
        headers: Vec::new(),
    }
}

/// A job file's keys, for showing a queued or running job. A file the
/// daemon will reject (not UTF-8, not TOML) shows as no keys.
fn read_table(file: File, max: u64) -> toml::Table {
    let mut bytes = Vec::new();
    if file.take(max).read_to_end(&mut bytes).is_err() {
        return toml::Table::new();
    }
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| toml::from_str(t).ok())
        .unwrap_or_default()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The content type of a file a task left, by its extension.
fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "out" | "err" | "toml" | "yaml" | "yml" | "ini" | "conf" => TEXT,
        "csv" => "text/csv; charset=utf-8",
        "tsv" => "text/tab-separated-values; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "html" | "htm" => HTML,
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => JSON,
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_split_before_they_are_decoded() {
        let segs = split_path("/jobs/a%2F..%2Fb/output")
            .ok()
            .unwrap_or_default();
        assert_eq!(segs, vec!["jobs", "a/../b", "output"]);
        assert_eq!(
            split_path("/").ok().unwrap_or_default(),
            Vec::<String>::new()
        );
        assert_eq!(
            split_path("/api/tasks/").ok().unwrap_or_default(),
            vec!["api", "tasks"]
        );
        assert!(split_path("/jobs/%zz").is_err());
        assert!(split_path("/jobs/%ff").is_err(), "not UTF-8");
        assert_eq!(percent_decode("a+b%20c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
    }

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        for bad in [&b"s3cre"[..], b"s3cret!", b"S3cret", b"", b"s3creu"] {
            assert!(!same_secret(bad, b"s3cret"), "{bad:?}");
        }
    }

    #[test]
    fn file_names_are_one_visible_component() {
        for ok in ["report.pdf", "a", "x..y", "résumé.txt"] {
            assert!(valid_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "/etc/passwd",
            "a\0b",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
        assert_eq!(content_type("R.PDF"), "application/pdf");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

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
    fn healthz_says_503_when_the_scheduler_does_not_answer() {
        let dir = tempfile::tempdir().unwrap();
        let over = crate::config::Overrides::default();
        let config = Config::from_text(None, "", dir.path(), &over).unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = alive.clone();
        let server = Server::start(
            "127.0.0.1:0",
            Board::new(Arc::new(config)),
            spool,
            move || flag.load(std::sync::atomic::Ordering::SeqCst),
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
        assert!(body.contains("\"error\""), "{body}");

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
