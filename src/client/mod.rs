//! The pieces of `raccoon`, the client (`src/bin/raccoon.rs`), that are
//! not IO: its command line ([`args`]), its tables ([`table`]) and what a
//! queued job waits for ([`waiting`]).
//!
//! Never reads or writes the spool: the binary does, through
//! [`crate::spool`], and hands these modules what it read.

pub mod args;
pub mod table;
pub mod waiting;
