//! Aligned text tables for the client's `list` and `types`, with status
//! colours on a terminal.
//!
//! Pure: rows in, text out; whether to colour is the caller's decision
//! (a terminal, and `NO_COLOR` unset). Columns are as wide as their widest
//! cell, two spaces apart, with no trailing spaces; colour codes wrap the
//! text only, never the padding, so coloured and plain tables align the
//! same.
//!
//! Invariant: no cell reaches the terminal with a control character in
//! it. Job data is whatever a submitter wrote (a rejected file's `type`
//! may hold an escape sequence meant for someone else's terminal), so
//! every cell goes through [`printable`]; and none is longer than
//! [`MAX_CELL`] characters (a rejected file's `type` may be kilobytes
//! long: it must not push every other column off the screen).

/// The longest a cell is shown; longer text is cut, with `…`.
pub const MAX_CELL: usize = 48;

/// How a cell is coloured on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Bad,
    Warn,
    Quiet,
    Busy,
}

impl Tone {
    fn code(self) -> Option<&'static str> {
        match self {
            Tone::Plain => None,
            Tone::Good => Some("32"),
            Tone::Bad => Some("31"),
            Tone::Warn => Some("33"),
            Tone::Quiet => Some("2"),
            Tone::Busy => Some("36"),
        }
    }
}

/// The tone of a job status: green for success, red for failure, yellow
/// for a timeout, cyan while running, dim for the rest.
pub fn tone_of(status: crate::record::Status) -> Tone {
    use crate::record::Status;
    match status {
        Status::Succeeded => Tone::Good,
        Status::Failed | Status::Rejected => Tone::Bad,
        Status::TimedOut => Tone::Warn,
        Status::Running => Tone::Busy,
        Status::Queued | Status::Cancelled => Tone::Quiet,
    }
}

/// A table: a header and rows of cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<(String, Tone)>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row of plain cells.
    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) {
        self.rows.push(
            cells
                .iter()
                .map(|c| (cell(c.as_ref()), Tone::Plain))
                .collect(),
        );
    }

    /// Adds a row whose cells have tones.
    pub fn toned_row(&mut self, cells: Vec<(String, Tone)>) {
        self.rows
            .push(cells.into_iter().map(|(c, t)| (cell(&c), t)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row after the header; coloured
    /// when `colour` is true.
    pub fn render(&self, colour: bool) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        let cells = std::iter::once(&self.header)
            .map(|h| h.iter().map(String::as_str).collect::<Vec<_>>())
            .chain(
                self.rows
                    .iter()
                    .map(|r| r.iter().map(|(c, _)| c.as_str()).collect()),
            );
        for row in cells {
            for (i, c) in row.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<(String, Tone)> = self
            .header
            .iter()
            .map(|h| (h.clone(), Tone::Plain))
            .collect();
        line(&mut out, &header, &widths, colour, true);
        for r in &self.rows {
            line(&mut out, r, &widths, colour, false);
        }
        out
    }
}

fn line(out: &mut String, cells: &[(String, Tone)], widths: &[usize], colour: bool, bold: bool) {
    let last = cells.len().saturating_sub(1);
    for (i, (text, tone)) in cells.iter().enumerate() {
        let code = if bold { Some("1") } else { tone.code() };
        match code {
            Some(code) if colour => {
                out.push_str(&format!("\x1b[{code}m{text}\x1b[0m"));
            }
            _ => out.push_str(text),
        }
        if i < last {
            let pad = widths[i].saturating_sub(text.chars().count()) + 2;
            out.extend(std::iter::repeat_n(' ', pad));
        }
    }
    // Empty cells at the end of a line leave only padding there.
    let kept = out.trim_end_matches(' ').len();
    out.truncate(kept);
    out.push('\n');
}

/// A cell's text: printable, and cut at [`MAX_CELL`] characters.
fn cell(s: &str) -> String {
    let text = printable(s);
    if text.chars().count() <= MAX_CELL {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

/// Text safe to print to a terminal on one line: control characters
/// (escape, newline, tab, ...) are written as `\u{1b}` and the like.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;

    fn table() -> Table {
        let mut t = Table::new(&["ID", "TYPE", "STATUS"]);
        t.toned_row(vec![
            ("a".into(), Tone::Plain),
            ("make_report".into(), Tone::Plain),
            ("failed".into(), tone_of(Status::Failed)),
        ]);
        t.toned_row(vec![
            ("longer-id".into(), Tone::Plain),
            ("x".into(), Tone::Plain),
            ("succeeded".into(), tone_of(Status::Succeeded)),
        ]);
        t.row(&["b", "", ""]);
        t
    }

    #[test]
    fn columns_align_without_trailing_spaces() {
        assert_eq!(
            table().render(false),
            "ID         TYPE         STATUS\n\
             a          make_report  failed\n\
             longer-id  x            succeeded\n\
             b\n"
        );
    }

    #[test]
    fn colour_wraps_the_text_not_the_padding() {
        let coloured = table().render(true);
        assert!(coloured.contains("\x1b[31mfailed\x1b[0m\n"), "{coloured:?}");
        assert!(coloured.contains("\x1b[32msucceeded\x1b[0m\n"));
        let stripped = coloured
            .replace("\x1b[31m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[1m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, table().render(false));
        assert!(!table().render(false).contains('\x1b'));
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let mut t = Table::new(&["TYPE"]);
        t.row(&["\x1b]0;owned\x07x\ny\tz"]);
        let text = t.render(false);
        assert_eq!(text, "TYPE\n\\u{1b}]0;owned\\u{7}x\\u{a}y\\u{9}z\n");
        assert_eq!(printable("plain é"), "plain é");
        let mut t = Table::new(&["TYPE", "N"]);
        t.row(&["x".repeat(2000).as_str(), "1"]);
        let line = t.render(false).lines().nth(1).unwrap().to_string();
        assert_eq!(line, format!("{}…  1", "x".repeat(MAX_CELL - 1)));
    }
}
