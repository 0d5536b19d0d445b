//! What the daemon accepts, written down for its clients:
//! `spool/types.json`.
//!
//! The daemon writes a [`Catalog`] at start and on each reload (through
//! `Spool::write_catalog`); `raccoon submit` reads it to refuse, before
//! anything is queued, a job the daemon would reject, in the words the
//! daemon (and HTTP's 422) would use. The check is the daemon's own code:
//! [`Catalog::rules`] reads the catalog back as the configuration it
//! stands for, through [`Config::from_text`], and the client hands that to
//! [`job::parse`], exactly as a file drop and
//! `POST /jobs` are checked.
//!
//! Pure apart from [`Catalog::rules`] (which goes through the
//! configuration reader): the writer, `now` and whether a process is alive
//! are arguments. Never holds a secret: no command, user, environment,
//! token or mail server; only what a submitter needs to write a valid job.
//!
//! Invariant: everything `job::parse` consults is here: of each type its
//! params, the placeholders its command uses, `accept_args` and `needs`;
//! of the daemon `max_job_bytes`, the mail allow-list and `[resources]`
//! (how many units of each). It also says what `pause/` holds. A type check that
//! `job::parse` gains must add what it reads to the catalog, or the client
//! and the daemon disagree.
//!
//! The daemon's schedules are here too, for `raccoon schedules`: when each
//! ticks (`cron` and `tz`, or `every`), `catch_up` and its jobs' type, but
//! not its next tick, which changes at every tick: the client computes it
//! from these with the daemon's code ([`ScheduleEntry::when`]), and reads
//! the last tick fired from the spool. A schedule's job params are not
//! written down.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Overrides, ParamKind};
use crate::job;
use crate::schedule::{self, When, Zone};
use crate::time;

/// The file's name in the spool folder.
pub const FILE: &str = "types.json";

/// The version of the file's shape. A reader refuses a higher one (it
/// cannot know what it would miss) and says so.
pub const FORMAT: u32 = 1;

/// The most a reader takes of the file: a catalog is a few KiB; anything
/// far larger is not one.
pub const MAX_BYTES: u64 = 4 << 20;

/// `spool/types.json`: the types a daemon accepts, and who said so when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// [`FORMAT`] when written; a reader refuses a higher one.
    pub format: u32,
    /// When the daemon wrote it (RFC 3339): at its start or last reload.
    pub written: String,
    /// The writer's host: its pid means something only there.
    pub host: String,
    /// The writer's pid: while it runs, this is what it accepts.
    pub pid: u32,
    /// The writer's start time (clock ticks after boot): with the pid, it
    /// tells the writer from a later process that got the same pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// The writer's version.
    pub version: String,
    /// A job file larger than this is rejected.
    pub max_job_bytes: u64,
    /// The mail allow-list (`[mail] recipients`); empty: any address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// `[resources]`: what a job's `needs` may ask for, and how much of
    /// each this daemon has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceEntry>,
    /// Whether `pause/ALL` holds new starts of every type (as of
    /// `written`: the daemon writes the file again when this changes).
    #[serde(default)]
    pub paused: bool,
    /// Every configured type, by name.
    pub types: Vec<TypeEntry>,
    /// Every configured schedule, by name (absent when there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleEntry>,
}

/// One schedule as `raccoon schedules` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    pub name: String,
    /// The cron expression, for a `cron` schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Its zone's IANA name (the daemon's own when `tz` was not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// The interval, as `1h 30m`, for an `every` schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    pub catch_up: bool,
    /// The type of its jobs.
    #[serde(rename = "type")]
    pub kind: String,
}

impl ScheduleEntry {
    /// When it ticks, read back through the daemon's own parsers.
    pub fn when(&self) -> Result<When, String> {
        match (&self.cron, &self.every) {
            (Some(expr), None) => {
                let zone = Zone::named(self.tz.as_deref().unwrap_or("UTC"))?;
                When::cron(expr, zone)
            }
            (None, Some(every)) => When::every(time::parse_duration(every)?),
            _ => Err(format!(
                "schedule {}: neither cron nor every, or both",
                self.name
            )),
        }
    }
}

/// One counted resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceEntry {
    /// As `[resources]` names it: what `needs` names.
    pub name: String,
    /// How many units this daemon has.
    pub units: usize,
}

/// One type as a submitter needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeEntry {
    pub name: String,
    /// How many of its jobs run at once (its `limit`, else `total`).
    pub limit: usize,
    /// Whether jobs of it may carry `args`.
    pub accept_args: bool,
    /// Its declared params; `None` when params are free-form.
    pub params: Option<Vec<ParamEntry>>,
    /// The params its command uses as `{name}`: a job must give each
    /// (unless declared optional).
    #[serde(default)]
    pub placeholders: Vec<String>,
    /// The resources each of its jobs needs unless the job says otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub needs: BTreeMap<String, u32>,
    /// Whether `pause/<type>` holds its new starts.
    #[serde(default)]
    pub paused: bool,
}

/// One declared param.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    pub name: String,
    /// `string`, `integer`, `float`, `boolean`, `array` or `table`, as
    /// `raccoond.toml` spells it.
    pub kind: String,
    pub optional: bool,
}

/// The process that writes a catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub host: String,
    pub pid: u32,
    pub pid_start: Option<u64>,
}

/// Whether a catalog still says what the daemon accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Its writer runs (or is on another host, where this one cannot
    /// tell): what it says holds.
    Current,
    /// Its writer is gone: the next daemon may accept other things. Why,
    /// in words.
    Stale(String),
}

impl Catalog {
    /// What `config` accepts, written by `writer` at `now`.
    pub fn of(config: &Config, writer: &Writer, now: SystemTime) -> Catalog {
        let types = config
            .types
            .values()
            .map(|t| TypeEntry {
                name: t.name.clone(),
                limit: config.limit_of(&t.name),
                accept_args: t.accept_args,
                params: t.params.as_ref().map(|decl| {
                    decl.iter()
                        .map(|(name, spec)| ParamEntry {
                            name: name.clone(),
                            kind: kind_word(spec.kind).to_string(),
                            optional: spec.optional,
                        })
                        .collect()
                }),
                placeholders: {
                    let mut seen: Vec<String> = Vec::new();
                    for p in job::placeholders(&t.command) {
                        if !seen.iter().any(|s| s == p) {
                            seen.push(p.to_string());
                        }
                    }
                    seen
                },
                needs: t.needs.clone(),
                paused: false,
            })
            .collect();
        Catalog {
            format: FORMAT,
            written: time::format_rfc3339(now),
            host: writer.host.clone(),
            pid: writer.pid,
            pid_start: writer.pid_start,
            version: env!("CARGO_PKG_VERSION").to_string(),
            max_job_bytes: config.max_job_bytes,
            recipients: config
                .mail
                .as_ref()
                .map(|m| m.recipients.clone())
                .unwrap_or_default(),
            resources: config
                .resources
                .iter()
                .map(|(name, units)| ResourceEntry {
                    name: name.clone(),
                    units: units.len(),
                })
                .collect(),
            paused: false,
            types,
            schedules: config
                .schedules
                .values()
                .map(|s| {
                    let (cron, tz, every) = match &s.when {
                        When::Cron { expr, zone, .. } => {
                            (Some(expr.clone()), Some(zone.name().to_string()), None)
                        }
                        When::Every(secs) => (None, None, Some(schedule::format_every(*secs))),
                    };
                    ScheduleEntry {
                        name: s.name.clone(),
                        cron,
                        tz,
                        every,
                        catch_up: s.catch_up,
                        kind: s.kind.clone(),
                    }
                })
                .collect(),
        }
    }

    /// The same, saying what `pause/` holds: `all` for `pause/ALL`, and
    /// which types have a file of their own.
    pub fn paused(mut self, all: bool, own: impl Fn(&str) -> bool) -> Catalog {
        self.paused = all;
        for t in &mut self.types {
            t.paused = own(&t.name);
        }
        self
    }

    /// The file's text: pretty JSON, one key a line, for people and `jq`.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        text.push('\n');
        text
    }

    /// Reads a catalog; the error says what is wrong with the file.
    pub fn parse(bytes: &[u8]) -> Result<Catalog, String> {
        let cat: Catalog =
            serde_json::from_slice(bytes).map_err(|e| format!("not a types description: {e}"))?;
        if cat.format > FORMAT {
            return Err(format!(
                "format {} is newer than this client knows ({FORMAT}): written by raccoond {}",
                cat.format, cat.version
            ));
        }
        Ok(cat)
    }

    /// Whether what the catalog says still holds, as seen from `host`:
    /// stale once its writer is no longer running there. `alive` says
    /// whether a process of this host with that pid (and start time, when
    /// known) runs. A catalog from another host is taken as current: a
    /// pid of another machine cannot be looked at from here.
    pub fn freshness(&self, host: &str, alive: impl FnOnce(u32, Option<u64>) -> bool) -> Freshness {
        if self.host != host || alive(self.pid, self.pid_start) {
            return Freshness::Current;
        }
        Freshness::Stale(format!(
            "written at {} by raccoond pid {} on {}, which is no longer running",
            self.written, self.pid, self.host
        ))
    }

    /// The catalog as the configuration it stands for, read by the
    /// daemon's own configuration reader, for [`job::parse`]: the same
    /// types, params, placeholders, `accept_args`, size limit and mail
    /// allow-list. The commands run nothing (`raccoon` and the
    /// placeholders); no user is named but the one the reader requires.
    pub fn rules(&self) -> Result<Config, String> {
        use toml::Value;
        let mut top = toml::Table::new();
        top.insert("total".into(), Value::Integer(1));
        let max = i64::try_from(self.max_job_bytes)
            .map_err(|_| format!("max_job_bytes = {}: too large", self.max_job_bytes))?;
        top.insert("max_job_bytes".into(), Value::Integer(max));
        if !self.recipients.is_empty() {
            let mut mail = toml::Table::new();
            // Only the allow-list is consulted; nothing is sent.
            mail.insert("smtp".into(), Value::String("smtp://localhost".into()));
            mail.insert("from".into(), Value::String("raccoon@localhost".into()));
            mail.insert(
                "recipients".into(),
                Value::Array(
                    self.recipients
                        .iter()
                        .map(|r| Value::String(r.clone()))
                        .collect(),
                ),
            );
            top.insert("mail".into(), Value::Table(mail));
        }
        if !self.resources.is_empty() {
            let resources: toml::Table = self
                .resources
                .iter()
                .map(|r| {
                    let n = i64::try_from(r.units).unwrap_or(i64::MAX);
                    (r.name.clone(), Value::Integer(n))
                })
                .collect();
            top.insert("resources".into(), Value::Table(resources));
        }
        // As root the reader requires a `user`; root itself needs no
        // switch and no lookup beyond its own.
        let as_root = nix::unistd::geteuid().is_root();
        let mut types = toml::Table::new();
        for t in &self.types {
            let mut ty = toml::Table::new();
            let mut command = vec![Value::String("raccoon".into())];
            command.extend(
                t.placeholders
                    .iter()
                    .map(|p| Value::String(format!("{{{p}}}"))),
            );
            ty.insert("command".into(), Value::Array(command));
            let limit = i64::try_from(t.limit.max(1)).unwrap_or(i64::MAX);
            ty.insert("limit".into(), Value::Integer(limit));
            ty.insert("accept_args".into(), Value::Boolean(t.accept_args));
            if let Some(params) = &t.params {
                let decl: toml::Table = params
                    .iter()
                    .map(|p| {
                        let spec = if p.optional {
                            format!("{}?", p.kind)
                        } else {
                            p.kind.clone()
                        };
                        (p.name.clone(), Value::String(spec))
                    })
                    .collect();
                ty.insert("params".into(), Value::Table(decl));
            }
            if !t.needs.is_empty() {
                let needs: toml::Table = t
                    .needs
                    .iter()
                    .map(|(r, n)| (r.clone(), Value::Integer(i64::from(*n))))
                    .collect();
                ty.insert("needs".into(), Value::Table(needs));
            }
            if as_root {
                ty.insert("user".into(), Value::String("root".into()));
            }
            types.insert(t.name.clone(), Value::Table(ty));
        }
        top.insert("types".into(), Value::Table(types));
        let text = toml::to_string(&top).map_err(|e| format!("cannot restate the types: {e}"))?;
        Config::from_text(None, &text, Path::new("/"), &Overrides::default())
            .map_err(|e| format!("cannot read the types description: {e}"))
    }
}

/// A param kind as `raccoond.toml` spells it.
fn kind_word(k: ParamKind) -> &'static str {
    match k {
        ParamKind::String => "string",
        ParamKind::Integer => "integer",
        ParamKind::Float => "float",
        ParamKind::Boolean => "boolean",
        ParamKind::Array => "array",
        ParamKind::Table => "table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn config() -> Config {
        let text = format!(
            r#"
max_job_bytes = 4096
[mail]
sendmail = "/bin/true"
recipients = ["*@example.com"]
[resources]
gpu = ["0", "1"]
[types.report]
command = ["report", "--num", "{{num}}", "--title={{title}}", "{{num}}"]
user = "{me}"
limit = 2
params = {{ num = "integer", title = "string?" }}
[types.free]
command = ["echo", "{{word}}"]
user = "{me}"
accept_args = true
needs = {{ gpu = 1 }}
[schedules.nightly]
cron = "0 3 * * *"
tz = "Europe/Paris"
catch_up = true
job = {{ type = "report", params = {{ num = 1, title = "s3cr3t" }} }}
[schedules.often]
every = "90m"
job = {{ type = "free", params = {{ word = "w" }} }}
"#,
            me = crate::config::current_user()
        );
        Config::from_text(None, &text, Path::new("/"), &Overrides::default()).unwrap()
    }

    fn writer() -> Writer {
        Writer {
            host: "h1".into(),
            pid: 42,
            pid_start: Some(7),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn a_catalog_says_each_type_its_params_and_placeholders_and_no_secret() {
        let c = Catalog::of(&config(), &writer(), at(0));
        let json = c.to_json();
        assert_eq!(Catalog::parse(json.as_bytes()).unwrap(), c);
        let report = c.types.iter().find(|t| t.name == "report").unwrap();
        assert_eq!(report.limit, 2);
        assert_eq!(report.placeholders, ["num", "title"]);
        let params = report.params.as_ref().unwrap();
        assert_eq!(
            params[1],
            ParamEntry {
                name: "title".into(),
                kind: "string".into(),
                optional: true
            }
        );
        let free = c.types.iter().find(|t| t.name == "free").unwrap();
        assert_eq!((free.accept_args, free.params.is_none()), (true, true));
        assert_eq!(free.limit, config().total);
        assert_eq!(c.recipients, ["*@example.com"]);
        assert_eq!((c.max_job_bytes, c.pid, c.host.as_str()), (4096, 42, "h1"));
        for secret in ["/bin/true", "sendmail", "--num", "user"] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        assert_eq!(
            c.resources,
            [ResourceEntry {
                name: "gpu".into(),
                units: 2
            }]
        );
        assert_eq!(free.needs, BTreeMap::from([("gpu".to_string(), 1)]));
        assert!(!c.paused && c.types.iter().all(|t| !t.paused));
        let p = c.clone().paused(true, |t| t == "report");
        let p = Catalog::parse(p.to_json().as_bytes()).unwrap();
        let flags: Vec<(String, bool)> =
            p.types.iter().map(|t| (t.name.clone(), t.paused)).collect();
        assert!(p.paused, "pause/ALL");
        assert_eq!(flags, [("free".into(), false), ("report".into(), true)]);
    }

    /// The point of the catalog: a job is refused from it exactly as the
    /// daemon refuses it from its configuration, word for word.
    #[test]
    fn the_rules_refuse_what_the_daemon_refuses_in_its_words() {
        let daemon = config();
        let client = Catalog::of(&daemon, &writer(), at(0)).rules().unwrap();
        let jobs: &[&[u8]] = &[
            b"type = \"nope\"\n",
            b"type = \"report\"\n",
            b"type = \"report\"\nparams = { num = \"abc\" }\n",
            b"type = \"report\"\nparams = { num = 1, zz = 2 }\n",
            b"type = \"report\"\nparams = { num = 1 }\nargs = [\"-v\"]\n",
            b"type = \"free\"\n",
            b"type = \"free\"\nparams = { word = \"w\" }\nargs = [\"-v\"]\n",
            b"type = \"free\"\nparams = { word = 1 }\nemail = \"eve@evil.test\"\n",
            b"type = \"free\"\nparams = { word = 1 }\nemail = \"ann@example.com\"\n",
            b"type = \"report\"\nparams = { num = 3 }\n",
            b"type = \"free\"\ntimout = 1\n",
            b"type = \"free\"\nparams = { word = 1 }\nneeds = { gpu = 3 }\n",
            b"type = \"free\"\nparams = { word = 1 }\nneeds = { tpu = 1 }\n",
            b"type = \"free\"\nparams = { word = 1 }\nneeds = { gpu = 2 }\n",
            b"type = \"free\"\nparams = { word = 1 }\nafter = [\"a/b\"]\n",
            b"type = \"free\"\nparams = { word = 1 }\nunique = \"\"\n",
        ];
        for job in jobs {
            let want = job::parse(job, &daemon).map(|j| j.needs);
            let got = job::parse(job, &client).map(|j| j.needs);
            assert_eq!(got, want, "{}", String::from_utf8_lossy(job));
        }
        let mut big = b"type = \"free\"\nparams = { word = 1 }\n#".to_vec();
        big.resize(5000, b'x');
        assert_eq!(
            job::parse(&big, &client).unwrap_err(),
            job::parse(&big, &daemon).unwrap_err()
        );
    }

    #[test]
    fn a_catalog_is_stale_once_its_writer_is_gone_from_this_host() {
        let c = Catalog::of(&config(), &writer(), at(0));
        let cases: [(&str, bool, bool); 4] = [
            ("h1", true, true),
            ("h1", false, false),
            // Another host's daemon: its pid cannot be looked at here.
            ("h2", false, true),
            ("h2", true, true),
        ];
        for (host, alive, current) in cases {
            let got = c.freshness(host, |pid, start| {
                assert_eq!((pid, start), (42, Some(7)));
                alive
            });
            assert_eq!(
                got == Freshness::Current,
                current,
                "{host} {alive}: {got:?}"
            );
            if let Freshness::Stale(why) = got {
                assert!(why.contains("pid 42 on h1"), "{why}");
            }
        }
    }

    #[test]
    fn schedules_are_described_and_read_back_to_the_same_ticks_without_their_params() {
        let daemon = config();
        let c = Catalog::of(&daemon, &writer(), at(0));
        let json = c.to_json();
        assert!(!json.contains("s3cr3t"), "a schedule's params: {json}");
        let back = Catalog::parse(json.as_bytes()).unwrap();
        assert_eq!(
            back.schedules,
            [
                ScheduleEntry {
                    name: "nightly".into(),
                    cron: Some("0 3 * * *".into()),
                    tz: Some("Europe/Paris".into()),
                    every: None,
                    catch_up: true,
                    kind: "report".into(),
                },
                ScheduleEntry {
                    name: "often".into(),
                    cron: None,
                    tz: None,
                    every: Some("1h 30m".into()),
                    catch_up: false,
                    kind: "free".into(),
                },
            ]
        );
        let now = crate::schedule::Tick::floor(at(0));
        for entry in &back.schedules {
            let when = entry.when().unwrap();
            let theirs = &daemon.schedules[&entry.name].when;
            assert_eq!(when.describe(), theirs.describe());
            assert_eq!(when.first_at_or_after(now), theirs.first_at_or_after(now));
        }
        // A description without schedules (an older daemon's) reads as none.
        let mut plain: serde_json::Value = serde_json::from_str(&json).unwrap();
        plain.as_object_mut().unwrap().remove("schedules");
        let plain = Catalog::parse(plain.to_string().as_bytes()).unwrap();
        assert!(plain.schedules.is_empty());
    }

    #[test]
    fn a_newer_format_or_junk_is_refused_with_a_reason() {
        let mut c = Catalog::of(&config(), &writer(), at(0));
        c.format = FORMAT + 1;
        let e = Catalog::parse(c.to_json().as_bytes()).unwrap_err();
        assert!(e.contains("newer than this client"), "{e}");
        let e = Catalog::parse(b"<html>").unwrap_err();
        assert!(e.contains("not a types description"), "{e}");
    }
}
