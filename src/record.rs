//! The record: `done/<id>.toml`, the one file that says how a job ended.
//!
//! Owns the record's schema and its text form, for the daemon that writes
//! it and for the client, the HTTP API, the report and the mailer that
//! read it. A record is written once, atomically, by the spool module; the
//! only later change is its `mail` field. This module does no IO.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use toml::value::Datetime;

use crate::time;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Rejected,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::TimedOut,
        Status::Cancelled,
        Status::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
            Status::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job has ended (a record exists).
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }

    /// The outcomes that `notify = "failure"` mails.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut | Status::Rejected)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `done/<id>.toml`. Field order is the order in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<Datetime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Datetime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Datetime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Datetime>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_as: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<toml::Table>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What the task used; absent for a job that never ran. Last, so that
    /// it is written as the `[usage]` table after every plain key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `[usage]`: what a task used, from `wait4(2)` and, when the job had a
/// cgroup of its own, from that cgroup (which also counts the processes
/// that left the task's process group).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// User plus system CPU time: of the whole cgroup when there was one,
    /// else of the task and the descendants it waited for.
    pub cpu_seconds: f64,
    /// The largest resident set of the task or of a descendant it waited
    /// for (`ru_maxrss`).
    pub max_rss_bytes: u64,
    /// The cgroup's peak memory (`memory.peak`): only with cgroups whose
    /// memory controller is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// Whether the kernel's OOM killer killed a process of the job
    /// (`memory.events`): only with the memory controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
}

impl Record {
    /// A record with nothing but its id, type and status.
    pub fn new(id: &str, kind: &str, status: Status) -> Record {
        Record {
            id: id.to_string(),
            kind: kind.to_string(),
            status,
            submitted: None,
            started: None,
            finished: None,
            expires: None,
            attempts: 0,
            exit_code: None,
            signal: None,
            error: None,
            submitted_as: None,
            email: Vec::new(),
            mail: None,
            priority: None,
            args: Vec::new(),
            params: None,
            result: None,
            source: None,
            usage: None,
        }
    }

    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot write record {}: {e}", self.id))
    }

    pub fn from_toml(text: &str) -> Result<Record, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    pub fn finished_at(&self) -> Option<SystemTime> {
        self.finished.as_ref().and_then(|d| time::from_toml(d).ok())
    }

    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires.as_ref().and_then(|d| time::from_toml(d).ok())
    }

    /// How long the task ran, when it ran.
    pub fn duration(&self) -> Option<Duration> {
        let s = time::from_toml(self.started.as_ref()?).ok()?;
        let f = time::from_toml(self.finished.as_ref()?).ok()?;
        f.duration_since(s).ok()
    }

    /// The record as JSON, with datetimes in RFC 3339 (the HTTP API and
    /// `raccoon --json`).
    pub fn to_json(&self) -> serde_json::Value {
        // Through the text form, so that datetimes stay datetimes.
        let table = self
            .to_toml()
            .ok()
            .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
            .unwrap_or_default();
        crate::values::toml_to_json(&toml::Value::Table(table))
    }
}

/// The name of a signal, `SIGKILL` style, for `signal = "…"`.
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("SIG{sig}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_its_text() {
        let mut r = Record::new("report-42", "make_report", Status::Succeeded);
        r.submitted = Some(time::to_toml(
            time::parse_rfc3339("2026-11-22T10:00:00.125Z").unwrap(),
        ));
        r.exit_code = Some(0);
        r.email = vec!["ann@example.com".into()];
        let mut p = toml::Table::new();
        p.insert("num".into(), toml::Value::Integer(10));
        r.params = Some(p);
        r.result = Some(toml::Value::String("ok\n".into()));
        r.usage = Some(Usage {
            cpu_seconds: 0.61,
            max_rss_bytes: 35_651_584,
            memory_peak_bytes: None,
            oom_killed: None,
        });
        let text = r.to_toml().unwrap();
        assert!(
            text.starts_with(
                "id = \"report-42\"\ntype = \"make_report\"\nstatus = \"succeeded\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("submitted = 2026-11-22T10:00:00.125Z"),
            "{text}"
        );
        assert!(
            text.ends_with("[usage]\ncpu_seconds = 0.61\nmax_rss_bytes = 35651584\n"),
            "{text}"
        );
        assert_eq!(Record::from_toml(&text).unwrap(), r);
        let j = r.to_json();
        assert_eq!(j["submitted"], "2026-11-22T10:00:00.125Z");
        assert_eq!(j["params"]["num"], 10);
        assert_eq!(j["usage"]["max_rss_bytes"], 35_651_584);
    }

    #[test]
    fn usage_from_cgroups_adds_the_memory_peak_and_the_oom_kill() {
        let mut r = Record::new("a", "t", Status::Failed);
        r.usage = Some(Usage {
            cpu_seconds: 1.5,
            max_rss_bytes: 1024,
            memory_peak_bytes: Some(41_943_040),
            oom_killed: Some(true),
        });
        let text = r.to_toml().unwrap();
        assert!(text.contains("memory_peak_bytes = 41943040\n"), "{text}");
        assert!(text.contains("oom_killed = true\n"), "{text}");
        assert_eq!(Record::from_toml(&text).unwrap(), r);
    }

    #[test]
    fn statuses_spell_as_the_spec_does() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::TimedOut.as_str(), "timed_out");
        assert_eq!(signal_name(9), "SIGKILL");
    }
}
