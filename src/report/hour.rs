//! The report's last hour: the chart of jobs finished per minute by
//! outcome (an inline SVG, no script), per type the run times (p50, p95),
//! failure rate and what the tasks used, and the latest failures. Pure:
//! a function of the snapshot's [`History`] and `now`, like the rest of
//! the report; every piece of job data escaped.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::{ago, escape, group, output_links, status_class};
use crate::bounds;
use crate::history::{self, History, Outcomes};
use crate::status::{FinishedRow, Snapshot};
use crate::time;

/// The chart's drawing area, in its own units: one slot a minute.
const CHART_W: usize = 10 * history::MINUTES;
const CHART_H: f64 = 100.0;
/// Each minute's slot is this wide; its bar leaves a gap of 2.
const SLOT: usize = 10;
/// How much of a failure's error the list shows; the record has it all.
const ERROR_CHARS: usize = 400;

/// "Last hour": jobs finished per minute by outcome, as stacked bars, and
/// each type's count, failure rate and run-time percentiles.
pub(super) fn hour(h: &mut String, s: &Snapshot, now: SystemTime) -> std::fmt::Result {
    let bars = s.history.bars(now);
    let mut all = Outcomes::default();
    for b in &bars {
        all.succeeded += b.succeeded;
        all.failed += b.failed;
        all.other += b.other;
    }
    write!(
        h,
        "<section id=\"hour\">\n<h2>Last hour <span class=\"count\">{}</span></h2>\n<div class=\"hour\">\n",
        group(all.total() as usize)
    )?;
    chart(h, &bars, &all, now)?;
    let names: Vec<&str> = s.types.iter().map(|t| t.name.as_str()).collect();
    type_hours(h, &s.history, &names, now)?;
    h.push_str("</div>\n</section>\n");
    Ok(())
}

/// The stacked bars, one `<g class="minute">` a minute (`data-age` 0 is
/// the current one), each with a hover area and one `<rect>` per outcome
/// that has jobs (`data-n` how many). Plain SVG: no script, and it
/// scales to the page's width.
fn chart(
    h: &mut String,
    bars: &[Outcomes; history::MINUTES],
    all: &Outcomes,
    now: SystemTime,
) -> std::fmt::Result {
    let peak = bars.iter().map(Outcomes::total).max().unwrap_or(0).max(1);
    let unit = (CHART_H - 4.0) / peak as f64;
    write!(
        h,
        "<figure class=\"chart\">\n<svg viewBox=\"0 0 {CHART_W} {CHART_H}\" preserveAspectRatio=\"none\" \
         role=\"img\" aria-label=\"Jobs finished per minute over the last hour: {} succeeded, {} failed, {} other\">\n",
        all.succeeded, all.failed, all.other
    )?;
    let current = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60);
    for (i, b) in bars.iter().enumerate() {
        let age = history::MINUTES - 1 - i;
        let start =
            SystemTime::UNIX_EPOCH + Duration::from_secs(current.saturating_sub(age as u64) * 60);
        let label: String = time::format_rfc3339(start)
            .chars()
            .skip(11)
            .take(5)
            .collect();
        let x = i * SLOT;
        write!(
            h,
            "<g class=\"minute\" data-age=\"{age}\"><title>{label} UTC: {} succeeded, {} failed, {} other</title>\
             <rect class=\"slot\" x=\"{x}\" y=\"0\" width=\"{SLOT}\" height=\"{CHART_H}\"/>",
            b.succeeded, b.failed, b.other
        )?;
        // Stacked from the bottom: successes, then failures, then the rest.
        let mut top = CHART_H;
        for (n, class) in [(b.succeeded, "ok"), (b.failed, "bad"), (b.other, "meh")] {
            if n == 0 {
                continue;
            }
            // A lone failure among many successes stays visible.
            let height = (n as f64 * unit).max(1.0);
            top -= height;
            write!(
                h,
                "<rect class=\"{class}\" data-n=\"{n}\" x=\"{}\" y=\"{top:.2}\" width=\"{}\" height=\"{height:.2}\"/>",
                x + 1,
                SLOT - 2
            )?;
        }
        h.push_str("</g>\n");
    }
    write!(
        h,
        "</svg>\n<figcaption class=\"axis\"><span>60 min ago</span>\
         <span><i class=\"key ok\"></i>succeeded <i class=\"key bad\"></i>failed <i class=\"key meh\"></i>other \
         · peak {peak} a minute</span><span>now</span></figcaption>\n</figure>\n"
    )
}

/// Per type over the last hour: jobs finished, how many failed, the
/// median and 95th percentile of their run times, and the median and
/// largest of their CPU times and max RSS.
fn type_hours(h: &mut String, hist: &History, types: &[&str], now: SystemTime) -> std::fmt::Result {
    let rows = hist.per_type(types, now);
    if rows.is_empty() {
        h.push_str("<p class=\"empty\">No types are configured.</p>\n");
        return Ok(());
    }
    h.push_str(
        "<table class=\"per-type\">\n<thead><tr><th>Type</th><th class=\"num\">Finished</th>\
         <th class=\"num\">Failed</th><th class=\"num\">p50</th><th class=\"num\">p95</th>\
         <th class=\"num\" title=\"CPU time: median / largest\">CPU (med / max)</th>\
         <th class=\"num\" title=\"max RSS: median / largest\">RSS (med / max)</th></tr></thead>\n<tbody>\n",
    );
    for r in rows {
        let total = r.outcomes.total();
        let failed = match (total, r.outcomes.failed) {
            (0, _) => "—".to_string(),
            (t, f) => format!("{f} ({}%)", (f * 100 + t / 2) / t),
        };
        let d = |v: Option<Duration>| v.map_or_else(|| "—".to_string(), time::format_duration);
        let cpu = r.cpu.map_or_else(
            || "—".to_string(),
            |s| {
                format!(
                    "{} / {}",
                    time::format_duration(s.median),
                    time::format_duration(s.max)
                )
            },
        );
        let rss = r.rss.map_or_else(
            || "—".to_string(),
            |s| {
                format!(
                    "{} / {}",
                    bounds::rough_bytes(s.median),
                    bounds::rough_bytes(s.max)
                )
            },
        );
        writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num used\">{}</td><td class=\"num used\">{}</td></tr>",
            if r.name.is_empty() {
                "<i>unknown types</i>".to_string()
            } else {
                escape(&r.name)
            },
            group(total as usize),
            if r.outcomes.failed > 0 {
                " failing"
            } else {
                ""
            },
            escape(&failed),
            escape(&d(r.p50)),
            escape(&d(r.p95)),
            escape(&cpu),
            escape(&rss)
        )?;
    }
    h.push_str("</tbody>\n</table>\n");
    Ok(())
}

/// "Latest failures": the last jobs that failed, timed out or were
/// rejected, however many succeeded since; each error wraps inside its
/// own line instead of widening the page.
pub(super) fn failures(h: &mut String, hist: &History, now: SystemTime) -> std::fmt::Result {
    let rows: Vec<&FinishedRow> = hist.failures().collect();
    write!(
        h,
        "<section id=\"failures\">\n<h2>Latest failures <span class=\"count\">{}</span></h2>\n",
        rows.len()
    )?;
    if rows.is_empty() {
        h.push_str("<p class=\"empty\">No failures to show.</p>\n</section>\n");
        return Ok(());
    }
    h.push_str("<ol class=\"fails\">\n");
    for f in rows {
        let error = f.error.as_deref().unwrap_or("");
        let short: String = error.chars().take(ERROR_CHARS).collect();
        let cut = if short.len() < error.len() { "…" } else { "" };
        // A rejected file's type may be anything, kilobytes long.
        let kind: String = f.kind.chars().take(60).collect();
        let ran = f.duration.is_some() || f.exit_code.is_some() || f.signal.is_some();
        let links = if ran {
            format!(" · {}", output_links("done", &f.id))
        } else {
            String::new()
        };
        writeln!(
            h,
            "<li><div class=\"head\"><span class=\"st {}\">{}</span> <span class=\"id\">{}</span> \
             <span class=\"kind\">{}</span> <span class=\"when\" title=\"{}\">{}</span>{links}</div>\
             <div class=\"err\">{}{cut}</div></li>",
            status_class(f.status),
            escape(f.status.as_str()),
            escape(&f.id),
            escape(&kind),
            escape(&time::format_rfc3339(f.finished)),
            escape(&ago(now, f.finished)),
            escape(&short)
        )?;
    }
    h.push_str("</ol>\n</section>\n");
    Ok(())
}

/// The styles of the last hour, the failures list, and narrow screens.
pub(super) const CSS_HOUR: &str = "
.why{white-space:normal;max-width:none}
tr.has-why td{border-bottom:0}.why-row td{padding-top:0}
#types td:first-child,#running td:nth-child(2),#finished td:nth-child(2),#queued td:nth-child(3),.per-type td:first-child{max-width:14em;overflow:hidden;text-overflow:ellipsis}
#running td:nth-child(3),#finished td:nth-child(3),#queued td:nth-child(4){max-width:8em;overflow:hidden;text-overflow:ellipsis}
.row2{display:grid;grid-template-columns:minmax(0,1fr) 19em;gap:0 14px;align-items:start}
@media (max-width:1150px){.row2{grid-template-columns:minmax(0,1fr)}}
.hour{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:10px 20px;align-items:start}
@media (max-width:1400px){.hour{grid-template-columns:minmax(0,1fr)}}
.chart{margin:0}
.chart svg{display:block;width:100%;height:110px;background:#fafbfc;border-bottom:1px solid var(--line)}
rect.slot{fill:transparent}g.minute:hover rect.slot{fill:#e9ecf5}
rect.ok{fill:#2f9e44}rect.bad{fill:#e03131}rect.meh{fill:#adb5bd}
.axis{display:flex;justify-content:space-between;gap:8px;flex-wrap:wrap;margin-top:4px;color:var(--muted);font-size:12px}
.key{display:inline-block;width:9px;height:9px;border-radius:2px;margin:0 3px 0 6px}
.key.ok{background:#2f9e44}.key.bad{background:#e03131}.key.meh{background:#adb5bd}
.per-type td.failing{color:#a61b1b;font-weight:600}
.fails{list-style:none;margin:0;padding:0}
.fails li{padding:6px 0;border-bottom:1px solid var(--line);min-width:0}
.fails li:last-child{border-bottom:0}
.fails .head{display:flex;flex-wrap:wrap;align-items:baseline;gap:2px 8px}
.fails .id{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:12px;max-width:100%;overflow-wrap:anywhere}
.fails .kind,.fails .when{color:var(--muted);font-size:12px}
.fails .kind{overflow-wrap:anywhere;min-width:0}
.fails .err{margin-top:3px;font-size:12px;color:#6b7280;white-space:pre-line;overflow-wrap:anywhere;max-width:60em}
@media (max-width:600px){
body{padding:12px 10px}
.id{max-width:36vw}
#running th:nth-child(3),#running td:nth-child(3),#running th:nth-child(4),#running td:nth-child(4),#running th:nth-child(6),#running td:nth-child(6),#running th:nth-child(7),#running td:nth-child(7),
#finished th:nth-child(2),#finished td:nth-child(2),#finished th:nth-child(3),#finished td:nth-child(3),#finished th:nth-child(5),#finished td:nth-child(5),#finished th:nth-child(6),#finished td:nth-child(6),#finished th:nth-child(7),#finished td:nth-child(7),#finished th:nth-child(8),#finished td:nth-child(8),
#queued th:nth-child(4),#queued td:nth-child(4),#queued th:nth-child(5),#queued td:nth-child(5),#queued th:nth-child(6),#queued td:nth-child(6),
.per-type th:nth-child(4),.per-type td:nth-child(4),.per-type th:nth-child(n+6),.per-type td:nth-child(n+6){display:none}
}
";
