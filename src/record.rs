//! The record: `done/<id>.toml`, the one file that says how a job ended.
//!
//! Owns the record's schema and its text form, for the daemon that writes
//! it and for the client, the HTTP API, the report and the mailer that
//! read it, and the constructors the daemon makes records with (of a
//! submission that is no job, of a job that did not run to its end, of a
//! run), from the job and an [`Outcome`]. A record is written once,
//! atomically, by the commit thread through the spool module; the only
//! later change is its `mail` field, rewritten by the same thread.
//!
//! Never does IO and never reads the clock: `now` is an argument.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use toml::value::Datetime;

use crate::bounds;
use crate::job::Job;
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
    /// Who submitted the job: the user name owning the submitted file (the
    /// daemon's user for HTTP submissions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<String>,
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
    /// The jobs it waited for (`after`: to succeed), as its file said.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// The jobs it waited for to end, whatever their outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_any: Vec<String>,
    /// Its (type, `unique`) key, as its file said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<String>,
    /// The resources it needed (its own `needs`, else its type's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<toml::Table>,
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

impl Usage {
    /// The CPU time as a duration; `None` for a figure no duration is (a
    /// record edited by hand: negative, not a number).
    pub fn cpu(&self) -> Option<Duration> {
        Duration::try_from_secs_f64(self.cpu_seconds).ok()
    }

    /// `520ms CPU, 34 MiB max RSS, 40 MiB memory peak`, and `, killed by
    /// the OOM killer` when it was: in words, for the mail, `raccoon
    /// show` and the report's titles.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} CPU, {} max RSS",
            self.cpu_text(),
            bounds::rough_bytes(self.max_rss_bytes)
        );
        if let Some(peak) = self.memory_peak_bytes {
            s.push_str(&format!(", {} memory peak", bounds::rough_bytes(peak)));
        }
        if self.oom_killed == Some(true) {
            s.push_str(", killed by the OOM killer");
        }
        s
    }

    /// `520ms · 34 MiB`: CPU time and max RSS, for a table's cell.
    pub fn brief(&self) -> String {
        format!(
            "{} · {}",
            self.cpu_text(),
            bounds::rough_bytes(self.max_rss_bytes)
        )
    }

    fn cpu_text(&self) -> String {
        self.cpu()
            .map_or_else(|| "?".to_string(), time::format_duration)
    }
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
            submitter: None,
            email: Vec::new(),
            mail: None,
            priority: None,
            args: Vec::new(),
            params: None,
            after: Vec::new(),
            after_any: Vec::new(),
            unique: None,
            needs: None,
            result: None,
            source: None,
            usage: None,
        }
    }

    /// The record of a submission that is not (or no longer) a valid job:
    /// its type as far as its text says, its text as `source`, kept for the
    /// daemon's `keep`.
    pub fn of_submission(
        id: &str,
        bytes: &[u8],
        status: Status,
        error: Option<String>,
        submitted: Option<SystemTime>,
        keep: Duration,
        now: SystemTime,
    ) -> Record {
        let mut rec = Record::new(id, &guess_type(bytes), status);
        rec.submitted = submitted.map(time::to_toml);
        rec.finished = Some(time::to_toml(now));
        rec.expires = Some(time::to_toml(now + keep));
        rec.error = error;
        rec.source = Some(String::from_utf8_lossy(bytes).into_owned());
        rec
    }

    /// The record of a valid job that ended without a task of it being
    /// watched to its end (cancelled while queued, interrupted by a daemon
    /// that died): what the job file says, and how it ended. `submitted`
    /// counts when the job file does not say.
    pub fn of_job(
        id: &str,
        job: &Job,
        submitted: SystemTime,
        submitted_as: Option<String>,
        outcome: Outcome,
        now: SystemTime,
    ) -> Record {
        let mut rec = Record::new(id, &job.kind, outcome.status);
        rec.submitted = Some(time::to_toml(job.submitted.unwrap_or(submitted)));
        rec.finished = Some(time::to_toml(now));
        rec.expires = Some(time::to_toml(now + job.keep));
        rec.attempts = outcome.attempts;
        rec.exit_code = outcome.exit_code;
        rec.signal = outcome.signal;
        rec.error = outcome.error;
        rec.submitted_as = submitted_as;
        rec.email = job.email.clone();
        if job.priority != 0 {
            rec.priority = Some(job.priority);
        }
        rec.args = job.args.clone();
        rec.params = (!job.params.is_empty()).then(|| job.params.clone());
        rec.after = job.after.clone();
        rec.after_any = job.after_any.clone();
        rec.unique = job.unique.clone();
        rec.needs = (!job.needs.is_empty()).then(|| {
            job.needs
                .iter()
                .map(|(r, n)| (r.clone(), toml::Value::Integer(i64::from(*n))))
                .collect()
        });
        rec
    }

    /// The record of a job whose task started at `started` and ended now.
    pub fn of_run(
        id: &str,
        job: &Job,
        submitted: SystemTime,
        submitted_as: Option<String>,
        started: SystemTime,
        outcome: Outcome,
        now: SystemTime,
    ) -> Record {
        let mut rec = Record::of_job(id, job, submitted, submitted_as, outcome, now);
        rec.started = Some(time::to_toml(started));
        rec
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
        // Through a TOML value, not text (`GET /jobs` makes up to a
        // thousand of these); serde hands datetimes over as a private
        // one-key table, turned back into datetimes here.
        let mut value =
            toml::Value::try_from(self).unwrap_or_else(|_| toml::Value::Table(toml::Table::new()));
        restore_datetimes(&mut value);
        crate::values::toml_to_json(&value)
    }
}

/// Turns the tables serde makes of datetimes (`{"$__toml_private_datetime":
/// "…"}`) back into datetimes, at any depth.
fn restore_datetimes(v: &mut toml::Value) {
    match v {
        toml::Value::Table(t) => {
            if t.len() == 1
                && let Some(toml::Value::String(s)) = t.get("$__toml_private_datetime")
                && let Ok(d) = s.parse::<Datetime>()
            {
                *v = toml::Value::Datetime(d);
                return;
            }
            t.iter_mut().for_each(|(_, v)| restore_datetimes(v));
        }
        toml::Value::Array(a) => a.iter_mut().for_each(restore_datetimes),
        _ => {}
    }
}

/// How a job ended, in the words of its record: the part of a record that
/// the daemon decides (see `daemon::ending`); the rest comes from the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// Why it did not succeed, in words.
    pub error: Option<String>,
    /// The task's exit status, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the task (`SIGKILL`), when one did.
    pub signal: Option<String>,
    /// Attempts made, this one included.
    pub attempts: u32,
}

/// The type a rejected file names, if it names one, for its record.
fn guess_type(bytes: &[u8]) -> String {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(t).ok())
        .and_then(|t| t.get("type").and_then(|v| v.as_str().map(str::to_string)))
        .unwrap_or_default()
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
    fn usage_reads_in_words_and_in_a_cell() {
        let u = |cpu_seconds, max_rss_bytes, memory_peak_bytes, oom_killed| Usage {
            cpu_seconds,
            max_rss_bytes,
            memory_peak_bytes,
            oom_killed,
        };
        let cases = [
            (
                u(0.61, 35_651_584, None, None),
                "610ms CPU, 34 MiB max RSS",
                "610ms · 34 MiB",
            ),
            (
                u(1.5, 1024, Some(41_943_040), Some(false)),
                "1.5s CPU, 1.0 KiB max RSS, 40 MiB memory peak",
                "1.5s · 1.0 KiB",
            ),
            (
                u(125.0, 3 << 30, Some(3 << 30), Some(true)),
                "2m05s CPU, 3.0 GiB max RSS, 3.0 GiB memory peak, killed by the OOM killer",
                "2m05s · 3.0 GiB",
            ),
            // Edited by hand: no panic, a question mark.
            (
                u(f64::NAN, 0, None, None),
                "? CPU, 0 bytes max RSS",
                "? · 0 bytes",
            ),
            (
                u(-1.0, 1, None, None),
                "? CPU, 1 byte max RSS",
                "? · 1 byte",
            ),
            (
                u(1e300, 1, None, None),
                "? CPU, 1 byte max RSS",
                "? · 1 byte",
            ),
        ];
        for (usage, summary, brief) in cases {
            assert_eq!(usage.summary(), summary);
            assert_eq!(usage.brief(), brief);
        }
    }

    #[test]
    fn a_records_json_is_the_json_of_its_text() {
        let text = "id = \"x\"\ntype = \"t\"\nstatus = \"failed\"\n\
            submitted = 2026-11-22T10:00:00.125Z\nfinished = 2026-11-22T10:00:01Z\n\
            exit_code = 3\nerror = \"boom\"\n\
            [params]\nwhen = 2026-11-22\nat = 10:00:00\nlist = [1979-05-27T07:32:00-08:00, 2]\n\
            deep = [{ t = 2026-01-01T00:00:00Z }]\n\
            [result]\nrows = 3\nstamp = 2026-11-22T10:00:00Z\n\
            [usage]\ncpu_seconds = 0.5\nmax_rss_bytes = 1024\n";
        let r = Record::from_toml(text).unwrap();
        let via_text = crate::values::toml_to_json(&toml::Value::Table(
            toml::from_str::<toml::Table>(&r.to_toml().unwrap()).unwrap(),
        ));
        assert_eq!(r.to_json(), via_text);
        assert_eq!(
            r.to_json()["params"]["deep"][0]["t"],
            "2026-01-01T00:00:00.000Z"
        );
        // Same keys in the same order.
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(keys(&r.to_json()), keys(&via_text));
    }

    #[test]
    fn records_are_made_from_the_job_the_outcome_and_now() {
        let t = |s: &str| time::parse_rfc3339(s).unwrap();
        let now = t("2026-11-22T10:00:10Z");
        let job = Job {
            kind: "report".into(),
            email: vec!["ann@example.com".into()],
            priority: 0,
            not_before: None,
            timeout: None,
            retries: 2,
            keep: Duration::from_secs(3600),
            args: Vec::new(),
            params: toml::Table::new(),
            attempts: 1,
            submitted: Some(t("2026-11-22T09:00:00Z")),
            after: vec!["build-17".into()],
            after_any: Vec::new(),
            unique: Some("nightly".into()),
            needs: std::collections::BTreeMap::from([("gpu".into(), 1)]),
            submitter: None,
        };
        let outcome = Outcome {
            status: Status::Failed,
            error: Some("killed by SIGSEGV".into()),
            exit_code: None,
            signal: Some("SIGSEGV".into()),
            attempts: 2,
        };
        let started = t("2026-11-22T10:00:00Z");
        let run = Record::of_run("r-1", &job, now, None, started, outcome.clone(), now);
        assert_eq!(run.kind, "report");
        // The job file's first submission wins over when this copy came.
        assert_eq!(
            run.submitted,
            Some(time::to_toml(t("2026-11-22T09:00:00Z")))
        );
        assert_eq!(run.duration(), Some(Duration::from_secs(10)));
        assert_eq!(run.expires_at(), Some(now + Duration::from_secs(3600)));
        assert_eq!((run.attempts, run.signal.as_deref()), (2, Some("SIGSEGV")));
        assert_eq!(run.email, job.email);
        assert_eq!(run.params, None, "no params, no table");
        assert_eq!(run.after, ["build-17"]);
        assert_eq!(run.unique.as_deref(), Some("nightly"));
        let text = run.to_toml().unwrap();
        assert!(text.contains("after = [\"build-17\"]\n"), "{text}");
        assert!(text.contains("[needs]\ngpu = 1\n"), "{text}");
        assert_eq!(Record::from_toml(&text).unwrap(), run);

        let unrun = Record::of_job("r-1", &job, now, Some("x.toml".into()), outcome, now);
        assert_eq!(
            (unrun.started, unrun.submitted_as.as_deref()),
            (None, Some("x.toml"))
        );

        let keep = Duration::from_secs(60);
        let junk = Record::of_submission(
            "j-1",
            b"type = \"nope\"\nwhat",
            Status::Rejected,
            Some("bad".into()),
            None,
            keep,
            now,
        );
        assert_eq!(
            junk.kind, "",
            "the type of a text that is no TOML is not guessed"
        );
        assert_eq!(junk.source.as_deref(), Some("type = \"nope\"\nwhat"));
        assert_eq!(junk.expires_at(), Some(now + keep));
        let named = Record::of_submission(
            "j-2",
            b"type = \"nope\"\n",
            Status::Rejected,
            None,
            None,
            keep,
            now,
        );
        assert_eq!(named.kind, "nope");
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
