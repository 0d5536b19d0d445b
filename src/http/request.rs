//! Reading one HTTP/1.x request off a connection, within limits: the head
//! (request line and headers, parsed by httparse) and the body
//! (`Content-Length` or chunked, decoded as it arrives).
//!
//! Pure: a [`Reader`] is fed the bytes a connection has received and says
//! what they make ([`Step`]); it does no IO, reads no clock and never
//! blocks, so the event thread can run one per connection and every rule
//! here is tested by table. It never decides what a request means (that is
//! the handlers'), only where it ends.
//!
//! Invariants: a head longer than [`HEAD_MAX`] (or with more than
//! [`HEADERS_MAX`] headers) is refused with 431 without being kept; a body
//! is kept up to the limit the caller passes (`max_job_bytes`) and no
//! further; a body past it is marked too large, and once answered, the
//! rest of it is read and thrown away (at most [`DRAIN_MAX`] bytes), so
//! that the client reads the answer rather than a reset. A request with
//! both `Content-Length` and `Transfer-Encoding`, or two lengths that
//! differ, is refused (a proxy in front could split it differently).

use std::fmt;

/// The request line and headers together may be this long at most
/// (SPEC §9).
pub const HEAD_MAX: usize = 16 << 10;
/// At most this many headers; more is a 431 like a long head.
pub const HEADERS_MAX: usize = 100;
/// How much of a refused body is read and thrown away, so that the client
/// sees the answer; past that the connection is closed.
pub const DRAIN_MAX: u64 = 16 << 20;
/// A chunk-size line (with its extensions) may be this long at most.
const CHUNK_LINE_MAX: usize = 1024;

/// A request method. The API takes a few; any other is kept by name for
/// the 405's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other(String),
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other(m) => m,
        })
    }
}

/// What arrived of a request's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// All of it (empty when the request has none).
    Complete(Vec<u8>),
    /// More than the limit: nothing of it is kept.
    TooLarge,
}

/// One whole request, as the handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target as sent: the path and the query.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1: an answer to 1.0 cannot be chunked.
    pub minor: u8,
    /// Every header in order, values as text (bytes that are not UTF-8
    /// replaced).
    pub headers: Vec<(String, String)>,
    pub body: Upload,
    /// Whether the client may send another request on this connection
    /// (HTTP/1.1 unless `Connection: close`; HTTP/1.0 with
    /// `Connection: keep-alive`); false once a body was refused.
    pub keep_alive: bool,
}

impl Request {
    /// The first header of that name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the bytes received so far make.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing complete yet: read more.
    More,
    /// The client waits for `100 Continue` before it sends its body.
    Continue,
    /// A whole request; what follows it stays in the buffer.
    Request(Request),
    /// A request that cannot be served: answer this status and close.
    Refuse(u16, String),
    /// A refused body has been thrown away (or too much of it): close.
    Close,
}

/// How the rest of a body is delimited, and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of the current chunk are still to come.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// Trailer lines until an empty one; how many bytes of them so far.
    Trailer(usize),
}

/// What one call of [`Framing::decode`] found.
struct Decoded<'a> {
    /// Bytes of the input used.
    used: usize,
    /// Body bytes among them.
    data: &'a [u8],
    /// The body has ended.
    done: bool,
}

impl Framing {
    /// Decodes from the front of `input` up to the next boundary. Using
    /// nothing (and not done) means more input is needed.
    fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, String> {
        let nothing = Decoded {
            used: 0,
            data: &[],
            done: false,
        };
        match self {
            Framing::Length(left) => {
                let n = input
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                Ok(Decoded {
                    used: n,
                    data: &input[..n],
                    done: *left == 0,
                })
            }
            Framing::Chunked(chunk) => match *chunk {
                Chunk::Size => {
                    let Some((line, used)) = line(input, CHUNK_LINE_MAX)? else {
                        return Ok(nothing);
                    };
                    let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
                    let digits = std::str::from_utf8(digits)
                        .map_err(|_| "a chunk size is not hexadecimal".to_string())?
                        .trim();
                    if digits.is_empty() || digits.len() > 15 {
                        return Err(format!("bad chunk size {digits:?}"));
                    }
                    let size = u64::from_str_radix(digits, 16)
                        .map_err(|_| format!("bad chunk size {digits:?}"))?;
                    *chunk = if size == 0 {
                        Chunk::Trailer(0)
                    } else {
                        Chunk::Data(size)
                    };
                    Ok(Decoded { used, ..nothing })
                }
                Chunk::Data(left) => {
                    let n = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    *chunk = if n as u64 == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - n as u64)
                    };
                    Ok(Decoded {
                        used: n,
                        data: &input[..n],
                        done: false,
                    })
                }
                Chunk::DataEnd => {
                    let used = match input {
                        [b'\r', b'\n', ..] => 2,
                        [b'\n', ..] => 1,
                        [] | [b'\r'] => return Ok(nothing),
                        _ => return Err("a chunk is longer than its size says".into()),
                    };
                    *chunk = Chunk::Size;
                    Ok(Decoded { used, ..nothing })
                }
                Chunk::Trailer(seen) => {
                    let Some((line, used)) = line(input, HEAD_MAX)? else {
                        return Ok(nothing);
                    };
                    if line.is_empty() {
                        return Ok(Decoded {
                            used,
                            data: &[],
                            done: true,
                        });
                    }
                    let seen = seen + used;
                    if seen > HEAD_MAX {
                        return Err("the trailer is too long".into());
                    }
                    *chunk = Chunk::Trailer(seen);
                    Ok(Decoded { used, ..nothing })
                }
            },
        }
    }
}

/// The first line of `input` without its end (CRLF or LF) and the bytes it
/// takes with it; `None` while it has not ended; an error past `max`.
fn line(input: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, String> {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) if i <= max => {
            let line = &input[..i];
            Ok(Some((line.strip_suffix(b"\r").unwrap_or(line), i + 1)))
        }
        Some(_) => Err("a line of the body's framing is too long".into()),
        None if input.len() > max => Err("a line of the body's framing is too long".into()),
        None => Ok(None),
    }
}

/// Where a connection is in reading its next request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reader {
    state: State,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    /// Reading a head; the buffer up to `scanned` holds no end of it.
    #[default]
    Head,
    /// Reading the body of `req` (its `body` still empty) into `data`.
    Body {
        req: Box<Request>,
        framing: Framing,
        data: Vec<u8>,
        limit: u64,
    },
    /// Throwing away the rest of a refused body; `left` bytes more at most.
    Discard { framing: Framing, left: u64 },
}

impl Reader {
    /// Whether the rest of a refused body is still to be thrown away: the
    /// connection goes back to the front for that, though it is not kept
    /// alive.
    pub fn discarding(&self) -> bool {
        matches!(self.state, State::Discard { .. })
    }

    /// Takes what it can from the front of `buf` (bytes received and not
    /// used yet); what follows a whole request stays there. `limit` is
    /// the largest body kept.
    pub fn advance(&mut self, buf: &mut Vec<u8>, limit: u64) -> Step {
        if let State::Head = self.state {
            let step = self.head(buf, limit);
            // A head whose body has begun: on to the body.
            if step != Step::More || matches!(self.state, State::Head) {
                return step;
            }
        }
        match self.state {
            State::Head => Step::More,
            State::Body { .. } => self.body(buf),
            State::Discard { .. } => self.discard(buf),
        }
    }

    /// Reads body bytes from `buf` into the request's body.
    fn body(&mut self, buf: &mut Vec<u8>) -> Step {
        let State::Body {
            framing,
            data,
            limit,
            ..
        } = &mut self.state
        else {
            return Step::More;
        };
        let mut pos = 0;
        let mut over = false;
        let mut done = false;
        while pos < buf.len() && !over && !done {
            let d = match framing.decode(&buf[pos..]) {
                Ok(d) => d,
                Err(e) => {
                    self.state = State::Head;
                    return Step::Refuse(400, format!("malformed body: {e}"));
                }
            };
            if d.used == 0 && !d.done {
                break;
            }
            pos += d.used;
            done = d.done;
            if data.len() as u64 + d.data.len() as u64 > *limit {
                over = true;
            } else {
                data.extend_from_slice(d.data);
            }
        }
        buf.drain(..pos);
        if over {
            let framing = *framing;
            return self.refuse_body(framing, done, buf);
        }
        if !done {
            return Step::More;
        }
        let State::Body { mut req, data, .. } = std::mem::take(&mut self.state) else {
            return Step::More;
        };
        req.body = Upload::Complete(data);
        Step::Request(*req)
    }

    /// Throws away what `buf` holds of a refused body; `Close` at its end,
    /// or once [`DRAIN_MAX`] bytes have gone.
    fn discard(&mut self, buf: &mut Vec<u8>) -> Step {
        let State::Discard { framing, left } = &mut self.state else {
            return Step::More;
        };
        let mut pos = 0;
        let mut ended = false;
        while pos < buf.len() {
            match framing.decode(&buf[pos..]) {
                Ok(d) if d.done => {
                    ended = true;
                    break;
                }
                Ok(d) if d.used == 0 => break,
                Ok(d) => pos += d.used,
                // Whatever it is, it is not worth reading on.
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        if ended || pos as u64 >= *left {
            buf.clear();
            self.state = State::Head;
            return Step::Close;
        }
        *left -= pos as u64;
        buf.drain(..pos);
        Step::More
    }

    /// A body past the limit: the request goes on without it, marked too
    /// large and not kept alive, and the rest of the body is thrown away.
    fn refuse_body(&mut self, framing: Framing, done: bool, buf: &mut Vec<u8>) -> Step {
        let State::Body { mut req, .. } = std::mem::take(&mut self.state) else {
            return Step::More;
        };
        req.body = Upload::TooLarge;
        req.keep_alive = false;
        if !done {
            self.state = State::Discard {
                framing,
                left: DRAIN_MAX,
            };
        } else {
            buf.clear();
        }
        Step::Request(*req)
    }

    /// Looks for the end of a head, parses it, and moves on to its body.
    fn head(&mut self, buf: &mut Vec<u8>, limit: u64) -> Step {
        // Empty lines before a request line are skipped (RFC 9112 §2.2).
        let blank = buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        buf.drain(..blank);
        let Some(end) = head_end(buf) else {
            if buf.len() > HEAD_MAX {
                return too_long();
            }
            return Step::More;
        };
        if end > HEAD_MAX {
            return too_long();
        }
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf[..end]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Step::Refuse(400, "malformed request head".into());
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Step::Refuse(431, format!("more than {HEADERS_MAX} headers"));
            }
            Err(e) => return Step::Refuse(400, format!("malformed request head: {e}")),
        }
        let minor = parsed.version.unwrap_or(1);
        let req = Request {
            method: Method::parse(parsed.method.unwrap_or("")),
            target: parsed.path.unwrap_or("").to_string(),
            minor,
            headers: parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).trim().to_string(),
                    )
                })
                .collect(),
            body: Upload::Complete(Vec::new()),
            keep_alive: false,
        };
        buf.drain(..end);
        self.body_of(req, limit)
    }

    /// Decides how the body of a parsed head is framed and starts on it.
    fn body_of(&mut self, mut req: Request, limit: u64) -> Step {
        let tokens = |name: &str| -> Vec<String> {
            req.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| v.split(','))
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect()
        };
        let connection = tokens("connection");
        req.keep_alive = if req.minor == 0 {
            connection.iter().any(|t| t == "keep-alive")
        } else {
            !connection.iter().any(|t| t == "close")
        };
        let coding = tokens("transfer-encoding");
        let lengths = tokens("content-length");
        let framing = match (coding.as_slice(), lengths.as_slice()) {
            ([], []) => None,
            ([], [first, rest @ ..]) => {
                if rest.iter().any(|l| l != first) {
                    return Step::Refuse(400, "Content-Length given twice, differently".into());
                }
                match first.parse::<u64>() {
                    Ok(0) => None,
                    Ok(n) => Some(Framing::Length(n)),
                    Err(_) => {
                        return Step::Refuse(400, format!("Content-Length: {first}: not a length"));
                    }
                }
            }
            ([c], []) if c == "chunked" => Some(Framing::Chunked(Chunk::Size)),
            (_, []) => {
                return Step::Refuse(
                    501,
                    format!(
                        "Transfer-Encoding: {}: only chunked is understood",
                        coding.join(", ")
                    ),
                );
            }
            (_, _) => {
                return Step::Refuse(
                    400,
                    "a request may have Content-Length or Transfer-Encoding, not both".into(),
                );
            }
        };
        let Some(framing) = framing else {
            return Step::Request(req);
        };
        if let Framing::Length(n) = framing
            && n > limit
        {
            req.body = Upload::TooLarge;
            req.keep_alive = false;
            self.state = State::Discard {
                framing,
                left: DRAIN_MAX,
            };
            return Step::Request(req);
        }
        let expects = tokens("expect").iter().any(|t| t == "100-continue") && req.minor == 1;
        self.state = State::Body {
            req: Box::new(req),
            framing,
            data: Vec::new(),
            limit,
        };
        if expects { Step::Continue } else { Step::More }
    }
}

fn too_long() -> Step {
    Step::Refuse(
        431,
        format!("the request line and headers are longer than {HEAD_MAX} bytes"),
    )
}

/// Where the head in `buf` ends (after its empty line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match buf.get(nl + 1..) {
            Some([b'\n', ..]) => return Some(nl + 2),
            Some([b'\r', b'\n', ..]) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; every step seen, and what
    /// is left in the buffer.
    fn feed(input: &[u8], step: usize, limit: u64) -> (Vec<Step>, Vec<u8>) {
        let mut r = Reader::default();
        let mut buf = Vec::new();
        let mut steps = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                let s = r.advance(&mut buf, limit);
                let go_on = matches!(s, Step::Continue | Step::Request(_));
                if s != Step::More {
                    steps.push(s);
                }
                if !go_on {
                    break;
                }
            }
        }
        (steps, buf)
    }

    fn req(method: Method, target: &str, body: Upload, keep_alive: bool) -> Request {
        Request {
            method,
            target: target.into(),
            minor: 1,
            headers: Vec::new(),
            body,
            keep_alive,
        }
    }

    /// The steps with headers left out, for comparing.
    fn bare(steps: Vec<Step>) -> Vec<Step> {
        steps
            .into_iter()
            .map(|s| match s {
                Step::Request(r) => Step::Request(Request {
                    headers: Vec::new(),
                    ..r
                }),
                s => s,
            })
            .collect()
    }

    #[test]
    fn requests_end_where_their_framing_says_in_any_pieces() {
        let ok = |body: &[u8], keep| {
            Step::Request(req(
                Method::Post,
                "/jobs",
                Upload::Complete(body.to_vec()),
                keep,
            ))
        };
        let cases: Vec<(&str, Vec<u8>, Vec<Step>)> = vec![
            (
                "no body",
                b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                vec![Step::Request(req(
                    Method::Get,
                    "/a?b=c",
                    Upload::Complete(vec![]),
                    true,
                ))],
            ),
            (
                "a length",
                b"POST /jobs HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
                vec![ok(b"hello", true)],
            ),
            (
                "chunked, with an extension and a trailer",
                b"POST /jobs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nT: 1\r\n\r\n"
                    .to_vec(),
                vec![ok(b"hello", true)],
            ),
            (
                "bare LF line ends, and close",
                b"POST /jobs HTTP/1.1\nConnection: close\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n"
                    .to_vec(),
                vec![ok(b"hello", false)],
            ),
            (
                "empty lines before the request line",
                b"\r\n\r\nPOST /jobs HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(),
                vec![ok(b"", true)],
            ),
            (
                "expect 100-continue",
                b"POST /jobs HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
                    .to_vec(),
                vec![Step::Continue, ok(b"hi", true)],
            ),
        ];
        for (what, input, want) in cases {
            for step in [1, 2, 7, input.len()] {
                let (steps, left) = feed(&input, step, 100);
                assert_eq!(bare(steps), want, "{what}, pieces of {step}");
                assert!(left.is_empty(), "{what}: {left:?}");
            }
        }
    }

    #[test]
    fn pipelined_requests_stay_in_the_buffer_for_the_next_turn() {
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
        let mut r = Reader::default();
        let mut buf = two.to_vec();
        let Step::Request(a) = r.advance(&mut buf, 10) else {
            panic!("first")
        };
        assert_eq!((a.target.as_str(), a.keep_alive), ("/a", true));
        assert!(!r.discarding());
        let Step::Request(b) = r.advance(&mut buf, 10) else {
            panic!("second")
        };
        assert_eq!((b.target.as_str(), b.minor, b.keep_alive), ("/b", 0, false));
        assert!(buf.is_empty());
        assert_eq!(r.advance(&mut buf, 10), Step::More);
    }

    #[test]
    fn heads_past_the_limit_are_refused_without_being_kept() {
        let mut r = Reader::default();
        let mut buf = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        assert_eq!(r.advance(&mut buf, 10), Step::More);
        buf.extend(std::iter::repeat_n(b'a', HEAD_MAX));
        assert!(matches!(r.advance(&mut buf, 10), Step::Refuse(431, _)));

        let many: String = (0..=HEADERS_MAX).map(|i| format!("H{i}: v\r\n")).collect();
        let (steps, _) = feed(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(), 4096, 10);
        assert!(matches!(steps[..], [Step::Refuse(431, _)]), "{steps:?}");

        // Exactly at the limit is fine.
        let pad = HEAD_MAX - "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
        let at = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(pad));
        let (steps, _) = feed(at.as_bytes(), 4096, 10);
        assert!(matches!(steps[..], [Step::Request(_)]), "{steps:?}");
    }

    #[test]
    fn bad_framing_is_refused() {
        let cases: [(&[u8], u16); 7] = [
            (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
                400,
            ),
            (b"GET / HTTP/9.9\r\n\r\n", 400),
        ];
        for (input, status) in cases {
            let (steps, _) = feed(input, input.len(), 100);
            assert!(
                matches!(steps.last(), Some(Step::Refuse(s, _)) if *s == status),
                "{:?}: {steps:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Two equal lengths are one length.
        let (steps, _) = feed(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            64,
            10,
        );
        assert!(matches!(steps[..], [Step::Request(_)]), "{steps:?}");
    }

    #[test]
    fn bodies_past_the_limit_are_marked_and_thrown_away() {
        let too_large = |keep| Step::Request(req(Method::Post, "/jobs", Upload::TooLarge, keep));
        // Announced too large: refused before it is read; not even a 100.
        let input =
            b"POST /jobs HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\nhello world";
        let (steps, left) = feed(input, 5, 10);
        assert_eq!(bare(steps), vec![too_large(false), Step::Close]);
        assert!(left.is_empty());

        // Chunked: found out while reading, the rest thrown away.
        let input = b"POST /jobs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";
        for step in [1, 3, input.len()] {
            let (steps, left) = feed(input, step, 10);
            assert_eq!(bare(steps), vec![too_large(false), Step::Close], "{step}");
            assert!(left.is_empty());
        }
        // At the limit exactly, it is kept.
        let (steps, _) = feed(input, 4, 11);
        assert_eq!(
            bare(steps),
            vec![Step::Request(req(
                Method::Post,
                "/jobs",
                Upload::Complete(b"hello world".to_vec()),
                true
            ))]
        );

        // An endless refused body is read up to DRAIN_MAX, then closed.
        let mut r = Reader::default();
        let mut buf = format!(
            "POST /jobs HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            u64::MAX
        )
        .into_bytes();
        assert!(matches!(r.advance(&mut buf, 10), Step::Request(_)));
        assert!(r.discarding());
        let mut read = 0u64;
        loop {
            buf.extend(std::iter::repeat_n(0u8, 1 << 20));
            read += 1 << 20;
            match r.advance(&mut buf, 10) {
                Step::More => assert!(buf.is_empty()),
                Step::Close => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(read, DRAIN_MAX);
    }

    #[test]
    fn methods_and_headers_read_as_sent() {
        let (steps, _) = feed(
            b"BREW /pot HTTP/1.1\r\nAuthorization:  Bearer x \r\nX-A: \xff\r\n\r\n",
            100,
            10,
        );
        let [Step::Request(r)] = &steps[..] else {
            panic!("{steps:?}")
        };
        assert_eq!(r.method, Method::Other("BREW".into()));
        assert_eq!(r.method.to_string(), "BREW");
        assert_eq!(r.header("authorization"), Some("Bearer x"));
        assert_eq!(r.header("x-a"), Some("\u{fffd}"));
        assert_eq!(r.header("nope"), None);
    }
}
