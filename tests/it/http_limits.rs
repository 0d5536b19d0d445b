//! The HTTP server's limits (SPEC §9), from outside: what a client that
//! sends too much, too slowly, or nothing at all gets, what it costs the
//! daemon (memory and threads, read in /proc), and that everyone else
//! is still served. Keep-alive keeps working within them.

// Tests may unwrap: a panic is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::http::{Resp, addr, get, submit};
use crate::support::*;

/// A line of `/proc/<pid>/status`, as a number (`VmRSS` is in KiB).
fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Raises this process's soft limit on open files to at least `n`.
fn allow_open_files(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < n {
        assert!(
            hard >= n,
            "the hard limit on open files ({hard}) is below {n}"
        );
        setrlimit(Resource::RLIMIT_NOFILE, n, hard).unwrap();
    }
}

/// Reads one answer off a kept-alive connection (its length says where it
/// ends).
fn read_answer(r: &mut BufReader<TcpStream>) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = resp
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    resp.body = vec![0; len];
    r.read_exact(&mut resp.body).unwrap();
    resp
}

/// Whether the server has closed `s`: a read sees its end (or a reset)
/// within `within`; false when the read times out with the connection open.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // An answer (a refusal) before the end: read on.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn an_endless_header_line_is_refused_and_costs_the_daemon_no_memory() {
    let t = TestSpool::builder().sh("hello", "echo hi").http().start();
    let a = addr(&t);
    get(&a, "/healthz").expect(200);
    let before = proc_status(t.pid(), "VmRSS");

    // 64 MiB of one header line, on as many connections as it takes: each
    // is refused (431) or closed after its first 16 KiB.
    let piece = vec![b'a'; 64 << 10];
    let mut sent = 0usize;
    let mut connections = 0;
    while sent < 64 << 20 {
        connections += 1;
        let mut s = TcpStream::connect(&a).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ")
            .unwrap();
        while sent < 64 << 20 {
            match s.write(&piece) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        let mut answer = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.read_to_end(&mut answer);
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 431 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    let after = proc_status(t.pid(), "VmRSS");
    assert!(
        after < before + (16 << 10),
        "VmRSS grew from {before} KiB to {after} KiB for 64 MiB sent on {connections} connections"
    );
    // And the server goes on.
    get(&a, "/healthz").expect(200);
    let id = submit(&a, &json!({"type": "hello"}));
    assert_eq!(status_of(&t.wait_record(&id)), "succeeded");
}

#[test]
fn two_thousand_idle_connections_cost_no_thread_and_leave_the_api_prompt() {
    allow_open_files(4096);
    let t = TestSpool::builder().sh("hello", "echo hi").http().start();
    let a = addr(&t);
    let threads_before = proc_status(t.pid(), "Threads");
    let mut idle = Vec::new();
    for i in 0..2000 {
        let mut s = TcpStream::connect(&a).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        // Some say nothing, some stop in the middle of a head or a body.
        match i % 3 {
            1 => s.write_all(b"GET /jobs HTTP/1.1\r\nHost: x\r\n").unwrap(),
            2 => s
                .write_all(b"POST /jobs HTTP/1.1\r\nContent-Length: 100000\r\n\r\n{\"type\"")
                .unwrap(),
            _ => {}
        }
        idle.push(s);
    }
    let begin = Instant::now();
    get(&a, "/healthz").expect(200);
    let id = submit(&a, &json!({"type": "hello"}));
    let took = begin.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "/healthz and POST /jobs took {took:?}"
    );
    t.drop_job("dropped.toml", "type = \"hello\"\n");
    assert_eq!(status_of(&t.wait_record("dropped")), "succeeded");
    assert_eq!(status_of(&t.wait_record(&id)), "succeeded");
    let threads = proc_status(t.pid(), "Threads");
    assert!(
        threads < 100,
        "{threads} threads with 2000 connections open ({threads_before} before)"
    );
    // Past max_connections (256), the idlest were closed to make room.
    let closed = idle
        .iter_mut()
        .take(10)
        .filter_map(|s| closed_within(s, Duration::from_secs(5)).then_some(()))
        .count();
    assert_eq!(
        closed, 10,
        "the first connections were closed for newer ones"
    );
}

#[test]
fn a_connection_that_sends_no_complete_request_is_closed_after_idle_timeout() {
    let t = TestSpool::builder()
        .top("[http]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"1s\"")
        .sh("hello", "echo hi")
        .http()
        .start();
    let a = addr(&t);
    let begin = Instant::now();
    let mut silent = TcpStream::connect(&a).unwrap();
    let mut halfway = TcpStream::connect(&a).unwrap();
    halfway
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Answered once, then silent: its clock starts again at the answer.
    let kept = TcpStream::connect(&a).unwrap();
    let mut reader = BufReader::new(kept.try_clone().unwrap());
    (&kept)
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_answer(&mut reader).expect(200);
    let answered = Instant::now();

    for (what, s) in [("silent", &mut silent), ("halfway", &mut halfway)] {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "{what}: still open"
        );
        let after = begin.elapsed();
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(5),
            "{what}: closed after {after:?}"
        );
    }
    let mut kept = kept;
    assert!(closed_within(&mut kept, Duration::from_secs(10)));
    assert!(answered.elapsed() >= Duration::from_millis(900));
}

#[test]
fn at_max_connections_a_new_request_closes_the_idlest_connection() {
    let t = TestSpool::builder()
        .top("[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 4")
        .sh("hello", "echo hi")
        .http()
        .start();
    let a = addr(&t);
    let mut idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&a).unwrap()).collect();
    get(&a, "/healthz").expect(200);
    // The connection opened first made room for it.
    assert!(closed_within(&mut idle[0], Duration::from_secs(5)));
    let id = submit(&a, &json!({"type": "hello"}));
    assert_eq!(status_of(&t.wait_record(&id)), "succeeded");
    assert!(
        !closed_within(&mut idle[3], Duration::from_millis(300)),
        "the newest idle connection was kept"
    );
    // It can still be used.
    idle[3]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    idle[3]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    idle[3].read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[test]
fn keep_alive_carries_several_requests_on_one_connection() {
    let t = TestSpool::builder().sh("hello", "echo hi").http().start();
    let a = addr(&t);
    let s = TcpStream::connect(&a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);

    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut r).expect(200).text(), "ok\n");
    let body = br#"{"type": "hello"}"#;
    write!(
        w,
        "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    w.write_all(body).unwrap();
    let posted = read_answer(&mut r);
    posted.expect(201);
    let id = posted.json()["id"].as_str().unwrap().to_string();
    t.wait_record(&id);

    // Two requests in one write (pipelined): two answers, in order.
    write!(
        w,
        "GET /jobs/{id} HTTP/1.1\r\nHost: x\r\n\r\nGET /jobs/{id}/output HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    assert_eq!(
        read_answer(&mut r).expect(200).json()["status"],
        "succeeded"
    );
    assert_eq!(read_answer(&mut r).expect(200).text(), "hi\n");

    // A body sent after `100 Continue`, as curl does for large ones.
    write!(
        w,
        "POST /jobs HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    read_answer(&mut r).expect(100);
    w.write_all(body).unwrap();
    read_answer(&mut r).expect(201);

    // An answer says when it closes; HTTP/1.0 closes unless asked not to.
    w.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let last = read_answer(&mut r);
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}
