//! The client's command line: every command and option of `raccoon`, as
//! clap derives them, with the help each shows.
//!
//! Owns parsing and checking the words (an id is a valid id, a duration
//! parses, a status is one of the seven) and nothing else: what a command
//! does is the binary's. `raccoon completions` and the man page test read
//! the same definitions, so the help, the completions and raccoon(1) name
//! the same commands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ids;
use crate::record::Status;
use crate::time;

/// Submit and follow raccoond jobs, working on the spool directly (no
/// server, no running daemon needed).
#[derive(Debug, Parser)]
#[command(
    name = "raccoon",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 done (for wait, the job succeeded); 1 the job failed, timed out \
                  or does not exist; 2 bad command line or IO error; 65 the job was refused \
                  (the daemon's types description says it would reject it); 75 the spool's \
                  file system is full. A unique job already queued or running is not an \
                  error: submit prints its id and exits 0.\n\
                  See raccoon(1)."
)]
pub struct Cli {
    /// The spool folder [default: ./spool]
    #[arg(long, global = true, value_name = "DIR", env = "RACCOON_SPOOL")]
    pub spool: Option<PathBuf>,

    /// Print JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue a job; print its id
    Submit(Submit),
    /// Print where a job is, or its record
    Status {
        #[arg(value_parser = job_id)]
        id: String,
    },
    /// Wait until a job has ended; exit 0 if it succeeded
    Wait {
        #[arg(value_parser = job_id)]
        id: String,
        /// Give up after this long (90s, 5m, ...) and exit 1
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        timeout: Option<Duration>,
    },
    /// Cancel a queued or running job
    Cancel {
        #[arg(value_parser = job_id)]
        id: String,
    },
    /// List jobs, newest first, as a table (or JSON with --json)
    List {
        /// Only jobs with this status
        #[arg(long, value_name = "STATUS", value_parser = status)]
        status: Option<Status>,
        /// Only jobs of this type
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// At most this many jobs
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Print what a job's task wrote to standard output
    Output {
        #[arg(value_parser = job_id)]
        id: String,
        /// Print its standard error instead
        #[arg(long)]
        stderr: bool,
        /// Go on printing what the task writes until the job ends (waiting
        /// for a queued job to start), then exit as wait does
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// List the types the daemon accepts: limit, params, accept_args
    Types,
    /// List the daemon's schedules: when each ticks, its next tick, and
    /// the job of the last tick fired
    Schedules,
    /// Show a job in full: its record or its place in the queue, and the
    /// last lines of its output
    Show {
        #[arg(value_parser = job_id)]
        id: String,
        /// How many lines of output and of standard error to show
        #[arg(long, value_name = "N", default_value_t = 10)]
        lines: usize,
    },
    /// Submit a finished job again: same type, params, email, priority
    /// and args; print the new id
    Retry {
        #[arg(value_parser = job_id)]
        id: String,
        /// Then wait for the new job, as submit --wait does
        #[arg(long)]
        wait: bool,
    },
    /// Hold new starts of a type (or of every type): running jobs go on
    Pause {
        /// The type; every type when left out (pause/ALL)
        #[arg(value_name = "TYPE", value_parser = type_name)]
        kind: Option<String>,
    },
    /// Let new starts of a type (or of every type) go again
    Resume {
        /// The type; every type when left out (pause/ALL)
        #[arg(value_name = "TYPE", value_parser = type_name)]
        kind: Option<String>,
    },
    /// Print a completion script for a shell
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// `raccoon submit`'s arguments.
#[derive(Debug, Args)]
pub struct Submit {
    /// The job's type, as the daemon's configuration names it
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// Params, typed as TOML would type them: integers, floats,
    /// true/false, else strings
    #[arg(value_name = "KEY=VALUE", value_parser = key_value)]
    pub params: Vec<(String, String)>,
    /// A param given as JSON (a string that looks like a number, an
    /// array, an object)
    #[arg(long = "param-json", value_name = "KEY=JSON", value_parser = key_value)]
    pub param_json: Vec<(String, String)>,
    /// Mail the outcome to this address (repeatable)
    #[arg(long, value_name = "ADDR")]
    pub email: Vec<String>,
    /// Higher starts first
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Ask for this id (a fresh one is used if it is taken)
    #[arg(long, value_parser = job_id)]
    pub id: Option<String>,
    /// Start only once this job has ended `succeeded` (repeatable); if it
    /// ends otherwise, this one is cancelled
    #[arg(long, value_name = "ID", value_parser = job_id)]
    pub after: Vec<String>,
    /// Start only once this job has ended, whatever its outcome
    /// (repeatable)
    #[arg(long = "after-any", value_name = "ID", value_parser = job_id)]
    pub after_any: Vec<String>,
    /// At most one queued or running job of the type with this key: when
    /// there is one, print its id and exit 0 instead
    #[arg(long, value_name = "KEY", value_parser = unique_key)]
    pub unique: Option<String>,
    /// Needs this many units of a resource the daemon declares (repeatable);
    /// replaces the type's needs
    #[arg(long, value_name = "NAME=N", value_parser = need)]
    pub needs: Vec<(String, i64)>,
    /// Then wait for the job to end and exit as wait does
    #[arg(long)]
    pub wait: bool,
}

/// The shells `raccoon completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(s: Shell) -> Self {
        match s {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

fn job_id(s: &str) -> Result<String, String> {
    if ids::valid_id(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a job id (1-100 characters of A-Z a-z 0-9 . _ -)"
        ))
    }
}

/// A type name (or `ALL`), as `pause/` names it.
fn type_name(s: &str) -> Result<String, String> {
    if ids::valid_id(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a type name (1-100 characters of A-Z a-z 0-9 . _ -)"
        ))
    }
}

fn unique_key(s: &str) -> Result<String, String> {
    match s.len() {
        0 => Err("an empty key".into()),
        n if n > crate::job::MAX_UNIQUE_BYTES => Err(format!(
            "{n} bytes, at most {}",
            crate::job::MAX_UNIQUE_BYTES
        )),
        _ => Ok(s.to_string()),
    }
}

fn need(s: &str) -> Result<(String, i64), String> {
    let (name, n) = key_value(s)?;
    let n = n
        .parse::<i64>()
        .map_err(|_| format!("{s:?}: the count is not a whole number"))?;
    Ok((name, n))
}

fn duration(s: &str) -> Result<Duration, String> {
    time::parse_duration(s)
}

fn status(s: &str) -> Result<Status, String> {
    Status::parse(s).ok_or_else(|| {
        "one of queued, running, succeeded, failed, timed_out, cancelled, rejected".to_string()
    })
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("{s:?}: empty key")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(format!("{s:?}: expected key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("raccoon").chain(args.iter().copied()))
    }

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        for args in [
            &["--json", "--spool", "/s", "status", "a"][..],
            &["status", "a", "--json", "--spool=/s"],
        ] {
            let cli = parse(args).unwrap();
            assert!(cli.json);
            assert_eq!(cli.spool, Some(PathBuf::from("/s")));
            assert!(matches!(cli.command, Command::Status { ref id } if id == "a"));
        }
    }

    #[test]
    fn submit_takes_params_and_options_in_any_order() {
        let cli = parse(&[
            "submit",
            "greet",
            "who=big world",
            "--email",
            "a@x.org",
            "n=3",
            "--priority",
            "-5",
            "--wait",
            "--param-json",
            "zip=\"01234\"",
            "--after",
            "build-1",
            "--after-any",
            "clean-2",
            "--after",
            "fetch-3",
            "--unique",
            "nightly",
            "--needs",
            "gpu=2",
        ])
        .unwrap();
        let Command::Submit(s) = cli.command else {
            panic!("not submit");
        };
        assert_eq!(s.kind, "greet");
        assert_eq!(
            s.params,
            [("who".into(), "big world".into()), ("n".into(), "3".into())]
        );
        assert_eq!(s.param_json, [("zip".into(), "\"01234\"".into())]);
        assert_eq!((s.priority, s.wait), (Some(-5), true));
        assert_eq!(s.email, ["a@x.org"]);
        assert_eq!(s.after, ["build-1", "fetch-3"]);
        assert_eq!(s.after_any, ["clean-2"]);
        assert_eq!(s.unique.as_deref(), Some("nightly"));
        assert_eq!(s.needs, [("gpu".into(), 2)]);
        let cli = parse(&["pause"]).unwrap();
        assert!(matches!(cli.command, Command::Pause { kind: None }));
        let cli = parse(&["resume", "build"]).unwrap();
        assert!(matches!(cli.command, Command::Resume { kind: Some(ref k) } if k == "build"));
    }

    #[test]
    fn bad_words_are_refused_naming_what_is_wrong() {
        let cases: [(&[&str], &str); 10] = [
            (&["submit", "t", "--after", "a/b"], "not a job id"),
            (&["submit", "t", "--unique", ""], "an empty key"),
            (&["submit", "t", "--needs", "gpu=two"], "not a whole number"),
            (&["pause", "../x"], "not a type name"),
            (&["status", "../x"], "not a job id"),
            (&["wait", "a", "--timeout", "soon"], "invalid duration"),
            (&["list", "--status", "done"], "one of queued"),
            (&["submit", "t", "novalue"], "expected key=value"),
            (&["submit", "t", "=v"], "empty key"),
            (&["completions", "tcsh"], "tcsh"),
        ];
        for (args, want) in cases {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
