//! Writing one answer onto a connection: the status line, the headers, and
//! the body as bytes in memory, an open file (sent with its length), or a
//! stream of unknown length (sent chunked, or to HTTP/1.0 until close).
//!
//! Owns the wire format of answers only; which headers an answer carries
//! (content type, CORS, nosniff) is decided by the caller. Runs on a worker
//! or sender thread, on a blocking socket whose write timeout bounds how
//! long a client that does not read can hold it: every write either makes
//! progress within [`WRITE_TIMEOUT`] or the answer is abandoned and the
//! connection closed.
//!
//! Invariants: a header value with a control character is never written
//! (it could end the head early and inject headers of a client's choice);
//! an answer announces exactly the length it sends, and when a file turns
//! out shorter than announced the connection is closed rather than left
//! out of step; 1xx, 204 and 304 answers carry no body and no length.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// How long one write may wait for a client that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies up to this size are written by the worker that made them; larger
/// ones (and streams) go to a sender thread, so that a client that reads
/// slowly holds a sender, not a worker.
pub const LONG: u64 = 256 << 10;
/// How much of a stream is read before it is sent as one chunk.
const CHUNK: usize = 16 << 10;

/// What an answer sends.
pub enum Body {
    Bytes(Vec<u8>),
    /// An open file and how many bytes of it to send: a running job's
    /// output grows, and the length announced must be the length sent.
    File(File, u64),
    /// Bytes whose end is not known when the answer starts (a job's output
    /// as it is written): sent chunked to HTTP/1.1 clients.
    Stream(Box<dyn Source>),
}

/// What a [`Body::Stream`] reads from. A source may wait between reads
/// (for a task to write more); it is told which connection it goes to
/// and the server's stop flag, so that its wait ends when the client
/// goes away or the server stops, not at its next write.
pub trait Source: Read + Send {
    /// The connection the stream is written to (a duplicate descriptor)
    /// and the flag raised when the server stops.
    fn attach(&mut self, _peer: OwnedFd, _stopping: Arc<AtomicBool>) {}
}

impl Body {
    /// Whether sending it may take long enough to belong on a sender.
    pub fn is_long(&self) -> bool {
        match self {
            Body::Bytes(b) => b.len() as u64 > LONG,
            Body::File(_, n) => *n > LONG,
            Body::Stream(_) => true,
        }
    }
}

/// How the request asked to be answered.
#[derive(Debug, Clone, Copy)]
pub struct Manner {
    /// A HEAD request: the headers of the answer, no body.
    pub head_only: bool,
    /// The request's HTTP minor version (0 or 1).
    pub minor: u8,
    /// Whether the connection is to stay open after the answer.
    pub keep_alive: bool,
}

/// Writes an answer. `Ok(true)` when the connection may carry another
/// request (it was to be kept alive and the answer was complete).
pub fn send<W: Write>(
    out: &mut W,
    status: u16,
    headers: &[(&str, String)],
    body: Body,
    manner: Manner,
) -> io::Result<bool> {
    let bodyless = status < 200 || status == 204 || status == 304;
    // A stream to HTTP/1.0 has no length and no chunks: its end is the
    // connection's.
    let keep = manner.keep_alive && !(manner.minor == 0 && matches!(body, Body::Stream(_)));
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (name, value) in headers {
        if value.bytes().any(|b| b.is_ascii_control()) || name.is_empty() {
            continue;
        }
        head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !bodyless {
        match &body {
            Body::Bytes(b) => {
                head.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes())
            }
            Body::File(_, n) => {
                head.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes())
            }
            Body::Stream(_) if manner.minor >= 1 => {
                head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
            Body::Stream(_) => {}
        }
    }
    match (keep, manner.minor) {
        (false, _) => head.extend_from_slice(b"Connection: close\r\n"),
        (true, 0) => head.extend_from_slice(b"Connection: keep-alive\r\n"),
        (true, _) => {}
    }
    head.extend_from_slice(b"\r\n");
    if bodyless || manner.head_only {
        out.write_all(&head)?;
        out.flush()?;
        return Ok(keep);
    }
    match body {
        Body::Bytes(b) => {
            // One write for head and body: one packet for a small answer.
            head.extend_from_slice(&b);
            out.write_all(&head)?;
        }
        Body::File(f, n) => {
            out.write_all(&head)?;
            let sent = io::copy(&mut f.take(n), out)?;
            if sent < n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file was {sent} bytes, {n} announced"),
                ));
            }
        }
        Body::Stream(mut r) => {
            out.write_all(&head)?;
            let chunked = manner.minor >= 1;
            let mut buf = vec![0; CHUNK];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    break;
                }
                if chunked {
                    let mut chunk = format!("{n:x}\r\n").into_bytes();
                    chunk.extend_from_slice(&buf[..n]);
                    chunk.extend_from_slice(b"\r\n");
                    out.write_all(&chunk)?;
                } else {
                    out.write_all(&buf[..n])?;
                }
            }
            if chunked {
                out.write_all(b"0\r\n\r\n")?;
            }
        }
    }
    out.flush()?;
    Ok(keep)
}

/// A complete error answer, for the event thread to write as it closes a
/// connection whose request it refused (431, 400): no handler saw it.
pub fn refusal(status: u16, msg: &str) -> Vec<u8> {
    let mut body = serde_json::json!({ "error": msg }).to_string();
    body.push('\n');
    let mut out = Vec::new();
    let headers = [
        ("Content-Type", "application/json".to_string()),
        ("X-Content-Type-Options", "nosniff".to_string()),
    ];
    let manner = Manner {
        head_only: false,
        minor: 1,
        keep_alive: false,
    };
    // Writing into a Vec cannot fail.
    let _ = send(
        &mut out,
        status,
        &headers,
        Body::Bytes(body.into_bytes()),
        manner,
    );
    out
}

/// The reason phrase of a status (clients ignore it; people read it).
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Source for io::Cursor<Vec<u8>> {}

    fn text(status: u16, body: Body, manner: Manner) -> (String, bool) {
        let mut out = Vec::new();
        let headers = [
            ("Content-Type", "text/plain".to_string()),
            ("X-Evil", "a\r\nSet-Cookie: x".to_string()),
        ];
        let keep = send(&mut out, status, &headers, body, manner).unwrap();
        (String::from_utf8(out).unwrap(), keep)
    }

    const KEEP: Manner = Manner {
        head_only: false,
        minor: 1,
        keep_alive: true,
    };

    #[test]
    fn answers_announce_the_length_or_chunks_they_send() {
        let (t, keep) = text(200, Body::Bytes(b"hi".to_vec()), KEEP);
        assert_eq!(
            t,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
        assert!(keep);

        let (t, _) = text(
            200,
            Body::Bytes(b"hi".to_vec()),
            Manner {
                head_only: true,
                ..KEEP
            },
        );
        assert!(t.ends_with("Content-Length: 2\r\n\r\n"), "{t}");

        let (t, keep) = text(
            200,
            Body::Stream(Box::new(io::Cursor::new(b"hello".to_vec()))),
            KEEP,
        );
        assert!(
            t.ends_with("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            "{t}"
        );
        assert!(keep);

        // HTTP/1.0 gets the stream as it is, and the end is the close.
        let (t, keep) = text(
            200,
            Body::Stream(Box::new(io::Cursor::new(b"hello".to_vec()))),
            Manner { minor: 0, ..KEEP },
        );
        assert!(t.ends_with("Connection: close\r\n\r\nhello"), "{t}");
        assert!(!keep);

        let (t, keep) = text(204, Body::Bytes(Vec::new()), Manner { minor: 0, ..KEEP });
        assert!(t.ends_with("Connection: keep-alive\r\n\r\n"), "{t}");
        assert!(!t.contains("Content-Length"), "{t}");
        assert!(keep);
        assert!(!t.contains("Set-Cookie"), "no injected header: {t}");
    }

    #[test]
    fn a_file_shorter_than_announced_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "abc").unwrap();
        let mut out = Vec::new();
        let f = File::open(&path).unwrap();
        let r = send(&mut out, 200, &[], Body::File(f, 5), KEEP);
        assert!(r.is_err());
        let f = File::open(&path).unwrap();
        let mut out = Vec::new();
        assert!(send(&mut out, 200, &[], Body::File(f, 2), KEEP).unwrap());
        assert!(out.ends_with(b"Content-Length: 2\r\n\r\nab"));
    }

    #[test]
    fn refusals_are_json_and_close() {
        let r = String::from_utf8(refusal(431, "too long")).unwrap();
        assert!(
            r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{r}"
        );
        assert!(r.contains("Connection: close\r\n"), "{r}");
        assert!(r.ends_with("{\"error\":\"too long\"}\n"), "{r}");
    }
}
