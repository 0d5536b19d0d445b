//! Bytes that are not UTF-8, written as text: file names in `new/` and the
//! `source` of a rejected file that is not UTF-8.
//!
//! Owns the one spelling: valid UTF-8 stays as it is, except a backslash;
//! every byte that is not part of valid UTF-8, and every backslash, is
//! written `\xNN` (two lowercase hex digits). So `caf\xe9-\xff.toml` is the
//! name whose bytes are `caf`, 0xE9, `-`, 0xFF, `.toml`, and the text reads
//! back to exactly the bytes it came from.
//!
//! A leaf: no other module of the crate is imported. No IO.

/// `bytes` as text, each byte that is not valid UTF-8 (and each `\`) as
/// `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\x5c");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Whether `name` has an escape in it (`\x` and two hex digits): a name
/// [`escape_bytes`] made, or one that looks like it.
pub fn looks_escaped(name: &str) -> bool {
    name.as_bytes().windows(4).any(|w| {
        w[0] == b'\\' && w[1] == b'x' && w[2].is_ascii_hexdigit() && w[3].is_ascii_hexdigit()
    })
}

/// The bytes an escaped text stands for: the inverse of [`escape_bytes`].
pub fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && let Some(hex) = text.get(i + 2..i + 4)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_and_backslashes_are_escaped_and_read_back() {
        let cases: [(&[u8], &str); 6] = [
            (b"job.toml", "job.toml"),
            (b"caf\xe9-\xff.toml", "caf\\xe9-\\xff.toml"),
            ("café".as_bytes(), "café"),
            (b"a\\b\xff", "a\\x5cb\\xff"),
            (b"\xf0\x9f", "\\xf0\\x9f"),
            (b"", ""),
        ];
        for (bytes, text) in cases {
            assert_eq!(escape_bytes(bytes), text, "{bytes:?}");
            assert_eq!(unescape(text), bytes, "{text}");
        }
        assert!(looks_escaped("caf\\xe9.toml"));
        assert!(!looks_escaped("job.toml") && !looks_escaped("a\\xg") && !looks_escaped("\\x"));
    }
}
