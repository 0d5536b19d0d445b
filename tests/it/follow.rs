//! Following a job's output as its task writes it: `raccoon output
//! --follow` and `GET /jobs/<id>/output?follow=1`, from outside.
//!
//! The tasks here write a line, then wait for a file the test creates,
//! then write another: what the follower gives before the file exists is
//! what it streamed while the job ran.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::http::{addr, get, submit};
use crate::support::*;

/// A type whose task says `first`, waits until `$RACCOON_PARAM_GO`
/// exists, then says `second` (and `oops` on standard error).
fn talker() -> Builder {
    TestSpool::builder().ty(
        "talk",
        &format!(
            "command = [\"/bin/sh\", \"-c\", {}]\ntimeout = \"60s\"",
            toml_str(
                "echo first; echo oops >&2; \
                 while [ ! -e \"$RACCOON_PARAM_GO\" ]; do sleep 0.02; done; echo second"
            )
        ),
    )
}

/// The file that lets a talker go on, not there yet.
fn go_file(t: &TestSpool) -> PathBuf {
    t.dir().join("go")
}

fn go(path: &Path) {
    std::fs::write(path, "").unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
}

/// `raccoon output --follow ID` running, its lines arriving on a channel
/// as it prints them.
struct Follow {
    child: Child,
    lines: Receiver<String>,
}

impl Follow {
    fn start(t: &TestSpool, args: &[&str]) -> Follow {
        let mut child = Command::new(raccoon_bin())
            .args(["output", "--follow"])
            .args(args)
            .env("RACCOON_SPOOL", &t.spool)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run raccoon: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follow { child, lines }
    }

    fn line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(PROMPT)
            .unwrap_or_else(|e| panic!("no {what} from the follower within {PROMPT:?}: {e}"))
    }

    /// The exit code, once it has exited (with a deadline), and whatever
    /// it printed after the lines already read.
    fn exit(mut self) -> (i32, Vec<String>) {
        let status = wait_for("the follower to exit", PROMPT, || {
            self.child.try_wait().ok().flatten()
        });
        let rest: Vec<String> = self.lines.iter().collect();
        (status.code().unwrap_or(-1), rest)
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn submitted(t: &TestSpool, args: &[&str]) -> String {
    let o = t.client(args);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn follow_prints_lines_as_the_task_writes_them_and_exits_0_when_the_job_ends() {
    let t = talker().start();
    let gate = go_file(&t);
    let id = submitted(&t, &["submit", "talk", &format!("go={}", gate.display())]);
    let f = Follow::start(&t, &[&id]);
    assert_eq!(f.line("the first line"), "first");
    // Printed while the job still runs: it waits for the gate.
    assert!(!t.record_path(&id).exists(), "the job ended already");
    go(&gate);
    assert_eq!(f.line("the second line"), "second");
    let (code, rest) = f.exit();
    assert_eq!((code, rest), (0, Vec::<String>::new()));
    assert_eq!(status_of(&t.wait_record(&id)), "succeeded");

    // Standard error the same way.
    let f = Follow::start(&t, &["--stderr", &id]);
    assert_eq!(f.line("standard error"), "oops");
    assert_eq!(f.exit().0, 0);
}

#[test]
fn following_a_finished_job_prints_its_output_and_exits_as_wait_does() {
    let t = TestSpool::builder()
        .sh("ok", "echo done and dusted")
        .sh("bad", "echo about to fail; exit 3")
        .http()
        .start();
    let ok = submitted(&t, &["submit", "ok"]);
    let bad = submitted(&t, &["submit", "bad"]);
    t.wait_record(&ok);
    t.wait_record(&bad);
    let o = t.client(&["output", "--follow", &ok]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "done and dusted\n");
    let o = t.client(&["output", "-f", &bad]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "about to fail\n");
    let o = t.client(&["output", "--follow", "nosuchjob"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such job"));

    // Over HTTP: the whole output, chunked, and the stream ends.
    let a = addr(&t);
    let r = get(&a, &format!("/jobs/{bad}/output?follow=1"));
    r.expect(200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "about to fail\n");
    get(&a, "/jobs/nosuchjob/output?follow=1").expect(404);
    get(&a, &format!("/jobs/{ok}/output?follow=perhaps")).expect(400);
}

#[test]
fn following_a_queued_job_waits_for_it_to_start() {
    let t = TestSpool::builder().sh("o", "echo started").start();
    let at = SystemTime::now() + Duration::from_secs(2);
    let stamp = humantime::format_rfc3339_millis(at).to_string();
    t.drop_job(
        "later.toml",
        &format!("type = \"o\"\nnot_before = {stamp}\n"),
    );
    wait_for("the job to be queued", PROMPT, || {
        let o = t.client(&["status", "later"]);
        String::from_utf8_lossy(&o.stdout)
            .contains("queued")
            .then_some(())
    });
    let f = Follow::start(&t, &["later"]);
    assert_eq!(f.line("the output of the delayed job"), "started");
    assert!(
        SystemTime::now() >= at - Duration::from_millis(5),
        "the line came before the job could start"
    );
    assert_eq!(f.exit().0, 0);
}

#[test]
fn a_retried_job_is_followed_into_its_next_attempt() {
    let t = TestSpool::builder()
        .ty(
            "flaky",
            &format!(
                "command = [\"/bin/sh\", \"-c\", {}]\nretries = 1\nretry_delay = \"500ms\"",
                toml_str(
                    "echo \"attempt $RACCOON_ATTEMPT\"; \
                     while [ ! -e \"$RACCOON_PARAM_GO\" ]; do sleep 0.02; done; \
                     [ \"$RACCOON_ATTEMPT\" -ge 2 ]"
                )
            ),
        )
        .start();
    let gate = go_file(&t);
    let id = submitted(&t, &["submit", "flaky", &format!("go={}", gate.display())]);
    let f = Follow::start(&t, &[&id]);
    assert_eq!(f.line("the first attempt's line"), "attempt 1");
    go(&gate);
    assert_eq!(f.line("the second attempt's line"), "attempt 2");
    let (code, rest) = f.exit();
    assert_eq!((code, rest), (0, Vec::<String>::new()));
    let r = t.wait_record(&id);
    assert_eq!(
        (status_of(&r), r["attempts"].as_integer()),
        ("succeeded", Some(2))
    );
}

/// A follow request on a fresh connection: the head read, the body left
/// to read chunk by chunk.
struct Stream {
    s: TcpStream,
    /// Bytes read past what was consumed.
    buf: Vec<u8>,
}

impl Stream {
    fn open(addr: &str, id: &str) -> (u16, String, Stream) {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(PROMPT)).unwrap();
        write!(
            s,
            "GET /jobs/{id}/output?follow=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut st = Stream { s, buf: Vec::new() };
        let head = st.until(b"\r\n\r\n");
        let head = String::from_utf8_lossy(&head).into_owned();
        let status = head[9..12].parse().unwrap();
        (status, head, st)
    }

    /// Reads up to and with `end`, and returns it.
    fn until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(end.len()).position(|w| w == end) {
                let rest = self.buf.split_off(i + end.len());
                return std::mem::replace(&mut self.buf, rest);
            }
            let mut b = [0u8; 4096];
            let n = self
                .s
                .read(&mut b)
                .unwrap_or_else(|e| panic!("read the stream: {e}; got {:?}", self.buf));
            assert!(n > 0, "the stream closed early: {:?}", self.buf);
            self.buf.extend_from_slice(&b[..n]);
        }
    }

    /// The next chunk's data; empty for the last chunk.
    fn chunk(&mut self) -> Vec<u8> {
        let line = self.until(b"\r\n");
        let size = std::str::from_utf8(&line[..line.len() - 2]).unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        let data = self.until(b"\r\n");
        assert_eq!(data.len(), size + 2, "a chunk of {size}: {data:?}");
        data[..size].to_vec()
    }

    /// Chunks until what they hold ends with `want`.
    fn read_to(&mut self, want: &str) -> String {
        let mut got = Vec::new();
        while !got.ends_with(want.as_bytes()) {
            let c = self.chunk();
            assert!(
                !c.is_empty(),
                "the stream ended with {got:?}, before {want:?}"
            );
            got.extend(c);
        }
        String::from_utf8(got).unwrap()
    }
}

#[test]
fn http_streams_the_output_in_chunks_as_the_task_writes_it() {
    let t = talker().http().start();
    let gate = go_file(&t);
    let a = addr(&t);
    let id = submit(
        &a,
        &json!({"type": "talk", "params": {"go": gate.display().to_string()}}),
    );
    let (status, head, mut s) = Stream::open(&a, &id);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_lowercase()
            .contains("transfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert_eq!(s.read_to("first\n"), "first\n");
    assert!(!t.record_path(&id).exists(), "the job ended already");
    go(&gate);
    assert_eq!(s.read_to("second\n"), "second\n");
    // The last chunk once the job has ended, then the connection closes.
    assert_eq!(s.chunk(), b"");
    assert_eq!(status_of(&t.wait_record(&id)), "succeeded");
    let mut rest = Vec::new();
    s.s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"", "nothing after the last chunk");
}

#[test]
fn http_streams_are_bounded_and_a_client_that_leaves_frees_its_place() {
    let t = TestSpool::builder()
        .ty("nap", "command = [\"/bin/sleep\", \"60\"]")
        .http()
        .start();
    let a = addr(&t);
    let id = submit(&a, &json!({"type": "nap"}));
    // Six streams at once (the senders but two), on a job that prints
    // nothing: the seventh is refused, not queued behind them.
    let mut open: Vec<Stream> = (0..6)
        .map(|n| {
            let (status, head, s) = Stream::open(&a, &id);
            assert_eq!(status, 200, "stream {n}: {head}");
            s
        })
        .collect();
    let (status, head, _) = Stream::open(&a, &id);
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("\r\nRetry-After: "), "{head}");
    // Other answers still go out meanwhile.
    get(&a, &format!("/jobs/{id}")).expect(200);
    // One client leaves: its place frees at once, not at the job's end.
    drop(open.pop());
    let start = Instant::now();
    let s = wait_for("a place for a new stream", PROMPT, || {
        let (status, _, s) = Stream::open(&a, &id);
        (status == 200).then_some(s)
    });
    assert!(start.elapsed() < Duration::from_secs(10));
    drop(s);
    drop(open);
}
