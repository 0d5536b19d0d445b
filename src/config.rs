//! The configuration: `raccoond.toml` read strictly, plus command-line
//! overrides.
//!
//! Takes a file path (or none) and [`Overrides`]; gives a [`Config`] whose
//! paths are absolute, whose durations are `Duration`s and whose users are
//! resolved to ids. Every error names the file, the key and what is wrong;
//! an unknown key is an error, never ignored. This module reads the token
//! and password files it names, and for a `cron` schedule without `tz`
//! the daemon's time zone (`schedule::zone`), but touches nothing else on
//! disk.
//!
//! Invariant: every value of a [`Config`] is within its range (SPEC §3,
//! raccoond.toml(5): durations up to a century, counts, sizes and limits
//! within [`crate::bounds`]), command-line overrides included, so that no
//! sum or product the daemon makes of them can overflow. The token file is
//! refused when its mode lets anyone but its owner read or write it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::bounds::{
    AttachmentBytes, Count, JobBytes, MemoryBytes, Nice, OutputBytes, Processes, Queued, Slots,
};
use crate::schedule::{self, FileSchedule, Schedule};
use crate::time::Dur;

mod access;
pub mod resources;

use access::{check_listen, mail_config, read_token};
pub use resources::Resources;

/// What the daemon runs with. Built once at start and again on SIGHUP.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages and reloads.
    pub path: Option<PathBuf>,
    pub spool: PathBuf,
    /// Jobs running at once, across all types.
    pub total: usize,
    /// Upper bound on how long records stay in `done/`.
    pub keep: Duration,
    pub fsync: bool,
    pub max_job_bytes: u64,
    pub max_output_bytes: u64,
    pub stop_timeout: Duration,
    pub kill_grace: Duration,
    /// `None` when periodic scans of `new/` are off (`rescan = "0"`).
    /// Unset, 60 s, or 2 s on a network file system (inotify does not see
    /// other hosts' writes there).
    pub rescan: Option<Duration>,
    /// Jobs held in memory at most (queued, and files in `new/` waiting to
    /// settle): what bounds the daemon's memory whatever `new/` holds.
    pub max_queued: usize,
    /// This daemon's host identity (`host`, default the host name):
    /// daemons of other hosts wait for its leases rather than trust locks.
    pub host: String,
    /// How long a running job of this daemon stays its own for daemons of
    /// other hosts after the last refresh of its lease (`lease`, 60 s).
    pub lease: Duration,
    pub http: HttpConfig,
    pub mail: Option<MailConfig>,
    /// `[resources]`: each counted resource's units, by name (SPEC §13).
    /// Per daemon, like the limits: two daemons on one spool each have
    /// their own.
    pub resources: Resources,
    pub types: BTreeMap<String, TypeConfig>,
    /// `[schedules.NAME]`: jobs submitted on a clock, each checked at load
    /// against the types above (see [`crate::schedule`]).
    pub schedules: BTreeMap<String, Schedule>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `None`: no HTTP server.
    pub listen: Option<String>,
    /// The bearer token every request must carry, read from `token_file`.
    pub token: Option<String>,
    pub cors_origin: Option<String>,
    /// Connections open at once; at the limit a new one closes the idlest.
    pub max_connections: usize,
    /// How long a connection may go without sending a complete request.
    pub idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            token: None,
            cors_origin: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: MailTransport,
    pub from: String,
    pub max_attachment_bytes: u64,
    /// Allow-list patterns (`*@example.com`, `ann@example.com`); empty: any.
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum MailTransport {
    /// An `smtp://` or `smtps://` URL, with the password from
    /// `password_file` when one is given.
    Smtp {
        url: String,
        password: Option<String>,
    },
    Sendmail {
        program: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    Always,
    Failure,
    Never,
}

/// Who a task runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, as `initgroups(3)` would set them.
    pub groups: Vec<u32>,
}

/// The declared type of a param in a type's `params` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Integer,
    Float,
    Boolean,
    Array,
    Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    pub kind: ParamKind,
    pub optional: bool,
}

#[derive(Debug, Clone)]
pub struct TypeConfig {
    pub name: String,
    /// argv; `command[0]` is absolute when it was a relative path with a
    /// slash, else looked up on `PATH` at exec.
    pub command: Vec<String>,
    pub limit: Option<usize>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub keep: Option<Duration>,
    pub notify: Notify,
    /// `None`: run as the daemon's own user (or, with `as_submitter`, as
    /// each job's submitter).
    pub user: Option<RunAs>,
    /// `user = "@submitter"` (the at(1) model): each job runs as the owner
    /// of its submitted file, never as root.
    pub as_submitter: bool,
    /// `per_user`: at most this many jobs of the type run at once per
    /// submitter.
    pub per_user: Option<usize>,
    pub env: BTreeMap<String, String>,
    pub dir: Option<PathBuf>,
    pub accept_args: bool,
    /// `None`: params are free-form.
    pub params: Option<BTreeMap<String, ParamSpec>>,
    pub max_memory: Option<u64>,
    pub max_cpu: Option<Duration>,
    pub max_processes: Option<u64>,
    pub nice: Option<i32>,
    /// The resources each of its jobs needs (a job's own `needs` replaces
    /// this); only non-zero counts, each within what `[resources]` has.
    pub needs: BTreeMap<String, u32>,
}

/// Values from the command line, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub spool: Option<PathBuf>,
    pub listen: Option<String>,
    pub total: Option<usize>,
    /// `--limit TYPE=N` and `--TYPE=N`, in the order given.
    pub limits: Vec<(String, usize)>,
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(10);
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// `max_queued` when the file does not say (SPEC §8).
pub const DEFAULT_MAX_QUEUED: usize = 1_000_000;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The range of `[http] max_connections`: past 65 536 the descriptors run
/// out first.
const MAX_CONNECTIONS: std::ops::RangeInclusive<usize> = 1..=65_536;
/// The range of `[http] idle_timeout`.
const IDLE_TIMEOUT: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    spool: Option<PathBuf>,
    total: Option<Slots>,
    keep: Option<Dur>,
    fsync: Option<bool>,
    max_job_bytes: Option<JobBytes>,
    max_output_bytes: Option<OutputBytes>,
    stop_timeout: Option<Dur>,
    kill_grace: Option<Dur>,
    rescan: Option<Dur>,
    max_queued: Option<Queued>,
    host: Option<String>,
    lease: Option<Dur>,
    http: Option<FileHttp>,
    mail: Option<FileMail>,
    resources: Option<toml::Table>,
    #[serde(default)]
    types: BTreeMap<String, FileType>,
    #[serde(default)]
    schedules: BTreeMap<String, FileSchedule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    listen: Option<String>,
    token_file: Option<PathBuf>,
    cors_origin: Option<String>,
    max_connections: Option<usize>,
    idle_timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMail {
    smtp: Option<String>,
    password_file: Option<PathBuf>,
    sendmail: Option<PathBuf>,
    from: Option<String>,
    max_attachment_bytes: Option<AttachmentBytes>,
    recipients: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileType {
    command: Vec<String>,
    limit: Option<Slots>,
    per_user: Option<Slots>,
    timeout: Option<Dur>,
    retries: Option<Count>,
    retry_delay: Option<Dur>,
    keep: Option<Dur>,
    notify: Option<String>,
    user: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    dir: Option<PathBuf>,
    accept_args: Option<bool>,
    params: Option<BTreeMap<String, String>>,
    max_memory: Option<MemoryBytes>,
    max_cpu: Option<Dur>,
    max_processes: Option<Processes>,
    nice: Option<Nice>,
    needs: Option<BTreeMap<String, i64>>,
}

impl Config {
    /// Reads and checks a configuration file, then applies the overrides.
    pub fn load(path: Option<&Path>, over: &Overrides) -> Result<Config, ConfigError> {
        let (file, text, base) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("{}: cannot read: {e}", p.display())))?;
                let abs = absolute(p);
                let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
                (Some(abs), text, base)
            }
            None => (None, String::new(), current_dir()),
        };
        Self::from_text(file.as_deref(), &text, &base, over)
    }

    /// Checks configuration text; `base` is the folder relative paths are
    /// resolved against.
    pub fn from_text(
        file: Option<&Path>,
        text: &str,
        base: &Path,
        over: &Overrides,
    ) -> Result<Config, ConfigError> {
        let name = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(no configuration file)".into());
        let err = |msg: String| ConfigError(format!("{name}: {msg}"));
        let raw: FileConfig =
            toml::from_str(text).map_err(|e| err(crate::values::describe_toml_error(text, &e)))?;
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let spool = match (&over.spool, &raw.spool) {
            (Some(s), _) => absolute(s),
            (None, Some(s)) => resolve(s),
            (None, None) => base.join("spool"),
        };
        let total = match over.total {
            Some(n) => slots(n).map_err(|e| err(format!("command line: --total: {e}")))?,
            None => raw.total.map_or_else(
                || {
                    std::thread::available_parallelism()
                        .map_or(1, |n| n.get())
                        .min(crate::bounds::MAX_SLOTS)
                },
                Slots::usize,
            ),
        };
        let max_job_bytes = raw.max_job_bytes.map_or(1 << 20, JobBytes::get);
        let rescan = raw.rescan.map_or_else(
            || Some(default_rescan(&spool)),
            |d| (!d.0.is_zero()).then_some(d.0),
        );
        let host = raw.host.unwrap_or_else(crate::ids::hostname);
        if host.is_empty() || host.len() > 255 || host.chars().any(|c| c.is_control()) {
            return Err(err(format!(
                "host = {host:?}: must be 1 to 255 characters, none of them control characters"
            )));
        }
        let lease = raw.lease.map_or(Duration::from_secs(60), |d| d.0);
        if lease < Duration::from_secs(3) {
            return Err(err(format!(
                "lease = {:?}: must be at least 3s (it is refreshed every lease / 3)",
                humantime::format_duration(lease).to_string()
            )));
        }

        let http = match (&over.listen, raw.http) {
            (listen, None) => HttpConfig {
                listen: listen.clone().filter(|l| !l.is_empty()),
                ..HttpConfig::default()
            },
            (listen, Some(h)) => {
                let listen = listen
                    .clone()
                    .or(h.listen)
                    .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
                let token = match &h.token_file {
                    Some(p) => Some(read_token(&resolve(p)).map_err(err)?),
                    None => None,
                };
                let max_connections = h.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
                if !MAX_CONNECTIONS.contains(&max_connections) {
                    return Err(err(format!(
                        "[http] max_connections = {max_connections}: must be from {} to {}",
                        MAX_CONNECTIONS.start(),
                        MAX_CONNECTIONS.end()
                    )));
                }
                let idle_timeout = h.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0);
                if !IDLE_TIMEOUT.contains(&idle_timeout) {
                    return Err(err(format!(
                        "[http] idle_timeout = {:?}: must be from {} to {}",
                        crate::time::format_duration(idle_timeout),
                        crate::time::format_duration(*IDLE_TIMEOUT.start()),
                        crate::time::format_duration(*IDLE_TIMEOUT.end())
                    )));
                }
                HttpConfig {
                    listen: (!listen.is_empty()).then_some(listen),
                    token,
                    cors_origin: h.cors_origin.filter(|o| !o.is_empty()),
                    max_connections,
                    idle_timeout,
                }
            }
        };
        if let Some(listen) = &http.listen {
            check_listen(listen, http.token.is_some()).map_err(err)?;
        }

        let mail = match raw.mail {
            None => None,
            Some(m) => Some(mail_config(m, &resolve).map_err(|m| err(format!("[mail] {m}")))?),
        };

        let resources = match &raw.resources {
            Some(t) => resources::parse(t).map_err(|m| err(format!("[resources] {m}")))?,
            None => Resources::new(),
        };

        let we_are_root = nix::unistd::geteuid().is_root();
        let mut types = BTreeMap::new();
        for (tname, t) in raw.types {
            let ty = type_config(&tname, t, &resolve, we_are_root, &resources)
                .map_err(|m| err(format!("[types.{tname}] {m}")))?;
            types.insert(tname, ty);
        }

        for (tname, n) in &over.limits {
            let Some(t) = types.get_mut(tname) else {
                return Err(err(format!(
                    "command line: --{tname}={n}: no type {tname:?} in the configuration"
                )));
            };
            let n = slots(*n).map_err(|e| err(format!("command line: --{tname}: {e}")))?;
            t.limit = Some(n);
        }

        let mut config = Config {
            path: file.map(Path::to_path_buf),
            spool,
            total,
            keep: raw.keep.map_or(Duration::from_secs(7 * 86400), |d| d.0),
            fsync: raw.fsync.unwrap_or(true),
            max_job_bytes,
            max_output_bytes: raw.max_output_bytes.map_or(16 << 20, OutputBytes::get),
            stop_timeout: raw.stop_timeout.map_or(Duration::from_secs(30), |d| d.0),
            kill_grace: raw.kill_grace.map_or(Duration::from_secs(10), |d| d.0),
            rescan,
            max_queued: raw.max_queued.map_or(DEFAULT_MAX_QUEUED, Queued::usize),
            host,
            lease,
            http,
            mail,
            resources,
            types,
            schedules: BTreeMap::new(),
        };
        // Last, shaped only: each schedule's job is judged against
        // everything above by `job::check_schedules` (`job::load_config`).
        for (sname, raw) in raw.schedules {
            let s = Schedule::load(&sname, raw, &schedule::zone::local).map_err(err)?;
            config.schedules.insert(sname, s);
        }
        Ok(config)
    }

    /// How often each running job's lease is refreshed: a third of it.
    pub fn lease_refresh(&self) -> Duration {
        self.lease / 3
    }

    /// The limit of a type, or the total when it has none.
    pub fn limit_of(&self, tname: &str) -> usize {
        self.types
            .get(tname)
            .and_then(|t| t.limit)
            .unwrap_or(self.total)
    }
}

/// A command-line `--total` or limit, within the range the file has.
fn slots(n: usize) -> Result<usize, String> {
    i128::try_from(n)
        .map_err(|_| format!("{n} is out of range ({})", Slots::range()))
        .and_then(Slots::new)
        .map(Slots::usize)
}

fn type_config(
    name: &str,
    t: FileType,
    resolve: &dyn Fn(&Path) -> PathBuf,
    we_are_root: bool,
    resources: &Resources,
) -> Result<TypeConfig, String> {
    if !crate::ids::valid_id(name) {
        return Err("a type name is 1-100 characters of A-Z a-z 0-9 . _ -".into());
    }
    if name == crate::ids::PAUSE_ALL {
        return Err(format!(
            "a type cannot be named {name}: pause/{name} pauses every type"
        ));
    }
    let needs = match &t.needs {
        Some(n) => resources::check_needs(n, resources)?,
        None => BTreeMap::new(),
    };
    let mut command = t.command;
    let Some(program) = command.first_mut() else {
        return Err("command: must name a program".into());
    };
    if program.is_empty() {
        return Err("command: the program is empty".into());
    }
    if program.contains('/') && !Path::new(program.as_str()).is_absolute() {
        *program = resolve(Path::new(program.as_str())).display().to_string();
    }
    let notify = match t.notify.as_deref() {
        None | Some("always") => Notify::Always,
        Some("failure") => Notify::Failure,
        Some("never") => Notify::Never,
        Some(other) => {
            return Err(format!(
                "notify = {other:?}: must be \"always\", \"failure\" or \"never\""
            ));
        }
    };
    let as_submitter = t.user.as_deref() == Some(SUBMITTER);
    let user = match (t.user.filter(|u| u != SUBMITTER), we_are_root) {
        (None, _) if as_submitter => None,
        (None, true) => {
            return Err(
                "user: required when raccoond runs as root (write user = \"root\" to run this type as root)"
                    .into(),
            );
        }
        (None, false) => None,
        // The user raccoond itself runs as, whoever that is: what lets one
        // configuration (the examples') serve a daemon started by root and
        // one started by a user alike. Chosen by name, never by default.
        (Some(u), _) if u == DAEMON_USER => None,
        (Some(u), _) => resolve_user(&u, we_are_root)?,
    };
    let params = match t.params {
        None => None,
        Some(decl) => {
            let mut out = BTreeMap::new();
            for (pname, kind) in decl {
                out.insert(
                    pname.clone(),
                    parse_param_spec(&kind).map_err(|m| format!("params.{pname}: {m}"))?,
                );
            }
            Some(out)
        }
    };
    for key in t.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!("env: {key:?} is not a valid variable name"));
        }
    }
    Ok(TypeConfig {
        name: name.to_string(),
        command,
        limit: t.limit.map(Slots::usize),
        timeout: t.timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        retries: t.retries.map_or(0, Count::u32),
        retry_delay: t.retry_delay.map_or(DEFAULT_RETRY_DELAY, |d| d.0),
        keep: t.keep.map(|d| d.0),
        notify,
        user,
        as_submitter,
        per_user: t.per_user.map(Slots::usize),
        env: t.env,
        dir: t.dir.map(|d| resolve(&d)),
        accept_args: t.accept_args.unwrap_or(false),
        params,
        max_memory: t.max_memory.map(MemoryBytes::get),
        max_cpu: t.max_cpu.map(|d| d.0),
        // Within 1..=4_194_304 and -20..=19: both fit.
        max_processes: t.max_processes.and_then(|n| u64::try_from(n.get()).ok()),
        nice: t.nice.and_then(|n| i32::try_from(n.get()).ok()),
        needs,
    })
}

fn parse_param_spec(text: &str) -> Result<ParamSpec, String> {
    let (base, optional) = match text.strip_suffix('?') {
        Some(b) => (b, true),
        None => (text, false),
    };
    let kind = match base {
        "string" => ParamKind::String,
        "integer" => ParamKind::Integer,
        "float" => ParamKind::Float,
        "boolean" => ParamKind::Boolean,
        "array" => ParamKind::Array,
        "table" => ParamKind::Table,
        _ => {
            return Err(format!(
                "{text:?}: must be string, integer, float, boolean, array or table, with ? when optional"
            ));
        }
    };
    Ok(ParamSpec { kind, optional })
}

/// `user = "@submitter"`: each job runs as whoever submitted it.
pub const SUBMITTER: &str = "@submitter";

/// Resolves `user`. As root any user; otherwise only the daemon's own user,
/// since switching needs privileges it does not have.
/// `user = "@daemon"`: run the type's tasks as the user raccoond runs as.
pub const DAEMON_USER: &str = "@daemon";

fn resolve_user(name: &str, we_are_root: bool) -> Result<Option<RunAs>, String> {
    use nix::unistd::{Group, User, getgrouplist};
    let user = User::from_name(name)
        .map_err(|e| format!("user = {name:?}: cannot look it up: {e}"))?
        .ok_or_else(|| format!("user = {name:?}: no such user"))?;
    if !we_are_root {
        if user.uid == nix::unistd::geteuid() {
            return Ok(None);
        }
        return Err(format!(
            "user = {name:?}: raccoond runs as uid {} and only root can run tasks as another user",
            nix::unistd::geteuid()
        ));
    }
    if user.uid == nix::unistd::geteuid() {
        // Already that user: nothing to switch, nothing to chown.
        return Ok(None);
    }
    let cname =
        std::ffi::CString::new(name).map_err(|_| format!("user = {name:?}: contains NUL"))?;
    let groups = getgrouplist(&cname, user.gid)
        .map_err(|e| format!("user = {name:?}: cannot list its groups: {e}"))?;
    let _ = Group::from_gid(user.gid);
    Ok(Some(RunAs {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: groups.into_iter().map(|g| g.as_raw()).collect(),
    }))
}

/// The name of the user this process runs as (what `user` must say for
/// a daemon that is not root).
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

fn current_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        current_dir().join(p)
    }
}

/// `rescan` when it is not set: 2 s on a network file system (NFS, CephFS,
/// SMB, FUSE: other hosts' writes raise no inotify event), else 60 s. A
/// spool that cannot be looked at yet counts as local.
// `f_type` is an i64 here and an i32 on 32-bit targets.
#[allow(clippy::unnecessary_cast)]
fn default_rescan(spool: &Path) -> Duration {
    let network =
        nix::sys::statfs::statfs(spool).is_ok_and(|s| is_network_fs(s.filesystem_type().0 as i64));
    Duration::from_secs(if network { 2 } else { 60 })
}

/// Whether a statfs `f_type` is a network (or user-space) file system.
fn is_network_fs(magic: i64) -> bool {
    const NFS: i64 = 0x6969;
    const CEPH: i64 = 0x00c3_6400;
    const SMB2: i64 = 0xfe53_4d42;
    const CIFS: i64 = 0xff53_4d42;
    const FUSE: i64 = 0x6573_5546;
    [NFS, CEPH, SMB2, CIFS, FUSE].contains(&magic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_submitter_and_per_user() {
        let c =
            load("[types.a]\ncommand = [\"x\"]\nuser = \"@submitter\"\nper_user = 2\n").unwrap();
        let t = &c.types["a"];
        assert!(t.as_submitter && t.user.is_none());
        assert_eq!(t.per_user, Some(2));
        let c = load(&format!(
            "[types.a]\ncommand = [\"x\"]\nuser = \"{}\"\n",
            me()
        ))
        .unwrap();
        assert!(!c.types["a"].as_submitter && c.types["a"].per_user.is_none());
    }

    #[test]
    fn network_file_systems_by_their_magic() {
        for (magic, network) in [
            (0x6969, true),
            (0x00c3_6400, true),
            (0xfe53_4d42, true),
            (0x6573_5546, true),
            (0xef53, false),
            (0x0102_1994, false),
        ] {
            assert_eq!(is_network_fs(magic), network, "{magic:#x}");
        }
    }

    #[test]
    fn host_and_lease_have_defaults_and_bounds() {
        let base = format!("[types.a]\ncommand = [\"x\"]\nuser = \"{}\"\n", me());
        let c = load(&base).unwrap();
        assert_eq!(c.host, crate::ids::hostname());
        assert_eq!(c.lease, Duration::from_secs(60));
        assert_eq!(c.lease_refresh(), Duration::from_secs(20));
        let c = load(&format!("host = \"b\"\nlease = \"3s\"\n{base}")).unwrap();
        assert_eq!((c.host.as_str(), c.lease), ("b", Duration::from_secs(3)));
        for bad in ["host = \"\"\n", "lease = \"2s\"\n"] {
            assert!(load(&format!("{bad}{base}")).is_err(), "{bad}");
        }
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_text(
            Some(Path::new("/etc/r.toml")),
            text,
            Path::new("/etc"),
            &Overrides::default(),
        )
    }

    fn me() -> String {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = load(&format!(
            "[types.a]\ncommand = [\"tasks/a.sh\", \"{{x}}\"]\nuser = \"{}\"\n",
            me()
        ))
        .unwrap();
        assert_eq!(c.spool, PathBuf::from("/etc/spool"));
        assert_eq!(c.types["a"].command[0], "/etc/tasks/a.sh");
        assert_eq!(c.rescan, Some(Duration::from_secs(60)));
        assert!(c.fsync);
        assert!(c.http.listen.is_none());
        assert_eq!(c.limit_of("a"), c.total);
        assert_eq!(c.max_queued, 1_000_000);
        assert_eq!(load("max_queued = 5\n").unwrap().max_queued, 5);
    }

    #[test]
    fn unknown_keys_name_file_key_and_line() {
        let e = load("total = 2\ntimout = \"5s\"\n").unwrap_err().0;
        assert!(e.starts_with("/etc/r.toml: line 2, column 1"), "{e}");
        assert!(e.contains("timout"), "{e}");
        let e = load("[types.a]\ncommand = [\"x\"]\nlimt = 2\n")
            .unwrap_err()
            .0;
        assert!(e.contains("line 3") && e.contains("limt"), "{e}");
    }

    #[test]
    fn bad_values_say_which_key() {
        let e = load("keep = \"forever\"\n").unwrap_err().0;
        assert!(e.contains("line 1") && e.contains("forever"), "{e}");
        let u = me();
        let e = load(&format!(
            "[types.a]\ncommand = [\"x\"]\nuser = \"{u}\"\nnotify = \"sometimes\"\n"
        ))
        .unwrap_err()
        .0;
        assert!(e.contains("[types.a] notify"), "{e}");
        let e = load(&format!(
            "[types.a]\ncommand = [\"x\"]\nuser = \"{u}\"\nparams = {{ n = \"int\" }}\n"
        ))
        .unwrap_err()
        .0;
        assert!(e.contains("params.n"), "{e}");
        let e = load("[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err().0;
        assert!(e.contains("token_file"), "{e}");
    }

    #[test]
    fn values_out_of_range_name_key_range_and_place() {
        let u = me();
        let ty = |line: &str| format!("[types.x]\ncommand = [\"true\"]\nuser = \"{u}\"\n{line}\n");
        let cases = [
            (
                "keep = \"9223372036854775807s\"\n".to_string(),
                "line 1, column 8: keep: 9223372036854775807s is out of range (0 to 100 years)",
            ),
            (
                "kill_grace = \"101years\"\n".into(),
                "kill_grace: 101years is out of range (0 to 100 years)",
            ),
            (
                "stop_timeout = -1\n".into(),
                "stop_timeout: -1 is out of range",
            ),
            ("rescan = \"200y\"\n".into(), "rescan: 200y is out of range"),
            (
                "total = 0\n".into(),
                "total: 0 is out of range (1 to 100000)",
            ),
            ("total = 100001\n".into(), "total: 100001 is out of range"),
            (
                "max_queued = 0\n".into(),
                "max_queued: 0 is out of range (1 to 100000000)",
            ),
            (
                "max_queued = 100000001\n".into(),
                "max_queued: 100000001 is out of range",
            ),
            (
                "max_job_bytes = 0\n".into(),
                "max_job_bytes: 0 is out of range (1 byte to 1 GiB)",
            ),
            (
                "max_output_bytes = \"2TiB\"\n".into(),
                "max_output_bytes: 2TiB is out of range (0 bytes to 1 TiB)",
            ),
            (
                "[mail]\nsendmail = \"/bin/true\"\nmax_attachment_bytes = -1\n".into(),
                "mail.max_attachment_bytes: -1 is out of range (0 bytes to 1 GiB)",
            ),
            (
                ty("retry_delay = \"200years\""),
                "line 4, column 15: types.x.retry_delay: 200years is out of range (0 to 100 years)",
            ),
            (
                ty("timeout = 9223372036854775807"),
                "types.x.timeout: 9223372036854775807 is out of range (0 to 100 years)",
            ),
            (ty("keep = \"101y\""), "types.x.keep: 101y is out of range"),
            (
                ty("max_cpu = \"101y\""),
                "types.x.max_cpu: 101y is out of range",
            ),
            (
                ty("retries = 4294967296"),
                "types.x.retries: 4294967296 is out of range (0 to 1000000)",
            ),
            (
                ty("limit = 0"),
                "types.x.limit: 0 is out of range (1 to 100000)",
            ),
            (
                ty("nice = 20"),
                "types.x.nice: 20 is out of range (-20 to 19)",
            ),
            (
                ty("max_processes = 0"),
                "types.x.max_processes: 0 is out of range (1 to 4194304)",
            ),
            (
                ty("max_memory = \"1KiB\""),
                "types.x.max_memory: 1KiB is out of range (1 MiB to 1 PiB)",
            ),
        ];
        for (text, want) in cases {
            let e = load(&text).unwrap_err().0;
            assert!(e.starts_with("/etc/r.toml: "), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
        let over = Overrides {
            total: Some(usize::MAX),
            ..Overrides::default()
        };
        let e = Config::from_text(None, "", Path::new("/"), &over)
            .unwrap_err()
            .0;
        assert!(
            e.contains("--total: 18446744073709551615 is out of range"),
            "{e}"
        );
        let over = Overrides {
            limits: vec![("x".into(), 0)],
            ..Overrides::default()
        };
        let e = Config::from_text(None, &ty(""), Path::new("/"), &over)
            .unwrap_err()
            .0;
        assert!(e.contains("--x: 0 is out of range (1 to 100000)"), "{e}");
        let c = load(&ty(
            "retries = 1000000\nretry_delay = \"100y\"\nmax_memory = \"1PiB\"",
        ))
        .unwrap();
        assert_eq!(c.types["x"].retries, 1_000_000);
    }

    #[test]
    fn a_token_file_others_can_read_or_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
            token.display()
        );
        for (mode, want) in [
            (0o644, "mode 0644 lets others read it; chmod 600"),
            (0o640, "mode 0640 lets others read it"),
            (0o620, "mode 0620 lets others change it"),
            (0o601, "mode 0601 lets others execute it"),
        ] {
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load(&text).unwrap_err().0;
            assert!(
                e.contains(&format!("[http] token_file {}: {want}", token.display())),
                "{e}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(load(&text).unwrap().http.token.as_deref(), Some("s3cret"));
        }
    }

    #[test]
    fn http_limits_have_defaults_and_ranges() {
        let c = load("[http]\n").unwrap();
        assert_eq!(
            (c.http.max_connections, c.http.idle_timeout),
            (DEFAULT_MAX_CONNECTIONS, DEFAULT_IDLE_TIMEOUT)
        );
        let c = load("[http]\nmax_connections = 4\nidle_timeout = \"2s\"\n").unwrap();
        assert_eq!(
            (c.http.max_connections, c.http.idle_timeout),
            (4, Duration::from_secs(2))
        );
        for (text, key) in [
            (
                "max_connections = 0",
                "max_connections = 0: must be from 1 to 65536",
            ),
            ("max_connections = 65537", "max_connections = 65537"),
            ("max_connections = -1", "max_connections"),
            (
                "idle_timeout = \"500ms\"",
                "idle_timeout = \"500ms\": must be from 1.0s to 1h00m",
            ),
            ("idle_timeout = \"2h\"", "idle_timeout"),
        ] {
            let e = load(&format!("[http]\n{text}\n")).unwrap_err().0;
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn user_at_daemon_runs_tasks_as_the_daemons_own_user() {
        let c = load("[types.t]\ncommand = [\"true\"]\nuser = \"@daemon\"\n").unwrap();
        assert!(
            c.types["t"].user.is_none(),
            "no switch: the daemon's own user"
        );
    }

    #[test]
    fn a_mail_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        let text = format!(
            "[mail]\nsmtp = \"smtp://u@127.0.0.1:25\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&text).unwrap_err().0;
        assert!(
            e.contains("[mail] password_file") && e.contains("0644"),
            "{e}"
        );
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mail = load(&text).unwrap().mail.unwrap();
        assert!(
            matches!(mail.transport, MailTransport::Smtp { password: Some(ref p), .. } if p == "hunter2"),
            "{mail:?}"
        );
    }

    #[test]
    fn resources_and_needs_are_checked_and_all_is_no_type_name() {
        let u = me();
        let c = load(&format!(
            "[resources]\ngpu = [\"0\", \"1\"]\nlicense = 3\n[types.a]\ncommand = [\"x\"]\nuser = \"{u}\"\nneeds = {{ gpu = 2, license = 0 }}\n"
        ))
        .unwrap();
        assert_eq!(c.resources["license"], ["1", "2", "3"]);
        assert_eq!(c.types["a"].needs, BTreeMap::from([("gpu".to_string(), 2)]));
        let cases = [
            (
                "[resources]\ngpu = 0\n".to_string(),
                "/etc/r.toml: [resources] gpu: 0 is out of range (1 to 1000)",
            ),
            (
                format!("[types.a]\ncommand = [\"x\"]\nuser = \"{u}\"\nneeds = {{ gpu = 1 }}\n"),
                "[types.a] needs: no resource \"gpu\" (this daemon declares no [resources])",
            ),
            (
                format!(
                    "[resources]\ngpu = 1\n[types.a]\ncommand = [\"x\"]\nuser = \"{u}\"\nneeds = {{ gpu = 2 }}\n"
                ),
                "[types.a] needs: gpu = 2, more than this daemon has (1)",
            ),
            (
                format!("[types.ALL]\ncommand = [\"x\"]\nuser = \"{u}\"\n"),
                "[types.ALL] a type cannot be named ALL",
            ),
        ];
        for (text, want) in cases {
            let e = load(&text).unwrap_err().0;
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn command_line_limits_override_the_file() {
        let over = Overrides {
            total: Some(3),
            limits: vec![("a".into(), 2)],
            ..Overrides::default()
        };
        let text = format!(
            "total = 9\n[types.a]\ncommand = [\"x\"]\nuser = \"{}\"\nlimit = 5\n",
            me()
        );
        let c = Config::from_text(None, &text, Path::new("/"), &over).unwrap();
        assert_eq!(c.total, 3);
        assert_eq!(c.limit_of("a"), 2);
        let over = Overrides {
            limits: vec![("nope".into(), 2)],
            ..Overrides::default()
        };
        assert!(Config::from_text(None, &text, Path::new("/"), &over).is_err());
    }
}
