//! Which handler answers which request, and the native API's handlers:
//! `/jobs` (list, submit), `/jobs/<id>` (show, cancel), `/pause` and
//! `/resume`, `/`, `/metrics`, `/healthz`. Files and output are in `files`, a job's JSON in `shape`,
//! the older clients' shapes in `compat`. Jobs are found and listed
//! through [`spool::query`](crate::spool::query), never by a path built
//! here; `GET /jobs` learns which finished jobs are the newest from the
//! board's [`FinishedIndex`](crate::status::FinishedIndex), so that it
//! reads only the records it shows.
//!
//! Writes only through [`Spool`](crate::spool::Spool): a submission
//! (`spool::submit`: `tmp/` → `new/`, the same path as a file drop, after
//! the same [`job::parse`]; a unique job's marker first, under its lock,
//! so that a duplicate is answered 409 exactly), a cancel request
//! (`cancel/<id>`) and a pause request (`pause/<type>`, made or taken
//! back). It never moves a job and never decides anything about one: the
//! daemon does, when it sees the file.
//!
//! Invariants: a path is split on `/` before its segments are
//! percent-decoded, so `%2F` never makes a new segment; every job id is
//! checked ([`ids::valid_id`](crate::ids::valid_id)) before a file is named after it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::UNIX_EPOCH;

use serde_json::{Map, Value, json};

use super::request::Method;
use super::shape::{job_json, listed_json};
use super::{Answer, Api, ApiError, Exchange, Reply, TEXT, fail, internal, not_found};
use crate::config::Config;
use crate::ids;
use crate::job;
use crate::metrics;
use crate::record::Status;
use crate::report;
use crate::space;
use crate::spool::PAUSE_ALL;
use crate::spool::query::{Filter, Listed, Located, Query, Stage, Stream};
use crate::spool::unique::{Holder, Take};
use crate::time;
use crate::values;

/// `GET /jobs` without `limit`.
const LIST_DEFAULT: usize = 100;
/// The largest `limit` honoured.
const LIST_MAX: usize = 1000;

const HTML: &str = "text/html; charset=utf-8";
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Api {
    /// The handler for a method on a path (already split and decoded).
    pub(super) fn route(
        &self,
        method: &Method,
        segs: &[&str],
        query: &str,
        ex: &mut Exchange,
        config: &Config,
    ) -> Answer {
        use Method::{Delete, Get, Head, Post};
        let get = matches!(method, Get | Head);
        let allow = |methods: &'static str| ApiError {
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
            ["pause"] => match method {
                Post => self.pause(query, config, true),
                _ => Err(allow("POST")),
            },
            ["resume"] => match method {
                Post => self.pause(query, config, false),
                _ => Err(allow("POST")),
            },
            ["jobs", id, "output"] => only_get(&|| self.output(id, Stream::Out, query)),
            ["jobs", id, "stderr"] => only_get(&|| self.output(id, Stream::Err, query)),
            ["jobs", id, "files", name] => only_get(&|| self.file(id, name)),
            ["running", name] => only_get(&|| self.spool_output(Stage::Running, name)),
            ["done", name] => only_get(&|| self.spool_output(Stage::Done, name)),
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

    // ---- reading --------------------------------------------------------

    /// Questions about the spool's jobs, job files read as far as the
    /// daemon would read them (`max_job_bytes`).
    pub(super) fn query(&self) -> Query<'_> {
        self.spool.query(self.board.config().max_job_bytes)
    }

    /// Where the job `id` is now; `None` when no job has that id.
    pub(super) fn find(&self, id: &str) -> Result<Option<Located>, ApiError> {
        self.query().find(id).map_err(internal)
    }

    fn show(&self, id: &str) -> Answer {
        let found = self
            .find(id)?
            .ok_or_else(|| not_found(format!("no job {id:?}")))?;
        let mut v = job_json(id, found, &self.board.snapshot());
        self.add_waits(&mut v);
        Ok(Reply::json(200, &v))
    }

    /// A queued job's `waiting_for`: the jobs its `after` and `after_any`
    /// name that have not ended yet (queued, running, or nowhere), as the
    /// spool says now.
    fn add_waits(&self, v: &mut Value) {
        let Some(obj) = v.as_object_mut() else {
            return;
        };
        if obj.get("status").and_then(Value::as_str) != Some("queued") {
            return;
        }
        let parents: Vec<String> = ["after", "after_any"]
            .iter()
            .filter_map(|k| obj.get(*k).and_then(Value::as_array))
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        if parents.is_empty() {
            return;
        }
        let q = self.spool.query(0);
        let waiting: Vec<Value> = parents
            .into_iter()
            .filter(|p| !matches!(q.find(p), Ok(Some(Located::Finished(_)))))
            .map(Value::String)
            .collect();
        obj.insert("waiting_for".into(), Value::Array(waiting));
    }

    /// `GET /jobs?status=&type=&limit=`. Unknown parameters are ignored,
    /// as HTTP servers do (cache busters, tracking); a `status` that is not
    /// one of the seven or a `limit` that is not a number is a 400.
    /// Newest first: see [`Query::list`]; a finished job without its
    /// record's `source`.
    fn list(&self, query: &str) -> Answer {
        let params = parse_query(query)?;
        let mut filter = Filter {
            status: None,
            kind: None,
            limit: LIST_DEFAULT,
        };
        for (k, v) in &params {
            match k.as_str() {
                "status" if !v.is_empty() => {
                    filter.status = Some(Status::parse(v).ok_or_else(|| {
                        fail(
                            400,
                            format!(
                                "status={v}: not a status (queued, running, succeeded, failed, timed_out, cancelled, rejected)"
                            ),
                        )
                    })?);
                }
                "type" if !v.is_empty() => filter.kind = Some(v.as_str()),
                "limit" if !v.is_empty() => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| fail(400, format!("limit={v}: not a whole number")))?;
                    filter.limit = n.min(LIST_MAX);
                }
                _ => {}
            }
        }
        let listed = match self.list_indexed(&filter)? {
            Some(listed) => listed,
            None => self.query().list(&filter).map_err(internal)?,
        };
        let snapshot = self.board.snapshot();
        let jobs: Vec<Value> = listed
            .into_iter()
            .map(|listed| {
                let mut v = listed_json(listed, &snapshot);
                self.add_waits(&mut v);
                v
            })
            .collect();
        Ok(Reply::json(200, &json!({ "jobs": jobs })))
    }

    /// The listing [`Query::list`] would give, with finished jobs taken
    /// from the board's index of the newest ones: only the records shown
    /// are read, not every one in `done/`. Queued and running jobs are
    /// listed from their folders as the query does (they include files
    /// the daemon has not read yet). `None` when the index cannot answer:
    /// `done/` not read yet since the start, or fewer matching rows than
    /// `limit` while older records may lie beyond the index.
    fn list_indexed(&self, filter: &Filter) -> Result<Option<Vec<Listed>>, ApiError> {
        let index = self.board.finished();
        if !index.known {
            return Ok(None);
        }
        let q = self.query();
        let mut out = Vec::new();
        for status in [Status::Queued, Status::Running] {
            if filter.status.is_none_or(|s| s == status) {
                let only = Filter {
                    status: Some(status),
                    ..*filter
                };
                out.extend(q.list(&only).map_err(internal)?);
            }
        }
        if filter.status.is_none_or(Status::is_final) {
            let mut found = 0;
            let rows = index.rows.iter().filter(|r| {
                filter.status.is_none_or(|s| s == r.status)
                    && filter.kind.is_none_or(|k| k == &*r.kind)
            });
            for row in rows {
                if found >= filter.limit {
                    break;
                }
                // Expired since, or not written yet (then it was listed
                // in running/ above).
                let Some(Located::Finished(rec)) = q.find(&row.id).map_err(internal)? else {
                    continue;
                };
                found += 1;
                out.push(Listed {
                    id: row.id.to_string(),
                    when: rec.finished_at().unwrap_or(UNIX_EPOCH),
                    job: Located::Finished(rec),
                });
            }
            if found < filter.limit && !index.complete {
                return Ok(None);
            }
        }
        // As the query orders and dedups: newest first, the larger id
        // first on a tie, a job that moved on between two looks once.
        out.sort_by(|a, b| b.when.cmp(&a.when).then_with(|| b.id.cmp(&a.id)));
        let mut seen = HashSet::new();
        out.retain(|l| seen.insert(l.id.clone()));
        out.truncate(filter.limit);
        Ok(Some(out))
    }

    fn report(&self) -> Reply {
        Reply::new(
            200,
            HTML,
            report::render(&self.board.snapshot(), time::now()),
        )
    }

    /// `GET /healthz`: 200 while every part works; else 503 naming each
    /// part that stopped (`error` in words, `stopped` as a list).
    fn health(&self) -> Reply {
        let stopped = (self.check)();
        if stopped.is_empty() {
            return Reply::new(200, TEXT, "ok\n");
        }
        let words: Vec<String> = stopped
            .iter()
            .map(|s| format!("{}: {}", s.name, s.why))
            .collect();
        let list: Vec<Value> = stopped
            .iter()
            .map(|s| json!({ "name": s.name, "why": s.why }))
            .collect();
        Reply::json(
            503,
            &json!({
                "error": format!("not working: {}", words.join("; ")),
                "stopped": list,
            }),
        )
    }

    // ---- writing: submissions and cancels -------------------------------

    /// Reads a JSON object from the body: 413 too large, 400 not JSON,
    /// 422 JSON but not an object.
    pub(super) fn json_body(
        ex: &mut Exchange,
        config: &Config,
    ) -> Result<Map<String, Value>, ApiError> {
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
    /// durable, with `fsync = true`); a duplicate of a unique job is a 409
    /// that names the job holding the key.
    pub(super) fn submit(
        &self,
        job: Map<String, Value>,
        config: &Config,
    ) -> Result<String, ApiError> {
        match self.submit_unique(job, config)? {
            Submitted::Queued(id) => Ok(id),
            Submitted::Duplicate(id) => Err(fail(409, format!("duplicate of {id}"))),
        }
    }

    /// [`Api::submit`], telling a duplicate apart: its parents must exist
    /// (`unknown dependency`, 422), and a unique job takes its key before
    /// its file is written, under the key's lock (the daemon, other
    /// daemons and other HTTP threads wait for it or look again later),
    /// so that exactly one submission of a key is queued.
    fn submit_unique(
        &self,
        job: Map<String, Value>,
        config: &Config,
    ) -> Result<Submitted, ApiError> {
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
        let parsed = job::parse(text.as_bytes(), config).map_err(|e| fail(422, e))?;
        // Over HTTP the submitter would be the daemon itself (SPEC §13).
        if config
            .types
            .get(&parsed.kind)
            .is_some_and(|t| t.as_submitter)
        {
            return Err(fail(
                422,
                format!(
                    "type {}: runs as its submitter (user = \"@submitter\"): submit it as a file or with the raccoon client",
                    parsed.kind
                ),
            ));
        }
        if parsed.submitter.is_some() {
            return Err(fail(422, "submitter: only raccoond writes it"));
        }
        for p in parsed.after.iter().chain(&parsed.after_any) {
            if self.find(p)?.is_none() {
                return Err(fail(422, format!("unknown dependency {p}")));
            }
        }
        let spool = self.spool.with_fsync(config.fsync);
        let Some(key) = &parsed.unique else {
            let id = spool
                .submit(None, text.as_bytes())
                .map_err(|e| write_failed("cannot queue the job", &e))?;
            return Ok(Submitted::Queued(id));
        };
        let want = ids::fresh_id();
        let me = Holder {
            id: want.clone(),
            name: format!("{want}.toml"),
            ino: 0,
        };
        let mut queued = None;
        let took = spool.take_unique(&parsed.kind, key, &me, true, || {
            queued = Some(spool.submit(Some(&want), text.as_bytes())?);
            Ok(())
        });
        match took {
            Ok(Take::Taken) => Ok(Submitted::Queued(queued.unwrap_or(want))),
            Ok(Take::Duplicate(id)) => Ok(Submitted::Duplicate(id)),
            Ok(Take::Busy) => Err(fail(503, "the unique key is busy; try again")),
            Err(e) => Err(write_failed("cannot queue the job", &e)),
        }
    }

    fn post_job(&self, ex: &mut Exchange, config: &Config) -> Answer {
        let body = Self::json_body(ex, config)?;
        match self.submit_unique(body, config)? {
            Submitted::Queued(id) => Ok(Reply::json(201, &json!({ "id": id, "status": "queued" }))
                .header("Location", format!("/jobs/{id}"))),
            // Not an ApiError: the answer names the job holding the key.
            Submitted::Duplicate(id) => Ok(Reply::json(
                409,
                &json!({ "error": format!("duplicate of {id}"), "id": id }),
            )),
        }
    }

    /// `POST /pause[?type=T]`, `POST /resume[?type=T]`: makes or takes
    /// back `pause/<T>` (`pause/ALL` without a type). The daemon acts on
    /// it within a second; running jobs go on. 422 for a type the daemon
    /// does not have.
    fn pause(&self, query: &str, config: &Config, pause: bool) -> Answer {
        let mut name = PAUSE_ALL.to_string();
        for (k, v) in parse_query(query)? {
            if k == "type" && !v.is_empty() {
                name = v;
            }
        }
        if name != PAUSE_ALL && !config.types.contains_key(&name) {
            let known: Vec<&str> = config.types.keys().map(String::as_str).collect();
            return Err(fail(
                422,
                format!(
                    "unknown type {name:?} (this daemon knows: {})",
                    known.join(", ")
                ),
            ));
        }
        let spool = self.spool.with_fsync(config.fsync);
        let changed = if pause {
            spool.request_pause(&name)
        } else {
            spool.clear_pause(&name)
        }
        .map_err(|e| {
            write_failed(
                if pause {
                    "cannot pause"
                } else {
                    "cannot resume"
                },
                &e,
            )
        })?;
        Ok(Reply::json(
            200,
            &json!({ "type": name, "paused": pause, "changed": changed }),
        ))
    }

    /// `DELETE /jobs/<id>`: a request the daemon acts on; 409 once the job
    /// has finished.
    fn cancel(&self, id: &str) -> Answer {
        match self.find(id)? {
            None => Err(not_found(format!("no job {id:?}"))),
            Some(Located::Finished(r)) => Err(fail(
                409,
                format!("job {id:?} already finished ({})", r.status),
            )),
            Some(_) => {
                self.spool
                    .request_cancel(id)
                    .map_err(|e| write_failed("cannot request the cancel", &e))?;
                Ok(Reply::json(
                    202,
                    &json!({ "id": id, "status": "cancelling" }),
                ))
            }
        }
    }
}

/// What a submission came to.
enum Submitted {
    /// Written into `new/` under this id.
    Queued(String),
    /// Not written: the job with this id holds its (type, `unique`).
    Duplicate(String),
}

/// A write into the spool that failed: 507 when its file system is full
/// (nothing was written; the same request may work later), else 500.
fn write_failed(what: &str, e: &std::io::Error) -> ApiError {
    if space::is_full(e) {
        fail(
            507,
            format!("{what}: the spool's file system is full ({e}); try again later"),
        )
    } else {
        internal(format!("{what}: {e}"))
    }
}

/// The path's segments, percent-decoded one by one (so `%2F` stays inside
/// its segment). A trailing slash is ignored.
pub(super) fn split_path(path: &str) -> Result<Vec<String>, ApiError> {
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

fn parse_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
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
/// escape or a result that is not UTF-8. The `percent-encoding` crate
/// passes a broken escape through as it is; here it is a bad request.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let broken = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !b
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if broken {
        return None;
    }
    // `+` becomes a space before decoding, so that `%2B` stays a `+`.
    let s: Cow<str> = if plus_is_space {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

/// What a JSON value is, for messages.
pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;
    use crate::status::{Board, FinishedIndex, IndexRow};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn listings_from_the_index_are_the_listings_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let root = spool.root().to_path_buf();
        let put = |rel: &str, text: &str, mtime: SystemTime| {
            let path = root.join(rel);
            std::fs::write(&path, text).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        };
        // Records finished at 10, 20, … 60; odd ones failed, kinds a/b.
        let mut rows = Vec::new();
        for i in 1..=6u64 {
            let (id, kind) = (format!("d{i}"), if i % 2 == 0 { "a" } else { "b" });
            let status = if i % 2 == 1 { "failed" } else { "succeeded" };
            let t = crate::time::format_rfc3339(at(i * 10));
            put(
                &format!("done/{id}.toml"),
                &format!(
                    "id = \"{id}\"\ntype = \"{kind}\"\nstatus = \"{status}\"\nfinished = {t}\n"
                ),
                // Written as it finished, as the commit thread writes it.
                at(i * 10),
            );
            rows.push(IndexRow {
                id: id.as_str().into(),
                kind: kind.into(),
                status: Status::parse(status).unwrap(),
                finished: at(i * 10),
            });
        }
        put("new/q1.toml", "type = \"a\"\n", at(35));
        put("running/r1.toml", "type = \"b\"\n", at(55));
        rows.reverse();
        let over = crate::config::Overrides::default();
        let config = Config::from_text(None, "", dir.path(), &over).unwrap();
        let api = Api {
            board: Board::new(Arc::new(config)),
            spool,
            check: Box::new(Vec::new),
        };
        let f = |status: Option<Status>, kind: Option<&'static str>, limit| Filter {
            status,
            kind,
            limit,
        };
        let filters = [
            f(None, None, 100),
            f(None, None, 3),
            f(Some(Status::Failed), None, 100),
            f(Some(Status::Failed), None, 1),
            f(None, Some("a"), 2),
            f(Some(Status::Queued), None, 5),
            f(Some(Status::Succeeded), Some("b"), 5),
        ];
        let ids = |l: Vec<Listed>| -> Vec<String> { l.into_iter().map(|l| l.id).collect() };
        let from_disk = |filter: &Filter| ids(api.query().list(filter).unwrap());

        // Before done/ has been read once, the index cannot answer.
        assert!(api.list_indexed(&filters[0]).ok().unwrap().is_none());

        // All of done/ in the index, plus one it lost to expiry.
        let mut all = rows.clone();
        all.insert(
            0,
            IndexRow {
                id: "gone".into(),
                ..rows[0].clone()
            },
        );
        api.board.update_finished(|ix| ix.scanned(all, true));
        for filter in &filters {
            let listed = api.list_indexed(filter).ok().unwrap().expect("answered");
            assert_eq!(ids(listed), from_disk(filter), "{filter:?}");
        }

        // Only the newest three, older ones beyond: answered when they
        // suffice, else from disk.
        api.board.update_finished(|ix| {
            *ix = FinishedIndex::default();
            ix.scanned(rows[..3].to_vec(), false);
        });
        let mut answered = 0;
        for filter in &filters {
            if let Some(listed) = api.list_indexed(filter).ok().unwrap() {
                answered += 1;
                assert_eq!(ids(listed), from_disk(filter), "{filter:?}");
            }
        }
        assert_eq!(answered, 4, "3 newest, 1 failed, queued, and 2 of type a");
        assert_eq!(from_disk(&filters[1]), ["d6", "r1", "d5"]);
    }

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
        assert!(split_path("/jobs/100%").is_err(), "a cut escape");
        assert_eq!(percent_decode("a+b%20c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("a%2Bb", true).as_deref(), Some("a+b"));
    }
}
