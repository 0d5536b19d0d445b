//! `raccoon`, the client: submits and inspects jobs by working on the spool
//! directly, so it needs no running daemon and no server.
//!
//! Owns the command line, and how jobs and records are printed (one line
//! each, or JSON with `--json`). Everything it knows of a job comes from
//! [`raccoond::spool::query`], the same answers the HTTP API gives, so it
//! never follows a symlink a submitter planted; everything it writes goes
//! through [`Spool`]: a job through `tmp/` into `new/` (submit) and
//! `cancel/<id>` (cancel). Never renames or deletes anything.
//!
//! Exit status: 0 when the command (or the awaited job) succeeded, 1 when
//! the job failed or is unknown, 2 for a bad command line or an IO error,
//! 75 (EX_TEMPFAIL) when the spool's file system is full: nothing was
//! queued, and the same command may work later.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use raccoond::ids;
use raccoond::record::{Record, Status};
use raccoond::spool::Spool;
use raccoond::spool::query::{Filter, Located, Stream};
use raccoond::time;
use raccoond::values;

const USAGE: &str = "\
usage: raccoon [--spool DIR] [--json] COMMAND ...

  submit TYPE [key=value]... [--email ADDR]... [--param-json key=JSON]...
         [--priority N] [--id ID] [--wait]    queue a job; prints its id
  status ID                                   where a job is, or its record
  wait ID [--timeout DURATION]                wait until it ends; exit 0 if it succeeded
  cancel ID                                   cancel a queued or running job
  list [--status S] [--type T] [--limit N]    jobs, newest first
  output ID [--stderr]                        what the task printed

The spool is --spool DIR, else $RACCOON_SPOOL, else ./spool.
Values in key=value are typed: integers, floats, true/false, else strings.";

struct Cli {
    spool: Option<PathBuf>,
    json: bool,
    command: Vec<String>,
}

enum Fail {
    /// The job failed, or does not exist: exit 1.
    Job(String),
    /// The command line or the system: exit 2.
    Usage(String),
    /// The spool's file system is full: exit 75, try again later.
    Temporary(String),
}

fn main() -> ExitCode {
    match run() {
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
        Err(Fail::Temporary(msg)) => {
            eprintln!("raccoon: {msg}");
            ExitCode::from(75)
        }
    }
}

fn run() -> Result<(), Fail> {
    let cli = parse_global()?;
    let root = cli
        .spool
        .clone()
        .or_else(|| std::env::var_os("RACCOON_SPOOL").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("spool"));
    let spool = Spool::at(&root);
    let mut words = cli.command.iter().map(String::as_str);
    match words.next() {
        Some("submit") => submit(&spool, &cli, words.collect()),
        Some("status") => status(&spool, &cli, one_id(words.collect())?),
        Some("wait") => {
            let rest: Vec<&str> = words.collect();
            let (id, timeout) = match rest.as_slice() {
                [id] => (*id, None),
                [id, "--timeout", t] | ["--timeout", t, id] => {
                    (*id, Some(time::parse_duration(t).map_err(Fail::Usage)?))
                }
                _ => {
                    return Err(Fail::Usage(format!(
                        "wait takes one ID [--timeout DURATION]\n{USAGE}"
                    )));
                }
            };
            let rec = wait(&spool, id, timeout)?;
            print_record(&rec, cli.json);
            outcome(&rec)
        }
        Some("cancel") => cancel(&spool, one_id(words.collect())?),
        Some("list") => list(&spool, &cli, words.collect()),
        Some("output") => {
            let rest: Vec<&str> = words.collect();
            let (id, stderr) = match rest.as_slice() {
                [id] => (*id, false),
                [id, "--stderr"] | ["--stderr", id] => (*id, true),
                _ => {
                    return Err(Fail::Usage(format!(
                        "output takes one ID [--stderr]\n{USAGE}"
                    )));
                }
            };
            output(&spool, id, stderr)
        }
        Some("help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(Fail::Usage(format!("unknown command {other:?}\n{USAGE}"))),
    }
}

/// Global options may come before or after the command.
fn parse_global() -> Result<Cli, Fail> {
    let mut cli = Cli {
        spool: None,
        json: false,
        command: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => cli.json = true,
            "--spool" => {
                cli.spool = Some(
                    args.next()
                        .ok_or_else(|| Fail::Usage("--spool needs a folder".into()))?
                        .into(),
                )
            }
            "--help" | "-h" => cli.command = vec!["help".into()],
            "--version" | "-V" => {
                println!("raccoon {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            s if s.starts_with("--spool=") => cli.spool = Some(s["--spool=".len()..].into()),
            _ => cli.command.push(a),
        }
    }
    Ok(cli)
}

fn one_id(rest: Vec<&str>) -> Result<&str, Fail> {
    match rest.as_slice() {
        [id] if ids::valid_id(id) => Ok(id),
        [id] => Err(Fail::Usage(format!("{id:?} is not a job id"))),
        _ => Err(Fail::Usage(format!("expected one job id\n{USAGE}"))),
    }
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

fn submit(spool: &Spool, cli: &Cli, rest: Vec<&str>) -> Result<(), Fail> {
    let mut it = rest.into_iter();
    let kind = it
        .next()
        .ok_or_else(|| Fail::Usage(format!("submit needs a TYPE\n{USAGE}")))?;
    let mut params = toml::Table::new();
    let mut emails: Vec<String> = Vec::new();
    let mut wait_for_it = false;
    let mut priority: Option<i64> = None;
    let mut id: Option<String> = None;
    let need = |it: &mut std::vec::IntoIter<&str>, opt: &str| -> Result<String, Fail> {
        it.next()
            .map(str::to_string)
            .ok_or_else(|| Fail::Usage(format!("{opt} needs a value")))
    };
    while let Some(a) = it.next() {
        match a {
            "--wait" => wait_for_it = true,
            "--email" => emails.push(need(&mut it, "--email")?),
            "--priority" => {
                let v = need(&mut it, "--priority")?;
                priority = Some(
                    v.parse()
                        .map_err(|_| Fail::Usage(format!("--priority {v}: not an integer")))?,
                );
            }
            "--id" => {
                let v = need(&mut it, "--id")?;
                if !ids::valid_id(&v) {
                    return Err(Fail::Usage(format!(
                        "--id {v:?}: 1-100 characters of A-Z a-z 0-9 . _ -"
                    )));
                }
                id = Some(v);
            }
            "--param-json" => {
                let v = need(&mut it, "--param-json")?;
                let (k, json) = v
                    .split_once('=')
                    .ok_or_else(|| Fail::Usage(format!("--param-json {v}: expected key=JSON")))?;
                let parsed: serde_json::Value = serde_json::from_str(json)
                    .map_err(|e| Fail::Usage(format!("--param-json {k}: {e}")))?;
                params.insert(
                    k.to_string(),
                    values::json_to_toml(&parsed, k).map_err(Fail::Usage)?,
                );
            }
            kv => {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| Fail::Usage(format!("{kv:?}: expected key=value")))?;
                if k.is_empty() {
                    return Err(Fail::Usage(format!("{kv:?}: empty key")));
                }
                params.insert(k.to_string(), typed(v));
            }
        }
    }
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
    if !params.is_empty() {
        table.insert("params".into(), toml::Value::Table(params));
    }
    let text =
        toml::to_string(&table).map_err(|e| Fail::Usage(format!("cannot write the job: {e}")))?;
    if !spool.is_spool() {
        return Err(Fail::Usage(format!(
            "{} is not a spool (no new/ folder); use --spool or RACCOON_SPOOL",
            spool.root().display()
        )));
    }
    let id = spool
        .submit(id.as_deref(), text.as_bytes())
        .map_err(|e| write_failed("cannot submit", "nothing was queued", e))?;
    println!("{id}");
    let _ = std::io::stdout().flush();
    if wait_for_it {
        let rec = wait(spool, &id, None)?;
        if cli.json {
            print_record(&rec, true);
        } else {
            eprintln!("{id}: {}", rec.status);
        }
        return outcome(&rec);
    }
    Ok(())
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

fn status(spool: &Spool, cli: &Cli, id: &str) -> Result<(), Fail> {
    match find(spool, id)? {
        Some(Located::Finished(rec)) => print_record(&rec, cli.json),
        Some(job) if cli.json => println!("{}", pending_json(id, &job)),
        Some(job) => println!("{id} {} {}", job.kind(), job.status()),
        None => return Err(Fail::Job(format!("{id}: no such job"))),
    }
    Ok(())
}

fn print_record(rec: &Record, json: bool) {
    if json {
        println!("{}", rec.to_json());
        return;
    }
    let mut line = format!("{} {} {}", rec.id, rec.kind, rec.status);
    if let Some(c) = rec.exit_code {
        line.push_str(&format!(" exit={c}"));
    }
    if let Some(s) = &rec.signal {
        line.push_str(&format!(" signal={s}"));
    }
    if let Some(d) = rec.duration() {
        line.push_str(&format!(" {}", time::format_duration(d)));
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

fn list(spool: &Spool, cli: &Cli, rest: Vec<&str>) -> Result<(), Fail> {
    let mut filter = Filter::default();
    let mut it = rest.into_iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| Fail::Usage(format!("{a} needs a value")))?;
        match a {
            "--status" => {
                filter.status = Some(Status::parse(v).ok_or_else(|| {
                    Fail::Usage(format!(
                        "--status {v}: one of queued, running, succeeded, failed, timed_out, cancelled, rejected"
                    ))
                })?)
            }
            "--type" => filter.kind = Some(v),
            "--limit" => filter.limit = v.parse().map_err(|_| Fail::Usage(format!("--limit {v}: not a number")))?,
            _ => return Err(Fail::Usage(format!("list: unknown option {a}"))),
        }
    }
    let rows = spool
        .query(WHOLE)
        .list(&filter)
        .map_err(|e| Fail::Usage(e.to_string()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if cli.json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| match &r.job {
                Located::Finished(rec) => rec.to_json(),
                job => pending_json(&r.id, job),
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(items));
    } else {
        for r in &rows {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}",
                r.id,
                r.job.kind(),
                r.job.status(),
                time::format_rfc3339(r.when)
            );
        }
    }
    Ok(())
}

/// What the task printed: while it runs, then from `done/`; nothing for a
/// job that has not printed (yet).
fn output(spool: &Spool, id: &str, stderr: bool) -> Result<(), Fail> {
    if !ids::valid_id(id) {
        return Err(Fail::Usage(format!("{id:?} is not a job id")));
    }
    let stream = if stderr { Stream::Err } else { Stream::Out };
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
