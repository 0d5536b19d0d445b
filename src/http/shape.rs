//! What a job looks like in the native API's JSON (`GET /jobs/<id>`, and
//! each entry of `GET /jobs`).
//!
//! Owns the shape only: a finished job is its record; a queued or running
//! one is what its file says, with its id and status first and what the
//! daemon's latest snapshot knows of it (start time, attempt, pid). Where
//! a job is and what was read there comes from `spool::query`; this
//! module does no IO and never looks at the spool itself.
//!
//! Invariant: a job shows the same in a listing as on its own, except for
//! a record's `source` (which may be large), left out of listings.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::record::Status;
use crate::spool::query::{Listed, Located};
use crate::status::Snapshot;
use crate::time;
use crate::values;

/// A job as JSON: the record of a finished job; for a queued or running
/// one, what its file says, with its id and status first, and the start
/// time, attempt and pid the daemon's `snapshot` knows.
pub(super) fn job_json(id: &str, job: Located, snapshot: &Snapshot) -> Value {
    let (table, written, claimed) = match job {
        Located::Finished(r) => return r.to_json(),
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

/// One entry of `GET /jobs`: the job as [`job_json`] shows it, without
/// `source`, so that the list stays small (a rejected job's `source` may
/// be large; `GET /jobs/<id>` has it).
pub(super) fn listed_json(listed: Listed, snapshot: &Snapshot) -> Value {
    let mut v = job_json(&listed.id, listed.job, snapshot);
    if let Value::Object(o) = &mut v {
        o.remove("source");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn pending_jobs_show_their_keys_behind_id_type_status_and_times() {
        let table: toml::Table = toml::from_str("type = \"t\"\nid = \"forged\"\nx = 1\n").unwrap();
        let queued = job_json(
            "q",
            Located::Queued {
                table: table.clone(),
                written: at(0),
            },
            &Snapshot::default(),
        );
        assert_eq!(queued["id"], "q", "the file's own `id` does not win");
        assert_eq!(queued["status"], "queued");
        assert_eq!(queued["type"], "t");
        assert_eq!(queued["x"], 1);
        assert_eq!(queued["submitted"], time::format_rfc3339(at(0)));
        assert!(queued.get("started").is_none());

        let running = job_json(
            "r",
            Located::Running {
                table,
                written: at(0),
                claimed: at(5),
            },
            &Snapshot::default(),
        );
        assert_eq!(running["status"], "running");
        assert_eq!(running["started"], time::format_rfc3339(at(5)));

        let unknown = job_json(
            "u",
            Located::Queued {
                table: toml::Table::new(),
                written: SystemTime::UNIX_EPOCH,
            },
            &Snapshot::default(),
        );
        assert_eq!(
            (&unknown["type"], &unknown["submitted"]),
            (&Value::Null, &Value::Null)
        );
    }

    #[test]
    fn listings_leave_out_a_records_source() {
        let mut rec = Record::new("f", "t", Status::Rejected);
        rec.source = Some("x".repeat(100));
        let shown = job_json(
            "f",
            Located::Finished(Box::new(rec.clone())),
            &Snapshot::default(),
        );
        assert!(shown.get("source").is_some(), "{shown}");
        let listed = listed_json(
            Listed {
                id: "f".into(),
                when: at(0),
                job: Located::Finished(Box::new(rec)),
            },
            &Snapshot::default(),
        );
        assert!(listed.get("source").is_none(), "{listed}");
        assert_eq!(listed["status"], "rejected");
    }
}
