//! The HTTP API. Placeholder interface; see the HTTP issue.

use crate::spool::Spool;
use crate::status::Board;

pub struct Server {
    addr: String,
}

impl Server {
    pub fn start<P>(listen: &str, _board: Board, _spool: Spool, _ping: P) -> std::io::Result<Server>
    where
        P: Fn() -> bool + Send + Sync + 'static,
    {
        Ok(Server {
            addr: listen.to_string(),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }
}
