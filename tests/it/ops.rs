//! Operating raccoond as a Unix daemon: the systemd unit and its notify
//! protocol, the sysusers and tmpfiles files and the spool modes they give,
//! exit codes, and the man pages.
//!
//! Tests that need an outside tool (systemd-analyze, mandoc, groff, man,
//! setpriv) fail, naming the package, when it is missing: the README's
//! test command installs them all.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::*;

/// The man pages, as committed.
const MAN_PAGES: [&str; 3] = ["man/raccoond.8", "man/raccoond.toml.5", "man/raccoon.1"];

/// The spool the packaged files set up.
const SPOOL: &str = "/var/spool/raccoon";

// ---- the systemd unit --------------------------------------------------

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let analyze = tool("systemd-analyze", "systemd");
    let unit = repo_file("systemd/raccoond.service");
    let exec = "ExecStart=/usr/bin/raccoond ";
    assert!(
        unit.contains(exec),
        "the unit must start /usr/bin/raccoond:\n{unit}"
    );
    // verify fails when ExecStart's program does not exist: check a copy
    // that starts the binary under test instead.
    let copy = unit.replace(exec, &format!("ExecStart={} ", raccoond_bin()));
    let dir = temp_dir();
    let path = dir.path().join("raccoond.service");
    fs::write(&path, copy).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let ran = run(Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path));
    // Unknown keys and bad values only warn, with exit status 0.
    assert!(
        ran.status.success() && ran.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        ran.status,
        ran.stderr
    );
}

#[test]
fn the_unit_the_etc_configuration_sysusers_and_tmpfiles_agree() {
    let unit = repo_file("systemd/raccoond.service");
    let config = raccoond::config::Config::load(
        Some(&repo("packaging/raccoond.toml")),
        &raccoond::config::Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("packaging/raccoond.toml: {e}"));
    assert_eq!(config.spool, Path::new(SPOOL));
    assert!(
        config.types.is_empty(),
        "the packaged configuration must not enable a type"
    );
    assert_eq!(config.http.listen.as_deref(), Some("127.0.0.1:8080"));

    assert_eq!(unit_value(&unit, "Type"), "notify");
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        "/usr/bin/raccoond --config /etc/raccoond.toml"
    );
    assert_eq!(unit_value(&unit, "ReadWritePaths"), SPOOL);
    assert_eq!(unit_value(&unit, "KillMode"), "mixed");
    let stop: u64 = unit_value(&unit, "TimeoutStopSec").parse().unwrap_or(0);
    let drain = config.stop_timeout + config.kill_grace;
    assert!(
        Duration::from_secs(stop) >= drain + Duration::from_secs(10),
        "TimeoutStopSec={stop} leaves too little time after stop_timeout + kill_grace = {drain:?}"
    );
    let no_restart = unit_value(&unit, "RestartPreventExitStatus");
    let no_restart: Vec<&str> = no_restart.split(' ').collect();
    assert!(
        no_restart.contains(&"64") && no_restart.contains(&"78"),
        "{no_restart:?}"
    );
    assert!(!unit_value(&unit, "WatchdogSec").is_empty());

    let sysusers = repo_file("systemd/raccoond.sysusers");
    assert!(
        sysusers
            .lines()
            .any(|l| l.starts_with("u raccoon ") && l.ends_with(&format!(" {SPOOL}"))),
        "sysusers must create user raccoon with the spool as its home:\n{sysusers}"
    );
    // tmpfiles sets up every folder the daemon would otherwise create.
    let made = temp_dir();
    let spool = raccoond::spool::Spool::open(made.path(), false).unwrap_or_else(|e| panic!("{e}"));
    // The ledger's folder, made when the commit thread starts.
    drop(spool.open_ledger().unwrap_or_else(|e| panic!("{e}")));
    let mut daemon_dirs: Vec<String> = vec![SPOOL.to_string()];
    for e in fs::read_dir(made.path()).into_iter().flatten().flatten() {
        daemon_dirs.push(format!("{SPOOL}/{}", e.file_name().to_string_lossy()));
    }
    let mut tmpfiles_dirs: Vec<String> = tmpfiles_lines().into_iter().map(|l| l.path).collect();
    daemon_dirs.sort();
    tmpfiles_dirs.sort();
    assert_eq!(tmpfiles_dirs, daemon_dirs);
}

// ---- sd_notify ---------------------------------------------------------

#[test]
fn the_daemon_tells_systemd_it_is_ready_busy_alive_and_stopping() {
    let socket = NotifySocket::bind();
    let launched = Instant::now();
    let mut t = TestSpool::builder()
        .sh("slow", "sleep 0.2")
        .env("NOTIFY_SOCKET", socket.path_str())
        .env("WATCHDOG_USEC", "200000")
        .start();
    socket.expect("READY=1");
    let status = socket.expect_prefix("STATUS=");
    assert_eq!(status, "STATUS=0 running, 0 queued");

    // Counts change: STATUS follows.
    t.drop_job("busy.toml", "type = \"slow\"\n");
    socket.expect("STATUS=1 running, 0 queued");
    assert_eq!(status_of(&t.wait_record("busy")), "succeeded");
    socket.expect("STATUS=0 running, 0 queued");

    // Pings at half of WATCHDOG_USEC (100 ms): several by now, and never
    // more than the time since launch allows.
    wait_for("three watchdog pings", PROMPT, || {
        (socket.count("WATCHDOG=1") >= 3).then_some(())
    });
    let pings = socket.count("WATCHDOG=1") as u128;
    let most = launched.elapsed().as_millis() / 100 + 2;
    assert!(
        pings <= most,
        "{pings} pings in {:?}: faster than every 100 ms",
        launched.elapsed()
    );

    let exit = t.stop(PROMPT);
    assert!(exit.success(), "raccoond exited with {exit} after SIGTERM");
    socket.expect("STOPPING=1");
    assert!(
        socket
            .seen()
            .iter()
            .any(|m| m.starts_with("STATUS=") && m.ends_with(", stopping")),
        "no STATUS saying it stops: {:?}",
        socket.seen()
    );
}

/// What a reload does to jobs is in robust.rs; this is what systemd sees.
#[test]
fn sighup_is_bracketed_by_reloading_and_ready_even_when_the_file_is_bad() {
    let socket = NotifySocket::bind();
    let t = TestSpool::builder()
        .sh("hello", "echo hello")
        .env("NOTIFY_SOCKET", socket.path_str())
        .start();
    socket.expect("READY=1");

    // A good file: READY=1 comes once the new type is in force.
    let good = format!(
        "spool = \"spool\"\n{}[types.later]\ncommand = [\"/bin/true\"]\nuser = \"{}\"\n",
        TestSpool::builder().sh("hello", "echo hello").config_text(),
        me()
    );
    fs::write(&t.config, good).unwrap_or_else(|e| panic!("write config: {e}"));
    t.signal(Signal::SIGHUP);
    socket.expect("RELOADING=1");
    socket.expect("READY=1");
    t.drop_job("later.toml", "type = \"later\"\n");
    assert_eq!(status_of(&t.wait_record("later")), "succeeded");

    // A bad file: systemd must not be left waiting in "reloading".
    fs::write(&t.config, "spool = \"spool\"\ntimout = 3\n")
        .unwrap_or_else(|e| panic!("write config: {e}"));
    t.signal(Signal::SIGHUP);
    socket.expect("RELOADING=1");
    socket.expect("READY=1");
    assert!(
        t.log().contains("timout"),
        "the log does not name the bad key:\n{}",
        t.log()
    );
}

// ---- exit codes --------------------------------------------------------

#[test]
fn a_bad_configuration_exits_78_naming_the_file_and_the_key() {
    let dir = temp_dir();
    let file = dir.path().join("raccoond.toml");
    let cases = [
        ("timout = \"5s\"\n", "timout"),
        ("total = 0\n", "total"),
        (
            "[types.a]\ncommand = [\"/bin/true\"]\nnotify = \"sometimes\"\n",
            "notify",
        ),
        ("[http]\nlisten = \"0.0.0.0:8080\"\n", "token_file"),
        // A bad value is placed by line and column.
        ("keep = \"forever\"\n", "line 1, column 8"),
    ];
    for (text, names) in cases {
        fs::write(&file, text).unwrap_or_else(|e| panic!("write: {e}"));
        let ran = run(Command::new(raccoond_bin()).arg("--config").arg(&file));
        assert_eq!(
            ran.status.code(),
            Some(78),
            "{text:?}: {}\n{}",
            ran.status,
            ran.stderr
        );
        let file_name = file.display().to_string();
        assert!(
            ran.stderr.contains(&file_name) && ran.stderr.contains(names),
            "{text:?}: the message must name {file_name} and {names:?}:\n{}",
            ran.stderr
        );
    }
    let ran = run(Command::new(raccoond_bin())
        .arg("--config")
        .arg(dir.path().join("missing.toml")));
    assert_eq!(ran.status.code(), Some(78), "{}", ran.stderr);
    let ran = run(Command::new(raccoond_bin()).args([
        "--spool",
        "/nonexistent-raccoond-test",
        "--limit",
        "nosuch=2",
    ]));
    assert_eq!(ran.status.code(), Some(78), "{}", ran.stderr);
    assert!(ran.stderr.contains("nosuch"), "{}", ran.stderr);
}

#[test]
fn a_bad_command_line_exits_64_with_the_usage() {
    for args in [
        &["--total=many"][..],
        &["stray"],
        &["--nosuch"],
        &["--limit", "x"],
    ] {
        let ran = run(Command::new(raccoond_bin()).args(args));
        assert_eq!(
            ran.status.code(),
            Some(64),
            "{args:?}: {}\n{}",
            ran.status,
            ran.stderr
        );
        assert!(
            ran.stderr.contains("usage: raccoond"),
            "{args:?}:\n{}",
            ran.stderr
        );
    }
    let ran = run(Command::new(raccoond_bin()).arg("--help"));
    assert!(
        ran.status.success() && ran.stdout.contains("usage: raccoond"),
        "{}",
        ran.stdout
    );
    let ran = run(Command::new(raccoond_bin()).arg("--version"));
    assert!(ran.status.success(), "{}", ran.stderr);
    assert_eq!(
        ran.stdout.trim(),
        format!("raccoond {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_spool_that_cannot_be_made_exits_75() {
    let dir = temp_dir();
    let file = dir.path().join("a-file");
    fs::write(&file, "").unwrap_or_else(|e| panic!("write: {e}"));
    let ran = run(Command::new(raccoond_bin())
        .arg("--spool")
        .arg(file.join("spool")));
    assert_eq!(
        ran.status.code(),
        Some(75),
        "{}\n{}",
        ran.status,
        ran.stderr
    );
    assert!(ran.stderr.contains("a-file/spool"), "{}", ran.stderr);
}

// ---- sysusers and tmpfiles -------------------------------------------

#[test]
fn sysusers_creates_the_raccoon_user_and_group() {
    let sysusers = tool("systemd-sysusers", "systemd");
    let root = temp_dir();
    let ran = run(Command::new(sysusers)
        .arg("--dry-run")
        .arg(format!("--root={}", root.path().display()))
        .arg("-")
        .stdin(file_stdin("systemd/raccoond.sysusers")));
    assert!(
        ran.status.success(),
        "systemd-sysusers: {}\n{}",
        ran.status,
        ran.stderr
    );
    // Problems are reported as "-:LINE: ..." (with exit status 0 for some).
    assert!(!ran.stderr.contains("-:"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("Creating group 'raccoon'"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("Creating user 'raccoon'"),
        "{}",
        ran.stderr
    );
}

#[test]
fn tmpfiles_creates_the_spool_with_the_documented_modes() {
    let tmpfiles = tool("systemd-tmpfiles", "systemd");
    let (root, text, uid, gid) = fake_root();
    let ran = run(Command::new(tmpfiles)
        .arg("--create")
        .arg(format!("--root={}", root.path().display()))
        .arg("-")
        .stdin(text_stdin(&text)));
    assert!(
        ran.status.success() && ran.stderr.is_empty(),
        "systemd-tmpfiles: {}\n{}",
        ran.status,
        ran.stderr
    );
    // The modes raccoond(8) explains under PERMISSIONS.
    let want = [
        ("", 0o750),
        ("tmp", 0o1730),
        ("new", 0o1770),
        ("cancel", 0o1730),
        ("running", 0o750),
        ("done", 0o750),
    ];
    for (sub, mode) in want {
        let path = spool_in(root.path()).join(sub);
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(meta.is_dir(), "{}", path.display());
        assert_eq!(
            meta.mode() & 0o7777,
            mode,
            "{}: mode {:o}",
            path.display(),
            meta.mode() & 0o7777
        );
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{}", path.display());
    }
}

/// The modes at work: members of group raccoon submit (by hand and with
/// the client), list and read outcomes, but cannot remove what others put
/// in the spool or write the daemon's folders; everyone else sees nothing.
/// A task reaches its files through the spool only when its user is a
/// member.
#[test]
fn group_members_submit_and_read_outcomes_but_cannot_touch_others_jobs() {
    require_root("switching to test users");
    let tmpfiles = tool("systemd-tmpfiles", "systemd");
    let setpriv = tool("setpriv", "util-linux");
    // Two system users for tasks: the group raccoon of this test is
    // nobody's own group, so that nobody is a member and daemon is not.
    let user = |name: &str| {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("this test needs the system user {name}"))
    };
    let (nobody, daemon) = (user("nobody"), user("daemon"));
    let gid = nobody.gid.as_raw();
    assert_ne!(daemon.gid.as_raw(), gid);
    let (root, text, _, _) = fake_root_with_group(gid);
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    let ran = run(Command::new(tmpfiles)
        .arg("--create")
        .arg(format!("--root={}", root.path().display()))
        .arg("-")
        .stdin(text_stdin(&text)));
    assert!(ran.status.success(), "{}", ran.stderr);
    let spool = spool_in(root.path());
    let task = toml_str("echo done > \"$RACCOON_RESULT\" && touch \"$RACCOON_FILES/kept\"");
    // Runs until the end of the test.
    let _daemon = TestSpool::builder()
        .sh("hello", "echo hello")
        .ty(
            "as_member",
            &format!("command = [\"/bin/sh\", \"-c\", {task}]\nuser = \"nobody\""),
        )
        .ty(
            "as_outsider",
            &format!("command = [\"/bin/sh\", \"-c\", {task}]\nuser = \"daemon\""),
        )
        .arg("--spool")
        .arg(&spool.display().to_string())
        .start();

    // Unused ids: two members of the spool's group and one outsider.
    let (ann, bob, eve) = (64_101, 64_102, 64_103);
    let as_user = |uid: u32, groups: &str, script: &str| -> Ran {
        run(Command::new(&setpriv)
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg(format!("--groups={groups}"))
            .args(["/bin/sh", "-c", script])
            .current_dir("/")
            .env("S", &spool)
            .env("RACCOON_SPOOL", &spool)
            .env("RACCOON", raccoon_bin()))
    };
    let member = gid.to_string();

    let ok = as_user(
        ann,
        &member,
        "printf 'type = \"hello\"\\n' > $S/tmp/a.part && mv $S/tmp/a.part $S/new/ann.toml",
    );
    assert!(ok.status.success(), "a member cannot submit: {}", ok.stderr);
    // The client fsyncs new/ after its rename: that needs read permission.
    let ok = as_user(ann, &member, "$RACCOON submit hello --id ann2 --wait");
    assert!(
        ok.status.success() && ok.stdout == "ann2\n",
        "a member cannot submit with raccoon: {}\n{}{}",
        ok.status,
        ok.stdout,
        ok.stderr
    );
    // Dot-files in new/ are drafts the daemon leaves alone.
    let ok = as_user(
        bob,
        &member,
        "echo draft > $S/tmp/bob.part && echo draft > $S/new/.bob-draft",
    );
    assert!(ok.status.success(), "{}", ok.stderr);
    for script in [
        "ls $S/tmp",
        "ls $S/cancel",
        "rm -f $S/tmp/bob.part",
        "mv $S/tmp/bob.part $S/new/stolen.toml",
        "rm -f $S/new/.bob-draft",
        "echo forged > $S/new/.bob-draft",
        "touch $S/done/forged.toml",
        "touch $S/running/forged.toml",
    ] {
        let denied = as_user(ann, &member, script);
        assert!(!denied.status.success(), "a member could: {script}");
    }
    assert!(spool.join("tmp/bob.part").exists(), "bob's file is gone");
    assert_eq!(
        fs::read_to_string(spool.join("new/.bob-draft"))
            .ok()
            .as_deref(),
        Some("draft\n")
    );

    let record = wait_record_in(&spool, "ann");
    assert_eq!(status_of(&record), "succeeded", "{record:?}");
    for script in [
        "ls $S/new $S/running $S/done",
        "cat $S/done/ann.toml $S/report.html",
        "test \"$($RACCOON output ann)\" = hello",
        "$RACCOON list | grep -Eq '^ann2[[:space:]]+hello[[:space:]]+succeeded'",
        "$RACCOON status ann",
        "touch $S/cancel/ann",
    ] {
        let ok = as_user(ann, &member, script);
        assert!(
            ok.status.success(),
            "a member cannot: {script}: {}",
            ok.stderr
        );
    }
    for script in [
        "ls $S",
        "cat $S/done/ann.toml",
        "cat $S/report.html",
        "touch $S/new/x.toml",
        "$RACCOON submit hello",
        "$RACCOON status ann",
    ] {
        let denied = as_user(eve, &eve.to_string(), script);
        assert!(!denied.status.success(), "an outsider could: {script}");
    }

    for (id, kind) in [("member", "as_member"), ("outsider", "as_outsider")] {
        fs::write(spool.join("tmp").join(id), format!("type = \"{kind}\"\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        fs::rename(
            spool.join("tmp").join(id),
            spool.join("new").join(format!("{id}.toml")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let member = wait_record_in(&spool, "member");
    assert_eq!(status_of(&member), "succeeded", "{member:?}");
    assert_eq!(
        member.get("result").and_then(|v| v.as_str()),
        Some("done\n")
    );
    assert!(spool.join("done/member.files/kept").exists());
    let outsider = wait_record_in(&spool, "outsider");
    assert_eq!(status_of(&outsider), "failed", "{outsider:?}");
    let err = fs::read_to_string(spool.join("done/outsider.err")).unwrap_or_default();
    assert!(err.contains("Permission denied"), "{err}");
}

// ---- man pages ---------------------------------------------------------

#[test]
fn every_man_page_lints_clean_with_mandoc_and_groff() {
    let mandoc = tool("mandoc", "mandoc");
    let groff = tool("groff", "groff");
    for page in MAN_PAGES {
        let path = repo(page);
        let ran = run(Command::new(&mandoc)
            .args(["-Tlint", "-W", "warning"])
            .arg(&path));
        assert!(
            ran.status.success() && ran.stdout.is_empty() && ran.stderr.is_empty(),
            "mandoc -Tlint {page}: {}\n{}{}",
            ran.status,
            ran.stdout,
            ran.stderr
        );
        let ran = run(Command::new(&groff).args(["-man", "-ww", "-z"]).arg(&path));
        assert!(
            ran.status.success() && ran.stderr.is_empty(),
            "groff -man -ww -z {page}: {}\n{}",
            ran.status,
            ran.stderr
        );
    }
}

#[test]
fn man_renders_every_page() {
    let man = tool("man", "man-db");
    for (page, title) in [
        ("man/raccoond.8", "RACCOOND(8)"),
        ("man/raccoond.toml.5", "RACCOOND.TOML(5)"),
        ("man/raccoon.1", "RACCOON(1)"),
    ] {
        let ran = run(Command::new(&man)
            .arg("-l")
            .arg(repo(page))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8"));
        assert!(
            ran.status.success(),
            "man -l {page}: {}\n{}",
            ran.status,
            ran.stderr
        );
        assert!(
            ran.stdout.starts_with(title),
            "man -l {page}:\n{}",
            ran.stdout
        );
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"] {
            assert!(
                ran.stdout.lines().any(|l| l == section),
                "{page} has no {section}"
            );
        }
    }
}

#[test]
fn raccoond_8_documents_every_option_and_exit_code() {
    let page = repo_file("man/raccoond.8");
    let text = flatten_roff(&page);
    for word in raccoond::cli::USAGE.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
        let option = word.split('=').next().unwrap_or("");
        if option.starts_with("--") && option.len() > 2 {
            // --TYPE=N is --\fItype\fP=\fIn\fP: placeholders are lower case.
            let option = option.to_lowercase();
            assert!(
                text.contains(&option),
                "raccoond(8) does not mention {option}"
            );
        }
    }
    for code in ["64", "75", "78"] {
        assert!(
            tags(&page).contains(&code.to_string()),
            "raccoond(8) has no entry for exit status {code}"
        );
    }
    for signal in ["SIGTERM", "SIGINT", "SIGHUP"] {
        assert!(
            tag_lines(&page).iter().any(|t| t.contains(signal)),
            "raccoond(8) has no entry for {signal}"
        );
    }
}

#[test]
fn raccoond_toml_5_documents_every_key() {
    let page = repo_file("man/raccoond.toml.5");
    let documented = tags(&page);
    let me = me();
    let over = raccoond::config::Overrides::default();
    // serde lists every field a table accepts when it meets an unknown one.
    for table in [
        "",
        "[http]\n",
        "[mail]\n",
        "[types.a]\ncommand = [\"/bin/true\"]\n",
        "[schedules.a]\n",
    ] {
        let text = format!("{table}zz_not_a_key = 1\nuser = \"{me}\"\n");
        let err = raccoond::config::Config::from_text(None, &text, Path::new("/"), &over)
            .err()
            .unwrap_or_else(|| panic!("{text:?} was accepted"))
            .0;
        for key in expected_fields(&err) {
            if ["http", "mail", "types", "schedules"].contains(&key.as_str()) {
                let section = format!(".SH THE [{key}");
                assert!(
                    page.contains(&section),
                    "raccoond.toml(5) has no section for [{key}]"
                );
            } else {
                assert!(
                    documented.contains(&key),
                    "raccoond.toml(5) does not document {table:?} key {key}"
                );
            }
        }
    }
    let config_text = format!("[types.a]\ncommand = [\"/bin/true\"]\nuser = \"{me}\"\n");
    let config = raccoond::config::Config::from_text(None, &config_text, Path::new("/"), &over)
        .unwrap_or_else(|e| panic!("{e}"));
    let err = raccoond::job::parse(b"type = \"a\"\nzz_not_a_key = 1\n", &config)
        .err()
        .unwrap_or_else(|| panic!("an unknown job key was accepted"));
    let job_keys = expected_fields(&err);
    assert!(job_keys.contains(&"type".to_string()), "{err}");
    for key in job_keys {
        assert!(
            documented.contains(&key),
            "raccoond.toml(5) does not document job key {key}"
        );
    }
    for key in [
        "id",
        "type",
        "status",
        "submitted",
        "started",
        "finished",
        "expires",
        "attempts",
        "exit_code",
        "signal",
        "error",
        "submitted_as",
        "email",
        "mail",
        "priority",
        "args",
        "params",
        "result",
        "source",
    ] {
        assert!(
            documented.contains(&key.to_string()),
            "raccoond.toml(5) does not document record key {key}"
        );
    }
}

// ---- helpers -----------------------------------------------------------

/// A bound notify socket standing in for systemd, with what it received.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    seen: std::cell::RefCell<Vec<String>>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = temp_dir();
        let path = dir.path().join("notify");
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
        NotifySocket {
            _dir: dir,
            path,
            socket,
            seen: Default::default(),
        }
    }

    fn path_str(&self) -> &str {
        self.path
            .to_str()
            .unwrap_or_else(|| panic!("a temporary path that is not UTF-8"))
    }

    /// Reads what has arrived, waiting at most one read timeout.
    fn pump(&self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            // One datagram may carry several assignments, one per line.
            self.seen
                .borrow_mut()
                .extend(text.lines().map(str::to_string));
            self.socket
                .set_nonblocking(true)
                .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
        }
        self.socket
            .set_nonblocking(false)
            .unwrap_or_else(|e| panic!("set_nonblocking: {e}"));
    }

    fn seen(&self) -> Vec<String> {
        self.pump();
        self.seen.borrow().clone()
    }

    fn count(&self, message: &str) -> usize {
        self.seen().iter().filter(|m| *m == message).count()
    }

    /// Waits for a message that matches, consuming it and what came before.
    fn take(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let found = poll_until(PROMPT, || {
            self.pump();
            let mut seen = self.seen.borrow_mut();
            let i = seen.iter().position(|m| matches(m))?;
            let found = seen[i].clone();
            // Keep watchdog pings for counting; drop the rest up to here.
            let mut rest: Vec<String> = seen.drain(..=i).filter(|m| m == "WATCHDOG=1").collect();
            rest.append(&mut seen);
            *seen = rest;
            Some(found)
        });
        found.unwrap_or_else(|| panic!("no {what} within {PROMPT:?}; received {:?}", self.seen()))
    }

    fn expect(&self, message: &str) {
        self.take(message, |m| m == message);
    }

    fn expect_prefix(&self, prefix: &str) -> String {
        self.take(&format!("{prefix}..."), |m| m.starts_with(prefix))
    }
}

/// Waits for a record in a spool other than the test's own.
fn wait_record_in(spool: &Path, id: &str) -> toml::Table {
    let path = spool.join("done").join(format!("{id}.toml"));
    wait_for(&format!("the record of {id}"), PROMPT, || {
        let text = fs::read_to_string(&path).ok()?;
        toml::from_str(&text).ok()
    })
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn repo_file(rel: &str) -> String {
    fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("raccoond-ops.")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot make a temporary folder: {e}"))
}

fn file_stdin(rel: &str) -> Stdio {
    Stdio::from(fs::File::open(repo(rel)).unwrap_or_else(|e| panic!("open {rel}: {e}")))
}

/// Text as standard input, through a temporary file (no pipe to feed).
fn text_stdin(text: &str) -> Stdio {
    let mut f = tempfile::tempfile().unwrap_or_else(|e| panic!("tempfile: {e}"));
    use std::io::{Seek, Write};
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    f.rewind().unwrap_or_else(|e| panic!("rewind: {e}"));
    Stdio::from(f)
}

/// The value of `Key=` in a unit file (the last one wins, as in systemd).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .trim()
        .to_string()
}

/// One `d` line of the tmpfiles file.
struct TmpfilesLine {
    path: String,
}

fn tmpfiles_lines() -> Vec<TmpfilesLine> {
    let text = repo_file("systemd/raccoond.tmpfiles");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() == 6 && f[0] == "d", "unexpected tmpfiles line: {l}");
            TmpfilesLine {
                path: f[1].to_string(),
            }
        })
        .collect()
}

/// An alternate root for systemd-tmpfiles, with a group `raccoon`, and the
/// tmpfiles text to apply there; with the uid and gid the folders must get.
/// As root the file is used as it is. Otherwise its owner `root` becomes
/// the test's user and `raccoon` its group, since only root may chown.
fn fake_root() -> (tempfile::TempDir, String, u32, u32) {
    fake_root_with_group(if is_root() {
        4242
    } else {
        nix::unistd::getgid().as_raw()
    })
}

/// [`fake_root`] with the given gid for group raccoon (as root).
fn fake_root_with_group(raccoon_gid: u32) -> (tempfile::TempDir, String, u32, u32) {
    let root = temp_dir();
    let etc = root.path().join("etc");
    fs::create_dir(&etc).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let text = repo_file("systemd/raccoond.tmpfiles");
    let (text, uid, gid) = if is_root() {
        (text, 0, raccoon_gid)
    } else {
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let me = me();
        fs::write(
            etc.join("passwd"),
            format!("{me}:x:{uid}:{gid}::/:/bin/sh\n"),
        )
        .unwrap_or_else(|e| panic!("write passwd: {e}"));
        (
            text.replace(" root raccoon ", &format!(" {me} raccoon ")),
            uid,
            gid,
        )
    };
    fs::write(etc.join("group"), format!("raccoon:x:{gid}:\n"))
        .unwrap_or_else(|e| panic!("write group: {e}"));
    (root, text, uid, gid)
}

fn spool_in(root: &Path) -> PathBuf {
    root.join(SPOOL.trim_start_matches('/'))
}

/// The fields in serde's "unknown field `x`, expected one of `a`, `b`".
fn expected_fields(message: &str) -> Vec<String> {
    let list = message
        .split_once("expected one of ")
        .or_else(|| message.split_once("expected "))
        .map_or("", |(_, rest)| rest);
    list.split(", ")
        .filter_map(|f| f.trim().strip_prefix('`')?.split('`').next())
        .map(str::to_string)
        .collect()
}

/// The tag lines of `.TP` and `.TQ` entries in a man page (option names,
/// keys, exit codes, signals), as plain text.
fn tag_lines(page: &str) -> Vec<String> {
    let lines: Vec<&str> = page.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0].starts_with(".TP") || w[0].starts_with(".TQ"))
        .map(|w| flatten_roff(w[1]))
        .collect()
}

/// The first word of each tag: what an entry is about.
fn tags(page: &str) -> Vec<String> {
    tag_lines(page)
        .iter()
        .map(|t| t.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Roff source as plain text, near enough to search: font macros joined
/// as roff joins them, font escapes removed, `\-` as `-`.
fn flatten_roff(src: &str) -> String {
    src.lines()
        .map(|l| {
            let text = match l.strip_prefix('.') {
                None => l.to_string(),
                Some(rest) => {
                    let (name, args) = rest.split_once(' ').unwrap_or((rest, ""));
                    let args = roff_args(args);
                    // .BI, .BR, .IR ... alternate fonts with no space between.
                    let alternating = name.len() == 2 && name.chars().all(|c| "BIR".contains(c));
                    args.join(if alternating { "" } else { " " })
                }
            };
            text.replace("\\-", "-")
                .replace("\\fB", "")
                .replace("\\fI", "")
                .replace("\\fR", "")
                .replace("\\fP", "")
                .replace("\\&", "")
                .replace("\\(dq", "\"")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A macro line's arguments: words, or "quoted strings" with spaces.
fn roff_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
        } else if c == '"' {
            chars.next();
            out.push(chars.by_ref().take_while(|&c| c != '"').collect());
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(word);
        }
    }
    out
}
