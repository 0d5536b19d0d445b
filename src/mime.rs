//! The media type of a file a task left, by its extension: the one table
//! the HTTP API (serving `/files/<name>`) and the mailer (attachments) share.
//!
//! A leaf: no IO, no other module of the crate.

/// The media type of `name` by its extension (case-insensitive), without
/// parameters; `application/octet-stream` when it is not known. A name
/// that is only an extension (`.txt`) has none.
pub fn of(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "txt" | "log" | "text" | "out" | "err" | "ini" | "conf" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" => "text/javascript",
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

/// Whether a media type is text, which HTTP serves with `charset=utf-8`.
pub fn is_text(media: &str) -> bool {
    media.starts_with("text/")
        || matches!(
            media,
            "application/json" | "application/toml" | "application/yaml" | "application/xml"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_the_extension() {
        for (name, want) in [
            ("report.TXT", "text/plain"),
            ("data.csv", "text/csv"),
            ("x.toml", "application/toml"),
            ("a.tar.gz", "application/gzip"),
            ("pic.jpeg", "image/jpeg"),
            (".txt", "application/octet-stream"),
            ("noext", "application/octet-stream"),
            ("weird.xyz", "application/octet-stream"),
        ] {
            assert_eq!(of(name), want, "{name}");
        }
        assert!(is_text("text/csv") && is_text("application/json") && !is_text("image/png"));
    }
}
