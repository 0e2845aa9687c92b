//! How paths and URLs are shown to people: in text logs, `check` and
//! `status`. File names come from whoever can create files under the
//! globs, so a name with a newline or an escape sequence must not forge log
//! lines or drive the terminal; URLs may carry a password.
//!
//! JSON logs and `/metrics` labels have escaping of their own; this module
//! is for text meant to be read.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path for text output: control characters, backslashes and bytes that
/// are not UTF-8 are written as escapes (`\n`, `\\`, `\xff`); everything
/// else, non-ASCII letters included, as it is.
pub struct Shown<'a>(&'a [u8]);

/// A path as [`Shown`].
pub fn path(p: &Path) -> Shown<'_> {
    Shown(p.as_os_str().as_bytes())
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() || c == '\\' {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    f.write_fmt(format_args!("{c}"))?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// `url` with its user information (`user:password@`, or a token as the
/// user) replaced by `***`, for output. Anything that is not such a URL is
/// returned as it is.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{tail}"),
        None => url.to_string(),
    }
}

/// Every URL with user information inside `text` (an error message, say)
/// masked as [`url`] does.
pub fn urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The scheme: the letters before "://".
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |j| j + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ')' || c == '>')
            .map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn paths_cannot_forge_lines_or_drive_the_terminal() {
        let p = Path::new(OsStr::from_bytes(
            b"/var/log/a\nINFO forged\x1b[31m\\\xffb\xc3\xa9.log",
        ));
        assert_eq!(
            path(p).to_string(),
            "/var/log/a\\nINFO forged\\u{1b}[31m\\\\\\xffb\u{e9}.log"
        );
        assert_eq!(path(Path::new("/plain/é.log")).to_string(), "/plain/é.log");
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            url("http://user:secret@127.0.0.1:4567/x"),
            "http://***@127.0.0.1:4567/x"
        );
        assert_eq!(url("https://token@host"), "https://***@host");
        assert_eq!(url("http://127.0.0.1:4567"), "http://127.0.0.1:4567");
        assert_eq!(
            urls_in("dispatch failure: error sending to http://a:b@h:1/ (connect)"),
            "dispatch failure: error sending to http://***@h:1/ (connect)"
        );
        assert_eq!(urls_in("no url here"), "no url here");
    }
}
