//! The report as users open it: `spool/report.html` from `file://` in a
//! real browser, and `GET /` over HTTP.

// Tests may unwrap: a panic is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::http::{addr, get, submit};
use crate::support::*;

const XSS: &str = "<script>alert(1)</script>";

/// Waits until report.html mentions every one of `ids`.
pub(crate) fn wait_report(t: &TestSpool, ids: &[&str]) -> String {
    wait_for("report.html to list the jobs", PROMPT, || {
        let html = std::fs::read_to_string(t.path("report.html")).ok()?;
        ids.iter().all(|id| html.contains(id)).then_some(html)
    })
}

/// The text of `<section id="NAME">` in a page.
pub(crate) fn section<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("<section id=\"{name}\">"))
        .unwrap_or_else(|| panic!("no section {name} in\n{html}"));
    let len = html[start..].find("</section>").unwrap();
    &html[start..start + len]
}

#[test]
fn job_data_never_reaches_the_report_unescaped() {
    let t = TestSpool::builder()
        .sh("hello", "echo \"$RACCOON_PARAM_TITLE\"")
        .http()
        .start();
    let a = addr(&t);
    let id = submit(&a, &json!({"type": "hello", "params": {"title": XSS}}));
    // A file whose name is markup: it gets a fresh id, and keeps its name
    // in the record.
    t.drop_job(
        "<b onmouseover=alert(2)>.toml",
        &format!(
            "type = \"hello\"\nparams = {{ title = {} }}\n",
            toml_str(XSS)
        ),
    );
    // A job whose type is markup: rejected, and its record (and so the
    // report's row) keeps the type it asked for.
    t.drop_job("typed.toml", &format!("type = {}\n", toml_str(XSS)));
    assert_eq!(status_of(&t.wait_record(&id)), "succeeded");
    assert_eq!(status_of(&t.wait_record("typed")), "rejected");
    wait_for("the dropped jobs' records", PROMPT, || {
        (t.records().len() == 3).then_some(())
    });
    let other = t
        .records()
        .into_iter()
        .find(|(i, _)| *i != id && i != "typed")
        .unwrap()
        .0;

    let file = wait_report(&t, &[&id, &other, "typed"]);
    let served = get(&a, "/");
    served.expect(200);
    assert_eq!(
        served.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for html in [file, served.text()] {
        for raw in [XSS, "<b onmouseover"] {
            assert!(!html.contains(raw), "{raw:?} reached the page raw:\n{html}");
        }
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "the rejected job's type, escaped:\n{html}"
        );
        assert!(
            !html.to_lowercase().contains("<script"),
            "the report needs no script"
        );
        assert!(html.contains("<meta http-equiv=\"refresh\""));
    }
    // Nor does it reach /metrics: a type no configuration names is
    // counted under an empty label, so junk cannot add series.
    let m = get(&a, "/metrics").text();
    assert!(
        m.contains("raccoond_finished_total{type=\"\",status=\"rejected\"} 1"),
        "{m}"
    );
    assert!(!m.contains("<script>"), "{m}");
    // The output itself holds the markup, and is served as plain text.
    let out = get(&a, &format!("/jobs/{id}/output"));
    assert_eq!(out.text(), format!("{XSS}\n"));
    assert!(
        out.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(out.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn a_real_browser_shows_running_queued_and_finished_jobs_with_working_links() {
    let chromium = browser();
    let t = TestSpool::builder()
        .sh("quick", "echo quick output")
        .ty("slow", "command = [\"/bin/sleep\", \"30\"]\nlimit = 1")
        .http()
        .start();
    let a = addr(&t);
    let quick = submit(&a, &json!({"type": "quick"}));
    assert_eq!(status_of(&t.wait_record(&quick)), "succeeded");
    let running = submit(&a, &json!({"type": "slow"}));
    wait_for("the slow job to run", PROMPT, || {
        (get(&a, &format!("/jobs/{running}")).json()["status"] == "running").then_some(())
    });
    let queued = submit(&a, &json!({"type": "slow", "priority": 2}));
    wait_report(&t, &[&quick, &running, &queued]);

    let report = t.path("report.html");
    let dom = dump_dom(&chromium, &report);
    assert!(dom.contains("raccoond"), "{dom}");
    let run = section(&dom, "running");
    assert!(
        run.contains(&running) && !run.contains(&queued),
        "running section:\n{run}"
    );
    let q = section(&dom, "queued");
    assert!(
        q.contains(&queued) && !q.contains(&running),
        "queued section:\n{q}"
    );
    let fin = section(&dom, "finished");
    assert!(
        fin.contains(&quick) && fin.contains("succeeded"),
        "finished section:\n{fin}"
    );
    let types = section(&dom, "types");
    assert!(
        types.contains("slow") && types.contains("quick"),
        "types section:\n{types}"
    );

    // The links are relative: from file:// they open the spool's files…
    let link = format!("href=\"done/{quick}.out\"");
    assert!(fin.contains(&link), "{link} in\n{fin}");
    let target = report.parent().unwrap().join(format!("done/{quick}.out"));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "quick output\n");
    assert!(
        run.contains(&format!("href=\"running/{running}.out\"")),
        "{run}"
    );
    // …and over HTTP the same paths answer next to `/`.
    let page = get(&a, "/").text();
    assert!(page.contains(&link), "{page}");
    assert_eq!(
        get(&a, &format!("/done/{quick}.out")).text(),
        "quick output\n"
    );
    assert_eq!(get(&a, &format!("/running/{running}.out")).status, 200);
}

#[test]
fn what_a_task_used_shows_in_its_row_per_type_in_the_api_and_the_client() {
    let chromium = browser();
    let t = TestSpool::builder()
        .ty(
            "burn",
            // Half a second of CPU however busy the machine is.
            "command = [\"python3\", \"-c\", \"import time\\nwhile time.process_time() < 0.5: pass\"]",
        )
        .http()
        .start();
    let a = addr(&t);
    let id = submit(&a, &json!({"type": "burn"}));
    assert_eq!(status_of(&t.wait_record(&id)), "succeeded");
    let rec = raccoond::record::Record::from_toml(&t.read(&format!("done/{id}.toml"))).unwrap();
    let used = rec.usage.expect("the record has [usage]");
    assert!(used.cpu_seconds >= 0.4, "{used:?}");

    // The API: `usage` is an object with the record's figures.
    let v = get(&a, &format!("/jobs/{id}")).json();
    assert!(v["usage"].is_object(), "{v}");
    assert_eq!(v["usage"]["cpu_seconds"].as_f64(), Some(used.cpu_seconds));
    assert_eq!(
        v["usage"]["max_rss_bytes"].as_u64(),
        Some(used.max_rss_bytes)
    );

    // The report: in the job's row, compact, and per type over the hour.
    let html = wait_for("the report to list the job as finished", PROMPT, || {
        let html = std::fs::read_to_string(t.path("report.html")).ok()?;
        section(&html, "finished").contains(&id).then_some(html)
    });
    let fin = section(&html, "finished");
    let row = fin
        .split("<tr")
        .find(|r| r.contains(&id))
        .unwrap_or_else(|| panic!("no row for {id}:\n{fin}"));
    let brief = report_text(&used.brief());
    assert!(row.contains(&brief), "{brief:?} not in its row:\n{row}");
    assert!(brief.contains("MiB"), "{brief}");
    let hour = section(&html, "hour");
    let cpu = raccoond::time::format_duration(used.cpu().unwrap());
    assert!(hour.contains(&format!(">{cpu} / {cpu}</td>")), "{hour}");

    // The client: one line for status, a line of words for show.
    let o = t.client(&["status", &id]);
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(line.contains(&format!(" cpu={cpu} max_rss=")), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    let o = t.client(&["show", &id]);
    let shown = String::from_utf8_lossy(&o.stdout);
    let want = format!(" {}\n", used.summary());
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("used ") && format!("{l}\n").ends_with(&want)),
        "no used line of {want:?}:\n{shown}"
    );

    // The new columns widen nothing: no sideways scroll at 1200 pixels or
    // on a phone.
    for width in [1200u32, 500] {
        let l = layout(&chromium, &t, &html, width);
        assert!(
            l["page"].as_u64().unwrap() <= u64::from(width),
            "{width}: the page is wider: {l}"
        );
        assert_eq!(l["over"], 0, "{width}: a section overflows: {l}");
    }
}

/// Text as the report writes it (the middle dot as it is, markup escaped).
fn report_text(s: &str) -> String {
    raccoond::report::escape(s)
}

/// How a page lays out in Chromium `width` pixels wide: the page's scroll
/// width (`page`), and how far each section's content overflows its box
/// (`by`, by id; the most in `over`): what would scroll sideways. The
/// report runs no script: a copy of it gets a probe that writes these
/// into its title.
pub(crate) fn layout(chromium: &Path, t: &TestSpool, html: &str, width: u32) -> serde_json::Value {
    let probe = "<script>var r={page:document.documentElement.scrollWidth,over:0,by:{}};\
        document.querySelectorAll('section').forEach(function(s){\
        var o=s.scrollWidth-s.clientWidth;r.by[s.id]=o;r.over=Math.max(r.over,o);});\
        document.title='layout '+JSON.stringify(r);</script></body>";
    let copy = t.dir().join("probe.html");
    std::fs::write(&copy, html.replace("</body>", probe)).unwrap();
    let dom = dump_dom_at(chromium, &copy, width);
    let title = dom
        .split("<title>layout ")
        .nth(1)
        .and_then(|r| r.split("</title>").next())
        .unwrap_or_else(|| panic!("no layout in the title:\n{dom}"));
    serde_json::from_str(title).unwrap()
}

/// Chromium (tests/run installs it; the test fails when it is missing).
pub(crate) fn browser() -> PathBuf {
    tool("chromium", "chromium")
}

/// The DOM Chromium builds from a file, with a deadline.
pub(crate) fn dump_dom(chromium: &Path, page: &Path) -> String {
    dump_dom_at(chromium, page, 1200)
}

/// The DOM Chromium builds from a file in a window `width` pixels wide
/// (headless Chromium makes it at least 500), with a deadline.
pub(crate) fn dump_dom_at(chromium: &Path, page: &Path, width: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},800"))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let limit = Duration::from_secs(25);
    let Some(status) = poll_until(limit, || child.try_wait().unwrap()) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "chromium took more than {limit:?} to dump {}",
            page.display()
        );
    };
    let dom = reader.join().unwrap().unwrap();
    assert!(status.success(), "chromium failed with {status}");
    dom
}
