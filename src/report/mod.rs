//! The static HTML report (SPEC §10): `spool/report.html`, also served at
//! `GET /`.
//!
//! Pure: a function of a [`Snapshot`] and `now`, no IO, no clock. One
//! self-contained page: inline CSS, no script, a `refresh` meta tag. Its
//! cost is O(rows): the snapshot carries at most [`ROWS`] jobs of each
//! kind and counts for the rest, so 100 000 queued jobs cost what 50 do.
//!
//! Links to output are relative (`done/<id>.out`, `running/<id>.out`): the
//! page lives in the spool folder, so they open the files themselves from
//! `file://`, and the HTTP server answers the same paths next to `/`.
//!
//! Every piece of job data goes through [`escape`] (text and attributes)
//! or `href_path` (link targets); nothing from a job reaches the page
//! raw.
//!
//! No snapshot and no `now` can make it panic: instants outside 1970–9999
//! print as the nearest end of that range (`time::format_rfc3339`), and
//! elapsed and relative times saturate at zero.
//!
//! [`ROWS`]: crate::status::ROWS

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::record::Status;
use crate::status::{FinishedRow, QueuedRow, RunningRow, ScheduleRow, Snapshot, TypeRow};
use crate::time;

mod hour;
use hour::{CSS_HOUR, failures};

/// Seconds between the page's own reloads.
pub const REFRESH_SECS: u32 = 5;

/// The page for a snapshot, as of `now`.
pub fn render(s: &Snapshot, now: SystemTime) -> String {
    let mut h = String::with_capacity(
        16 * 1024 + 600 * (s.running.len() + s.queued.len() + s.finished.len()),
    );
    // Writing into a String cannot fail.
    let _ = page(&mut h, s, now);
    h
}

fn page(h: &mut String, s: &Snapshot, now: SystemTime) -> std::fmt::Result {
    write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>raccoond: {} running, {} queued</title>\n<style>{CSS}{CSS_HOUR}</style>\n</head>\n<body>\n",
        s.running_total, s.queued_total
    )?;
    header(h, s, now)?;
    // What runs now beside the limits it runs under; then outcomes, which
    // readers look for first, above the (possibly long) queue.
    h.push_str("<div class=\"row\">\n");
    types(h, &s.types)?;
    running(h, &s.running, s.running_total, now)?;
    h.push_str("</div>\n");
    hour::hour(h, s, now)?;
    // The latest failures beside the latest finished: a failure stays in
    // sight after many successes have pushed it off the other list.
    h.push_str("<div class=\"row2\">\n");
    finished(h, &s.finished, now)?;
    failures(h, &s.history, now)?;
    h.push_str("</div>\n");
    schedules(h, &s.schedules, now)?;
    queued(h, s, now)?;
    write!(
        h,
        "<footer>This page reloads itself every {REFRESH_SECS} s. Times are UTC. \
         Output links open <code>done/</code> and <code>running/</code> next to this page.</footer>\n\
         </body>\n</html>\n"
    )
}

fn header(h: &mut String, s: &Snapshot, now: SystemTime) -> std::fmt::Result {
    h.push_str("<header>\n<h1>raccoond</h1>\n<p class=\"summary\">");
    write!(
        h,
        "<span class=\"big\">{}</span> running of {} · <span class=\"big\">{}</span> queued",
        s.running_total, s.total, s.queued_total
    )?;
    match s.generated {
        Some(g) => write!(
            h,
            " · <span title=\"{}\">as of {}</span>",
            escape(&time::format_rfc3339(g)),
            escape(&ago(now, g))
        )?,
        None => h.push_str(" · the daemon has published nothing yet"),
    }
    h.push_str("</p>\n");
    if s.draining {
        h.push_str(
            "<p class=\"banner\">Stopping: no new job starts; running jobs may finish.</p>\n",
        );
    }
    if s.paused_all {
        h.push_str(
            "<p class=\"banner\">Paused (<code>pause/ALL</code>): no new job starts until it is removed; running jobs go on.</p>\n",
        );
    } else {
        let paused: Vec<String> = s
            .types
            .iter()
            .filter(|t| t.paused)
            .map(|t| escape(&t.name))
            .collect();
        if !paused.is_empty() {
            writeln!(
                h,
                "<p class=\"banner\">Paused: {}. Their new jobs wait; running jobs go on.</p>",
                paused.join(", ")
            )?;
        }
    }
    h.push_str("</header>\n");
    Ok(())
}

fn types(h: &mut String, rows: &[TypeRow]) -> std::fmt::Result {
    h.push_str("<section id=\"types\">\n<h2>Types</h2>\n");
    if rows.is_empty() {
        h.push_str("<p class=\"empty\">No types are configured.</p>\n</section>\n");
        return Ok(());
    }
    h.push_str(
        "<table>\n<thead><tr><th>Type</th><th class=\"num\">Running</th><th class=\"num\">Limit</th>\
         <th class=\"num\">Queued</th><th class=\"load\">Load</th></tr></thead>\n<tbody>\n",
    );
    for t in rows {
        let pct = t
            .running
            .saturating_mul(100)
            .checked_div(t.limit)
            .unwrap_or(0)
            .min(100);
        writeln!(
            h,
            "<tr><td>{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"load\"><span class=\"bar\"><span style=\"width:{pct}%\"></span></span></td></tr>",
            escape(&t.name),
            if t.paused {
                " <span class=\"st warn\">paused</span>"
            } else {
                ""
            },
            t.running,
            t.limit,
            t.queued
        )?;
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn running(h: &mut String, rows: &[RunningRow], total: usize, now: SystemTime) -> std::fmt::Result {
    write!(
        h,
        "<section id=\"running\">\n<h2>Running <span class=\"count\">{total}</span></h2>\n"
    )?;
    if rows.is_empty() {
        h.push_str("<p class=\"empty\">No job is running.</p>\n</section>\n");
        return Ok(());
    }
    h.push_str(
        "<table>\n<thead><tr><th>Job</th><th>Type</th><th>By</th><th>Started</th><th class=\"num\">Elapsed</th>\
         <th class=\"num\">Attempt</th><th class=\"num\">PID</th><th>Output</th></tr></thead>\n<tbody>\n",
    );
    for r in rows {
        let elapsed = now.duration_since(r.started).unwrap_or(Duration::ZERO);
        writeln!(
            h,
            "<tr><td class=\"id\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&r.id),
            escape(&r.kind),
            escape(r.submitter.as_deref().unwrap_or("")),
            clock(r.started),
            escape(&time::format_duration(elapsed)),
            r.attempt,
            r.pid,
            output_links("running", &r.id)
        )?;
    }
    more(h, total, rows.len(), "running")?;
    h.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn queued(h: &mut String, s: &Snapshot, now: SystemTime) -> std::fmt::Result {
    let (rows, total): (&[QueuedRow], usize) = (&s.queued, s.queued_total);
    let paused = |kind: &str| s.paused_all || s.types.iter().any(|t| t.name == kind && t.paused);
    write!(
        h,
        "<section id=\"queued\">\n<h2>Queued <span class=\"count\">{total}</span></h2>\n"
    )?;
    if rows.is_empty() {
        h.push_str("<p class=\"empty\">The queue is empty.</p>\n</section>\n");
        return Ok(());
    }
    h.push_str(
        "<table>\n<thead><tr><th class=\"num\">#</th><th>Job</th><th>Type</th><th>By</th><th class=\"num\">Priority</th>\
         <th>Submitted</th><th>Not before</th><th>Waits for</th></tr></thead>\n<tbody>\n",
    );
    for (i, q) in rows.iter().enumerate() {
        let not_before = match q.not_before {
            Some(t) if t > now => format!(
                "{} (in {})",
                stamp(t),
                escape(&time::format_duration(
                    t.duration_since(now).unwrap_or_default()
                ))
            ),
            Some(t) => stamp(t),
            None => String::new(),
        };
        // Its parents first: they are what it waits for even once resumed.
        let waits = if !q.waiting_for.is_empty() {
            q.waiting_for
                .iter()
                .map(|p| escape(p))
                .collect::<Vec<_>>()
                .join(", ")
        } else if paused(&q.kind) {
            "pause".to_string()
        } else {
            String::new()
        };
        writeln!(
            h,
            "<tr><td class=\"num\">{}</td><td class=\"id\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td>{}</td><td>{not_before}</td><td class=\"why\">{waits}</td></tr>",
            i + 1,
            escape(&q.id),
            escape(&q.kind),
            escape(q.submitter.as_deref().unwrap_or("")),
            q.priority,
            stamp(q.submitted)
        )?;
    }
    more(h, total, rows.len(), "queued")?;
    h.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

/// The schedules: when each ticks, its next tick, the job of the newest
/// tick fired on the spool. No card when none is configured.
fn schedules(h: &mut String, rows: &[ScheduleRow], now: SystemTime) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    write!(
        h,
        "<section id=\"schedules\">\n<h2>Schedules <span class=\"count\">{}</span></h2>\n\
         <table>\n<thead><tr><th>Schedule</th><th>When</th><th>Type</th><th>Next tick</th>\
         <th>Last fired</th></tr></thead>\n<tbody>\n",
        rows.len()
    )?;
    for r in rows {
        let next = match r.next.map(|t| (t, time::until(now, t).as_secs())) {
            Some((t, 0)) => format!("{} (due now)", stamp(t)),
            Some((t, secs)) => format!(
                "{} (in {})",
                stamp(t),
                escape(&time::format_duration(Duration::from_secs(secs)))
            ),
            None => "none".to_string(),
        };
        writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{next}</td><td class=\"id\">{}</td></tr>",
            escape(&r.name),
            escape(&r.when),
            escape(&r.kind),
            r.last.as_deref().map_or_else(|| "—".to_string(), escape)
        )?;
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

fn finished(h: &mut String, rows: &[FinishedRow], now: SystemTime) -> std::fmt::Result {
    h.push_str("<section id=\"finished\">\n<h2>Latest finished</h2>\n");
    if rows.is_empty() {
        h.push_str("<p class=\"empty\">No finished jobs to show.</p>\n</section>\n");
        return Ok(());
    }
    h.push_str(
        "<table>\n<thead><tr><th>Job</th><th>Type</th><th>By</th><th>Status</th><th>Finished</th>\
         <th class=\"num\">Duration</th><th class=\"num\" title=\"CPU time · max RSS\">Used</th>\
         <th class=\"num\">Exit</th><th>Output</th></tr></thead>\n<tbody>\n",
    );
    for f in rows {
        let exit = match (&f.exit_code, &f.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(sig)) => escape(sig),
            (None, None) => String::new(),
        };
        let duration = f.duration.map(time::format_duration).unwrap_or_default();
        // CPU time and max RSS, compact; the words in its title.
        let used = match &f.usage {
            Some(u) => format!(
                "<span title=\"{}\">{}</span>",
                escape(&u.summary()),
                escape(&u.brief())
            ),
            None => String::new(),
        };
        // Why it failed, shortened (the whole text is in the record), on
        // a line of its own under the row: in a cell it widened its
        // column, or ran under the next one.
        let why = match &f.error {
            Some(e) if !e.is_empty() => {
                let short: String = e.chars().take(90).collect();
                let cut = if short.len() < e.len() { "…" } else { "" };
                format!(
                    "<tr class=\"why-row\"><td colspan=\"9\"><div class=\"why\">{}{cut}</div></td></tr>\n",
                    escape(&short)
                )
            }
            _ => String::new(),
        };
        // A job that never ran (rejected, cancelled while queued) has no
        // output to link to.
        let ran = f.duration.is_some() || f.exit_code.is_some() || f.signal.is_some();
        let links = if ran {
            output_links("done", &f.id)
        } else {
            String::new()
        };
        write!(
            h,
            "<tr{}><td class=\"id\">{}</td><td>{}</td><td>{}</td><td><span class=\"st {}\">{}</span></td>\
             <td><span title=\"{}\">{}</span></td><td class=\"num\">{}</td><td class=\"num used\">{used}</td>\
             <td class=\"num\">{exit}</td><td>{}</td></tr>\n{why}",
            if why.is_empty() {
                ""
            } else {
                " class=\"has-why\""
            },
            escape(&f.id),
            escape(&f.kind),
            escape(f.submitter.as_deref().unwrap_or("")),
            status_class(f.status),
            escape(f.status.as_str()),
            escape(&time::format_rfc3339(f.finished)),
            escape(&ago(now, f.finished)),
            escape(&duration),
            links
        )?;
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
    Ok(())
}

// ---- the last hour and the latest failures ------------------------------

/// The row that says how many are not shown.
fn more(h: &mut String, total: usize, shown: usize, what: &str) -> std::fmt::Result {
    if total > shown {
        write!(
            h,
            "<tr class=\"more\"><td colspan=\"8\">… and {} more {what} job{} not shown</td></tr>",
            group(total - shown),
            if total - shown == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

fn output_links(dir: &str, id: &str) -> String {
    let id = href_path(id);
    format!(
        "<a href=\"{dir}/{}.out\">out</a> <a href=\"{dir}/{}.err\">err</a>",
        escape(&id),
        escape(&id)
    )
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Succeeded => "ok",
        Status::Failed | Status::Rejected => "bad",
        Status::TimedOut => "warn",
        Status::Cancelled | Status::Queued | Status::Running => "meh",
    }
}

/// `10:00:03`, UTC, in a `<time>` element that holds the full instant.
fn clock(t: SystemTime) -> String {
    let full = time::format_rfc3339(t);
    let short: String = full.chars().skip(11).take(8).collect();
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        escape(&full),
        escape(&full),
        escape(&short)
    )
}

/// `2026-11-22 10:00:03`, UTC, in a `<time>` element.
fn stamp(t: SystemTime) -> String {
    let full = time::format_rfc3339(t);
    let short: String = full
        .chars()
        .take(19)
        .map(|c| if c == 'T' { ' ' } else { c })
        .collect();
    format!(
        "<time datetime=\"{}\">{}</time>",
        escape(&full),
        escape(&short)
    )
}

/// "12s ago", "3m05s ago"; "just now" for the future (clock skew).
fn ago(now: SystemTime, t: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) if d >= Duration::from_secs(1) => format!(
            "{} ago",
            time::format_duration(Duration::from_secs(d.as_secs()))
        ),
        _ => "just now".to_string(),
    }
}

/// 100000 → "100 000": counts stay readable.
fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// Text made safe for HTML, in element content and in quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One path segment of a relative link: everything but unreserved
/// characters percent-encoded, so that no id can turn a link into
/// `javascript:` or climb out of its folder.
fn href_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.starts_with('.') {
        // "." and ".." must not be read as folder steps.
        out.replace_range(0..1, "%2E");
    }
    out
}

const CSS: &str = "
:root{color-scheme:light;--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff;--accent:#3b5bdb}
*{box-sizing:border-box}
body{margin:0;padding:20px 24px;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:8px 24px;margin-bottom:14px}
h1{margin:0;font-size:22px;letter-spacing:.02em}
h2{margin:0 0 8px;font-size:15px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
.summary{margin:0;color:var(--muted)}
.big{font-size:18px;font-weight:600;color:var(--fg)}
.banner{flex-basis:100%;margin:0;padding:6px 10px;border-radius:6px;background:#fff4e5;color:#8a4b00}
.row{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,2fr);gap:0 14px;align-items:start}
@media (max-width:1000px){.row{grid-template-columns:minmax(0,1fr)}}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin-bottom:14px;overflow-x:auto}
.count{display:inline-block;min-width:22px;padding:0 6px;border-radius:10px;background:var(--line);color:var(--fg);text-align:center;font-size:12px}
table{width:100%;border-collapse:collapse}
th,td{padding:4px 6px;text-align:left;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-weight:600;font-size:12px;color:var(--muted)}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover{background:#f9fafb}
.num{text-align:right;font-variant-numeric:tabular-nums}
.id{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:12px;max-width:360px;overflow:hidden;text-overflow:ellipsis}
.empty{margin:0;color:var(--muted)}
.more td{color:var(--muted);font-style:italic}
.load{width:20%}
.bar{display:block;height:8px;border-radius:4px;background:var(--line);overflow:hidden}
.bar span{display:block;height:100%;background:var(--accent)}
.st{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600}
.why{font-size:12px;color:#6b7280;max-width:28em;overflow-wrap:anywhere}
.ok{background:#e6f4ea;color:#1e6b34}.bad{background:#fde8e8;color:#a61b1b}.warn{background:#fff4e5;color:#8a4b00}.meh{background:#eef0f3;color:#475467}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
time{font-variant-numeric:tabular-nums}
footer{color:var(--muted);font-size:12px}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use std::collections::BTreeMap;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn snapshot(queued_total: usize) -> Snapshot {
        Snapshot {
            generated: Some(at(100)),
            total: 4,
            running_total: 1,
            queued_total,
            draining: false,
            paused_all: false,
            types: vec![TypeRow {
                name: "make_report".into(),
                limit: 2,
                running: 1,
                queued: queued_total,
                paused: false,
            }],
            running: vec![RunningRow {
                id: "run-1".into(),
                kind: "make_report".into(),
                started: at(10),
                pid: 4242,
                attempt: 1,
                submitter: Some("ann".into()),
            }],
            queued: (0..queued_total.min(crate::status::ROWS))
                .map(|i| QueuedRow {
                    id: format!("q-{i}"),
                    kind: "make_report".into(),
                    priority: 0,
                    submitted: at(i as u64),
                    not_before: None,
                    waiting_for: Vec::new(),
                    submitter: Some("bob".into()),
                })
                .collect(),
            finished: vec![FinishedRow {
                id: "<script>alert(1)</script>".into(),
                kind: "make_report".into(),
                status: Status::Failed,
                finished: at(90),
                duration: Some(Duration::from_millis(1500)),
                exit_code: Some(3),
                signal: None,
                error: Some("exited with <b>status</b> 3".into()),
                usage: Some(crate::record::Usage {
                    cpu_seconds: 0.61,
                    max_rss_bytes: 35_651_584,
                    memory_peak_bytes: None,
                    oom_killed: Some(true),
                }),
                submitter: Some("<i>eve</i>".into()),
            }],
            finished_counts: BTreeMap::new(),
            durations: BTreeMap::new(),
            history: Default::default(),
            schedules: Vec::new(),
        }
    }

    #[test]
    fn the_page_refreshes_itself_and_needs_no_script() {
        let html = render(&snapshot(3), at(100));
        assert!(html.starts_with("<!doctype html>"), "{html}");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains("run-1") && html.contains("1m30s"),
            "elapsed shown: {html}"
        );
        assert!(html.contains("href=\"running/run-1.out\""), "{html}");
    }

    #[test]
    fn job_data_is_escaped_in_text_and_links() {
        let html = render(&snapshot(0), at(100));
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("href=\"done/%3Cscript%3Ealert%281%29%3C%2Fscript%3E.out\""),
            "{html}"
        );
        assert!(
            html.contains(
                "<div class=\"why\">exited with &lt;b&gt;status&lt;/b&gt; 3</div></td></tr>"
            ),
            "the error, escaped: {html}"
        );
        // Who submitted each job, escaped, in its own column.
        assert!(html.contains("<td>&lt;i&gt;eve&lt;/i&gt;</td>"), "{html}");
        assert!(html.contains("<td>ann</td>"), "{html}");
        let queued = render(&snapshot(1), at(100));
        assert!(queued.contains("<td>bob</td>"), "{queued}");
        assert!(html.contains("<th>By</th>"));
        assert_eq!(escape("a&\"'<>"), "a&amp;&quot;&#39;&lt;&gt;");
        assert_eq!(href_path("../x"), "%2E.%2Fx");
    }

    #[test]
    fn what_jobs_used_shows_in_their_rows_and_per_type() {
        let mut s = snapshot(0);
        let mut history = History::default();
        history.observe("make_report", &s.finished[0], at(100));
        s.history = std::sync::Arc::new(history);
        let html = render(&s, at(100));
        let fin = &html[html.find("<section id=\"finished\">").unwrap()..];
        assert!(
            fin.contains(
                "<td class=\"num used\"><span title=\"610ms CPU, 34 MiB max RSS, \
                 killed by the OOM killer\">610ms · 34 MiB</span></td>"
            ),
            "{fin}"
        );
        let hour = &html[html.find("<section id=\"hour\">").unwrap()..];
        assert!(
            hour.contains(
                "<td class=\"num used\">610ms / 610ms</td><td class=\"num used\">34 MiB / 34 MiB</td>"
            ),
            "{hour}"
        );
        // A job that never ran shows no figures.
        s.finished[0].usage = None;
        let html = render(&s, at(100));
        assert!(html.contains("<td class=\"num used\"></td>"), "{html}");
    }

    #[test]
    fn a_huge_queue_shows_counts_and_the_first_rows() {
        let html = render(&snapshot(100_000), at(100));
        assert!(html.contains("q-0") && html.contains("q-49") && !html.contains("q-50"));
        assert!(html.contains("99\u{202f}950 more queued jobs"), "{html}");
        assert!(html.contains(">100000</span> queued"), "{html}");
    }

    #[test]
    fn times_at_and_past_the_ends_of_the_range_still_make_a_page() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(86_400);
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX.unsigned_abs());
        let mut s = snapshot(1);
        s.running[0].started = after;
        s.queued[0].submitted = before;
        s.queued[0].not_before = Some(time::latest());
        s.finished[0].finished = before;
        s.finished[0].duration = Some(Duration::MAX);
        for now in [before, SystemTime::UNIX_EPOCH, time::latest(), after] {
            s.generated = Some(now);
            let html = render(&s, now);
            assert!(html.ends_with("</html>\n"), "{html}");
        }
        let html = render(&s, SystemTime::UNIX_EPOCH);
        assert!(html.contains("9999-12-31 23:59:59"), "{html}");
        assert!(html.contains("(in 2932896d23h)"), "{html}");
    }

    #[test]
    fn schedules_show_when_they_tick_next_and_their_last_job_escaped() {
        let html = render(&snapshot(0), at(100));
        assert!(
            !html.contains("id=\"schedules\""),
            "no card without schedules"
        );
        let mut s = snapshot(0);
        s.schedules = vec![
            ScheduleRow {
                name: "nightly".into(),
                when: "cron \"0 3 * * *\" (Europe/Paris)".into(),
                kind: "make_report".into(),
                next: Some(at(190)),
                last: Some("nightly-20270115T080000Z".into()),
            },
            ScheduleRow {
                name: "<b>x</b>".into(),
                when: "every 1h".into(),
                kind: "t".into(),
                next: None,
                last: None,
            },
        ];
        let html = render(&s, at(100));
        assert!(
            html.contains("<h2>Schedules <span class=\"count\">2</span></h2>"),
            "{html}"
        );
        assert!(
            html.contains("<td>nightly</td><td>cron &quot;0 3 * * *&quot; (Europe/Paris)</td>"),
            "{html}"
        );
        assert!(
            html.contains("(in 1m30s)</td><td class=\"id\">nightly-20270115T080000Z</td>"),
            "{html}"
        );
        assert!(
            html.contains("<td>&lt;b&gt;x&lt;/b&gt;</td>") && !html.contains("<b>x"),
            "{html}"
        );
        assert!(
            html.contains("<td>none</td><td class=\"id\">—</td>"),
            "{html}"
        );
    }

    #[test]
    fn what_is_paused_and_what_a_queued_job_waits_for_are_shown() {
        let mut s = snapshot(2);
        s.queued[0].waiting_for = vec!["build-17".into(), "<x>".into()];
        let html = render(&s, at(100));
        assert!(html.contains("build-17, &lt;x&gt;"), "{html}");
        assert!(!html.contains("Paused"), "{html}");
        s.types[0].paused = true;
        let html = render(&s, at(100));
        assert!(html.contains("Paused: make_report."), "{html}");
        assert!(
            html.contains("<td class=\"why\">pause</td>"),
            "q-1 waits for the pause: {html}"
        );
        s.paused_all = true;
        let html = render(&s, at(100));
        assert!(html.contains("<code>pause/ALL</code>"), "{html}");
    }

    #[test]
    fn an_empty_snapshot_still_makes_a_page() {
        let html = render(&Snapshot::default(), at(0));
        assert!(html.contains("published nothing yet") && html.contains("The queue is empty"));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::status::Histogram;
    use crate::time::props::{wild_duration, wild_instant};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any instants and durations in the rows, any `now`: a page, and
        /// `/metrics` for the same snapshot.
        #[test]
        fn any_snapshot_at_any_now_makes_a_page(
            now in wild_instant(),
            started in wild_instant(),
            submitted in wild_instant(),
            not_before in proptest::option::of(wild_instant()),
            finished in wild_instant(),
            duration in proptest::option::of(wild_duration()),
            counts in (any::<usize>(), any::<usize>(), any::<usize>(), any::<u64>()),
            priority in any::<i64>(),
            attempt in any::<u32>(),
            cpu_seconds in any::<f64>(),
            max_rss_bytes in any::<u64>(),
        ) {
            let (total, running, queued, n) = counts;
            let mut h = Histogram::default();
            if let Some(d) = duration {
                h.observe(d);
            }
            let mut s = Snapshot {
                generated: Some(now),
                total,
                running_total: running,
                queued_total: queued,
                draining: true,
                paused_all: true,
                history: Default::default(),
                schedules: vec![crate::status::ScheduleRow {
                    name: "s".into(),
                    when: "every 1s".into(),
                    kind: "t".into(),
                    next: not_before,
                    last: Some("s-99991231T235959Z".into()),
                }],
                types: vec![TypeRow { name: "t".into(), limit: total, running, queued, paused: false }],
                running: vec![RunningRow { id: "r".into(), kind: "t".into(), started, pid: 1, attempt, submitter: Some("u".repeat(32)) }],
                queued: vec![QueuedRow { id: "q".into(), kind: "t".into(), priority, submitted, not_before, waiting_for: vec!["p<".into()], submitter: Some("u".repeat(32)) }],
                finished: vec![FinishedRow {
                    id: "f".into(),
                    kind: "t".into(),
                    status: Status::Succeeded,
                    finished,
                    duration,
                    exit_code: Some(0),
                    signal: None,
                    error: None,
                    usage: Some(crate::record::Usage {
                        cpu_seconds,
                        max_rss_bytes,
                        memory_peak_bytes: None,
                        oom_killed: None,
                    }),
                    submitter: Some("u".repeat(32)),
                }],
                finished_counts: BTreeMap::from([(("t".to_string(), Status::Succeeded), n)]),
                durations: BTreeMap::from([("t".to_string(), h)]),
            };
            // The history the report draws from, fed with the same finished rows.
            let mut history = crate::history::History::default();
            for r in &s.finished {
            history.observe(&r.kind, r, now);
            }
            history.absorb_failures(s.finished.iter().cloned());
            s.history = std::sync::Arc::new(history);
            let html = render(&s, now);
            prop_assert!(html.ends_with("</html>\n"));
            let config = crate::config::Config::from_text(
                None,
                "",
                std::path::Path::new("/"),
                &crate::config::Overrides::default(),
            );
            if let Ok(c) = config {
                let _ = crate::metrics::render(&s, &c);
            }
        }
    }
}
