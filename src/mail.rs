//! Mailing outcomes. Placeholder interface; see the mail issue.

use crate::config::MailConfig;
use crate::record::Record;
use crate::spool::Spool;

pub struct Mailer {}

impl Mailer {
    pub fn start<F>(_config: &MailConfig, _spool: Spool, _done: F) -> Result<Mailer, String>
    where
        F: Fn(String, String) + Send + 'static,
    {
        Ok(Mailer {})
    }

    pub fn send(&self, _record: Record) {}
}
