//! The configuration's ways in and out: `[http]` (where to listen, and
//! the token that guards a non-loopback address) and `[mail]` (the SMTP
//! URL or sendmail, the sender, the allow-list), and the secrets both keep
//! in files, refused when anyone but their owner may read them.
//!
//! Reads the secret files (and nothing else); never writes.

use std::path::{Path, PathBuf};

use super::{AttachmentBytes, FileMail, MailConfig, MailTransport};

/// A secret kept in a file (`[http] token_file`, `[mail] password_file`):
/// refused when the file's mode lets anyone but its owner read or write
/// it (as sshd refuses such keys), so that a secret leaked by a careless
/// mode is found at start, not later. `key` names the setting in errors.
fn read_secret(key: &str, path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let what = |e: std::io::Error| format!("{key}: cannot read {}: {e}", path.display());
    // The mode is read from the opened file, so that it is the mode of
    // the file whose bytes are used.
    let mut file = std::fs::File::open(path).map_err(what)?;
    let mode = file.metadata().map_err(what)?.permissions().mode();
    if mode & 0o077 != 0 {
        let lets = if mode & 0o044 != 0 {
            "read"
        } else if mode & 0o022 != 0 {
            "change"
        } else {
            "execute"
        };
        return Err(format!(
            "{key} {}: mode {:04o} lets others {lets} it; chmod 600",
            path.display(),
            mode & 0o7777
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(what)?;
    Ok(text)
}

/// The bearer token from `token_file` (see [`read_secret`]); not empty.
pub(super) fn read_token(path: &Path) -> Result<String, String> {
    let t = read_secret("[http] token_file", path)?.trim().to_string();
    if t.is_empty() {
        return Err(format!("[http] token_file: {} is empty", path.display()));
    }
    Ok(t)
}

pub(super) fn check_listen(listen: &str, has_token: bool) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = listen
        .to_socket_addrs()
        .map_err(|e| format!("[http] listen = {listen:?}: not an address:port ({e})"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "[http] listen = {listen:?}: resolves to no address"
        ));
    }
    if !has_token && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "[http] listen = {listen:?} is not a loopback address: set token_file so that requests must carry a token"
        ));
    }
    Ok(())
}

pub(super) fn mail_config(
    m: FileMail,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<MailConfig, String> {
    let transport = match (m.smtp, m.sendmail) {
        (Some(_), Some(_)) => return Err("set either smtp or sendmail, not both".into()),
        (None, None) => {
            return Err(
                "set smtp = \"smtp://host:port\" or sendmail = \"/usr/sbin/sendmail\"".into(),
            );
        }
        (Some(url), None) => {
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return Err(format!(
                    "smtp = {url:?}: must start with smtp:// or smtps://"
                ));
            }
            let password = match m.password_file {
                Some(p) => {
                    let text = read_secret("[mail] password_file", &resolve(&p))?;
                    Some(text.trim_end_matches(['\n', '\r']).to_string())
                }
                None => None,
            };
            MailTransport::Smtp { url, password }
        }
        (None, Some(_)) if m.password_file.is_some() => {
            return Err("password_file goes with smtp, not with sendmail".into());
        }
        (None, Some(program)) => {
            let program = resolve(&program);
            if !program.is_file() {
                return Err(format!("sendmail = {}: no such file", program.display()));
            }
            MailTransport::Sendmail { program }
        }
    };
    let from = m
        .from
        .unwrap_or_else(|| format!("raccoond <raccoon@{}>", crate::ids::hostname()));
    if from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(format!("from = {from:?}: not a mail address"));
    }
    let recipients = m.recipients.unwrap_or_default();
    for pattern in &recipients {
        let address = pattern
            .strip_prefix("*@")
            .map_or(pattern.clone(), |d| format!("x@{d}"));
        if address.parse::<lettre::Address>().is_err() {
            return Err(format!(
                "recipients: {pattern:?} is neither an address nor \"*@domain\""
            ));
        }
    }
    Ok(MailConfig {
        transport,
        from,
        max_attachment_bytes: m
            .max_attachment_bytes
            .map_or(10 << 20, AttachmentBytes::get),
        recipients,
    })
}
