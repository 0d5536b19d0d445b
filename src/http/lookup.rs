//! Finding and listing jobs for the API: where a job is now (`done/`,
//! `running/`, `new/`) and what its record or file says, as JSON.
//!
//! Owns the order in which the spool's folders are looked at and what a
//! queued or running job looks like before it has a record. Reads only:
//! it never writes, renames or deletes a spool file, and it opens files
//! only through [`fsio`] and [`Spool`] (never through a symlink, never
//! blocking on a FIFO). Knows nothing of HTTP: errors are the spool's
//! `io::Error`s, which the handlers turn into answers.
//!
//! The interface is deliberately narrow (a [`Located`] job, [`find`],
//! [`list`] with a [`Filter`], [`job_json`]): the client looks jobs up the
//! same way, and both are meant to share one spool query.
//!
//! Invariant: a job that moves on between two looks (queued → running →
//! done, or put back) is still found, and is listed at most once.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use crate::fsio;
use crate::ids;
use crate::record::{Record, Status};
use crate::spool::{Entry, Spool};
use crate::status::{Board, Snapshot};
use crate::time;
use crate::values;

/// Where a job is now, with what its file or record says.
pub(super) enum Located {
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

impl Located {
    pub(super) fn status(&self) -> Status {
        match self {
            Located::Queued { .. } => Status::Queued,
            Located::Running { .. } => Status::Running,
            Located::Done(r) => r.status,
        }
    }
}

/// Which jobs `GET /jobs` wants.
pub(super) struct Filter {
    /// Only jobs in this state; `None`: all.
    pub(super) status: Option<Status>,
    /// Only jobs of this type; `None`: all.
    pub(super) kind: Option<String>,
    /// At most this many, newest first.
    pub(super) limit: usize,
}

/// Looks for a job: its record first (the commit point: leftovers in
/// `running/` may outlive it for a moment), then `running/`, then `new/`;
/// and once more when it was nowhere, as a job may have moved on (or been
/// put back) between two looks. An id that is not a valid id is no job
/// (and names no file). A job file is read up to `max_bytes`.
pub(super) fn find(spool: &Spool, id: &str, max_bytes: u64) -> io::Result<Option<Located>> {
    if !ids::valid_id(id) {
        return Ok(None);
    }
    for _ in 0..2 {
        match spool.read_record(id) {
            Ok(r) => return Ok(Some(Located::Done(Box::new(r)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some((file, meta)) = fsio::open_regular(&spool.running_job(id))? {
            return Ok(Some(Located::Running {
                table: read_table(file, max_bytes),
                written: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                claimed: ctime(&meta),
            }));
        }
        for name in [format!("{id}.toml"), id.to_string()] {
            match spool.open_new(&name)? {
                Entry::Regular { file, meta } => {
                    return Ok(Some(Located::Queued {
                        table: read_table(file, max_bytes),
                        written: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    }));
                }
                // Not a file: still a submission, which the daemon will
                // reject with a record.
                Entry::Other(_) => {
                    return Ok(Some(Located::Queued {
                        table: toml::Table::new(),
                        written: SystemTime::UNIX_EPOCH,
                    }));
                }
                Entry::Gone => {}
            }
        }
    }
    Ok(None)
}

/// The jobs `filter` wants, as JSON, newest first by each job's latest
/// step (queued and running jobs by when their file was written, finished
/// jobs by when they finished). A finished job is its record without
/// `source` (which may be large); a queued or running one is shown as
/// [`job_json`] shows it, merged with `board`'s latest snapshot.
pub(super) fn list(spool: &Spool, board: &Board, filter: &Filter) -> io::Result<Vec<Value>> {
    let wants = |s: Status| filter.status.is_none_or(|w| w == s);
    let type_ok = |t: &str| filter.kind.as_deref().is_none_or(|w| w == t);
    let max_bytes = board.config().max_job_bytes;

    // Candidates first, cheaply (a stat each), then the newest few are
    // read; records are read all, as their finish time is inside.
    // `None`: a queued or running job, read once it is among the newest.
    let mut cands: Vec<(SystemTime, String, Option<Box<Record>>)> = Vec::new();
    if wants(Status::Queued) {
        for name in spool.names(&spool.new_dir())? {
            let Some(id) = ids::id_from_name(&name) else {
                continue;
            };
            let Ok(meta) = spool.new_path(&name).symlink_metadata() else {
                continue;
            };
            let when = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            cands.push((when, id.to_string(), None));
        }
    }
    if wants(Status::Running) {
        for name in spool.names(&spool.running_dir())? {
            let Some(id) = name.strip_suffix(".toml").filter(|i| ids::valid_id(i)) else {
                continue;
            };
            let Ok(meta) = spool.running_job(id).symlink_metadata() else {
                continue;
            };
            let when = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            cands.push((when, id.to_string(), None));
        }
    }
    if filter.status.is_none_or(Status::is_final) {
        for id in spool.done_ids()? {
            if !ids::valid_id(&id) {
                continue;
            }
            // Gone since the listing (expired), or being rewritten.
            let Ok(rec) = spool.read_record(&id) else {
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

    let snapshot = board.snapshot();
    let mut jobs = Vec::new();
    let mut seen = HashSet::new();
    for (_, id, rec) in cands {
        if jobs.len() >= filter.limit {
            break;
        }
        let mut v = match rec {
            Some(rec) => rec.to_json(),
            None => {
                // Read now: it may have moved on since the listing.
                let Some(found) = find(spool, &id, max_bytes)? else {
                    continue;
                };
                if !wants(found.status()) {
                    continue;
                }
                let v = job_json(&id, found, &snapshot);
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
        // A job that moved from running/ to done/ since the listing can
        // come up twice.
        if !seen.insert(v["id"].as_str().unwrap_or_default().to_string()) {
            continue;
        }
        jobs.push(v);
    }
    Ok(jobs)
}

/// A job as JSON: the record of a finished job; for a queued or running
/// one, what its file says, with its id and status first, and the start
/// time, attempt and pid the daemon's `snapshot` knows.
pub(super) fn job_json(id: &str, job: Located, snapshot: &Snapshot) -> Value {
    let (table, written, claimed) = match job {
        Located::Done(r) => return r.to_json(),
        Located::Queued { table, written } => (table, written, None),
        Located::Running {
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

/// A file's ctime: for a job in `running/`, when it was claimed.
fn ctime(meta: &Metadata) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(meta.ctime()).unwrap_or(0),
            u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        )
}
