//! A newcomer's first hour: the client refuses a bad job at once, lists the
//! types, shows a job whole, retries one, prints tables and completions;
//! the report draws the last hour and keeps long errors in their place;
//! `/metrics` passes `promtool check metrics`.

// Tests may unwrap: a panic is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use serde_json::{Value, json};

use crate::http::{addr, get, post, submit};
use crate::report::{browser, dump_dom, dump_dom_at, section, wait_report};
use crate::support::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The client's exit code, stdout and stderr.
fn ran(o: &Output) -> (Option<i32>, String, String) {
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

/// A daemon with a type whose params are declared and used by its
/// command, one with free params and args, and HTTP.
fn spool_with_types() -> TestSpool {
    TestSpool::builder()
        .top("total = 4")
        .ty(
            "report",
            "command = [\"/bin/echo\", \"rows\", \"{num}\"]\nlimit = 2\nparams = { num = \"integer\", title = \"string?\" }",
        )
        .ty("free", "command = [\"/bin/echo\"]\naccept_args = true")
        .http()
        .start()
}

#[test]
fn the_client_refuses_at_once_what_the_daemon_would_reject_in_the_words_of_http() {
    let t = spool_with_types();
    let a = addr(&t);
    let cases: [(&[&str], Value); 4] = [
        (&["submit", "nosuchtype"], json!({"type": "nosuchtype"})),
        (
            &["submit", "report", "num=abc"],
            json!({"type": "report", "params": {"num": "abc"}}),
        ),
        (&["submit", "report"], json!({"type": "report"})),
        (
            &["submit", "report", "num=1", "colour=red"],
            json!({"type": "report", "params": {"num": 1, "colour": "red"}}),
        ),
    ];
    for (args, body) in cases {
        let http = post(&a, "/jobs", &body);
        http.expect(422);
        let words = http.json()["error"].as_str().unwrap().to_string();
        let (code, out, err) = ran(&t.client(args));
        assert_eq!(code, Some(65), "{args:?}: {out}{err}");
        assert_eq!(err, format!("raccoon: {words}\n"), "{args:?}");
        assert!(out.is_empty(), "{args:?}: no id is printed: {out}");
    }
    assert!(
        t.ls("new").is_empty(),
        "nothing was queued: {:?}",
        t.ls("new")
    );
    assert!(t.records().is_empty(), "nothing was rejected later");
    // A good job goes through, checked by the same rules, silently.
    let ok = t.client(&["submit", "report", "num=3", "--wait"]);
    let (code, out, err) = ran(&ok);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn without_a_current_description_the_client_warns_and_submits_anyway() {
    let mut t = spool_with_types();
    let described = t.path("types.json");
    assert!(
        described.is_file(),
        "the daemon describes its types at start"
    );

    // The daemon is gone: what it said may no longer hold.
    t.kill9();
    let (code, out, err) = ran(&t.client(&["submit", "nosuchtype", "--id", "stale"]));
    assert_eq!((code, out.as_str()), (Some(0), "stale\n"), "{err}");
    assert!(
        err.starts_with("raccoon: warning: the types description is stale")
            && err.contains("no longer running")
            && err.contains("not checked"),
        "{err}"
    );

    // No description at all (a daemon that never started here).
    std::fs::remove_file(&described).unwrap();
    let (code, out, err) = ran(&t.client(&["submit", "report", "num=1", "--id", "missing"]));
    assert_eq!((code, out.as_str()), (Some(0), "missing\n"), "{err}");
    assert!(err.contains("types.json is missing"), "{err}");
    assert_eq!(t.ls("new"), ["missing.toml", "stale.toml"]);

    // The next daemon describes itself again and judges both.
    t.launch();
    assert!(described.is_file());
    assert_eq!(status_of(&t.wait_record("stale")), "rejected");
    assert_eq!(status_of(&t.wait_record("missing")), "succeeded");
}

#[test]
fn types_lists_every_type_with_its_limit_params_and_args_and_follows_a_reload() {
    let t = spool_with_types();
    let (code, out, err) = ran(&t.client(&["types"]));
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "TYPE    LIMIT  PARAMS                     ARGS",
            "free    4      any                        yes",
            "report  2      num:integer title:string?  no",
        ],
        "{out}"
    );
    assert!(out.contains(&format!("(pid {} on ", t.pid())), "{out}");

    let v: Value = serde_json::from_slice(&t.client(&["--json", "types"]).stdout).unwrap();
    let report = &v["types"].as_array().unwrap()[1];
    assert_eq!(report["name"], "report");
    assert_eq!(report["placeholders"], json!(["num"]));
    assert_eq!(v["pid"], t.pid());

    // A new type, once the daemon has read its configuration again.
    let mut config = std::fs::read_to_string(&t.config).unwrap();
    config.push_str(&format!(
        "[types.late]\ncommand = [\"/bin/true\"]\nuser = \"{}\"\nlimit = 5\n",
        me()
    ));
    std::fs::write(&t.config, config).unwrap();
    t.signal(nix::sys::signal::Signal::SIGHUP);
    let out = t.wait_logged("types to list the new type", PROMPT, || {
        let out = text(&t.client(&["types"]).stdout);
        out.lines().any(|l| l.starts_with("late ")).then_some(out)
    });
    assert!(out.contains("late    5      any"), "{out}");
    let (code, _, err) = ran(&t.client(&["submit", "late"]));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn show_gives_a_record_and_the_end_of_its_output_or_what_a_queued_job_waits_for() {
    let t = TestSpool::builder()
        .sh("count", "seq 1 30; echo oops >&2; exit 4")
        .ty("slow", "command = [\"/bin/sleep\", \"30\"]\nlimit = 1")
        .start();
    let id = text(&t.client(&["submit", "count", "n=7"]).stdout)
        .trim()
        .to_string();
    t.wait_record(&id);
    let (code, out, err) = ran(&t.client(&["show", &id, "--lines", "5"]));
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "status      failed (exit 4)",
        "error       exited with status 4",
        "params      {\"n\":7}",
        "output (last 5 lines):\n  26\n  27\n  28\n  29\n  30\n",
        "stderr (its last line):\n  oops\n",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    assert!(!out.contains("  25\n"), "{out}");
    let v: Value = serde_json::from_slice(&t.client(&["--json", "show", &id]).stdout).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["output_tail"].as_array().unwrap().len(), 10);

    // One slow job runs; behind it, by priority, two wait their turn; one
    // waits for its time.
    let submit = |args: &[&str]| {
        let o = t.client(args);
        assert!(o.status.success(), "{o:?}");
        text(&o.stdout).trim().to_string()
    };
    let first = submit(&["submit", "slow"]);
    t.wait_logged("the first slow job to run", PROMPT, || {
        t.path(&format!("running/{first}.toml"))
            .exists()
            .then_some(())
    });
    let low = submit(&["submit", "slow"]);
    let high = submit(&["submit", "slow", "--priority", "5"]);
    let later = format!(
        "type = \"slow\"\nnot_before = {}\n",
        raccoond::time::format_rfc3339(
            raccoond::time::now() + std::time::Duration::from_secs(3600)
        )
    );
    t.drop_job("later.toml", &later);
    let waits = |id: &str| {
        let out = text(&t.client(&["show", id]).stdout);
        out.lines()
            .find_map(|l| l.strip_prefix("waits for"))
            .map(|w| w.trim().to_string())
            .unwrap_or_else(|| panic!("no 'waits for' in\n{out}"))
    };
    assert_eq!(
        waits(&low),
        "1 slow job ahead of it (2 of 2 in line); 1 running, limit 1"
    );
    assert_eq!(
        waits(&high),
        "a free slot: no slow job is ahead of it (1 of 2 in line); 1 running, limit 1"
    );
    let w = waits("later");
    assert!(
        w.starts_with("its not_before, ") && w.contains(" UTC (in 59m"),
        "{w}"
    );
    let (code, out, _) = ran(&t.client(&["show", &first]));
    assert_eq!(code, Some(0));
    assert!(out.contains("status       running"), "{out}");
    let (code, _, err) = ran(&t.client(&["show", "no-such-job"]));
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "raccoon: no-such-job: no such job\n")
    );
}

#[test]
fn retry_submits_a_finished_job_again_as_it_was() {
    let t = TestSpool::builder()
        .sh("greet", "echo \"hello $RACCOON_PARAM_WHO\"")
        .ty("slow", "command = [\"/bin/sleep\", \"30\"]\nlimit = 1")
        .start();
    let first = text(
        &t.client(&[
            "submit",
            "greet",
            "who=world",
            "--email",
            "ann@example.com",
            "--priority",
            "3",
            "--wait",
        ])
        .stdout,
    )
    .trim()
    .to_string();
    let (code, out, err) = ran(&t.client(&["retry", &first, "--wait"]));
    assert_eq!(code, Some(0), "{err}");
    let again = out.trim().to_string();
    assert_ne!(again, first);
    let (a, b) = (t.wait_record(&first), t.wait_record(&again));
    for key in ["type", "params", "email", "priority", "status"] {
        assert_eq!(a.get(key), b.get(key), "{key}: {a:?} {b:?}");
    }
    assert_eq!(text(&t.client(&["output", &again]).stdout), "hello world\n");

    let running = text(&t.client(&["submit", "slow"]).stdout)
        .trim()
        .to_string();
    let (code, _, err) = ran(&t.client(&["retry", &running]));
    assert_eq!(code, Some(1));
    assert!(err.contains("only a finished job can be retried"), "{err}");
    let (code, _, _) = ran(&t.client(&["retry", "no-such-job"]));
    assert_eq!(code, Some(1));
}

/// The columns of a table line: where each starts, by its header.
fn starts(header: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut prev = ' ';
    for (i, c) in header.char_indices() {
        if c != ' ' && prev == ' ' {
            out.push(i);
        }
        prev = c;
    }
    out
}

#[test]
fn list_is_an_aligned_table_coloured_only_on_a_terminal_without_no_color() {
    let t = TestSpool::builder()
        .sh("ok", "true")
        .sh("a_longer_type", "exit 1")
        .start();
    for args in [
        &["submit", "ok", "--wait"][..],
        &["submit", "a_longer_type", "--wait"],
    ] {
        t.client(args);
    }
    t.drop_job("x.toml", "type = \"ok\"\ntimout = 1\n");
    t.wait_record("x");
    let (code, out, err) = ran(&t.client(&["list"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains('\x1b'), "no colour into a pipe: {out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let cols = starts(lines[0]);
    assert_eq!(cols.len(), 6, "ID TYPE STATUS WHEN (UTC) RAN: {}", lines[0]);
    for line in &lines[1..] {
        assert!(!line.ends_with(' '), "{line:?}");
        for &c in &cols[1..4] {
            assert!(
                line[..c].ends_with("  ") && !line[c..].starts_with(' '),
                "column at {c} in {line:?}\n{out}"
            );
        }
    }
    assert!(
        lines[1..].iter().any(|l| l.contains("  rejected  ")),
        "{out}"
    );

    // On a terminal (script(1) gives the client one), statuses have
    // colours, unless NO_COLOR says otherwise.
    let script = tool("script", "util-linux");
    let on_tty = |no_color: Option<&str>| {
        let mut c = Command::new(&script);
        c.args(["-qec"])
            .arg(format!("{} list", raccoon_bin()))
            .arg("/dev/null")
            .env("RACCOON_SPOOL", &t.spool)
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let r = run(&mut c);
        assert!(r.status.success(), "{}{}", r.stdout, r.stderr);
        r.stdout
    };
    let coloured = on_tty(None);
    assert!(
        coloured.contains("\x1b[32msucceeded\x1b[0m"),
        "{coloured:?}"
    );
    assert!(coloured.contains("\x1b[31mfailed\x1b[0m"), "{coloured:?}");
    let plain = on_tty(Some("1"));
    assert!(!plain.contains('\x1b'), "{plain:?}");
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(raccoon_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        let (code, out, err) = ran(&o);
        assert_eq!(code, Some(0), "{shell}: {err}");
        for word in ["submit", "retry", "spool"] {
            assert!(out.contains(word), "{shell}: no {word} in\n{out}");
        }
    }
    let o = Command::new(raccoon_bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_and_the_man_page_name_every_command() {
    let help = Command::new(raccoon_bin()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = text(&help.stdout);
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man/raccoon.1"),
    )
    .unwrap();
    let cli = raccoond::client::args::Cli::command();
    let names: Vec<&str> = cli
        .get_subcommands()
        .map(|c| c.get_name())
        .filter(|n| *n != "help")
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            help.contains(&format!("\n  {name} ")),
            "--help lacks {name}:\n{help}"
        );
        let documented = page.lines().any(|l| {
            [".B ", ".BI ", ".BR "]
                .iter()
                .any(|m| l.starts_with(&format!("{m}{name}")))
        });
        assert!(documented, "man/raccoon.1 documents no {name:?} command");
    }
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let promtool = tool("promtool", "prometheus");
    let t = TestSpool::builder()
        .sh("hello", "echo hi")
        .sh("broken", "exit 1")
        .http()
        .start();
    let a = addr(&t);
    for kind in ["hello", "broken"] {
        t.wait_record(&submit(&a, &json!({ "type": kind })));
    }
    // A rejected junk type is counted too (under an empty type).
    t.drop_job("junk.toml", "type = \"no\\\"such\"\n");
    t.wait_record("junk");
    let metrics = t.wait_logged("/metrics to count the junk", PROMPT, || {
        let m = get(&a, "/metrics").text();
        m.contains("status=\"rejected\"} 1").then_some(m)
    });
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let Some(status) = poll_until(PROMPT, || child.try_wait().unwrap()) else {
        let _ = child.kill();
        panic!("promtool did not finish within {PROMPT:?}");
    };
    let o = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "promtool check metrics: {status}\n{}{}\n{metrics}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// The `data-n` of each `<rect class="CLASS"` in a piece of SVG, summed.
fn segments(svg: &str, class: &str) -> u64 {
    svg.split(&format!("<rect class=\"{class}\" data-n=\""))
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn the_report_draws_the_last_hour_as_sixty_stacked_bars() {
    let chromium = browser();
    let t = TestSpool::builder()
        .sh("ok", "true")
        .sh("bad", "exit 2")
        .start();
    let mut ids = Vec::new();
    for kind in ["ok", "ok", "ok", "bad", "bad"] {
        let id = text(&t.client(&["submit", kind]).stdout).trim().to_string();
        ids.push(id);
    }
    for id in &ids {
        t.wait_record(id);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    wait_report(&t, &refs);
    let html = t.wait_logged("the report to count the five jobs", PROMPT, || {
        let html = std::fs::read_to_string(t.path("report.html")).ok()?;
        html.contains("Last hour <span class=\"count\">5</span>")
            .then_some(html)
    });
    assert!(!html.to_lowercase().contains("<script"), "no script");
    let dom = dump_dom(&chromium, &t.path("report.html"));
    let hour = section(&dom, "hour");
    assert_eq!(hour.matches("<svg").count(), 1, "{hour}");
    assert_eq!(hour.matches("<g class=\"minute\"").count(), 60, "{hour}");
    // Three successes and two failures, stacked where they finished
    // (this minute, or the one before when the minute turned meanwhile).
    assert_eq!(
        (segments(hour, "ok"), segments(hour, "bad")),
        (3, 2),
        "{hour}"
    );
    assert_eq!(segments(hour, "meh"), 0);
    let now = hour
        .split("data-age=\"0\"")
        .nth(1)
        .unwrap()
        .split("</g>")
        .next()
        .unwrap();
    let before = hour
        .split("data-age=\"1\"")
        .nth(1)
        .unwrap()
        .split("</g>")
        .next()
        .unwrap();
    assert_eq!(
        segments(now, "ok") + segments(before, "ok"),
        3,
        "this minute: {now}\nthe one before: {before}"
    );
    // Per type: two runs of bad, both failed.
    assert!(hour.contains(">2 (100%)</td>"), "{hour}");
    let failures = section(&dom, "failures");
    assert_eq!(failures.matches("<li>").count(), 2, "{failures}");
}

#[test]
fn a_two_thousand_character_error_does_not_widen_the_page() {
    let chromium = browser();
    let t = TestSpool::builder().sh("ok", "true").start();
    let long = "x".repeat(2000);
    t.drop_job("long.toml", &format!("type = \"{long}\"\n"));
    let rec = t.wait_record("long");
    assert!(rec["error"].as_str().unwrap().len() > 2000);
    wait_report(&t, &["long"]);
    // The report runs no script; a copy of it gets a probe that writes
    // the layout into the title: the page's scroll width, and for each
    // section how far its content overflows its box (what would scroll
    // sideways inside it).
    let html = std::fs::read_to_string(t.path("report.html")).unwrap();
    let probe = "<script>var r={page:document.documentElement.scrollWidth,over:0};\
        document.querySelectorAll('section').forEach(function(s){\
        r.over=Math.max(r.over,s.scrollWidth-s.clientWidth);});\
        document.title='layout '+JSON.stringify(r);</script></body>";
    let copy = t.dir().join("probe.html");
    std::fs::write(&copy, html.replace("</body>", probe)).unwrap();
    for width in [1200u32, 500] {
        let dom = dump_dom_at(&chromium, &copy, width);
        let title = dom
            .split("<title>layout ")
            .nth(1)
            .and_then(|r| r.split("</title>").next())
            .unwrap_or_else(|| panic!("no layout in the title:\n{dom}"));
        let layout: Value = serde_json::from_str(title).unwrap();
        let page = layout["page"].as_u64().unwrap();
        assert!(page <= u64::from(width), "{width}: the page is {page} wide");
        assert_eq!(layout["over"], 0, "{width}: a section overflows: {layout}");
    }
}
