//! Where messages go: an SMTP relay (lettre's `SmtpTransport`) or a local
//! sendmail program, and what a failure to deliver means for the retry
//! schedule (transient or permanent, this message or the whole server).
//!
//! It never composes a message, never touches the spool, and never
//! decides when to try again ([`Outbox`](super::outbox::Outbox) does). It
//! never shows a password: every message about the `smtp` URL goes
//! through [`redact`].
//!
//! `smtp://` uses STARTTLS when the server offers it, without checking the
//! certificate (RFC 7435 opportunistic security, as Postfix's `may`: an
//! attacker who could fake a certificate could as well strip STARTTLS, and
//! local relays often have self-signed ones); `smtp://…?tls=required` and
//! `smtps://` check it. Every connect, read and write has a timeout, so a
//! dead server costs the mail thread a bounded wait.

use std::borrow::Cow;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SendmailTransport, SmtpTransport, Transport as _};

use super::compose::one_line;
use super::outbox::Failure;
use crate::config::MailTransport;

/// How long one connect, read or write to the SMTP server may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where messages go.
pub(super) enum Relay {
    Smtp(SmtpTransport),
    Sendmail {
        transport: SendmailTransport,
        /// For messages: which program failed.
        program: PathBuf,
    },
}

impl Relay {
    /// The transport `[mail]` names; a bad `smtp` URL is an error here.
    pub(super) fn new(transport: &MailTransport) -> Result<Relay, String> {
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

    /// One attempt at `message`.
    pub(super) fn deliver(&self, message: &Message) -> Result<(), Failure> {
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
        let user = decode_user(parsed.username())
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
/// user and password it reads from the URL itself (a broken escape stays
/// as it is); `None` when the result is not UTF-8.
fn decode_user(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Any message: these tests are about where it goes, not what it says.
    fn message() -> Message {
        Message::builder()
            .from("raccoond <raccoon@example.org>".parse().unwrap())
            .to("ann@example.com".parse().unwrap())
            .subject("[raccoond] make_report report-42 failed")
            .body(String::from("Job report-42 (type make_report) failed.\n"))
            .unwrap()
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
            decode_user("ann%40example.com+x").as_deref(),
            Some("ann@example.com+x")
        );
        assert_eq!(decode_user("100%").as_deref(), Some("100%"));
        assert_eq!(decode_user("%ff"), None);
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
        let m = message();
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
        let m = message();
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
