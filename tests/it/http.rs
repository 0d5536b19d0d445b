//! The HTTP API, from outside: a real daemon, a real socket, and a tiny
//! HTTP/1.1 client written here so that every byte sent is the test's
//! choice (raw `..`, `%2F`, chunked bodies, lying lengths).

// Tests may unwrap: a panic is how a test reports what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// An answer, read to the end (the client always sends
/// `Connection: close`).
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// Checks the status, and that an error says what is wrong as JSON.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Resp {
        assert_eq!(self.status, status, "{}", self.text());
        if status >= 400 {
            assert_eq!(
                self.header("content-type"),
                Some("application/json"),
                "{}",
                self.text()
            );
            let msg = self.json()["error"].as_str().unwrap_or("").to_string();
            assert!(
                !msg.is_empty(),
                "an error must say what is wrong: {}",
                self.text()
            );
        }
        self
    }
}

/// Sends raw bytes and reads the answer.
pub fn raw(addr: &str, bytes: &[u8]) -> Resp {
    // The answer to HEAD announces a length it does not send.
    let head = bytes.starts_with(b"HEAD ");
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap_or_else(|e| {
        panic!(
            "read the answer: {e} (got {:?})",
            String::from_utf8_lossy(&buf)
        )
    });
    parse(&buf, head)
}

fn parse(buf: &[u8], is_head: bool) -> Resp {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if is_head {
        assert!(body.is_empty(), "HEAD answered with a body");
    } else if chunked {
        body = dechunk(&body);
    } else if let Some(n) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        assert!(body.len() >= n, "short body: {} of {n}", body.len());
        body.truncate(n);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// A request with the given headers and body.
pub fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    raw(addr, &bytes)
}

pub fn get(addr: &str, target: &str) -> Resp {
    request(addr, "GET", target, &[], None)
}

pub fn post(addr: &str, target: &str, body: &Value) -> Resp {
    request(
        addr,
        "POST",
        target,
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

/// A body sent with `Transfer-Encoding: chunked`, in chunks of `size`.
fn post_chunked(addr: &str, target: &str, body: &[u8], size: usize) -> Resp {
    let mut bytes =
        format!("POST {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for chunk in body.chunks(size) {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    raw(addr, &bytes)
}

pub fn addr(t: &TestSpool) -> String {
    t.http_addr
        .clone()
        .expect("the daemon logs the address it listens on")
}

/// POST /jobs and the id it answered.
pub fn submit(addr: &str, job: &Value) -> String {
    let r = post(addr, "/jobs", job);
    r.expect(201);
    let v = r.json();
    assert_eq!(v["status"], "queued", "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// Waits until GET /jobs/<id> says `status`.
fn wait_status(addr: &str, id: &str, status: &str) -> Value {
    wait_for(&format!("{id} to be {status}"), PROMPT, || {
        let v = get(addr, &format!("/jobs/{id}")).json();
        (v["status"] == status).then_some(v)
    })
}

#[test]
fn a_job_posted_as_json_is_in_new_when_acknowledged_and_its_record_and_output_are_served() {
    let t = TestSpool::builder()
        .sh("hello", "echo \"hi $RACCOON_PARAM_WHO\"; echo oops >&2")
        .http()
        .fsync(true)
        .start();
    let a = addr(&t);
    let r = post(
        &a,
        "/jobs",
        &json!({"type": "hello", "params": {"who": "ann"}}),
    );
    r.expect(201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), Some(format!("/jobs/{id}").as_str()));
    let somewhere = ["new", "running", "done"]
        .iter()
        .any(|d| t.path(d).join(format!("{id}.toml")).exists());
    assert!(somewhere, "201 comes only once the job is in new/");

    let rec = t.wait_record(&id);
    assert_eq!(status_of(&rec), "succeeded");
    let v = get(&a, &format!("/jobs/{id}")).expect(200).json();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["type"], "hello");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["params"]["who"], "ann");
    let submitted = v["submitted"].as_str().unwrap();
    assert!(
        submitted.len() == 24 && submitted.ends_with('Z') && submitted.as_bytes()[10] == b'T',
        "RFC 3339: {submitted}"
    );

    let out = get(&a, &format!("/jobs/{id}/output"));
    out.expect(200);
    assert_eq!(out.text(), "hi ann\n");
    assert!(
        out.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        get(&a, &format!("/jobs/{id}/stderr")).expect(200).text(),
        "oops\n"
    );
    // The report's relative links, over HTTP.
    assert_eq!(
        get(&a, &format!("/done/{id}.out")).expect(200).text(),
        "hi ann\n"
    );
    assert_eq!(
        get(&a, &format!("/done/{id}.err")).expect(200).text(),
        "oops\n"
    );
    // HEAD answers like GET, without a body.
    let head = request(&a, "HEAD", &format!("/jobs/{id}"), &[], None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn queued_and_running_jobs_show_what_their_file_says_and_can_be_cancelled() {
    let t = TestSpool::builder()
        .sh("slow", "echo started; exec sleep 30")
        .http()
        .start();
    let a = addr(&t);
    let later = submit(
        &a,
        &json!({"type": "slow", "priority": 3, "not_before": "2099-01-01T00:00:00Z", "params": {"n": 1}}),
    );
    let v = wait_status(&a, &later, "queued");
    assert_eq!(v["type"], "slow");
    assert_eq!(v["priority"], 3);
    assert_eq!(v["params"]["n"], 1);
    assert_eq!(v["not_before"], "2099-01-01T00:00:00.000Z");
    assert!(v["submitted"].as_str().is_some(), "{v}");
    assert_eq!(
        get(&a, &format!("/jobs/{later}/output")).expect(200).text(),
        "",
        "no output yet"
    );

    let now = submit(&a, &json!({"type": "slow"}));
    let v = wait_status(&a, &now, "running");
    assert!(v["started"].as_str().is_some(), "{v}");
    // The pid comes from the daemon's snapshot, published right after.
    wait_for("the running job's pid", PROMPT, || {
        let v = get(&a, &format!("/jobs/{now}")).json();
        v["pid"].as_u64().filter(|p| *p > 0)
    });
    wait_for("the running job's output", PROMPT, || {
        (get(&a, &format!("/jobs/{now}/output")).text() == "started\n").then_some(())
    });
    assert_eq!(
        get(&a, &format!("/running/{now}.out")).expect(200).text(),
        "started\n"
    );

    let listed = get(&a, "/jobs?status=queued").expect(200).json();
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![later.as_str()]);
    let listed = get(&a, "/jobs?status=running&type=slow").expect(200).json();
    assert_eq!(listed["jobs"][0]["id"], now.as_str());

    for id in [&later, &now] {
        let r = request(&a, "DELETE", &format!("/jobs/{id}"), &[], None);
        r.expect(202);
        assert_eq!(r.json(), json!({"id": id, "status": "cancelling"}));
    }
    for id in [&later, &now] {
        assert_eq!(status_of(&t.wait_record(id)), "cancelled");
        let r = request(&a, "DELETE", &format!("/jobs/{id}"), &[], None);
        r.expect(409);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("already finished"),
            "{}",
            r.text()
        );
    }
    request(&a, "DELETE", "/jobs/no-such-job", &[], None).expect(404);
}

#[test]
fn the_list_is_newest_first_filtered_and_limited() {
    let t = TestSpool::builder()
        .sh("hello", "echo hi")
        .sh("other", "exit 3")
        .http()
        .start();
    let a = addr(&t);
    let mut ids = Vec::new();
    for kind in ["hello", "other", "hello"] {
        let id = submit(&a, &json!({ "type": kind }));
        t.wait_record(&id);
        ids.push(id);
    }
    let all = get(&a, "/jobs").expect(200).json();
    let got: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(all["jobs"][1]["status"], "failed");
    assert_eq!(all["jobs"][1]["exit_code"], 3);

    let hello = get(&a, "/jobs?type=hello&status=succeeded&limit=1")
        .expect(200)
        .json();
    assert_eq!(hello["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(hello["jobs"][0]["id"], ids[2].as_str());
    let failed = get(&a, "/jobs?status=failed").expect(200).json();
    assert_eq!(failed["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(&a, "/jobs?limit=5000").expect(200).json()["jobs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    get(&a, "/jobs?limit=abc").expect(400);
    get(&a, "/jobs?limit=-1").expect(400);
    get(&a, "/jobs?status=bogus").expect(400);
    get(&a, "/jobs?status=%zz").expect(400);
}

#[test]
fn every_error_is_json_with_the_status_the_spec_gives() {
    let t = TestSpool::builder()
        .top("max_job_bytes = 1000")
        .sh("hello", "echo hi")
        .http()
        .start();
    let a = addr(&t);
    let json_post = |body: &[u8]| {
        request(
            &a,
            "POST",
            "/jobs",
            &[("Content-Type", "application/json")],
            Some(body),
        )
    };

    json_post(b"{\"type\": ").expect(400);
    json_post(b"not json at all").expect(400);
    json_post(b"").expect(400);

    let e = json_post(br#"{"type": "nope"}"#).expect(422).json();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("unknown type \"nope\""),
        "{e}"
    );
    let e = json_post(br#"{"type": "hello", "timout": "5s"}"#)
        .expect(422)
        .json();
    assert!(
        e["error"].as_str().unwrap().contains("timout"),
        "the file drop's message: {e}"
    );
    json_post(br#"{"type": "hello", "id": "mine"}"#).expect(422);
    json_post(br#"{"type": "hello", "priority": "high"}"#).expect(422);
    json_post(br#"{"type": "hello", "email": "not an address"}"#).expect(422);
    json_post(br#"[{"type": "hello"}]"#).expect(422);
    json_post(br#"{"type": null}"#).expect(422);

    // Too large, plain: announced by Content-Length, buffered or not.
    let pad = |n: usize| {
        format!(
            r#"{{"type": "hello", "params": {{"pad": "{}"}}}}"#,
            "x".repeat(n)
        )
    };
    json_post(pad(980).as_bytes()).expect(413);
    json_post(pad(200_000).as_bytes()).expect(413);
    // Too large, chunked: no length announced, cut while reading.
    post_chunked(&a, "/jobs", pad(3000).as_bytes(), 700).expect(413);
    // A chunked body within the limit is fine.
    let ok = post_chunked(
        &a,
        "/jobs",
        br#"{"type": "hello", "params": {"via": "chunks"}}"#,
        7,
    );
    ok.expect(201);
    t.wait_record(ok.json()["id"].as_str().unwrap());

    get(&a, "/jobs/no-such-job").expect(404);
    get(&a, "/jobs/no-such-job/output").expect(404);
    get(&a, "/jobs/no-such-job/files/x").expect(404);
    get(&a, "/no/such/path").expect(404);
    get(&a, "/task/no-such-job/view").expect(404);
    let r = request(&a, "PUT", "/jobs", &[], Some(b"{}"));
    r.expect(405);
    assert!(
        r.header("allow").unwrap().contains("POST"),
        "{:?}",
        r.headers
    );
    request(&a, "POST", "/metrics", &[], Some(b"")).expect(405);
    request(&a, "DELETE", "/", &[], None).expect(405);
    assert!(
        t.ls("new").is_empty(),
        "nothing refused was queued: {:?}",
        t.ls("new")
    );
    get(&a, "/healthz").expect(200);
}

#[test]
fn with_a_token_file_every_request_needs_the_token_and_cors_is_announced() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    // A token file others can read is refused (as sshd refuses such keys).
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let t = TestSpool::builder()
        .top(&format!(
            "[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = {}\ncors_origin = \"https://app.example\"",
            toml_str(&token_file.display().to_string())
        ))
        .sh("hello", "echo hi")
        .http()
        .start();
    let a = addr(&t);
    for (path, auth) in [
        ("/jobs", None),
        ("/healthz", None),
        ("/", None),
        ("/metrics", Some("Bearer wrong")),
        ("/jobs", Some("Bearer s3cret-token-but-longer")),
        ("/jobs", Some("Bearer s3cret-toke")),
        ("/jobs", Some("Basic s3cret-token")),
        ("/jobs", Some("s3cret-token")),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|v| ("Authorization", *v)).collect();
        let r = request(&a, "GET", path, &headers, None);
        r.expect(401);
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    }
    let r = request(
        &a,
        "POST",
        "/api/tasks/",
        &[],
        Some(br#"{"type": "hello"}"#),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["status"], "ERROR", "Raccoon's shape: {}", r.text());
    assert!(t.ls("new").is_empty() && t.ls("done").is_empty());

    let auth = [("Authorization", "Bearer s3cret-token")];
    let r = request(&a, "GET", "/healthz", &auth, None);
    r.expect(200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = request(&a, "POST", "/jobs", &auth, Some(br#"{"type": "hello"}"#));
    r.expect(201);
    t.wait_record(r.json()["id"].as_str().unwrap());

    // A browser's preflight carries no credentials.
    let pre = request(
        &a,
        "OPTIONS",
        "/jobs",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        None,
    );
    assert_eq!(pre.status, 204, "{}", pre.text());
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        pre.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .to_lowercase()
            .contains("authorization")
    );
}

#[test]
fn path_traversal_never_serves_a_file_outside_the_job() {
    let t = TestSpool::builder()
        .sh(
            "files",
            "printf 'the report' > \"$RACCOON_FILES/report.txt\"; \
             printf 'hidden' > \"$RACCOON_FILES/.hidden\"; \
             ln -s .. \"$RACCOON_FILES/up\"; echo done",
        )
        .http()
        .start();
    let a = addr(&t);
    // The secret sits where a naive join of the spool and the request
    // would land: next to the spool, in it, and in done/.
    let marker = "TOP-SECRET-7f3a9c";
    for p in [
        t.dir().join("secret.txt"),
        t.path("secret.txt"),
        t.path("done/secret.txt"),
    ] {
        std::fs::write(&p, marker).unwrap();
    }
    let secret = t.dir().join("secret.txt");
    let id = submit(&a, &json!({"type": "files"}));
    assert_eq!(status_of(&t.wait_record(&id)), "succeeded");
    let files = t.path("done").join(format!("{id}.files"));
    assert_eq!(
        std::fs::read_to_string(files.join("report.txt")).unwrap(),
        "the report"
    );
    // A task cannot know where the secret is; plant its symlink as a
    // task would have, inside the files folder.
    std::os::unix::fs::symlink(&secret, files.join("link")).unwrap();

    let ok = get(&a, &format!("/jobs/{id}/files/report.txt"));
    ok.expect(200);
    assert_eq!(ok.text(), "the report");
    assert!(ok.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(ok.header("content-security-policy"), Some("sandbox"));

    let abs = secret.display().to_string();
    let enc = |s: &str| s.replace('/', "%2F");
    let attempts = [
        format!("/jobs/{id}/files/link"),
        format!("/jobs/{id}/files/up"),
        format!("/jobs/{id}/files/.hidden"),
        format!("/jobs/{id}/files/.."),
        format!("/jobs/{id}/files/%2e%2e"),
        format!("/jobs/{id}/files/..%2F..%2F..%2Fsecret.txt"),
        format!("/jobs/{id}/files/..%2F..%2Fsecret.txt"),
        format!("/jobs/{id}/files/..%2Fsecret.out"),
        format!("/jobs/{id}/files/{}", enc(&abs)),
        format!("/jobs/{id}/files/up%2F..%2Fsecret.txt"),
        format!("/jobs/{id}/files/report.txt%00"),
        format!("/jobs/{id}/files/../../secret.txt"),
        format!("/jobs/{id}/files/up/../secret.txt"),
        format!("/jobs/{id}%2F..%2F..%2Fsecret.txt/output"),
        "/jobs/..%2F..%2Fsecret.txt/output".into(),
        "/jobs/%2e%2e%2fsecret/output".into(),
        "/jobs/%2E%2E/output".into(),
        "/jobs/../secret/output".into(),
        "/jobs/secret/output".into(),
        "/jobs/..%2Fsecret.txt".into(),
        format!("/jobs/{}/output", enc(&abs)),
        format!("/jobs//{}", abs.trim_start_matches('/')),
        "/done/secret.txt".into(),
        "/done/secret".into(),
        "/done/..%2Fsecret.txt".into(),
        "/done/%2e%2e%2Fsecret.txt".into(),
        "/done/..%2Fsecret.txt%00.out".into(),
        "/done/../secret.txt".into(),
        "/running/..%2Fdone%2Fsecret.txt".into(),
        "/running/..%2Fsecret.out".into(),
        format!("/{}", abs.trim_start_matches('/')),
        format!("//{}", abs.trim_start_matches('/')),
        "/secret.txt".into(),
        "/../secret.txt".into(),
        "/report.html/../secret.txt".into(),
    ];
    for target in &attempts {
        let r = get(&a, target);
        assert!(
            matches!(r.status, 400 | 404),
            "{target}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains(marker), "{target} leaked the secret");
    }
}

#[test]
fn metrics_count_jobs_by_state_type_and_status_with_a_duration_histogram() {
    let t = TestSpool::builder()
        .top("total = 3")
        .sh("hello", "echo hi")
        .sh("broken", "exit 1")
        .ty("slow", "command = [\"/bin/sleep\", \"30\"]\nlimit = 1")
        .http()
        .start();
    let a = addr(&t);
    for kind in ["hello", "hello", "broken"] {
        let id = submit(&a, &json!({ "type": kind }));
        t.wait_record(&id);
    }
    let running = submit(&a, &json!({"type": "slow"}));
    wait_status(&a, &running, "running");
    submit(&a, &json!({"type": "slow"}));

    let body = wait_for("the metrics to show the queued slow job", PROMPT, || {
        let r = get(&a, "/metrics");
        let text = r.text();
        text.contains("raccoond_jobs{state=\"queued\",type=\"slow\"} 1")
            .then_some(r)
    });
    assert_eq!(
        body.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = body.text();
    for line in [
        "# TYPE raccoond_jobs gauge",
        "raccoond_jobs{state=\"running\",type=\"slow\"} 1",
        "raccoond_jobs{state=\"queued\",type=\"hello\"} 0",
        "# TYPE raccoond_finished_total counter",
        "raccoond_finished_total{type=\"hello\",status=\"succeeded\"} 2",
        "raccoond_finished_total{type=\"broken\",status=\"failed\"} 1",
        "raccoond_finished_total{type=\"slow\",status=\"succeeded\"} 0",
        "# TYPE raccoond_job_duration_seconds histogram",
        "raccoond_job_duration_seconds_bucket{type=\"hello\",le=\"+Inf\"} 2",
        "raccoond_job_duration_seconds_count{type=\"hello\"} 2",
        "raccoond_limit{type=\"slow\"} 1",
        "raccoond_limit{type=\"hello\"} 3",
        "raccoond_total_limit 3",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    assert!(m.contains("# HELP raccoond_job_duration_seconds "));
    // Buckets are cumulative and end at the count.
    let buckets: Vec<u64> = m
        .lines()
        .filter(|l| l.starts_with("raccoond_job_duration_seconds_bucket{type=\"hello\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 11, "ten bounds and +Inf:\n{m}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(*buckets.last().unwrap(), 2);
}

#[test]
fn three_hundred_idle_connections_do_not_stop_file_drops_or_the_api() {
    let t = TestSpool::builder().sh("hello", "echo hi").http().start();
    let a = addr(&t);
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(&a).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        // Some say nothing, some stop in the middle of a request.
        if i % 3 == 1 {
            s.write_all(b"GET /jobs HTTP/1.1\r\nHost: x\r\n").unwrap();
        } else if i % 3 == 2 {
            // A body that stops halfway: no worker may wait for the rest.
            s.write_all(b"POST /jobs HTTP/1.1\r\nContent-Length: 100000\r\n\r\n{\"type\"")
                .unwrap();
        }
        idle.push(s);
    }
    for n in 0..5 {
        t.drop_job(&format!("drop-{n}.toml"), "type = \"hello\"\n");
    }
    for n in 0..5 {
        assert_eq!(status_of(&t.wait_record(&format!("drop-{n}"))), "succeeded");
    }
    get(&a, "/healthz").expect(200);
    let id = submit(&a, &json!({"type": "hello"}));
    assert_eq!(status_of(&t.wait_record(&id)), "succeeded");
    drop(idle);
}

#[test]
fn raccoon_and_flask_tasks_clients_get_their_own_shapes() {
    let t = TestSpool::builder()
        .sh("hello", "printf 'hi %s' \"$RACCOON_PARAM_WHO\"")
        .http()
        .start();
    let a = addr(&t);
    let r = post(
        &a,
        "/api/tasks/",
        &json!({"type": "hello", "params": {"who": "ann"}, "email": null}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "OK");
    let id = v["id"].as_str().unwrap();
    assert_eq!(status_of(&t.wait_record(id)), "succeeded");
    let r = post(&a, "/api/tasks", &json!({"type": "nope"}));
    assert_eq!(r.status, 422);
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["error_code"].as_i64()),
        (Some("ERROR"), Some(100)),
        "{v}"
    );
    assert!(
        v["error_msg"].as_str().unwrap().contains("unknown type"),
        "{v}"
    );
    let r = request(&a, "POST", "/api/tasks/", &[], Some(b"{oops"));
    assert_eq!(
        (r.status, r.json()["error_code"].as_i64()),
        (400, Some(100))
    );

    let r = post(
        &a,
        "/task/new",
        &json!({"type": "hello", "args": {"who": "bob"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "waiting");
    assert_eq!(v["args"], json!({"who": "bob"}));
    assert!(
        v["result"].is_null() && v["expire"].is_null() && v["created"].as_u64().is_some(),
        "{v}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    t.wait_record(&id);
    let v = get(&a, &format!("/task/{id}/view")).expect(200).json();
    assert_eq!(v["status"], "done");
    assert_eq!(v["result"], "hi bob");
    assert_eq!(v["args"], json!({"who": "bob"}));
    let (created, expire) = (
        v["created"].as_u64().unwrap(),
        v["expire"].as_u64().unwrap(),
    );
    assert!(expire > created, "{v}");
    post(&a, "/task/new", &json!({"type": "hello", "args": [1, 2]})).expect(422);
}
