//! Values as the job file, the record, the HTTP API and the task see them:
//! TOML and JSON turned into each other, and a TOML error told as one line
//! with its place.
//!
//! A leaf: it imports nothing of the crate but `time`, and does no IO.
//!
//! Invariant: a TOML datetime becomes an RFC 3339 string in JSON, and a
//! JSON job's `not_before`/`submitted` strings become TOML datetimes, so
//! that a job submitted as JSON is judged exactly as the same job in a file
//! (a number of seconds since the epoch is taken for those two keys too).
//! Nothing here panics, whatever TOML or JSON value it is given.

use crate::time;

/// Line and column (1-based) of a byte offset, for messages.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// A TOML or schema error from the `toml` crate, as one line with its
/// place: `line 3, column 11: timeout: 200y is out of range (0 to 100
/// years)` when the error is about a value (the key is its path from the
/// top, `types.x.timeout`), else with the line itself, which names the key:
/// `line 2, column 1 (timout = "5s"): unknown field ...`.
pub fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let msg = one_line(err.message().trim_end());
    let key = key_path(err);
    match (err.span(), key) {
        (Some(span), Some(key)) => {
            let (line, col) = line_col(text, span.start);
            format!("line {line}, column {col}: {key}: {msg}")
        }
        (Some(span), None) => {
            let (line, col) = line_col(text, span.start);
            // The line itself names the key (and the table header above it
            // is one line away): "line 3, column 8 (keep = \"forever\")".
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            if source.is_empty() {
                format!("line {line}, column {col}: {msg}")
            } else {
                let shown: String = one_line(source).chars().take(80).collect();
                format!("line {line}, column {col} ({shown}): {msg}")
            }
        }
        (None, Some(key)) => format!("{key}: {msg}"),
        (None, None) => msg,
    }
}

/// The dotted path of the key a value error is about (`types.x.timeout`),
/// when the error has one. The `toml` crate keeps it private and shows it
/// only in its `Display` of an error without the input, as a last line
/// "in `a.b`": read it from there, and only from there (what comes before
/// is the message, verbatim, which may contain anything).
fn key_path(err: &toml::de::Error) -> Option<String> {
    let mut bare = err.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let keys = shown
        .strip_prefix(err.message())?
        .strip_prefix('\n')?
        .strip_prefix("in `")?
        .strip_suffix("`\n")?;
    (!keys.is_empty()).then(|| one_line(keys))
}

/// Text with its control characters escaped, so that a message stays one
/// line whatever a submitter put in a key or a value.
fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A TOML value as JSON (datetimes as RFC 3339 strings).
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(match time::from_toml(d) {
            Ok(t) => time::format_rfc3339(t),
            Err(_) => d.to_string(),
        }),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// Turns a JSON value into TOML. `null` has no TOML form: it is an error
/// that names where it was.
pub fn json_to_toml(v: &serde_json::Value, at: &str) -> Result<toml::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => return Err(format!("{at}: null is not allowed")),
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(a) => toml::Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, x)| json_to_toml(x, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(o) => {
            let mut t = toml::Table::new();
            for (k, x) in o {
                let sub = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                t.insert(k.clone(), json_to_toml(x, &sub)?);
            }
            toml::Value::Table(t)
        }
    })
}

/// The TOML text of a job submitted as JSON (HTTP). Datetime fields arrive
/// as strings and become TOML datetimes; everything else is carried over
/// as it is, so that the job parser judges it exactly as it judges a file.
pub fn json_job_to_toml(body: &serde_json::Value) -> Result<String, String> {
    let serde_json::Value::Object(_) = body else {
        return Err("the body must be a JSON object".into());
    };
    let toml::Value::Table(mut table) = json_to_toml(body, "")? else {
        return Err("the body must be a JSON object".into());
    };
    for key in ["not_before", "submitted"] {
        // Checked here (the range is the job parser's too) because only an
        // instant within it can be written as a TOML datetime.
        let t = match table.get(key) {
            Some(toml::Value::String(s)) => time::parse_rfc3339(s),
            Some(toml::Value::Integer(secs)) => time::from_unix_secs(*secs),
            _ => continue,
        };
        let t = t.map_err(|e| format!("{key}: {e}"))?;
        table.insert(key.into(), toml::Value::Datetime(time::to_toml(t)));
    }
    toml::to_string(&table).map_err(|e| format!("cannot write the job as TOML: {e}"))
}
