//! The job file: its schema, and the one function that decides whether a
//! submission is a job.
//!
//! Takes the bytes of a submission (a file in `new/`, an HTTP body turned
//! into TOML, the client's command line) and the configuration; gives a
//! [`Job`] or a rejection that says what is wrong and where. File drops,
//! HTTP and the client all go through [`parse`], so they accept and refuse
//! exactly the same things. This module does no IO.
//!
//! Invariant: every value of a [`Job`] is within its range of SPEC §3
//! (durations up to a century, datetimes from 1970 to 9999, counts up to
//! a million, priorities within ±1 000 000), so that nothing done with a
//! parsed job can overflow; a value outside is a rejection that names the
//! key, the range and the place.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::bounds::{Count, Priority};
use crate::config::{Config, ParamKind, TypeConfig};
use crate::time::{Dur, Stamp};
use crate::values::describe_toml_error;

/// A job as the file states it, before it is checked against a type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    #[serde(rename = "type")]
    kind: String,
    email: Option<Emails>,
    priority: Option<Priority>,
    not_before: Option<Stamp>,
    timeout: Option<Dur>,
    retries: Option<Count>,
    keep: Option<Dur>,
    args: Option<Vec<String>>,
    params: Option<toml::Table>,
    attempts: Option<Count>,
    submitted: Option<Stamp>,
    after: Option<Vec<String>>,
    after_any: Option<Vec<String>>,
    unique: Option<String>,
    needs: Option<std::collections::BTreeMap<String, i64>>,
    submitter: Option<String>,
}

/// The most job ids `after` and `after_any` may name together: each is
/// looked up when the job is read, and again while it waits.
pub const MAX_PARENTS: usize = 100;

/// The most bytes of a `unique` key: it names a file (in hex) in the
/// spool's `.unique/` folder.
pub const MAX_UNIQUE_BYTES: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Emails {
    One(String),
    Many(Vec<String>),
}

/// A checked job: every value within its range and capped by its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub kind: String,
    pub email: Vec<String>,
    /// -1 000 000 to 1 000 000.
    pub priority: i64,
    /// Within 1970-01-01 to 9999-12-31.
    pub not_before: Option<SystemTime>,
    /// The effective timeout: the job's, capped by the type's.
    pub timeout: Option<Duration>,
    /// The effective number of retries.
    pub retries: u32,
    /// The effective time the record is kept.
    pub keep: Duration,
    pub args: Vec<String>,
    pub params: toml::Table,
    /// Runs so far (0 for a fresh submission), at most 1 000 000.
    pub attempts: u32,
    /// The first submission time, when an earlier run wrote it down;
    /// within 1970-01-01 to 9999-12-31.
    pub submitted: Option<SystemTime>,
    /// Jobs that must end `succeeded` before this one starts: valid ids,
    /// each once.
    pub after: Vec<String>,
    /// Jobs that must end (however) before this one starts.
    pub after_any: Vec<String>,
    /// At most one queued or running job per (type, `unique`): 1 to
    /// [`MAX_UNIQUE_BYTES`] bytes.
    pub unique: Option<String>,
    /// The resources it needs (its own `needs`, else its type's): none
    /// zero, each within what `[resources]` has.
    pub needs: std::collections::BTreeMap<String, u32>,
    /// Who first submitted it (a user name), when the daemon wrote it into
    /// a requeued copy; believed only in a file of the daemon's own.
    pub submitter: Option<String>,
}

/// The configuration file read and checked whole: [`Config::load`], then
/// each schedule's job judged by [`parse`] as every submission is (the
/// configuration reader cannot ask the job parser itself: the parser
/// reads the configuration). What the daemon loads, at start and reload.
pub fn load_config(
    path: Option<&std::path::Path>,
    over: &crate::config::Overrides,
) -> Result<Config, crate::config::ConfigError> {
    let config = Config::load(path, over)?;
    check_schedules(&config).map_err(|e| {
        let file = path.map_or_else(
            || "(no configuration file)".into(),
            |p| p.display().to_string(),
        );
        crate::config::ConfigError(format!("{file}: {e}"))
    })?;
    Ok(config)
}

/// Each schedule's job judged by [`parse`] against `config`: an error
/// names the schedule (`schedules.NAME.job: …`).
pub fn check_schedules(config: &Config) -> Result<(), String> {
    for (name, s) in &config.schedules {
        parse(s.job_text.as_bytes(), config).map_err(|e| format!("schedules.{name}.job: {e}"))?;
    }
    Ok(())
}

/// Checks a submission against the configuration.
///
/// The error is one line for the record's `error` field.
pub fn parse(bytes: &[u8], config: &Config) -> Result<Job, String> {
    if bytes.len() as u64 > config.max_job_bytes {
        return Err(format!(
            "too large: {} bytes, more than max_job_bytes = {}",
            bytes.len(),
            config.max_job_bytes
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8: invalid byte at offset {}", e.valid_up_to()))?;
    parse_text(text, config)
}

fn parse_text(text: &str, config: &Config) -> Result<Job, String> {
    let raw: JobFile = toml::from_str(text)
        .map_err(|e| format!("invalid job file: {}", describe_toml_error(text, &e)))?;
    let Some(ty) = config.types.get(&raw.kind) else {
        let known: Vec<&str> = config.types.keys().map(String::as_str).collect();
        return Err(format!(
            "unknown type {:?} (this daemon knows: {})",
            raw.kind,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    };
    let email = match raw.email {
        None => Vec::new(),
        Some(Emails::One(a)) => vec![a],
        Some(Emails::Many(v)) => v,
    };
    for addr in &email {
        check_address(addr, config)?;
    }
    let args = raw.args.unwrap_or_default();
    if !args.is_empty() && !ty.accept_args {
        return Err(format!(
            "args: type {:?} does not accept args (accept_args = false)",
            ty.name
        ));
    }
    let params = raw.params.unwrap_or_default();
    check_params(&params, ty)?;
    for name in placeholders(&ty.command) {
        // A param declared optional may be left out: its placeholder is
        // then replaced by nothing.
        let optional = ty
            .params
            .as_ref()
            .and_then(|d| d.get(name))
            .is_some_and(|spec| spec.optional);
        if !params.contains_key(name) && !optional {
            return Err(format!(
                "missing param {name:?}: the command of type {:?} uses {{{name}}}",
                ty.name
            ));
        }
    }
    // A zero timeout means "none given": it must not lift the type's.
    let timeout = match (
        raw.timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        ty.timeout,
    ) {
        (Some(j), Some(t)) => Some(j.min(t)),
        (Some(j), None) => Some(j),
        (None, t) => t,
    }
    .filter(|d| !d.is_zero());
    let (after, after_any) = parents(raw.after, raw.after_any)?;
    let unique = match raw.unique {
        Some(u) if u.is_empty() => return Err("unique: must not be empty".into()),
        Some(u) if u.len() > MAX_UNIQUE_BYTES => {
            return Err(format!(
                "unique: {} bytes, at most {MAX_UNIQUE_BYTES}",
                u.len()
            ));
        }
        u => u,
    };
    // The job's own needs replace its type's.
    let needs = match &raw.needs {
        Some(n) => crate::config::resources::check_needs(n, &config.resources)?,
        None => ty.needs.clone(),
    };
    let retries = raw.retries.map_or(ty.retries, |r| r.u32().min(ty.retries));
    let type_keep = ty.keep.unwrap_or(config.keep).min(config.keep);
    let keep = raw.keep.map_or(type_keep, |k| k.0.min(type_keep));
    Ok(Job {
        kind: raw.kind,
        email,
        priority: raw.priority.map_or(0, Priority::get),
        not_before: raw.not_before.map(|t| t.0),
        timeout,
        retries,
        keep,
        args,
        params,
        attempts: raw.attempts.map_or(0, Count::u32),
        submitted: raw.submitted.map(|t| t.0),
        after,
        after_any,
        unique,
        needs,
        submitter: raw.submitter,
    })
}

/// Checks `after` and `after_any`: job ids, at most [`MAX_PARENTS`] in
/// all; a parent named twice counts once (in `after` when in both).
fn parents(
    after: Option<Vec<String>>,
    after_any: Option<Vec<String>>,
) -> Result<(Vec<String>, Vec<String>), String> {
    let (after, after_any) = (after.unwrap_or_default(), after_any.unwrap_or_default());
    if after.len() + after_any.len() > MAX_PARENTS {
        return Err(format!(
            "after, after_any: {} job ids, at most {MAX_PARENTS}",
            after.len() + after_any.len()
        ));
    }
    let mut strict: Vec<String> = Vec::new();
    let mut any: Vec<String> = Vec::new();
    for (key, ids) in [("after", after), ("after_any", after_any)] {
        for id in ids {
            if !crate::ids::valid_id(&id) {
                return Err(format!(
                    "{key}: {id:?} is not a job id (1-100 characters of A-Z a-z 0-9 . _ -)"
                ));
            }
            if strict.contains(&id) || any.contains(&id) {
                continue;
            }
            if key == "after" {
                strict.push(id);
            } else {
                any.push(id);
            }
        }
    }
    Ok((strict, any))
}

/// Refuses addresses that are not addresses, and those outside the
/// `[mail] recipients` allow-list when there is one.
pub fn check_address(addr: &str, config: &Config) -> Result<(), String> {
    let parsed: lettre::Address = addr
        .parse()
        .map_err(|e| format!("email {addr:?}: not a valid address ({e})"))?;
    if let Some(mail) = &config.mail
        && !mail.recipients.is_empty()
        && !mail
            .recipients
            .iter()
            .any(|p| address_matches(p, parsed.as_ref()))
    {
        return Err(format!(
            "email {addr:?}: not allowed by [mail] recipients ({})",
            mail.recipients.join(", ")
        ));
    }
    Ok(())
}

/// `*@example.com` matches any user at that domain (not its subdomains);
/// other patterns match one address. Case-insensitive, as domains are.
fn address_matches(pattern: &str, addr: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), addr.to_ascii_lowercase());
    match p.strip_prefix("*@") {
        Some(domain) => a.rsplit_once('@').is_some_and(|(_, d)| d == domain),
        None => p == a,
    }
}

fn check_params(params: &toml::Table, ty: &TypeConfig) -> Result<(), String> {
    let Some(decl) = &ty.params else {
        return Ok(());
    };
    for (name, spec) in decl {
        match params.get(name) {
            None if spec.optional => {}
            None => {
                return Err(format!(
                    "missing param {name:?} (type {:?} requires it)",
                    ty.name
                ));
            }
            Some(v) => {
                let ok = matches!(
                    (spec.kind, v),
                    (ParamKind::String, toml::Value::String(_))
                        | (ParamKind::Integer, toml::Value::Integer(_))
                        | (
                            ParamKind::Float,
                            toml::Value::Float(_) | toml::Value::Integer(_)
                        )
                        | (ParamKind::Boolean, toml::Value::Boolean(_))
                        | (ParamKind::Array, toml::Value::Array(_))
                        | (ParamKind::Table, toml::Value::Table(_))
                );
                if !ok {
                    return Err(format!(
                        "param {name:?}: expected {}, found {}",
                        kind_name(spec.kind),
                        v.type_str()
                    ));
                }
            }
        }
    }
    if let Some(extra) = params.keys().find(|k| !decl.contains_key(*k)) {
        let known: Vec<&str> = decl.keys().map(String::as_str).collect();
        return Err(format!(
            "unknown param {extra:?} (type {:?} declares: {})",
            ty.name,
            known.join(", ")
        ));
    }
    Ok(())
}

fn kind_name(k: ParamKind) -> &'static str {
    match k {
        ParamKind::String => "a string",
        ParamKind::Integer => "an integer",
        ParamKind::Float => "a float",
        ParamKind::Boolean => "a boolean",
        ParamKind::Array => "an array",
        ParamKind::Table => "a table",
    }
}

/// The `{name}` placeholders in a command, in order.
pub fn placeholders(command: &[String]) -> impl Iterator<Item = &str> {
    command.iter().flat_map(|arg| {
        let mut found = Vec::new();
        let mut rest = arg.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) if is_param_name(&after[..close]) => {
                    found.push(&after[..close]);
                    rest = &after[close + 1..];
                }
                _ => rest = after,
            }
        }
        found
    })
}

fn is_param_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The argv of a job: the type's command with each `{name}` replaced by the
/// param's value inside its own argument (never split, never a shell), then
/// the job's `args`.
pub fn argv(ty: &TypeConfig, job: &Job) -> Vec<String> {
    let mut out: Vec<String> = ty
        .command
        .iter()
        .map(|arg| {
            let mut s = String::with_capacity(arg.len());
            let mut rest = arg.as_str();
            while let Some(open) = rest.find('{') {
                let after = &rest[open + 1..];
                match after.find('}') {
                    Some(close) if is_param_name(&after[..close]) => {
                        s.push_str(&rest[..open]);
                        if let Some(v) = job.params.get(&after[..close]) {
                            s.push_str(&scalar_text(v));
                        }
                        rest = &after[close + 1..];
                    }
                    _ => {
                        s.push_str(&rest[..=open]);
                        rest = after;
                    }
                }
            }
            s.push_str(rest);
            s
        })
        .collect();
    out.extend(job.args.iter().cloned());
    out
}

/// A param as one piece of text: strings as they are, other scalars as
/// TOML writes them, arrays and tables as JSON.
pub fn scalar_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        other => crate::values::toml_to_json(other).to_string(),
    }
}

/// Whether a param becomes a `RACCOON_PARAM_<NAME>` variable.
pub fn is_scalar(v: &toml::Value) -> bool {
    !matches!(v, toml::Value::Array(_) | toml::Value::Table(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use std::path::Path;

    fn config() -> Config {
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        let text = format!(
            r#"
[mail]
sendmail = "/bin/true"
recipients = ["*@example.com"]
[resources]
gpu = ["0", "1"]
[types.report]
command = ["report", "--num", "{{num}}", "--title={{title}}"]
user = "{me}"
timeout = "10m"
retries = 2
keep = "1d"
params = {{ num = "integer", title = "string?" }}
[types.free]
command = ["echo"]
user = "{me}"
accept_args = true
needs = {{ gpu = 1 }}
"#
        );
        Config::from_text(None, &text, Path::new("/"), &Overrides::default()).unwrap()
    }

    #[test]
    fn parents_unique_and_needs_are_read_and_bounded() {
        let c = config();
        let j = parse(
            b"type = \"free\"\nafter = [\"a\", \"b\", \"a\"]\nafter_any = [\"b\", \"c\"]\nunique = \"k\"\n",
            &c,
        )
        .unwrap();
        assert_eq!(
            (j.after, j.after_any),
            (vec!["a".into(), "b".into()], vec!["c".into()])
        );
        assert_eq!(j.unique.as_deref(), Some("k"));
        assert_eq!(j.needs["gpu"], 1, "the type's needs");
        let own = parse(b"type = \"free\"\nneeds = {}\n", &c).unwrap();
        assert!(
            own.needs.is_empty(),
            "the job's own needs replace the type's"
        );
        let many: Vec<String> = (0..=MAX_PARENTS).map(|i| format!("\"j{i}\"")).collect();
        let text = format!("type = \"free\"\nafter = [{}]\n", many.join(", "));
        let e = parse(text.as_bytes(), &c).unwrap_err();
        assert!(e.contains("101 job ids, at most 100"), "{e}");
        let text = format!("type = \"free\"\nunique = \"{}\"\n", "x".repeat(101));
        let e = parse(text.as_bytes(), &c).unwrap_err();
        assert!(e.contains("unique: 101 bytes, at most 100"), "{e}");
    }

    #[test]
    fn a_full_job_is_capped_by_its_type() {
        let j = parse(
            br#"type = "report"
email = "ann@example.com"
priority = 5
not_before = 2026-11-23T03:00:00Z
timeout = "1h"
retries = 9
keep = "30d"
[params]
num = 10
title = "a b"
"#,
            &config(),
        )
        .unwrap();
        assert_eq!(j.timeout, Some(Duration::from_secs(600)));
        assert_eq!(j.retries, 2);
        assert_eq!(j.keep, Duration::from_secs(86400));
        assert_eq!(j.email, vec!["ann@example.com"]);
        let ty = &config().types["report"];
        assert_eq!(argv(ty, &j), vec!["report", "--num", "10", "--title=a b"]);
    }

    #[test]
    fn every_way_to_be_wrong_says_what_and_where() {
        let c = config();
        let cases: &[(&[u8], &str)] = &[
            (b"type = \"free\"\ntimout = \"5s\"\n", "line 2, column 1"),
            (b"type = \"free\"\ntimout = \"5s\"\n", "timout"),
            (b"type = [\n", "line 1"),
            (b"type = \"nope\"\n", "unknown type \"nope\""),
            (b"priority = 1\n", "type"),
            (b"type = \"report\"\n", "missing param \"num\""),
            (
                b"type = \"report\"\nparams = { num = \"x\" }\n",
                "param \"num\": expected an integer",
            ),
            (
                b"type = \"report\"\nparams = { num = 1, zz = 2 }\n",
                "unknown param \"zz\"",
            ),
            (
                b"type = \"report\"\nargs = [\"-v\"]\nparams = { num = 1 }\n",
                "does not accept args",
            ),
            (
                b"type = \"free\"\nemail = \"not an address\"\n",
                "not a valid address",
            ),
            (
                b"type = \"free\"\nemail = \"eve@evil.test\"\n",
                "not allowed by [mail] recipients",
            ),
            (b"type = \"free\"\n\xff\xfe\n", "not UTF-8"),
            (b"type = \"free\"\ntimeout = \"soon\"\n", "invalid duration"),
            (
                b"type = \"free\"\nafter = [\"../x\"]\n",
                "after: \"../x\" is not a job id",
            ),
            (
                b"type = \"free\"\nafter_any = [\"\"]\n",
                "after_any: \"\" is not a job id",
            ),
            (
                b"type = \"free\"\nunique = \"\"\n",
                "unique: must not be empty",
            ),
            (
                b"type = \"free\"\nneeds = { tpu = 1 }\n",
                "needs: no resource \"tpu\" (this daemon has: gpu)",
            ),
            (
                b"type = \"free\"\nneeds = { gpu = 3 }\n",
                "needs: gpu = 3, more than this daemon has (2)",
            ),
        ];
        for (input, want) in cases {
            let e = parse(input, &c).unwrap_err();
            assert!(
                e.contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(input)
            );
        }
        let mut big = b"type = \"free\"\n#".to_vec();
        big.resize(c.max_job_bytes as usize + 1, b'x');
        assert!(parse(&big, &c).unwrap_err().starts_with("too large"));
    }

    #[test]
    fn values_out_of_range_are_refused_naming_key_range_and_place() {
        let c = config();
        let years = "(0 to 100 years)";
        let dates = "(1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z)";
        let cases: &[(&str, String)] = &[
            (
                "timeout = \"9223372036854775807s\"",
                format!("line 2, column 11: timeout: 9223372036854775807s is out of range {years}"),
            ),
            (
                "timeout = 9223372036854775807",
                format!("line 2, column 11: timeout: 9223372036854775807 is out of range {years}"),
            ),
            (
                "timeout = -1",
                format!("line 2, column 11: timeout: -1 is out of range {years}"),
            ),
            (
                "keep = \"200years\"",
                format!("line 2, column 8: keep: 200years is out of range {years}"),
            ),
            (
                "not_before = 9999-12-31T23:59:59-00:01",
                format!("not_before: 9999-12-31T23:59:59-00:01 is out of range {dates}"),
            ),
            (
                "submitted = 1970-01-01T00:00:00+00:01",
                format!("submitted: 1970-01-01T00:00:00+00:01 is out of range {dates}"),
            ),
            (
                "attempts = 4294967295",
                "attempts: 4294967295 is out of range (0 to 1000000)".into(),
            ),
            (
                "retries = 1000001",
                "retries: 1000001 is out of range (0 to 1000000)".into(),
            ),
            (
                "priority = -9223372036854775808",
                "priority: -9223372036854775808 is out of range (-1000000 to 1000000)".into(),
            ),
        ];
        for (line, want) in cases {
            let text = format!("type = \"free\"\n{line}\n");
            let e = parse(text.as_bytes(), &c).unwrap_err();
            assert!(e.contains(want.as_str()), "{line}: {e}");
        }
        let edges = "type = \"free\"\ntimeout = \"36500d\"\nretries = 1000000\npriority = -1000000\n\
                     attempts = 1000000\nsubmitted = 1970-01-01T00:00:00Z\n\
                     not_before = 9999-12-31T23:59:59.999Z\nkeep = \"100y\"\n";
        let j = parse(edges.as_bytes(), &c).unwrap();
        assert_eq!(j.timeout, Some(Duration::from_secs(36500 * 86400)));
        assert_eq!((j.priority, j.attempts), (-1_000_000, 1_000_000));
        assert_eq!(j.submitted, Some(std::time::UNIX_EPOCH));
        // Over JSON the same values are refused the same way.
        for (body, key) in [
            (
                serde_json::json!({"type": "free", "timeout": "9223372036854775807s"}),
                "timeout",
            ),
            (
                serde_json::json!({"type": "free", "priority": 1e300}),
                "priority",
            ),
            (
                serde_json::json!({"type": "free", "attempts": u64::MAX}),
                "attempts",
            ),
        ] {
            let text = crate::values::json_job_to_toml(&body).unwrap();
            let e = parse(text.as_bytes(), &c).unwrap_err();
            assert!(e.contains(key), "{body}: {e}");
        }
        for body in [
            serde_json::json!({"type": "free", "not_before": "9999-12-31T23:59:59-00:01"}),
            serde_json::json!({"type": "free", "not_before": i64::MAX}),
            serde_json::json!({"type": "free", "submitted": -1}),
        ] {
            let e = crate::values::json_job_to_toml(&body).unwrap_err();
            assert!(e.contains("out of range"), "{body}: {e}");
        }
    }

    #[test]
    fn json_jobs_become_the_same_toml() {
        let body = serde_json::json!({
            "type": "report", "params": {"num": 3}, "not_before": "2026-11-23T03:00:00Z"
        });
        let text = crate::values::json_job_to_toml(&body).unwrap();
        let j = parse(text.as_bytes(), &config()).unwrap();
        assert_eq!(j.params["num"].as_integer(), Some(3));
        assert!(j.not_before.is_some());
        assert!(crate::values::json_job_to_toml(&serde_json::json!({"type": null})).is_err());
    }

    #[test]
    fn placeholders_are_found_inside_arguments() {
        let cmd: Vec<String> = ["a", "{x}", "--y={y}", "{not a name}", "{}"]
            .map(String::from)
            .to_vec();
        assert_eq!(placeholders(&cmd).collect::<Vec<_>>(), vec!["x", "y"]);
    }
}
