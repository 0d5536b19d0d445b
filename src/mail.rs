//! Mail: one message per finished job that asked for it, sent from a thread
//! of its own.
//!
//! Takes the `[mail]` configuration once, then records (the daemon hands
//! over each record it wrote with `mail = "pending"`); reads the job's
//! output and files in `done/` to write the message; gives back, through
//! the callback passed to [`Mailer::start`], `sent` or `failed: <reason>`
//! for each record, which the daemon writes into the record's `mail` field.
//!
//! It never writes, moves or deletes anything in the spool (the daemon
//! rewrites the record), and it never makes its caller wait: [`Mailer::send`]
//! only queues. Every wait for a slow or dead server — connecting, its
//! replies, the pause before the next attempt — happens on the mail thread,
//! whose next attempt is a computed deadline on its channel, never a sleep.
//!
//! Delivery is at least once: transient failures (4xx replies, refused or
//! broken connections, timeouts) are tried again with doubling delays for
//! up to [`RETRY_FOR`]; a permanent failure (5xx) ends at once with the
//! server's words. When the daemon stops, a message not sent yet stays
//! `pending` in its record and the next run sends it.
//!
//! `smtp://` uses STARTTLS when the server offers it, without checking the
//! certificate (RFC 7435 opportunistic security, as Postfix's `may`: an
//! attacker who could fake a certificate could as well strip STARTTLS, and
//! local relays often have self-signed ones); `smtp://…?tls=required` and
//! `smtps://` check it.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SendmailTransport, SmtpTransport, Transport as _};

use crate::config::{MailConfig, MailTransport};
use crate::ids;
use crate::record::Record;
use crate::spool::Spool;
use crate::time::{self, format_duration};

/// How long one connect, read or write to the SMTP server may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after the first transient failure; it doubles after each.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest pause between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(300);
/// How long a message is tried before it is given up as failed.
pub const RETRY_FOR: Duration = Duration::from_secs(3600);
/// Lines of stdout and stderr quoted in the body.
const TAIL_LINES: usize = 20;
/// The tail of an output file is read from at most this many last bytes,
/// so a task that printed gigabytes costs no more than one that printed a
/// line.
const TAIL_BYTES: u64 = 8 * 1024;
/// The result is quoted up to this many bytes; the record has all of it.
const RESULT_BYTES: usize = 16 * 1024;
/// At most this many files are attached, whatever their size: a task that
/// leaves thousands of small files must not make a message nobody can open.
const MAX_ATTACHMENTS: usize = 100;
/// At most this many left-out files are named in the body.
const MAX_LISTED: usize = 50;

/// The handle the daemon keeps: a queue into the mail thread.
pub struct Mailer {
    tx: Sender<Record>,
}

impl Mailer {
    /// Checks the transport (a bad `smtp` URL is an error here, so the
    /// daemon refuses to start) and starts the mail thread. `done` is called
    /// on that thread with `(id, "sent" | "failed: <reason>")`.
    pub fn start<F>(config: &MailConfig, spool: Spool, done: F) -> Result<Mailer, String>
    where
        F: Fn(String, String) + Send + 'static,
    {
        let relay = Relay::new(&config.transport)?;
        let composer = Composer::new(config, spool)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("mail".into())
            .spawn(move || run(&rx, &relay, &composer, &done))
            .map_err(|e| format!("cannot start the mail thread: {e}"))?;
        Ok(Mailer { tx })
    }

    /// Queues a record's message. Never blocks.
    pub fn send(&self, record: Record) {
        let id = record.id.clone();
        if self.tx.send(record).is_err() {
            crate::log!("{id}: mail thread is gone; the mail stays pending until the next start");
        }
    }
}

/// The mail thread: queue what arrives, try what is due, report outcomes.
/// Returns when the daemon drops its [`Mailer`]; what is still queued then
/// stays `pending` in its record.
fn run(rx: &Receiver<Record>, relay: &Relay, composer: &Composer, done: &dyn Fn(String, String)) {
    let mut outbox = Outbox::default();
    loop {
        let got = match outbox.wakeup() {
            Some(at) => rx.recv_deadline(at),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(record) => queue(&mut outbox, record),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        loop {
            match rx.try_recv() {
                Ok(record) => queue(&mut outbox, record),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        // One attempt, then back to the channel: mail that arrives during a
        // slow attempt is queued before the next one.
        let Some(pending) = outbox.take_due(Instant::now()) else {
            continue;
        };
        let id = pending.record.id.clone();
        let result = composer
            .compose(&pending.record)
            .map_err(Failure::Permanent)
            .and_then(|message| relay.deliver(&message));
        match outbox.settle(pending, result, Instant::now()) {
            Step::Sent => done(id, "sent".into()),
            Step::Failed(reason) => done(id, format!("failed: {reason}")),
            Step::Retry { reason, after } => crate::log!(
                "{id}: mail not sent yet ({reason}); trying again in {}",
                format_duration(after)
            ),
        }
    }
}

fn queue(outbox: &mut Outbox, record: Record) {
    let id = record.id.clone();
    if let Err(why) = outbox.push(record, Instant::now()) {
        crate::log!("{id}: {why}");
    }
}

// ---- the retry schedule ----------------------------------------------------

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Worth another try later. `server` when the server as a whole is
    /// unreachable or unwilling (no connection, TLS, timeout, 421), so that
    /// the other messages wait too instead of hammering it.
    Transient { reason: String, server: bool },
    /// Trying again would get the same answer.
    Permanent(String),
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Sent,
    Failed(String),
    Retry { reason: String, after: Duration },
}

/// A message waiting for its next attempt.
struct Pending {
    record: Record,
    /// When it was queued: the retry budget counts from here.
    first: Instant,
    /// The pause after its next transient failure.
    delay: Duration,
    /// Its last failure was the server being unreachable: when another
    /// message gets through, it is tried again at once.
    server_down: bool,
}

/// The queue of the mail thread, ordered by next attempt. Pure: every
/// method takes `now`.
struct Outbox {
    /// Keyed by (next attempt, arrival): the first entry is the next to try,
    /// so a message that keeps failing goes behind the others.
    queue: BTreeMap<(Instant, u64), Pending>,
    /// Ids queued or being tried, so that a record handed over twice (at
    /// start, by the sweeper and by the job's own end) is mailed once.
    ids: HashSet<String>,
    seq: u64,
    /// While the server is unreachable, nothing is tried before this.
    paused_until: Option<Instant>,
    /// The pause after the next failure that takes the server as a whole.
    server_delay: Duration,
    /// Some queued message is marked `server_down`: worth a look when the
    /// server answers again.
    some_server_down: bool,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            queue: BTreeMap::new(),
            ids: HashSet::new(),
            seq: 0,
            paused_until: None,
            server_delay: FIRST_DELAY,
            some_server_down: false,
        }
    }
}

impl Outbox {
    /// Queues a record for an attempt now, unless its mail is queued
    /// already or is no longer pending (the daemon may hand over a record
    /// read from disk after its mail was sent).
    fn push(&mut self, record: Record, now: Instant) -> Result<(), String> {
        if record.mail.as_deref() != Some("pending") {
            let mail = record.mail.as_deref().unwrap_or("none");
            return Err(format!("mail is {mail:?}, not pending; not sent again"));
        }
        if !self.ids.insert(record.id.clone()) {
            return Err("mail already queued; not queued twice".into());
        }
        let pending = Pending {
            record,
            first: now,
            delay: FIRST_DELAY,
            server_down: false,
        };
        self.insert(now, pending);
        Ok(())
    }

    fn insert(&mut self, at: Instant, pending: Pending) {
        self.seq += 1;
        self.queue.insert((at, self.seq), pending);
    }

    /// When the next attempt is due, if anything is queued.
    fn wakeup(&self) -> Option<Instant> {
        let (&(next, _), _) = self.queue.first_key_value()?;
        Some(self.paused_until.map_or(next, |p| p.max(next)))
    }

    /// The message to try now, if one is due.
    fn take_due(&mut self, now: Instant) -> Option<Pending> {
        if self.wakeup()? > now {
            return None;
        }
        self.queue.pop_first().map(|(_, p)| p)
    }

    /// Files the outcome of an attempt at `p`.
    fn settle(&mut self, mut p: Pending, result: Result<(), Failure>, now: Instant) -> Step {
        match result {
            Ok(()) => {
                self.ids.remove(&p.record.id);
                self.server_is_back(now);
                Step::Sent
            }
            Err(Failure::Permanent(reason)) => {
                self.ids.remove(&p.record.id);
                self.server_is_back(now);
                Step::Failed(reason)
            }
            Err(Failure::Transient { reason, server }) => {
                let after = p.delay;
                if now + after > p.first + RETRY_FOR {
                    self.ids.remove(&p.record.id);
                    let tried = format_duration(now.saturating_duration_since(p.first));
                    return Step::Failed(format!("gave up after {tried}: {reason}"));
                }
                if server {
                    self.paused_until = Some(now + self.server_delay);
                    self.server_delay = (self.server_delay * 2).min(MAX_DELAY);
                } else {
                    self.server_is_back(now);
                }
                p.delay = (p.delay * 2).min(MAX_DELAY);
                p.server_down = server;
                self.some_server_down |= server;
                self.insert(now + after, p);
                Step::Retry { reason, after }
            }
        }
    }

    /// The server answered: the pause is over, and messages that were only
    /// waiting for it are due now rather than after their own long delay.
    fn server_is_back(&mut self, now: Instant) {
        self.paused_until = None;
        self.server_delay = FIRST_DELAY;
        if !std::mem::take(&mut self.some_server_down) {
            return;
        }
        let waiting: Vec<(Instant, u64)> = self
            .queue
            .iter()
            .filter(|(key, p)| p.server_down && key.0 > now)
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            if let Some(mut p) = self.queue.remove(&key) {
                p.server_down = false;
                self.queue.insert((now, key.1), p);
            }
        }
    }
}

// ---- transports ------------------------------------------------------------

/// Where messages go.
enum Relay {
    Smtp(SmtpTransport),
    Sendmail {
        transport: SendmailTransport,
        program: PathBuf,
    },
}

impl Relay {
    fn new(transport: &MailTransport) -> Result<Relay, String> {
        match transport {
            MailTransport::Smtp { url, password } => {
                smtp_transport(url, password.as_deref()).map(Relay::Smtp)
            }
            MailTransport::Sendmail { program } => Ok(Relay::Sendmail {
                transport: SendmailTransport::new_with_command(program.as_os_str()),
                program: program.clone(),
            }),
        }
    }

    fn deliver(&self, message: &Message) -> Result<(), Failure> {
        match self {
            Relay::Smtp(t) => t.send(message).map(drop).map_err(|e| smtp_failure(&e)),
            Relay::Sendmail { transport, program } => transport
                .send(message)
                .map_err(|e| sendmail_failure(program, &e)),
        }
    }
}

/// An SMTP transport from an `smtp://` or `smtps://` URL; `password` (from
/// `password_file`) goes with the URL's user name.
fn smtp_transport(url: &str, password: Option<&str>) -> Result<SmtpTransport, String> {
    let shown = redact(url);
    let parsed = url::Url::parse(url).map_err(|e| format!("smtp = {shown:?}: not a URL ({e})"))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("smtp = {shown:?}: names no host"))?
        .to_string();
    let mut builder = SmtpTransport::from_url(url)
        .map_err(|e| format!("smtp = {shown:?}: {}", one_line(&e.to_string())))?;
    if parsed.scheme() == "smtp" && !parsed.query_pairs().any(|(k, _)| k == "tls") {
        let params = TlsParameters::builder(host)
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true)
            .build()
            .map_err(|e| format!("smtp = {shown:?}: cannot set up TLS: {e}"))?;
        builder = builder.tls(Tls::Opportunistic(params));
    }
    if let Some(password) = password {
        let user = percent_decode(parsed.username())
            .ok_or_else(|| format!("smtp = {shown:?}: the user name is not UTF-8"))?;
        if user.is_empty() {
            return Err(format!(
                "password_file is set but smtp = {shown:?} names no user (write smtp://user@host)"
            ));
        }
        builder = builder.credentials(Credentials::new(user, password.to_string()));
    }
    Ok(builder.timeout(Some(SMTP_TIMEOUT)).build())
}

/// `%XX` escapes of a URL's user name decoded, as lettre decodes the
/// user and password it reads from the URL itself.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A URL for messages: its password replaced by `***`.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_string(),
        },
    }
}

fn smtp_failure(e: &lettre::transport::smtp::Error) -> Failure {
    use std::error::Error as _;
    let words = e
        .source()
        .map(|s| one_line(&s.to_string()))
        .unwrap_or_default();
    match e.status() {
        Some(code) if e.is_permanent() => {
            Failure::Permanent(format!("the server answered {code} {words}"))
        }
        Some(code) => Failure::Transient {
            reason: format!("the server answered {code} {words}"),
            // 421: the service is closing down, for every message alike.
            server: code.to_string() == "421",
        },
        // Our own side refused (no usable AUTH mechanism, a bad message):
        // the next attempt would do the same.
        None if e.is_client() => Failure::Permanent(one_line(&e.to_string())),
        None => Failure::Transient {
            reason: one_line(&e.to_string()),
            server: true,
        },
    }
}

/// A sendmail that could not be run or fed may work later; one that ran
/// and said no has decided (Postfix's sendmail queues what it accepts).
fn sendmail_failure(program: &Path, e: &lettre::transport::sendmail::Error) -> Failure {
    use std::error::Error as _;
    let source = e.source();
    match source.and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(io) => Failure::Transient {
            reason: format!("cannot run {}: {io}", program.display()),
            server: true,
        },
        None => {
            let words = source.map(|s| one_line(&s.to_string())).unwrap_or_default();
            if words.is_empty() {
                Failure::Permanent(format!("{} failed and said nothing", program.display()))
            } else {
                Failure::Permanent(format!("{} failed: {words}", program.display()))
            }
        }
    }
}

/// Text for a record field or a log line: one line, trimmed.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---- the message -----------------------------------------------------------

/// `Auto-Submitted: auto-generated` (RFC 3834), so that vacation responders
/// do not answer the daemon.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// Writes messages from records and the files beside them.
struct Composer {
    from: Mailbox,
    max_attachment_bytes: u64,
    spool: Spool,
}

impl Composer {
    fn new(config: &MailConfig, spool: Spool) -> Result<Composer, String> {
        let from = config
            .from
            .parse()
            .map_err(|e| format!("from = {:?}: not a mail address ({e})", config.from))?;
        Ok(Composer {
            from,
            max_attachment_bytes: config.max_attachment_bytes,
            spool,
        })
    }

    /// The message for a record, read from `done/` as it is now. An `Err`
    /// is permanent: the same record would fail the same way.
    fn compose(&self, rec: &Record) -> Result<Message, String> {
        // The id names files below done/: a record edited by hand must not
        // lead the mailer elsewhere.
        if !ids::valid_id(&rec.id) {
            return Err(format!("the record's id {:?} is not a valid id", rec.id));
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject(rec))
            .date_now()
            .message_id(Some(message_id(rec, self.from.email.domain())))
            .header(AutoSubmitted);
        if rec.email.is_empty() {
            return Err("the record has no email address".into());
        }
        for addr in &rec.email {
            let to: Mailbox = addr
                .parse()
                .map_err(|e| format!("email {addr:?}: not a valid address ({e})"))?;
            builder = builder.to(to);
        }

        let out_path = self.spool.done_out(&rec.id);
        let err_path = self.spool.done_err(&rec.id);
        let stdout = read_tail(&out_path);
        let stderr = read_tail(&err_path);
        // A result taken from stdout is that same text: quote it once.
        let stdout_is_result = matches!(&rec.result, Some(toml::Value::String(s))
            if stdout.size == s.len() as u64 && !stdout.cut && stdout.raw == s.as_bytes());

        let files_dir = self.spool.done_files(&rec.id);
        let mut plan = plan_attachments(
            list_files(&files_dir),
            self.max_attachment_bytes,
            MAX_ATTACHMENTS,
        );
        let mut attachments = Vec::new();
        for f in std::mem::take(&mut plan.attach) {
            match read_regular(&f.path, f.size) {
                Ok(bytes) => attachments.push((f, bytes)),
                Err(e) => plan.left_out.push((f, LeftOut::Unreadable(e.to_string()))),
            }
        }
        plan.attach = attachments.iter().map(|(f, _)| f.clone()).collect();

        let outputs = Outputs {
            stdout: (&out_path, &stdout, stdout_is_result),
            stderr: (&err_path, &stderr),
        };
        let text = body(rec, &outputs, &plan, self.max_attachment_bytes);
        let result = if attachments.is_empty() {
            builder.singlepart(SinglePart::plain(text))
        } else {
            let mut parts = MultiPart::mixed().singlepart(SinglePart::plain(text));
            for (f, bytes) in attachments {
                let kind = ContentType::parse(mime_for(&f.name))
                    .map_err(|e| format!("{}: {e}", f.name))?;
                // Base64 whatever the content: lettre would send a text file
                // as 7bit, and its line endings would not survive the trip.
                let body = Body::new_with_encoding(bytes, ContentTransferEncoding::Base64)
                    .unwrap_or_else(Body::new);
                parts = parts.singlepart(Attachment::new(f.name).body(body, kind));
            }
            builder.multipart(parts)
        };
        result.map_err(|e| format!("cannot write the message: {e}"))
    }
}

/// `[raccoond] <type> <id> <status>`.
fn subject(rec: &Record) -> String {
    format!("[raccoond] {} {} {}", rec.kind, rec.id, rec.status)
}

/// The same id on every attempt and after a restart, so that a receiver
/// can drop the copy a retry sends when the server had in fact taken the
/// first one.
fn message_id(rec: &Record, domain: &str) -> String {
    let finished = rec.finished_at().map_or(0, time::unix_millis);
    format!("<raccoond.{}.{finished}@{domain}>", rec.id)
}

/// The end of an output file.
#[derive(Debug, Default)]
struct Tail {
    /// The file's size; 0 when it is missing.
    size: u64,
    /// The last bytes read (at most [`TAIL_BYTES`]).
    raw: Vec<u8>,
    /// Whether the file goes on before `raw`.
    cut: bool,
    /// Why the file could not be read, when it exists but cannot be.
    error: Option<String>,
}

/// Reads at most the last [`TAIL_BYTES`] of a file.
fn read_tail(path: &Path) -> Tail {
    let read = || -> io::Result<Tail> {
        let mut f = File::open(path)?;
        let size = f.metadata()?.len();
        let start = size.saturating_sub(TAIL_BYTES);
        f.seek(SeekFrom::Start(start))?;
        let mut raw = Vec::new();
        f.take(TAIL_BYTES).read_to_end(&mut raw)?;
        Ok(Tail {
            size,
            raw,
            cut: start > 0,
            error: None,
        })
    };
    match read() {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Tail::default(),
        Err(e) => Tail {
            error: Some(e.to_string()),
            ..Tail::default()
        },
    }
}

/// The last `n` lines of `raw`, as text fit for a mail body: a partial
/// first line (when the file was cut there) dropped, invalid UTF-8 and
/// control characters replaced. Also tells whether earlier lines exist.
fn tail_lines(raw: &[u8], cut: bool, n: usize) -> (Vec<String>, bool) {
    let text = String::from_utf8_lossy(raw);
    let mut text: &str = &text;
    let mut more = cut;
    if cut && let Some(nl) = text.find('\n') {
        text = &text[nl + 1..];
    }
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    if lines.len() > n {
        lines.drain(..lines.len() - n);
        more = true;
    }
    let clean = lines
        .into_iter()
        .map(|l| {
            l.strip_suffix('\r')
                .unwrap_or(l)
                .chars()
                .map(|c| {
                    if c.is_control() && c != '\t' {
                        '\u{fffd}'
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    (clean, more)
}

/// An entry of a job's files folder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileInfo {
    name: String,
    path: PathBuf,
    size: u64,
    /// `None` for a regular file, else what it is ("symlink", "folder", …).
    other: Option<&'static str>,
}

/// Why a file is not attached.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LeftOut {
    /// It would take the attachments past `max_attachment_bytes`.
    OverBudget,
    /// [`MAX_ATTACHMENTS`] files are attached already.
    TooMany,
    /// Not a regular file: never opened, never followed.
    NotRegular(&'static str),
    Unreadable(String),
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    attach: Vec<FileInfo>,
    left_out: Vec<(FileInfo, LeftOut)>,
}

/// The entries of a files folder, looked at without following links.
fn list_files(dir: &Path) -> Vec<FileInfo> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let other = crate::spool::irregular(&meta);
        out.push(FileInfo {
            name: entry.file_name().to_string_lossy().into_owned(),
            path,
            size: if other.is_none() { meta.len() } else { 0 },
            other,
        });
    }
    out
}

/// Which files to attach: regular files in name order, each while the
/// total stays within `budget` and the count within `max_files`; a file
/// too large for what is left is listed, and smaller ones after it may
/// still fit.
fn plan_attachments(mut files: Vec<FileInfo>, budget: u64, max_files: usize) -> Plan {
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut plan = Plan::default();
    let mut left = budget;
    for f in files {
        match f.other {
            Some(kind) => plan.left_out.push((f, LeftOut::NotRegular(kind))),
            None if plan.attach.len() >= max_files => plan.left_out.push((f, LeftOut::TooMany)),
            None if f.size <= left => {
                left -= f.size;
                plan.attach.push(f);
            }
            None => plan.left_out.push((f, LeftOut::OverBudget)),
        }
    }
    plan
}

/// Reads a regular file the plan chose: never through a symlink put in
/// its place since, never blocking on a FIFO, never past its planned size.
fn read_regular(path: &Path, size: u64) -> io::Result<Vec<u8>> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("no longer a regular file"));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    f.take(size).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The MIME type of an attachment, by its extension.
fn mime_for(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "txt" | "log" | "text" | "out" | "err" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "json" => "application/json",
        "xml" => "application/xml",
        "toml" => "application/toml",
        "yaml" | "yml" => "application/yaml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "xz" => "application/x-xz",
        "zst" => "application/zstd",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        "odt" => "application/vnd.oasis.opendocument.text",
        _ => "application/octet-stream",
    }
}

/// The output files as the body quotes them: (path, tail, whether stdout
/// is already quoted as the result) and (path, tail).
struct Outputs<'a> {
    stdout: (&'a Path, &'a Tail, bool),
    stderr: (&'a Path, &'a Tail),
}

/// The plain-text body. Pure: everything it says comes from its arguments.
fn body(rec: &Record, out: &Outputs, plan: &Plan, budget: u64) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "Job {} (type {}) {}.",
        clean_name(&rec.id),
        clean_name(&rec.kind),
        rec.status
    );
    b.push('\n');
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(b, "{:<11} {}", format!("{name}:"), one_line(value));
    };
    field("Status", rec.status.as_str());
    if let Some(c) = rec.exit_code {
        field("Exit code", &c.to_string());
    }
    if let Some(s) = &rec.signal {
        field("Signal", s);
    }
    if let Some(e) = &rec.error {
        field("Error", e);
    }
    for (name, t) in [
        ("Submitted", &rec.submitted),
        ("Started", &rec.started),
        ("Finished", &rec.finished),
    ] {
        if let Some(t) = t {
            field(name, &t.to_string());
        }
    }
    if let Some(d) = rec.duration() {
        field("Duration", &format_duration(d));
    }
    field("Attempts", &rec.attempts.to_string());

    if let Some(result) = &rec.result {
        let text = match result {
            toml::Value::String(s) => s.clone(),
            toml::Value::Table(t) => toml::to_string(t).unwrap_or_else(|_| result.to_string()),
            other => other.to_string(),
        };
        let from = if out.stdout.2 {
            " (the task's standard output)"
        } else {
            ""
        };
        let _ = writeln!(b, "\nResult{from}:");
        quote(
            &mut b,
            text.as_bytes(),
            RESULT_BYTES,
            &format!("done/{}.toml", rec.id),
        );
    }

    let (out_path, stdout, as_result) = out.stdout;
    if !as_result {
        output(&mut b, "Standard output", out_path, stdout);
    }
    let (err_path, stderr) = out.stderr;
    output(&mut b, "Standard error", err_path, stderr);

    if !plan.attach.is_empty() {
        let total: u64 = plan.attach.iter().map(|f| f.size).sum();
        let _ = writeln!(
            b,
            "\nAttached ({} files, {total} bytes):",
            plan.attach.len()
        );
        for f in &plan.attach {
            let _ = writeln!(b, "  {} ({} bytes)", clean_name(&f.name), f.size);
        }
    }
    if !plan.left_out.is_empty() {
        let _ = writeln!(
            b,
            "\nNot attached (they stay in the spool until the job expires):"
        );
        for (f, why) in plan.left_out.iter().take(MAX_LISTED) {
            let why = match why {
                LeftOut::OverBudget => {
                    format!("{} bytes, over max_attachment_bytes = {budget}", f.size)
                }
                LeftOut::TooMany => format!("{} bytes, past {MAX_ATTACHMENTS} attachments", f.size),
                LeftOut::NotRegular(kind) => format!("a {kind}, not a regular file"),
                LeftOut::Unreadable(e) => format!("cannot be read: {}", one_line(e)),
            };
            let _ = writeln!(
                b,
                "  {} ({why}): {}",
                clean_name(&f.name),
                clean_name(&f.path.to_string_lossy())
            );
        }
        if let Some(more) = plan
            .left_out
            .len()
            .checked_sub(MAX_LISTED)
            .filter(|&n| n > 0)
        {
            let dir = plan.left_out[0]
                .0
                .path
                .parent()
                .map(|d| d.to_string_lossy().into_owned());
            let _ = writeln!(
                b,
                "  … and {more} more in {}",
                clean_name(&dir.unwrap_or_default())
            );
        }
    }
    b
}

/// Quotes text indented by two spaces (so that no line of it can look
/// like a header, a `From ` line or the end of an SMTP message), cut at
/// `max` bytes with a note of where the rest is.
fn quote(b: &mut String, raw: &[u8], max: usize, rest_in: &str) {
    let cut = raw.len() > max;
    let raw = &raw[..raw.len().min(max)];
    let (lines, _) = tail_lines(raw, false, usize::MAX);
    for l in lines {
        let _ = writeln!(b, "  {l}");
    }
    if cut {
        let _ = writeln!(b, "  [… cut here; all of it is in {rest_in}]");
    }
}

fn output(b: &mut String, what: &str, path: &Path, tail: &Tail) {
    if let Some(e) = &tail.error {
        let _ = writeln!(b, "\n{what}: cannot be read: {}", one_line(e));
        return;
    }
    if tail.size == 0 {
        let _ = writeln!(b, "\n{what}: empty");
        return;
    }
    let (lines, more) = tail_lines(&tail.raw, tail.cut, TAIL_LINES);
    let which = if more {
        format!("last {} lines", lines.len())
    } else {
        "all of it".into()
    };
    let _ = writeln!(
        b,
        "\n{what} ({which}; {} bytes in {}):",
        tail.size,
        clean_name(&path.to_string_lossy())
    );
    for l in lines {
        let _ = writeln!(b, "  {l}");
    }
}

/// A file name as one printable line.
fn clean_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test's panic is its failure report"
)]
mod tests {
    use super::*;
    use crate::record::Status;

    fn record() -> Record {
        let mut r = Record::new("report-42", "make_report", Status::Failed);
        let t = |s: &str| Some(time::to_toml(time::parse_rfc3339(s).unwrap()));
        r.submitted = t("2026-11-22T10:00:00.125Z");
        r.started = t("2026-11-22T10:00:00.131Z");
        r.finished = t("2026-11-22T10:00:03.402Z");
        r.attempts = 2;
        r.exit_code = Some(3);
        r.error = Some("exited with status 3".into());
        r.email = vec!["ann@example.com".into()];
        r.mail = Some("pending".into());
        let mut res = toml::Table::new();
        res.insert("rows".into(), toml::Value::Integer(10));
        r.result = Some(toml::Value::Table(res));
        r
    }

    fn file(name: &str, size: u64) -> FileInfo {
        FileInfo {
            name: name.into(),
            path: PathBuf::from("/spool/done/x.files").join(name),
            size,
            other: None,
        }
    }

    fn tail(text: &str) -> Tail {
        Tail {
            size: text.len() as u64,
            raw: text.as_bytes().to_vec(),
            cut: false,
            error: None,
        }
    }

    #[test]
    fn the_subject_names_type_id_and_status() {
        assert_eq!(
            subject(&record()),
            "[raccoond] make_report report-42 failed"
        );
    }

    #[test]
    fn the_body_has_status_times_exit_code_error_result_and_output() {
        let rec = record();
        let stdout = tail("one\ntwo\n");
        let stderr = tail("");
        let out = Outputs {
            stdout: (Path::new("/spool/done/report-42.out"), &stdout, false),
            stderr: (Path::new("/spool/done/report-42.err"), &stderr),
        };
        let plan = Plan {
            attach: vec![file("a.csv", 3)],
            left_out: vec![(file("big.bin", 99), LeftOut::OverBudget)],
        };
        let b = body(&rec, &out, &plan, 10);
        for want in [
            "Job report-42 (type make_report) failed.",
            "Status:     failed",
            "Exit code:  3",
            "Error:      exited with status 3",
            "Submitted:  2026-11-22T10:00:00.125Z",
            "Finished:   2026-11-22T10:00:03.402Z",
            "Duration:   3.3s",
            "Attempts:   2",
            "Result:\n  rows = 10\n",
            "Standard output (all of it; 8 bytes in /spool/done/report-42.out):\n  one\n  two\n",
            "Standard error: empty",
            "Attached (1 files, 3 bytes):\n  a.csv (3 bytes)",
            "big.bin (99 bytes, over max_attachment_bytes = 10): /spool/done/x.files/big.bin",
        ] {
            assert!(b.contains(want), "missing {want:?} in:\n{b}");
        }
    }

    #[test]
    fn a_long_list_of_left_out_files_is_cut() {
        let empty = tail("");
        let out = Outputs {
            stdout: (Path::new("/o"), &empty, false),
            stderr: (Path::new("/e"), &empty),
        };
        let plan = Plan {
            attach: Vec::new(),
            left_out: (0..MAX_LISTED + 10)
                .map(|i| (file(&format!("f{i:03}"), 1), LeftOut::TooMany))
                .collect(),
        };
        let b = body(&record(), &out, &plan, 10);
        assert_eq!(b.matches("past 100 attachments").count(), MAX_LISTED, "{b}");
        assert!(
            b.contains("  … and 10 more in /spool/done/x.files\n"),
            "{b}"
        );
    }

    #[test]
    fn a_result_that_is_the_stdout_is_quoted_once() {
        let mut rec = record();
        rec.result = Some(toml::Value::String("hello\n".into()));
        let stdout = tail("hello\n");
        let stderr = tail("");
        let out = Outputs {
            stdout: (Path::new("/o"), &stdout, true),
            stderr: (Path::new("/e"), &stderr),
        };
        let b = body(&rec, &out, &Plan::default(), 10);
        assert_eq!(b.matches("hello").count(), 1, "{b}");
        assert!(
            b.contains("Result (the task's standard output):\n  hello\n"),
            "{b}"
        );
    }

    #[test]
    fn tails_keep_the_last_lines_and_clean_them() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let (lines, more) = tail_lines(text.as_bytes(), false, 20);
        assert_eq!(lines.len(), 20);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines[19], "line 30");
        assert!(more);
        // Cut inside a line: the partial line goes.
        let (lines, more) = tail_lines(b"ne 7\nline 8\r\nbell\x07 \xff end", true, 20);
        assert_eq!(lines, vec!["line 8", "bell\u{fffd} \u{fffd} end"]);
        assert!(more);
        let (lines, more) = tail_lines(b"a\nb\n", false, 20);
        assert_eq!(
            (lines, more),
            (vec!["a".to_string(), "b".to_string()], false)
        );
    }

    #[test]
    fn a_long_output_costs_only_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.out");
        let mut text = "x".repeat(3 * TAIL_BYTES as usize);
        text.push_str("\nlast\n");
        fs::write(&path, &text).unwrap();
        let t = read_tail(&path);
        assert_eq!(t.size, text.len() as u64);
        assert_eq!(t.raw.len() as u64, TAIL_BYTES);
        assert!(t.cut);
        assert_eq!(tail_lines(&t.raw, t.cut, 20).0, vec!["last"]);
        let missing = read_tail(&dir.path().join("none"));
        assert_eq!((missing.size, missing.error), (0, None));
    }

    #[test]
    fn mime_types_follow_the_extension() {
        for (name, want) in [
            ("report.txt", "text/plain"),
            ("data.CSV", "text/csv"),
            ("r.json", "application/json"),
            ("doc.pdf", "application/pdf"),
            ("chart.png", "image/png"),
            ("p.JPEG", "image/jpeg"),
            ("a.tar.gz", "application/gzip"),
            ("noext", "application/octet-stream"),
            (".hidden", "application/octet-stream"),
            ("blob.weird", "application/octet-stream"),
        ] {
            assert_eq!(mime_for(name), want, "{name}");
            assert!(ContentType::parse(mime_for(name)).is_ok(), "{name}");
        }
    }

    #[test]
    fn attachments_stay_within_the_budget_in_name_order() {
        let mut link = file("link", 0);
        link.other = Some("symlink");
        let plan = plan_attachments(
            vec![file("c.bin", 4), file("a.bin", 6), file("b.bin", 5), link],
            10,
            9,
        );
        let names = |v: &[FileInfo]| v.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&plan.attach), vec!["a.bin", "c.bin"]);
        let left: Vec<_> = plan
            .left_out
            .iter()
            .map(|(f, w)| (f.name.as_str(), w.clone()))
            .collect();
        assert_eq!(
            left,
            vec![
                ("b.bin", LeftOut::OverBudget),
                ("link", LeftOut::NotRegular("symlink"))
            ]
        );
        assert!(plan_attachments(vec![file("a", 1)], 0, 9).attach.is_empty());
        assert_eq!(
            plan_attachments(vec![file("empty", 0)], 0, 9).attach.len(),
            1
        );
        let many: Vec<FileInfo> = (0..5).map(|i| file(&format!("f{i}"), 1)).collect();
        let plan = plan_attachments(many, 100, 3);
        assert_eq!(names(&plan.attach), vec!["f0", "f1", "f2"]);
        assert_eq!(plan.left_out.len(), 2);
        assert!(plan.left_out.iter().all(|(_, w)| *w == LeftOut::TooMany));
    }

    fn composer(dir: &Path, budget: u64) -> Composer {
        Composer {
            from: "raccoond <raccoon@example.org>".parse().unwrap(),
            max_attachment_bytes: budget,
            spool: Spool::at(dir),
        }
    }

    fn header_names(formatted: &str) -> Vec<String> {
        let head = formatted.split("\r\n\r\n").next().unwrap();
        head.split("\r\n")
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
            .collect()
    }

    #[test]
    fn the_message_carries_files_and_no_injected_headers() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), false).unwrap();
        let files = spool.done_files("report-42");
        fs::create_dir_all(&files).unwrap();
        fs::write(files.join("a.csv"), b"x,y\r\n1,2\n").unwrap();
        // A task may name a file anything, newlines included.
        fs::write(files.join("evil\r\nBcc: eve@evil.test\r\n.csv"), b"1").unwrap();
        fs::write(files.join("zz-big.bin"), vec![0u8; 100]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", files.join("passwd")).unwrap();
        fs::write(spool.done_out("report-42"), "hello\n").unwrap();
        let mut rec = record();
        rec.kind = "kind\r\nBcc: eve@evil.test".into();
        let c = composer(dir.path(), 50);
        let m = c.compose(&rec).unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        let names = header_names(&text);
        assert!(!names.iter().any(|n| n == "bcc"), "{text}");
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(
            !text.contains("root:x:0"),
            "a symlink was followed:\n{text}"
        );
        assert!(names.contains(&"message-id".to_string()), "{text}");
        assert!(names.contains(&"date".to_string()), "{text}");
        assert!(text.contains("Auto-Submitted: auto-generated"), "{text}");
        let millis = time::unix_millis(rec.finished_at().unwrap());
        assert!(
            text.contains(&format!("<raccoond.report-42.{millis}@example.org>")),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/csv"), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: base64"), "{text}");
        assert!(text.contains(&lettre_b64(b"x,y\r\n1,2\n")), "{text}");
        assert_eq!(m.envelope().to().len(), 1);
    }

    fn lettre_b64(bytes: &[u8]) -> String {
        // Standard base64, short enough here to fit one line.
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn a_record_with_a_bad_id_or_address_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = composer(dir.path(), 50);
        let mut rec = record();
        rec.id = "../../etc".into();
        assert!(c.compose(&rec).unwrap_err().contains("not a valid id"));
        let mut rec = record();
        rec.email = vec!["ann@example.com\r\nBcc: eve@evil.test".into()];
        assert!(c.compose(&rec).unwrap_err().contains("not a valid address"));
    }

    fn transient(server: bool) -> Result<(), Failure> {
        Err(Failure::Transient {
            reason: "down".into(),
            server,
        })
    }

    #[test]
    fn transient_failures_back_off_doubling_then_give_up() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        assert!(o.push(record(), t0).is_ok());
        assert!(o.push(record(), t0).is_err(), "the same id is queued once");
        let mut sent = record();
        sent.id = "sent".into();
        sent.mail = Some("sent".into());
        assert!(o.push(sent, t0).unwrap_err().contains("not pending"));
        let mut now = t0;
        let mut pauses = Vec::new();
        let outcome = loop {
            let p = o.take_due(now).expect("due");
            match o.settle(p, transient(false), now) {
                Step::Retry { after, .. } => {
                    pauses.push(after.as_secs());
                    assert!(
                        o.take_due(now).is_none(),
                        "nothing due before the pause ends"
                    );
                    now = o.wakeup().unwrap();
                }
                other => break other,
            }
        };
        assert_eq!(&pauses[..10], &[1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert!(pauses.iter().all(|&s| s <= 300));
        assert!(now.duration_since(t0) <= RETRY_FOR);
        match outcome {
            Step::Failed(r) => assert!(
                r.starts_with("gave up after") && r.ends_with(": down"),
                "{r}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(o.wakeup().is_none());
        assert!(
            o.push(record(), now).is_ok(),
            "a finished id may be queued again"
        );
    }

    #[test]
    fn permanent_failures_end_at_once_and_success_is_sent() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(record(), t0).unwrap();
        let p = o.take_due(t0).unwrap();
        assert_eq!(
            o.settle(p, Err(Failure::Permanent("550 no".into())), t0),
            Step::Failed("550 no".into())
        );
        let mut r = record();
        r.id = "other".into();
        o.push(r, t0).unwrap();
        let p = o.take_due(t0).unwrap();
        assert_eq!(o.settle(p, Ok(()), t0), Step::Sent);
        assert!(o.wakeup().is_none());
    }

    #[test]
    fn a_failing_message_goes_behind_the_others() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        let mut a = record();
        a.id = "a".into();
        let mut b = record();
        b.id = "b".into();
        o.push(a, t0).unwrap();
        o.push(b, t0).unwrap();
        let p = o.take_due(t0).unwrap();
        assert_eq!(p.record.id, "a");
        o.settle(p, transient(false), t0);
        // A message-level 4xx does not hold the others back.
        assert_eq!(o.take_due(t0).unwrap().record.id, "b");
    }

    #[test]
    fn an_unreachable_server_pauses_everything_until_it_answers() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        let mut a = record();
        a.id = "a".into();
        o.push(a, t0).unwrap();
        for _ in 0..5 {
            let now = o.wakeup().unwrap();
            let p = o.take_due(now).unwrap();
            o.settle(p, transient(true), now);
        }
        let now = o.wakeup().unwrap() - Duration::from_millis(1);
        let mut b = record();
        b.id = "b".into();
        o.push(b, now).unwrap();
        assert!(
            o.take_due(now).is_none(),
            "a new message waits out the pause"
        );
        // The server answers again: "a" does not wait out its own delay.
        let now = o.wakeup().unwrap();
        let p = o.take_due(now).unwrap();
        let first = p.record.id.clone();
        assert_eq!(o.settle(p, Ok(()), now), Step::Sent);
        let next = o.take_due(now).expect("the other message is due at once");
        assert_ne!(next.record.id, first);
    }

    #[test]
    fn smtp_urls_are_checked_and_passwords_never_shown() {
        assert!(smtp_transport("smtp://127.0.0.1:2525", None).is_ok());
        assert!(smtp_transport("smtps://mail.example.com", None).is_ok());
        assert!(smtp_transport("smtp://u@mail.example.com:587?tls=required", Some("pw")).is_ok());
        let e = smtp_transport("smtp://mail.example.com", Some("pw"))
            .err()
            .unwrap();
        assert!(e.contains("names no user"), "{e}");
        let e = smtp_transport("smtp://u:secret@mail.example.com?tls=sometimes", None)
            .err()
            .unwrap();
        assert!(!e.contains("secret") && e.contains("***"), "{e}");
        let e = smtp_transport("smtp://", None).err().unwrap();
        assert!(e.contains("smtp = \"smtp://\""), "{e}");
        assert_eq!(redact("smtp://u:p@h:25"), "smtp://u:***@h:25");
        assert_eq!(
            percent_decode("ann%40example.com+x").as_deref(),
            Some("ann@example.com+x")
        );
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn a_closed_port_is_a_transient_failure_of_the_whole_server() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let relay = Relay::new(&MailTransport::Smtp {
            url: format!("smtp://127.0.0.1:{port}"),
            password: None,
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = composer(dir.path(), 0).compose(&record()).unwrap();
        match relay.deliver(&m) {
            Err(Failure::Transient {
                server: true,
                reason,
            }) => {
                assert!(reason.to_lowercase().contains("connect"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_sendmail_that_says_no_is_permanent_and_one_that_cannot_run_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let m = composer(dir.path(), 0).compose(&record()).unwrap();
        let no = dir.path().join("no.sh");
        fs::write(
            &no,
            "#!/bin/sh\ncat >/dev/null\necho 'no such user' >&2\nexit 67\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&no, fs::Permissions::from_mode(0o755)).unwrap();
        let relay = Relay::new(&MailTransport::Sendmail { program: no }).unwrap();
        match relay.deliver(&m) {
            Err(Failure::Permanent(r)) => assert!(r.ends_with("failed: no such user"), "{r}"),
            other => panic!("{other:?}"),
        }
        let missing = Relay::new(&MailTransport::Sendmail {
            program: dir.path().join("missing"),
        })
        .unwrap();
        assert!(matches!(
            missing.deliver(&m),
            Err(Failure::Transient { server: true, .. })
        ));
    }
}
