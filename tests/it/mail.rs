//! Mail: real SMTP servers (aiosmtpd, Postfix's smtp-sink) and a sendmail
//! stand-in receive what the daemon sends.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const FROM: &str = "raccoond <raccoon@example.org>";

/// An SMTP server process, killed when dropped.
struct Server {
    child: Child,
    /// Where aiosmtpd keeps what it receives (a maildir).
    maildir: PathBuf,
}

impl Server {
    /// aiosmtpd storing every message in a maildir at `maildir`.
    fn aiosmtpd(port: u16, maildir: &Path) -> Server {
        let log = maildir.with_extension("log");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display())))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 -m aiosmtpd (pip install aiosmtpd): {e}")
            });
        Server::ready(child, port, maildir.to_path_buf(), &log)
    }

    /// smtp-sink answering every RCPT TO with `reply`, a 5xx line.
    fn smtp_sink_refusing(port: u16, reply: &str, log: &Path) -> Server {
        let mut cmd = Command::new("smtp-sink");
        if is_root() {
            // smtp-sink refuses to keep root's privileges.
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .args([
                "-f",
                "RCPT",
                "-B",
                reply,
                &format!("127.0.0.1:{port}"),
                "10",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display())))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run smtp-sink (apt-get install postfix): {e}"));
        Server::ready(child, port, PathBuf::new(), log)
    }

    fn ready(mut child: Child, port: u16, maildir: PathBuf, log: &Path) -> Server {
        wait_for(&format!("an SMTP server on port {port}"), PROMPT, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the SMTP server exited with {status}: {}",
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            port_open(port).then_some(())
        });
        Server { child, maildir }
    }

    /// The messages received so far.
    fn messages(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.maildir.join("new"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }

    fn wait_messages(&self, n: usize) -> Vec<PathBuf> {
        wait_for(
            &format!("{n} message(s) in {}", self.maildir.display()),
            PROMPT,
            || {
                let m = self.messages();
                (m.len() >= n).then_some(m)
            },
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message as Python's `email` package reads it: headers, the plain
/// text, and each attachment decoded.
struct Mail {
    headers: serde_json::Map<String, serde_json::Value>,
    text: String,
    attachments: Vec<(String, String, Vec<u8>)>,
}

impl Mail {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }
}

const PARSE: &str = r#"
import email, json, sys
from email import policy
with open(sys.argv[1], 'rb') as f:
    m = email.message_from_binary_file(f, policy=policy.default)
out = {'headers': {k.lower(): str(v) for k, v in m.items()}, 'text': None, 'attachments': []}
for part in m.walk():
    if part.is_multipart():
        continue
    if part.get_content_disposition() == 'attachment':
        out['attachments'].append([part.get_filename(), part.get_content_type(), part.get_payload(decode=True).hex()])
    elif part.get_content_type() == 'text/plain' and out['text'] is None:
        out['text'] = part.get_content()
print(json.dumps(out))
"#;

fn parse_mail(path: &Path) -> Mail {
    let out = Command::new("python3")
        .args(["-c", PARSE])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(
        out.status.success(),
        "parse {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    };
    Mail {
        headers: v["headers"].as_object().cloned().unwrap_or_default(),
        text: v["text"].as_str().unwrap_or("").replace("\r\n", "\n"),
        attachments: v["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let s = |i: usize| a[i].as_str().unwrap_or("").to_string();
                (s(0), s(1), hex(&s(2)))
            })
            .collect(),
    }
}

fn smtp_config(port: u16, extra: &str) -> String {
    format!(
        "[mail]\nsmtp = \"smtp://127.0.0.1:{port}\"\nfrom = \"{FROM}\"\nrecipients = [\"*@example.com\"]\n{extra}"
    )
}

fn mail_field(r: &toml::Table) -> &str {
    r.get("mail").and_then(|v| v.as_str()).unwrap_or("")
}

/// Waits until the record's `mail` field is no longer `pending`.
fn wait_mail_settled(t: &TestSpool, id: &str, timeout: Duration) -> toml::Table {
    wait_for(
        &format!("the mail of {id} to be sent or failed"),
        timeout,
        || {
            let text = fs::read_to_string(t.record_path(id)).ok()?;
            let r: toml::Table = toml::from_str(&text).ok()?;
            (mail_field(&r) != "pending").then_some(r)
        },
    )
}

#[test]
fn a_finished_job_mails_one_message_with_its_output_and_files() {
    let port = free_port();
    let t = TestSpool::builder()
        .top(&smtp_config(port, "max_attachment_bytes = 1000"))
        .sh(
            "report",
            r"echo rows written; echo warn >&2
printf 'a,b\r\n1,2\n\000\377end' > $RACCOON_FILES/data.csv
head -c 2000 /dev/zero > $RACCOON_FILES/big.bin",
        )
        .start();
    let server = Server::aiosmtpd(port, &t.dir().join("maildir"));
    t.drop_job(
        "r1.toml",
        "type = \"report\"\nemail = \"ann@example.com\"\n",
    );

    let r = wait_mail_settled(&t, "r1", PROMPT);
    assert_eq!(status_of(&r), "succeeded", "{r:?}");
    assert_eq!(mail_field(&r), "sent", "{r:?}\n{}", t.log());
    let msgs = server.wait_messages(1);
    assert_eq!(msgs.len(), 1, "one message per job");
    let m = parse_mail(&msgs[0]);
    assert_eq!(m.header("subject"), "[raccoond] report r1 succeeded");
    assert_eq!(m.header("to"), "ann@example.com");
    assert_eq!(m.header("from"), FROM);
    assert!(m.header("message-id").contains("r1"), "{:?}", m.headers);
    assert!(!m.header("date").is_empty(), "{:?}", m.headers);
    for want in [
        "Status:     succeeded",
        "Exit code:  0",
        "Attempts:   1",
        "Result (the task's standard output):\n  rows written\n",
        "  warn\n",
        "data.csv (14 bytes)",
    ] {
        assert!(m.text.contains(want), "missing {want:?} in:\n{}", m.text);
    }
    // What the task used, from the record's [usage], in words.
    assert!(
        m.text.lines().any(|l| l.starts_with("Used:       ")
            && l.contains(" CPU, ")
            && l.contains(" max RSS")),
        "no Used line in:\n{}",
        m.text
    );
    let big = t.path("done/r1.files/big.bin");
    assert!(
        m.text.contains(&format!(
            "big.bin (2000 bytes, over max_attachment_bytes = 1000): {}",
            big.display()
        )),
        "{}",
        m.text
    );
    let written = fs::read(t.path("done/r1.files/data.csv")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written, b"a,b\r\n1,2\n\0\xffend");
    assert_eq!(m.attachments.len(), 1, "only what fits the budget");
    let (name, kind, bytes) = &m.attachments[0];
    assert_eq!((name.as_str(), kind.as_str()), ("data.csv", "text/csv"));
    assert_eq!(bytes, &written, "the attachment is the file, byte for byte");
}

#[test]
fn notify_failure_mails_a_failure_and_nothing_for_a_success() {
    let port = free_port();
    let t = TestSpool::builder()
        .top(&smtp_config(port, ""))
        .ty(
            "check",
            "command = [\"/bin/sh\", \"-c\", \"exit $RACCOON_PARAM_CODE\"]\nnotify = \"failure\"",
        )
        .start();
    let server = Server::aiosmtpd(port, &t.dir().join("maildir"));
    t.drop_job(
        "good.toml",
        "type = \"check\"\nemail = \"ann@example.com\"\nparams = { code = 0 }\n",
    );
    t.drop_job(
        "bad.toml",
        "type = \"check\"\nemail = \"ann@example.com\"\nparams = { code = 3 }\n",
    );
    let good = t.wait_record("good");
    assert_eq!(status_of(&good), "succeeded");
    assert_eq!(mail_field(&good), "none", "{good:?}");
    let bad = wait_mail_settled(&t, "bad", PROMPT);
    assert_eq!(
        (status_of(&bad), mail_field(&bad)),
        ("failed", "sent"),
        "{bad:?}"
    );
    let msgs = server.wait_messages(1);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let m = parse_mail(&msgs[0]);
    assert_eq!(m.header("subject"), "[raccoond] check bad failed");
    assert!(m.text.contains("Exit code:  3"), "{}", m.text);
    assert!(
        m.text.contains("Error:      exited with status 3"),
        "{}",
        m.text
    );
}

#[test]
fn a_hung_then_dead_server_delays_no_job_and_gets_the_mail_when_back() {
    // A listener that never accepts: connections hang until the mailer's
    // timeout, as with a stuck server.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = hung.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let t = TestSpool::builder()
        .top("total = 2")
        .top(&smtp_config(port, ""))
        .sh("quick", "echo done")
        .start();
    t.drop_job(
        "mailed.toml",
        "type = \"quick\"\nemail = \"ann@example.com\"\n",
    );
    assert_eq!(mail_field(&t.wait_record("mailed")), "pending");

    // While the mail thread waits on the server, jobs go on.
    let start = Instant::now();
    for id in ["j1", "j2", "j3"] {
        t.drop_job(&format!("{id}.toml"), "type = \"quick\"\n");
    }
    for id in ["j1", "j2", "j3"] {
        assert_eq!(status_of(&t.wait_record(id)), "succeeded");
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "jobs waited: {:?}",
        start.elapsed()
    );
    assert_eq!(mail_field(&t.wait_record("mailed")), "pending");

    // Now the server is down (refused), then up again.
    drop(hung);
    wait_for("a failed attempt in the log", PROMPT, || {
        t.log().contains("mailed: mail not sent yet").then_some(())
    });
    let server = Server::aiosmtpd(port, &t.dir().join("maildir"));
    let r = wait_mail_settled(&t, "mailed", Duration::from_secs(20));
    assert_eq!(mail_field(&r), "sent", "{r:?}\n{}", t.log());
    let m = parse_mail(&server.wait_messages(1)[0]);
    assert_eq!(m.header("subject"), "[raccoond] quick mailed succeeded");
}

#[test]
fn a_permanent_refusal_fails_the_mail_with_the_servers_words_at_once() {
    let port = free_port();
    let t = TestSpool::builder()
        .top(&smtp_config(port, ""))
        .sh("quick", "true")
        .start();
    let _server = Server::smtp_sink_refusing(
        port,
        "550 5.1.1 no such user here",
        &t.dir().join("sink.log"),
    );
    t.drop_job(
        "refused.toml",
        "type = \"quick\"\nemail = \"ann@example.com\"\n",
    );
    let r = wait_mail_settled(&t, "refused", PROMPT);
    let mail = mail_field(&r);
    assert!(mail.starts_with("failed: "), "{r:?}");
    assert!(
        mail.contains("550") && mail.contains("no such user here"),
        "{mail}"
    );
    assert!(
        !t.log().contains("refused: mail not sent yet"),
        "a 5xx was retried:\n{}",
        t.log()
    );
}

#[test]
fn mail_left_pending_at_shutdown_is_sent_by_the_next_run() {
    let port = free_port();
    let mut t = TestSpool::builder()
        .top(&smtp_config(port, ""))
        .sh("quick", "true")
        .start();
    t.drop_job(
        "later.toml",
        "type = \"quick\"\nemail = \"ann@example.com\"\n",
    );
    wait_for("a failed attempt in the log", PROMPT, || {
        t.log().contains("later: mail not sent yet").then_some(())
    });
    assert!(t.stop(PROMPT).success());
    assert_eq!(
        mail_field(&t.wait_record("later")),
        "pending",
        "shutdown must not fail the mail"
    );

    let server = Server::aiosmtpd(port, &t.dir().join("maildir"));
    t.launch();
    let r = wait_mail_settled(&t, "later", PROMPT);
    assert_eq!(mail_field(&r), "sent", "{r:?}\n{}", t.log());
    assert_eq!(server.wait_messages(1).len(), 1);
}

#[test]
fn the_sendmail_transport_gets_the_message_and_the_recipient() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let script = dir.path().join("sendmail");
    let args = dir.path().join("args");
    let message = dir.path().join("message");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\ncat > '{}'\n",
            args.display(),
            message.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    let t = TestSpool::builder()
        .top(&format!(
            "[mail]\nsendmail = {}\nfrom = \"{FROM}\"",
            toml_str(&script.display().to_string())
        ))
        .sh("quick", "echo hello")
        .start();
    t.drop_job(
        "viasendmail.toml",
        "type = \"quick\"\nemail = [\"ann@example.com\", \"bob@example.net\"]\n",
    );
    let r = wait_mail_settled(&t, "viasendmail", PROMPT);
    assert_eq!(mail_field(&r), "sent", "{r:?}\n{}", t.log());
    let argv = fs::read_to_string(&args).unwrap_or_else(|e| panic!("{e}"));
    let argv: Vec<&str> = argv.lines().collect();
    // Recipients come after "--": an address can never pass as an option.
    let dashes = argv
        .iter()
        .position(|a| *a == "--")
        .unwrap_or_else(|| panic!("{argv:?}"));
    assert_eq!(
        &argv[dashes + 1..],
        ["ann@example.com", "bob@example.net"],
        "{argv:?}"
    );
    assert!(
        argv.windows(2).any(|w| w == ["-f", "raccoon@example.org"]),
        "{argv:?}"
    );
    let m = parse_mail(&message);
    assert_eq!(
        m.header("subject"),
        "[raccoond] quick viasendmail succeeded"
    );
    assert_eq!(m.header("to"), "ann@example.com, bob@example.net");
    assert!(m.text.contains("hello"), "{}", m.text);
}

#[test]
fn bad_addresses_and_addresses_outside_the_allow_list_are_rejected_at_submission() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let called = dir.path().join("called");
    let script = dir.path().join("sendmail");
    fs::write(
        &script,
        format!("#!/bin/sh\ncat >/dev/null\ntouch '{}'\n", called.display()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    let t = TestSpool::builder()
        .top(&format!(
            "[mail]\nsendmail = {}\nrecipients = [\"*@example.com\", \"boss@example.net\"]",
            toml_str(&script.display().to_string())
        ))
        .sh("quick", "true")
        .start();
    let cases = [
        ("notaddr", "\"not an address\"", "not a valid address"),
        (
            "twoats",
            "\"eve@evil.test@example.com\"",
            "not a valid address",
        ),
        (
            "header",
            "\"ann@example.com\\r\\nBcc: eve@evil.test\"",
            "not a valid address",
        ),
        (
            "outside",
            "[\"ann@example.com\", \"eve@evil.test\"]",
            "not allowed by [mail] recipients",
        ),
        (
            "lookalike",
            "\"ann@example.com.evil.test\"",
            "not allowed by [mail] recipients",
        ),
        (
            "subdomain",
            "\"ann@mail.example.com\"",
            "not allowed by [mail] recipients",
        ),
        (
            "otheruser",
            "\"ann@example.net\"",
            "not allowed by [mail] recipients",
        ),
    ];
    for (id, email, _) in &cases {
        t.drop_job(
            &format!("{id}.toml"),
            &format!("type = \"quick\"\nemail = {email}\n"),
        );
    }
    t.drop_job(
        "allowed.toml",
        "type = \"quick\"\nemail = [\"Ann@EXAMPLE.com\", \"boss@example.net\"]\n",
    );
    for (id, _, want) in &cases {
        let r = t.wait_record(id);
        assert_eq!(status_of(&r), "rejected", "{id}: {r:?}");
        let error = r.get("error").and_then(|v| v.as_str()).unwrap_or("");
        assert!(error.contains(want), "{id}: {error}");
        assert!(
            r.get("mail").is_none(),
            "{id}: a rejected job is not mailed: {r:?}"
        );
    }
    let ok = wait_mail_settled(&t, "allowed", PROMPT);
    assert_eq!(
        (status_of(&ok), mail_field(&ok)),
        ("succeeded", "sent"),
        "{ok:?}"
    );
    assert!(called.exists());
}
