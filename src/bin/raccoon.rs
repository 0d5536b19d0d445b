//! `raccoon`, the client: submits and inspects jobs by working on the spool
//! directly, so it needs no running daemon and no server.
//!
//! Owns what each command does and how it prints jobs, records and types
//! (tables on a terminal, JSON with `--json`); the command line itself is
//! [`raccoond::client::args`], tables [`raccoond::client::table`].
//! Everything it knows of a job comes from [`raccoond::spool::query`], the
//! same answers the HTTP API gives, so it never follows a symlink a
//! submitter planted; what the daemon accepts comes from the daemon's
//! `types.json` ([`raccoond::catalog`]), and a job is checked against it
//! by [`job::parse`], the daemon's own check. Everything it writes goes
//! through [`Spool`]: a job through `tmp/` into `new/` (submit, retry) and
//! `cancel/<id>` (cancel). Never renames or deletes anything.
//!
//! Exit status: 0 when the command (or the awaited job) succeeded, 1 when
//! the job failed or is unknown, 2 for a bad command line or an IO error,
//! 65 (EX_DATAERR) when the daemon's description of its types says the
//! job would be rejected, 75 (EX_TEMPFAIL) when the spool's file system is
//! full: nothing was written, the same command may work later.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::{CommandFactory, Parser};

use raccoond::catalog::{self, Catalog, Freshness};
use raccoond::client::args::{Cli, Command, Submit};
use raccoond::client::table::{Table, Tone, printable, tone_of};
use raccoond::client::waiting::{Pending, Waits, waits};
use raccoond::follow::Follower;
use raccoond::ids;
use raccoond::job;
use raccoond::record::{Record, Status};
use raccoond::schedule::{self, Tick};
use raccoond::spool::query::{Filter, Located, Stream};
use raccoond::spool::{self, Spool};
use raccoond::time;
use raccoond::values;

enum Fail {
    /// The job failed, or does not exist: exit 1.
    Job(String),
    /// The command line or the system: exit 2.
    Usage(String),
    /// The daemon would reject the job, as its types description says:
    /// exit 65 (EX_DATAERR), before anything is queued.
    Refused(String),
    /// The spool's file system is full: exit 75, try again later.
    Temporary(String),
}

fn main() -> ExitCode {
    // clap exits 2 on a bad command line, 0 after --help or --version.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Job(msg)) => {
            if !msg.is_empty() {
                eprintln!("raccoon: {msg}");
            }
            ExitCode::from(1)
        }
        Err(Fail::Usage(msg)) => {
            eprintln!("raccoon: {msg}");
            ExitCode::from(2)
        }
        Err(Fail::Refused(msg)) => {
            eprintln!("raccoon: {msg}");
            ExitCode::from(65)
        }
        Err(Fail::Temporary(msg)) => {
            eprintln!("raccoon: {msg}");
            ExitCode::from(75)
        }
    }
}

fn run(cli: Cli) -> Result<(), Fail> {
    // --spool, else $RACCOON_SPOOL (clap reads it), else ./spool.
    let root = cli.spool.clone().unwrap_or_else(|| PathBuf::from("spool"));
    let spool = Spool::at(&root);
    let json = cli.json;
    match cli.command {
        Command::Submit(s) => submit(&spool, json, s),
        Command::Status { id } => status(&spool, json, &id),
        Command::Wait { id, timeout } => {
            let rec = wait(&spool, &id, timeout)?;
            print_record(&rec, json);
            outcome(&rec)
        }
        Command::Cancel { id } => cancel(&spool, &id),
        Command::List {
            status,
            kind,
            limit,
        } => {
            let filter = Filter {
                status,
                kind: kind.as_deref(),
                limit: limit.unwrap_or(usize::MAX),
            };
            list(&spool, json, &filter)
        }
        Command::Output { id, stderr, follow } => {
            let stream = if stderr { Stream::Err } else { Stream::Out };
            if follow {
                follow_output(&spool, &id, stream)
            } else {
                output(&spool, &id, stream)
            }
        }
        Command::Types => types(&spool, json),
        Command::Schedules => schedules(&spool, json),
        Command::Show { id, lines } => show(&spool, json, &id, lines),
        Command::Retry { id, wait } => retry(&spool, json, &id, wait),
        Command::Pause { kind } => pause(&spool, json, kind.as_deref(), true),
        Command::Resume { kind } => pause(&spool, json, kind.as_deref(), false),
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(
                clap_complete::Shell::from(shell),
                &mut Cli::command(),
                "raccoon",
                &mut out,
            );
            Ok(())
        }
    }
}

/// Whether tables are coloured: on a terminal, unless `NO_COLOR` is set
/// to something (no-color.org).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A value from the command line, typed as TOML would type it.
fn typed(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(f) = v.parse::<f64>()
        && v.chars().any(|c| c.is_ascii_digit())
        && !v.contains(char::is_alphabetic)
    {
        toml::Value::Float(f)
    } else if v == "true" || v == "false" {
        toml::Value::Boolean(v == "true")
    } else {
        toml::Value::String(v.to_string())
    }
}

fn submit(spool: &Spool, json: bool, s: Submit) -> Result<(), Fail> {
    let mut params = toml::Table::new();
    for (k, v) in &s.params {
        params.insert(k.clone(), typed(v));
    }
    for (k, text) in &s.param_json {
        let parsed: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Fail::Usage(format!("--param-json {k}: {e}")))?;
        params.insert(
            k.clone(),
            values::json_to_toml(&parsed, k).map_err(Fail::Usage)?,
        );
    }
    let mut job = job_table(&s.kind, s.email, s.priority, Vec::new(), params);
    let ids = |v: Vec<String>| toml::Value::Array(v.into_iter().map(toml::Value::String).collect());
    if !s.after.is_empty() {
        job.insert("after".into(), ids(s.after));
    }
    if !s.after_any.is_empty() {
        job.insert("after_any".into(), ids(s.after_any));
    }
    if let Some(key) = s.unique {
        job.insert("unique".into(), toml::Value::String(key));
    }
    if !s.needs.is_empty() {
        let needs: toml::Table = s
            .needs
            .into_iter()
            .map(|(r, n)| (r, toml::Value::Integer(n)))
            .collect();
        job.insert("needs".into(), toml::Value::Table(needs));
    }
    queue(spool, json, s.id.as_deref(), &job, s.wait)
}

/// A job file's keys: the type and what the submitter set.
fn job_table(
    kind: &str,
    mut emails: Vec<String>,
    priority: Option<i64>,
    args: Vec<String>,
    params: toml::Table,
) -> toml::Table {
    let mut table = toml::Table::new();
    table.insert("type".into(), toml::Value::String(kind.to_string()));
    match emails.len() {
        0 => {}
        1 => {
            table.insert("email".into(), toml::Value::String(emails.remove(0)));
        }
        _ => {
            table.insert(
                "email".into(),
                toml::Value::Array(emails.into_iter().map(toml::Value::String).collect()),
            );
        }
    }
    if let Some(p) = priority {
        table.insert("priority".into(), toml::Value::Integer(p));
    }
    if !args.is_empty() {
        table.insert(
            "args".into(),
            toml::Value::Array(args.into_iter().map(toml::Value::String).collect()),
        );
    }
    if !params.is_empty() {
        table.insert("params".into(), toml::Value::Table(params));
    }
    table
}

/// Checks a job against what the daemon accepts, then writes it into
/// `new/`, prints its id, and waits for it when asked.
fn queue(
    spool: &Spool,
    json: bool,
    id: Option<&str>,
    job: &toml::Table,
    wait_for_it: bool,
) -> Result<(), Fail> {
    let text =
        toml::to_string(job).map_err(|e| Fail::Usage(format!("cannot write the job: {e}")))?;
    if !spool.is_spool() {
        return Err(Fail::Usage(format!(
            "{} is not a spool (no new/ folder); use --spool or RACCOON_SPOOL",
            spool.root().display()
        )));
    }
    check(spool, &text)?;
    check_parents(spool, job)?;
    let id = match holder(spool, job)? {
        // Not an error: cron may submit the same unique job again.
        Some(held) => {
            eprintln!("raccoon: {held} already holds this key (unique); nothing was queued");
            held
        }
        None => spool
            .submit(id, text.as_bytes())
            .map_err(|e| write_failed("cannot submit", "nothing was queued", e))?,
    };
    println!("{id}");
    let _ = std::io::stdout().flush();
    if wait_for_it {
        let rec = wait(spool, &id, None)?;
        if json {
            print_record(&rec, true);
        } else {
            eprintln!("{id}: {}", rec.status);
        }
        return outcome(&rec);
    }
    Ok(())
}

/// The daemon's description of its types, and whether it still holds;
/// `Err` says why there is none to go by.
fn described(spool: &Spool) -> Result<(Catalog, Freshness), String> {
    let place = spool.root().join(catalog::FILE);
    let bytes = spool
        .read_catalog()
        .map_err(|e| format!("cannot read the daemon's types description: {e}"))?
        .ok_or_else(|| {
            format!(
                "{} is missing: no daemon has described its types on this spool yet",
                place.display()
            )
        })?;
    let cat = Catalog::parse(&bytes).map_err(|e| format!("{}: {e}", place.display()))?;
    let fresh = cat.freshness(&ids::hostname(), spool::writer_alive);
    Ok((cat, fresh))
}

/// Refuses a job the daemon would reject, with the daemon's words (those
/// of HTTP's 422). Without a current description, says so and lets the
/// job go: the daemon checks it when it takes it.
fn check(spool: &Spool, text: &str) -> Result<(), Fail> {
    let why = match described(spool) {
        Ok((cat, Freshness::Current)) => match cat.rules() {
            Ok(rules) => {
                return job::parse(text.as_bytes(), &rules)
                    .map(drop)
                    .map_err(Fail::Refused);
            }
            Err(e) => e,
        },
        Ok((_, Freshness::Stale(why))) => format!("the types description is stale: {why}"),
        Err(why) => why,
    };
    eprintln!(
        "raccoon: warning: {why}; the job is not checked before it is queued (the daemon checks it when it takes it)"
    );
    Ok(())
}

/// Refuses a job whose `after` or `after_any` names a job that is nowhere
/// (neither queued, running nor finished), as the daemon would.
fn check_parents(spool: &Spool, job: &toml::Table) -> Result<(), Fail> {
    for key in ["after", "after_any"] {
        for p in job
            .get(key)
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(toml::Value::as_str)
        {
            if find(spool, p)?.is_none() {
                return Err(Fail::Refused(format!("unknown dependency {p}")));
            }
        }
    }
    Ok(())
}

/// The queued or running job that holds a unique job's (type, `unique`)
/// key, if any, as the daemon's marker says. Only a look: the daemon
/// decides (the client cannot take the key itself), so a submission that
/// loses a race after it is rejected by the daemon as a duplicate. Where
/// the marker cannot be read (a spool made with other modes), a queued or
/// running job whose file has the key stands for it.
fn holder(spool: &Spool, job: &toml::Table) -> Result<Option<String>, Fail> {
    let Some(key) = job.get("unique").and_then(toml::Value::as_str) else {
        return Ok(None);
    };
    let kind = job.get("type").and_then(toml::Value::as_str).unwrap_or("");
    match spool.unique_holder(kind, key) {
        Ok(held) => return Ok(held),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(Fail::Usage(format!("unique {key:?}: {e}"))),
    }
    for status in [Status::Running, Status::Queued] {
        let listed = spool
            .query(WHOLE)
            .list(&Filter {
                status: Some(status),
                kind: Some(kind),
                limit: usize::MAX,
            })
            .map_err(|e| Fail::Usage(e.to_string()))?;
        for l in listed {
            let table = match &l.job {
                Located::Queued { table, .. } | Located::Running { table, .. } => table,
                Located::Finished(_) => continue,
            };
            if table.get("unique").and_then(toml::Value::as_str) == Some(key) {
                return Ok(Some(l.id));
            }
        }
    }
    Ok(None)
}

/// `raccoon pause [TYPE]`, `raccoon resume [TYPE]`: makes or removes
/// `pause/<TYPE>` (`pause/ALL` without a type). A type the daemon's
/// description does not name is refused (65).
fn pause(spool: &Spool, json: bool, kind: Option<&str>, hold: bool) -> Result<(), Fail> {
    let name = kind.unwrap_or(spool::PAUSE_ALL);
    if !spool.is_spool() {
        return Err(Fail::Usage(format!(
            "{} is not a spool (no new/ folder); use --spool or RACCOON_SPOOL",
            spool.root().display()
        )));
    }
    if let (Some(k), Ok((cat, Freshness::Current))) = (kind, described(spool))
        && !cat.types.iter().any(|t| t.name == k)
    {
        let known: Vec<&str> = cat.types.iter().map(|t| t.name.as_str()).collect();
        return Err(Fail::Refused(format!(
            "unknown type {k:?} (this daemon knows: {})",
            known.join(", ")
        )));
    }
    let changed = if hold {
        spool
            .request_pause(name)
            .map_err(|e| write_failed("cannot pause", "nothing was paused", e))?
    } else {
        spool.clear_pause(name).map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                Fail::Usage(format!(
                    "cannot resume {name}: {e}; pause/{name} is another user's (ask them, \
                     the daemon's user, or POST /resume)"
                ))
            } else {
                write_failed("cannot resume", "nothing was resumed", e)
            }
        })?
    };
    let what = if kind.is_none() { "every type" } else { name };
    if json {
        println!(
            "{}",
            serde_json::json!({"type": name, "paused": hold, "changed": changed})
        );
    } else {
        let word = match (hold, changed) {
            (true, true) => "paused: new jobs wait; running jobs go on",
            (true, false) => "was paused already",
            (false, true) => "resumed",
            (false, false) => "was not paused (by pause/ of its own)",
        };
        println!("{}: {word}", printable(what));
    }
    Ok(())
}

/// The client reads job files whole: it has no configuration to know the
/// daemon's `max_job_bytes`.
const WHOLE: u64 = u64::MAX;

/// Where a job is; an IO error is the system's (exit 2).
fn find(spool: &Spool, id: &str) -> Result<Option<Located>, Fail> {
    spool
        .query(WHOLE)
        .find(id)
        .map_err(|e| Fail::Usage(e.to_string()))
}

/// A job without a record yet, as `--json` shows it.
fn pending_json(id: &str, job: &Located) -> serde_json::Value {
    serde_json::json!({"id": id, "type": job.kind(), "status": job.status().as_str()})
}

fn status(spool: &Spool, json: bool, id: &str) -> Result<(), Fail> {
    match find(spool, id)? {
        Some(Located::Finished(rec)) => print_record(&rec, json),
        Some(job) if json => println!("{}", pending_json(id, &job)),
        Some(job) => println!("{id} {} {}", printable(job.kind()), job.status()),
        None => return Err(Fail::Job(format!("{id}: no such job"))),
    }
    Ok(())
}

fn print_record(rec: &Record, json: bool) {
    if json {
        println!("{}", rec.to_json());
        return;
    }
    let mut line = format!("{} {} {}", rec.id, printable(&rec.kind), rec.status);
    if let Some(c) = rec.exit_code {
        line.push_str(&format!(" exit={c}"));
    }
    if let Some(s) = &rec.signal {
        line.push_str(&format!(" signal={}", printable(s)));
    }
    if let Some(d) = rec.duration() {
        line.push_str(&format!(" {}", time::format_duration(d)));
    }
    if let Some(u) = &rec.usage {
        let cpu = u.cpu().map_or_else(|| "?".into(), time::format_duration);
        let rss = raccoond::bounds::rough_bytes(u.max_rss_bytes).replace(' ', "");
        line.push_str(&format!(" cpu={cpu} max_rss={rss}"));
    }
    if let Some(e) = &rec.error {
        line.push_str(&format!(" error={e:?}"));
    }
    println!("{line}");
}

fn outcome(rec: &Record) -> Result<(), Fail> {
    if rec.status == Status::Succeeded {
        Ok(())
    } else {
        Err(Fail::Job(String::new()))
    }
}

/// Waits for the record, checking often at first and then every 200 ms.
fn wait(spool: &Spool, id: &str, timeout: Option<Duration>) -> Result<Record, Fail> {
    let end = timeout.map(|t| Instant::now() + t);
    let mut pause = Duration::from_millis(5);
    let mut seen = false;
    loop {
        match find(spool, id)? {
            Some(Located::Finished(rec)) => return Ok(*rec),
            Some(_) => seen = true,
            // Neither queued, running nor done: no job at all, or one
            // still on its way into new/. Give a fresh submission a moment.
            None if !seen && pause >= Duration::from_millis(200) => {
                return Err(Fail::Job(format!("{id}: no such job")));
            }
            None => {}
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            return Err(Fail::Job(format!("{id}: still not finished")));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn cancel(spool: &Spool, id: &str) -> Result<(), Fail> {
    match find(spool, id)? {
        Some(Located::Finished(_)) => Err(Fail::Job(format!("{id}: already finished"))),
        None => Err(Fail::Job(format!("{id}: no such job"))),
        Some(_) => {
            spool
                .request_cancel(id)
                .map_err(|e| write_failed("cannot request the cancel", "nothing was asked", e))?;
            println!("{id}: cancel requested");
            Ok(())
        }
    }
}

/// `2026-11-22 10:00:03`, UTC: a table's time.
fn stamp(t: SystemTime) -> String {
    time::format_rfc3339(t)
        .chars()
        .take(19)
        .map(|c| if c == 'T' { ' ' } else { c })
        .collect()
}

fn list(spool: &Spool, json: bool, filter: &Filter) -> Result<(), Fail> {
    let rows = spool
        .query(WHOLE)
        .list(filter)
        .map_err(|e| Fail::Usage(e.to_string()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| match &r.job {
                Located::Finished(rec) => rec.to_json(),
                job => pending_json(&r.id, job),
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(items));
        return Ok(());
    }
    let mut table = Table::new(&["ID", "TYPE", "STATUS", "WHEN (UTC)", "RAN"]);
    for r in &rows {
        let status = r.job.status();
        let ran = match &r.job {
            Located::Finished(rec) => rec.duration().map(time::format_duration),
            _ => None,
        };
        table.toned_row(vec![
            (r.id.clone(), Tone::Plain),
            (r.job.kind().to_string(), Tone::Plain),
            (status.to_string(), tone_of(status)),
            (stamp(r.when), Tone::Plain),
            (ran.unwrap_or_default(), Tone::Plain),
        ]);
    }
    if !table.is_empty() {
        let _ = out.write_all(table.render(colour()).as_bytes());
    }
    Ok(())
}

/// What the task printed: while it runs, then from `done/`; nothing for a
/// job that has not printed (yet).
fn output(spool: &Spool, id: &str, stream: Stream) -> Result<(), Fail> {
    let opened = spool
        .query(WHOLE)
        .output(id, stream)
        .map_err(|e| Fail::Usage(e.to_string()))?;
    if let Some((mut f, _)) = opened {
        let mut out = std::io::stdout().lock();
        std::io::copy(&mut f, &mut out).map_err(|e| Fail::Usage(format!("{id}: output: {e}")))?;
        return Ok(());
    }
    match find(spool, id)? {
        Some(_) => Ok(()),
        None => Err(Fail::Job(format!("{id}: no such job"))),
    }
}

/// What the task writes, as it writes it, until the job ends (a queued
/// job is waited for); then the exit status of `wait`: 0 when the job
/// succeeded, 1 otherwise.
fn follow_output(spool: &Spool, id: &str, stream: Stream) -> Result<(), Fail> {
    let mut follower = Follower::start(spool, id, stream)
        .map_err(|e| Fail::Usage(e.to_string()))?
        .ok_or_else(|| Fail::Job(format!("{id}: no such job")))?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = follower
            .read(&mut buf)
            .map_err(|e| Fail::Usage(format!("{id}: output: {e}")))?;
        if n == 0 {
            break;
        }
        // Flushed at once: a reader waits for each line as it comes.
        out.write_all(&buf[..n])
            .and_then(|()| out.flush())
            .map_err(|e| Fail::Usage(format!("{id}: output: {e}")))?;
    }
    match follower.record() {
        Some(rec) => outcome(rec),
        None => Err(Fail::Job(format!("{id}: gone without a record"))),
    }
}

/// The types the daemon accepts, from its description.
fn types(spool: &Spool, json: bool) -> Result<(), Fail> {
    let (cat, fresh) = described(spool).map_err(Fail::Job)?;
    if let Freshness::Stale(why) = &fresh {
        eprintln!("raccoon: warning: the types description is stale: {why}");
    }
    if json {
        print!("{}", cat.to_json());
        return Ok(());
    }
    // NEEDS and PAUSED only when in use: most daemons have neither.
    let show_needs = !cat.resources.is_empty() || cat.types.iter().any(|t| !t.needs.is_empty());
    let show_paused = cat.paused || cat.types.iter().any(|t| t.paused);
    let mut header = vec!["TYPE", "LIMIT", "PARAMS", "ARGS"];
    if show_needs {
        header.push("NEEDS");
    }
    if show_paused {
        header.push("PAUSED");
    }
    let mut table = Table::new(&header);
    for t in &cat.types {
        let params = match &t.params {
            Some(decl) if decl.is_empty() => "none".to_string(),
            Some(decl) => decl
                .iter()
                .map(|p| format!("{}:{}{}", p.name, p.kind, if p.optional { "?" } else { "" }))
                .collect::<Vec<_>>()
                .join(" "),
            None if t.placeholders.is_empty() => "any".to_string(),
            None => format!("any, with {}", t.placeholders.join(" ")),
        };
        let args = if t.accept_args { "yes" } else { "no" };
        let needs = t
            .needs
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let paused = match (t.paused, cat.paused) {
            (true, _) => "yes",
            (false, true) => "yes (ALL)",
            (false, false) => "no",
        };
        let mut row = vec![t.name.clone(), t.limit.to_string(), params, args.into()];
        if show_needs {
            row.push(needs);
        }
        if show_paused {
            row.push(paused.into());
        }
        table.row(&row);
    }
    let mut out = std::io::stdout().lock();
    if table.is_empty() {
        let _ = writeln!(
            out,
            "The daemon accepts no type: its configuration has none."
        );
    } else {
        let _ = out.write_all(table.render(colour()).as_bytes());
    }
    if !cat.resources.is_empty() {
        let each: Vec<String> = cat
            .resources
            .iter()
            .map(|r| format!("{} {}", printable(&r.name), r.units))
            .collect();
        let _ = writeln!(out, "\nResources (per daemon): {}.", each.join(", "));
    }
    if cat.paused {
        let _ = writeln!(
            out,
            "\npause/ALL: no new job of any type starts until raccoon resume."
        );
    }
    let _ = writeln!(
        out,
        "\nAs raccoond {} (pid {} on {}) described them at {}.",
        printable(&cat.version),
        cat.pid,
        printable(&cat.host),
        printable(&cat.written)
    );
    Ok(())
}

/// The daemon's schedules, from its description, with their next tick
/// (computed here by the daemon's code, as of now) and the job of the
/// newest tick fired on the spool (from the daemon's markers).
fn schedules(spool: &Spool, json: bool) -> Result<(), Fail> {
    let (cat, fresh) = described(spool).map_err(Fail::Job)?;
    if let Freshness::Stale(why) = &fresh {
        eprintln!("raccoon: warning: the types description is stale: {why}");
    }
    let now = time::now();
    let mut rows = Vec::new();
    for s in &cat.schedules {
        let when = s
            .when()
            .map_err(|e| Fail::Job(format!("types.json: {e}")))?;
        // Unreadable markers (another user's spool) only hide "last".
        let fired = schedule::valid_name(&s.name)
            .then(|| spool.fired_ticks(&s.name).ok())
            .flatten()
            .and_then(|f| f.last().copied());
        // The tick of this very second may have fired already.
        let next = match (when.first_at_or_after(Tick::floor(now)), fired) {
            (Some(t), Some(f)) if t <= f => when.first_after(f),
            (next, _) => next,
        };
        let last = fired.map(|t| schedule::job_id(&s.name, t));
        rows.push((s, when, next, last));
    }
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(s, _, next, last)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "next".into(),
                        next.map(|t| time::format_rfc3339(t.time())).into(),
                    );
                    o.insert("last".into(), last.clone().into());
                }
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into())
        );
        return Ok(());
    }
    let mut table = Table::new(&["SCHEDULE", "WHEN", "TYPE", "CATCH_UP", "NEXT", "LAST"]);
    for (s, when, next, last) in &rows {
        let next = next.map_or("none".to_string(), |t| {
            let t = t.time();
            match time::until(now, t).as_secs() {
                0 => format!("{} (due now)", time::format_rfc3339(t)),
                secs => format!(
                    "{} (in {})",
                    time::format_rfc3339(t),
                    time::format_duration(Duration::from_secs(secs))
                ),
            }
        });
        table.row(&[
            s.name.clone(),
            when.describe(),
            s.kind.clone(),
            if s.catch_up { "yes" } else { "no" }.to_string(),
            next,
            last.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = std::io::stdout().lock();
    if table.is_empty() {
        let _ = writeln!(out, "The daemon has no schedule.");
    } else {
        let _ = out.write_all(table.render(colour()).as_bytes());
    }
    Ok(())
}

/// Submits a finished job again: its type, params, email, priority and
/// args, checked as a new submission.
fn retry(spool: &Spool, json: bool, id: &str, wait_for_it: bool) -> Result<(), Fail> {
    match find(spool, id)? {
        Some(Located::Finished(rec)) => {
            let rec = *rec;
            let mut job = job_table(
                &rec.kind,
                rec.email,
                rec.priority,
                rec.args,
                rec.params.unwrap_or_default(),
            );
            // Its key and needs go with it; not its parents, which have
            // ended (one that failed would cancel it again at once).
            if let Some(key) = rec.unique {
                job.insert("unique".into(), toml::Value::String(key));
            }
            if let Some(needs) = rec.needs {
                job.insert("needs".into(), toml::Value::Table(needs));
            }
            queue(spool, json, None, &job, wait_for_it)
        }
        Some(job) => Err(Fail::Job(format!(
            "{id}: still {}; only a finished job can be retried",
            job.status()
        ))),
        None => Err(Fail::Job(format!("{id}: no such job"))),
    }
}

/// At most this much of the end of an output is read to find its last
/// lines: outputs may be `max_output_bytes` long.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last `n` lines of a job's output, as far as it has got.
fn tail(spool: &Spool, id: &str, stream: Stream, n: usize) -> Result<Vec<String>, Fail> {
    let io = |e: std::io::Error| Fail::Usage(format!("{id}: output: {e}"));
    let Some((mut f, meta)) = spool.query(WHOLE).output(id, stream).map_err(io)? else {
        return Ok(Vec::new());
    };
    let from = meta.len().saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(from)).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut bytes).map_err(io)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if from > 0 && !lines.is_empty() {
        // Started inside a line.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..]
        .iter()
        .map(|l| printable(&l.replace('\t', "    ")))
        .collect())
}

/// A TOML value on one line, as JSON.
fn inline(v: &toml::Value) -> String {
    values::toml_to_json(v).to_string()
}

/// A job in full: its record, or where it is and what it waits for; then
/// the end of its output and standard error.
fn show(spool: &Spool, json: bool, id: &str, n: usize) -> Result<(), Fail> {
    let job = find(spool, id)?.ok_or_else(|| Fail::Job(format!("{id}: no such job")))?;
    let now = time::now();
    let mut fields: Vec<(&str, String)> = vec![("id", id.to_string())];
    let mut waiting: Option<String> = None;
    let mut waiting_for: Option<Vec<String>> = None;
    match &job {
        Located::Finished(rec) => record_fields(rec, &mut fields),
        Located::Running { table, claimed, .. } => {
            fields.push(("type", job.kind().to_string()));
            fields.push(("status", "running".into()));
            fields.push(("started", format!("{} UTC", stamp(*claimed))));
            if let Ok(d) = now.duration_since(*claimed) {
                fields.push(("running for", time::format_duration(d)));
            }
            file_fields(table, &mut fields);
        }
        Located::Queued { table, written } => {
            fields.push(("type", job.kind().to_string()));
            fields.push(("status", "queued".into()));
            let me = Pending::from_table(id, table, *written);
            fields.push(("submitted", format!("{} UTC", stamp(me.submitted))));
            file_fields(table, &mut fields);
            let parents = pending_parents(spool, table)?;
            let w = if parents.is_empty() {
                queued_waits(spool, &me, job.kind(), now)?
            } else {
                let each: Vec<String> = parents
                    .iter()
                    .map(|(p, status)| format!("{p} ({status})"))
                    .collect();
                format!("its dependencies: {}", each.join(", "))
            };
            fields.push(("waits for", w.clone()));
            waiting = Some(w);
            waiting_for = Some(parents.into_iter().map(|(p, _)| p).collect());
        }
    }
    let out = tail(spool, id, Stream::Out, n)?;
    let err = tail(spool, id, Stream::Err, n)?;
    if json {
        let mut v = match &job {
            Located::Finished(rec) => rec.to_json(),
            other => pending_json(id, other),
        };
        if let Some(obj) = v.as_object_mut() {
            if let Some(w) = waiting {
                obj.insert("waits_for".into(), w.into());
            }
            if let Some(w) = waiting_for {
                obj.insert("waiting_for".into(), w.into());
            }
            obj.insert("output_tail".into(), out.into());
            obj.insert("stderr_tail".into(), err.into());
        }
        println!("{v}");
        return Ok(());
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (k, v) in &fields {
        text.push_str(&format!("{k:<width$}  {}\n", printable(v)));
    }
    for (name, lines) in [("output", &out), ("stderr", &err)] {
        if lines.is_empty() {
            text.push_str(&format!("\n{name}: (nothing)\n"));
        } else {
            let last = match lines.len() {
                1 => "its last line".to_string(),
                k => format!("last {k} lines"),
            };
            text.push_str(&format!("\n{name} ({last}):\n"));
            for l in lines.iter() {
                text.push_str(&format!("  {l}\n"));
            }
        }
    }
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// A record's fields, in the order a reader wants them.
fn record_fields(rec: &Record, fields: &mut Vec<(&str, String)>) {
    fields.push(("type", rec.kind.clone()));
    let mut status = rec.status.to_string();
    if let Some(c) = rec.exit_code {
        status.push_str(&format!(" (exit {c})"));
    }
    if let Some(s) = &rec.signal {
        status.push_str(&format!(" ({s})"));
    }
    fields.push(("status", status));
    if let Some(e) = &rec.error {
        fields.push(("error", e.clone()));
    }
    for (name, t) in [
        ("submitted", &rec.submitted),
        ("started", &rec.started),
        ("finished", &rec.finished),
    ] {
        if let Some(t) = t.as_ref().and_then(|d| time::from_toml(d).ok()) {
            fields.push((name, format!("{} UTC", stamp(t))));
        }
    }
    if let Some(d) = rec.duration() {
        fields.push(("ran", time::format_duration(d)));
    }
    if let Some(u) = &rec.usage {
        fields.push(("used", u.summary()));
    }
    fields.push(("attempts", rec.attempts.to_string()));
    if let Some(t) = rec.expires_at() {
        fields.push(("kept until", format!("{} UTC", stamp(t))));
    }
    if let Some(name) = &rec.submitted_as {
        fields.push(("submitted as", name.clone()));
    }
    if !rec.email.is_empty() {
        let mail = rec.mail.as_deref().unwrap_or("none");
        fields.push(("email", format!("{} (mail: {mail})", rec.email.join(", "))));
    }
    if let Some(p) = rec.priority {
        fields.push(("priority", p.to_string()));
    }
    if !rec.args.is_empty() {
        fields.push(("args", rec.args.join(" ")));
    }
    if let Some(p) = &rec.params {
        fields.push(("params", inline(&toml::Value::Table(p.clone()))));
    }
    if let Some(r) = &rec.result {
        fields.push(("result", inline(r)));
    }
    if let Some(src) = &rec.source {
        let short: String = src.chars().take(500).collect();
        let cut = if short.len() < src.len() { "…" } else { "" };
        fields.push(("source", format!("{short}{cut}")));
    }
}

/// What a queued or running job's file says beyond its type.
fn file_fields(table: &toml::Table, fields: &mut Vec<(&str, String)>) {
    for key in [
        "priority",
        "not_before",
        "email",
        "args",
        "params",
        "attempts",
    ] {
        if let Some(v) = table.get(key) {
            fields.push((key, inline(v)));
        }
    }
}

/// The jobs a queued job's `after` and `after_any` name that have not
/// ended, each with where it is (`queued`, `running`, or `nowhere`).
fn pending_parents(spool: &Spool, table: &toml::Table) -> Result<Vec<(String, String)>, Fail> {
    let mut out = Vec::new();
    for key in ["after", "after_any"] {
        for p in table
            .get(key)
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(toml::Value::as_str)
        {
            let status = match find(spool, p)? {
                Some(Located::Finished(_)) => continue,
                Some(j) => j.status().to_string(),
                None => "nowhere".to_string(),
            };
            if !out.iter().any(|(q, _)| q == p) {
                out.push((p.to_string(), status));
            }
        }
    }
    Ok(out)
}

/// What a queued job waits for, in words: its `not_before`, a pause of
/// its type, or the jobs of its type ahead of it and how many of them
/// run against the limit.
fn queued_waits(spool: &Spool, me: &Pending, kind: &str, now: SystemTime) -> Result<String, Fail> {
    let listed = |status| {
        spool
            .query(WHOLE)
            .list(&Filter {
                status: Some(status),
                kind: Some(kind),
                limit: usize::MAX,
            })
            .map_err(|e| Fail::Usage(e.to_string()))
    };
    let queue: Vec<Pending> = listed(Status::Queued)?
        .into_iter()
        .filter_map(|l| match &l.job {
            Located::Queued { table, written } => Some(Pending::from_table(&l.id, table, *written)),
            _ => None,
        })
        .collect();
    let paused = described(spool).ok().and_then(|(cat, _)| {
        if cat.paused {
            Some(format!("pause/{}", spool::PAUSE_ALL))
        } else {
            cat.types
                .iter()
                .any(|t| t.name == kind && t.paused)
                .then(|| format!("pause/{}", printable(kind)))
        }
    });
    match waits(me, &queue, now) {
        Waits::Turn { .. } if paused.is_some() => Ok(format!(
            "a resume: {} holds new starts (raccoon resume)",
            paused.unwrap_or_default()
        )),
        Waits::NotBefore(t) => Ok(format!(
            "its not_before, {} UTC (in {})",
            stamp(t),
            time::format_duration(t.duration_since(now).unwrap_or_default())
        )),
        Waits::Turn { position, of } => {
            let running = listed(Status::Running)?.len();
            let limit = described(spool)
                .ok()
                .and_then(|(cat, _)| cat.types.into_iter().find(|t| t.name == kind))
                .map_or_else(|| "?".to_string(), |t| t.limit.to_string());
            let kind = printable(kind);
            let ahead = match position - 1 {
                0 => format!("a free slot: no {kind} job is ahead of it (1 of {of} in line)"),
                1 => format!("1 {kind} job ahead of it ({position} of {of} in line)"),
                a => format!("{a} {kind} jobs ahead of it ({position} of {of} in line)"),
            };
            Ok(format!("{ahead}; {running} running, limit {limit}"))
        }
    }
}

/// A write into the spool that failed: exit 75 when its file system is
/// full (`undone` says what did not happen; the same command may work
/// later), else 2.
fn write_failed(what: &str, undone: &str, e: std::io::Error) -> Fail {
    if raccoond::space::is_full(&e) {
        Fail::Temporary(format!(
            "{what}: the spool's file system is full ({e}); {undone}, try again later"
        ))
    } else {
        Fail::Usage(format!("{what}: {e}"))
    }
}
