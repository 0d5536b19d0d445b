//! `raccoond`: parse the command line, read the configuration, run the loop.
//!
//! Exit codes (raccoond(8)): 0 after a clean stop, 64 for a bad command
//! line (EX_USAGE), 78 for a bad configuration (EX_CONFIG: systemd should
//! not restart), 75 when the system refused something that may work later
//! (EX_TEMPFAIL: a restart may help).

use std::process::ExitCode;

use raccoond::cli;
use raccoond::daemon::{Daemon, Fatal};

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("raccoond: {e}\n{}", cli::USAGE);
            return ExitCode::from(64);
        }
    };
    if args.help {
        println!("{}", cli::USAGE);
        return ExitCode::SUCCESS;
    }
    if args.version {
        println!("raccoond {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = match raccoond::job::load_config(args.config.as_deref(), &args.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raccoond: configuration error: {e}");
            return ExitCode::from(78);
        }
    };
    raccoond::runner::raise_nofile();
    let result = Daemon::run(config, args.overrides);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal::Config(e)) => {
            eprintln!("raccoond: configuration error: {e}");
            ExitCode::from(78)
        }
        Err(Fatal::Temporary(e)) => {
            eprintln!("raccoond: {e}");
            ExitCode::from(75)
        }
    }
}
