//! Names in `new/` that are not UTF-8: renamed, in `new/`, to their
//! escaped form, so that they are submissions like any other.
//!
//! Owns [`Spool::names_in_new`] (the listing of `new/` that tells those
//! names from the others) and [`Spool::escape_name`]. The
//! escaped form (see [`crate::escape`]) is a name that is never a valid id,
//! so the job gets a fresh id and its record keeps the escaped name in
//! `submitted_as`. The file is not read, opened or claimed here: only its
//! name changes, and it stays its submitter's submission in `new/`.
//!
//! Never replaces anything: a name already taken gets `~` and eight random
//! hex digits after it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use super::{Spool, list, private, rename_noreplace, shown};
use crate::fsio::io_context;

/// Escaped names are cut to this many bytes (a name may be 255 bytes, and
/// escaping can make one four times longer), with `...` after the cut.
const MAX_NAME: usize = 200;

impl Spool {
    /// Every name in `new/`, dot-files left out, from one listing: those
    /// that are UTF-8, and those that are not (to be renamed first). A
    /// large `new/` costs its listing once, not once per kind of name.
    pub fn names_in_new(&self) -> io::Result<(Vec<String>, Vec<OsString>)> {
        let mut names = Vec::new();
        let mut raw = Vec::new();
        for n in list(&self.new_dir())? {
            if n.as_bytes().first() == Some(&b'.') {
                continue;
            }
            match n.into_string() {
                Ok(name) => names.push(name),
                Err(n) => raw.push(n),
            }
        }
        Ok((names, raw))
    }

    /// Renames `new/<raw>`, a name that is not UTF-8, to its escaped form.
    /// Returns the new name, or `None` when nothing is there any more (or
    /// `raw` is UTF-8, a dot-file, or not one name).
    pub fn escape_name(&self, raw: &OsStr) -> io::Result<Option<String>> {
        let bytes = raw.as_bytes();
        if raw.to_str().is_some() || bytes.is_empty() || bytes[0] == b'.' || bytes.contains(&b'/') {
            return Ok(None);
        }
        let from = self.new_dir().join(raw);
        let mut name = cut(shown(raw));
        for _ in 0..10 {
            match rename_noreplace(&from, &self.new_path(&name)) {
                Ok(()) => return Ok(Some(name)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    name = format!("{}~{}", cut(shown(raw)), &private::random_hex()[..8]);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_context("rename", &from, e)),
            }
        }
        Err(io::Error::other(format!(
            "new/{}: no free name to rename it to",
            shown(raw)
        )))
    }
}

/// An escaped name cut to [`MAX_NAME`] bytes, on a character boundary.
fn cut(mut name: String) -> String {
    if name.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name.push_str("...");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn a_name_that_is_not_utf8_becomes_its_escaped_form_without_replacing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), false).unwrap();
        let raw = OsStr::from_bytes(b"caf\xe9-\xff.toml");
        fs::write(spool.new_dir().join(raw), "type = \"x\"\n").unwrap();
        fs::write(spool.new_dir().join(OsStr::from_bytes(b".\xff")), "").unwrap();
        fs::write(spool.new_dir().join("plain.toml"), "").unwrap();
        fs::write(spool.new_dir().join(".draft"), "").unwrap();
        assert_eq!(
            spool.names_in_new().unwrap(),
            (vec!["plain.toml".to_string()], vec![raw.to_os_string()])
        );
        let name = spool.escape_name(raw).unwrap().unwrap();
        assert_eq!(name, "caf\\xe9-\\xff.toml");
        assert_eq!(
            fs::read_to_string(spool.new_path(&name)).unwrap(),
            "type = \"x\"\n"
        );
        assert!(spool.names_in_new().unwrap().1.is_empty());
        assert_eq!(spool.escape_name(raw).unwrap(), None);
        // Taken: the next one gets a suffix.
        fs::write(spool.new_dir().join(raw), "second").unwrap();
        let second = spool.escape_name(raw).unwrap().unwrap();
        assert!(second.starts_with("caf\\xe9-\\xff.toml~"), "{second}");
        assert_eq!(
            fs::read_to_string(spool.new_path(&name)).unwrap(),
            "type = \"x\"\n"
        );
        // Long names are cut.
        let long = OsString::from_vec(vec![0xff; 255]);
        fs::write(spool.new_dir().join(&long), "").unwrap();
        let cut = spool.escape_name(&long).unwrap().unwrap();
        assert_eq!(cut.len(), MAX_NAME + 3);
    }
}
