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

/// A path for text output: control characters, backslashes, bidirectional
/// formatting characters (U+202E and its kin, which reorder what a
/// terminal shows) and bytes that are not UTF-8 are written as escapes
/// (`\n`, `\\`, `\u{202e}`, `\xff`); everything else, non-ASCII letters
/// included, as it is. With JSON logs (see [`set_json_logs`]) control
/// characters and backslashes are left to JSON's own escaping, so they
/// are not escaped twice.
pub struct Shown<'a>(&'a [u8]);

static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Logs are JSON from now on: paths in them leave control characters and
/// backslashes to the JSON encoder.
pub fn set_json_logs() {
    JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Characters that change the direction text is shown in.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A path as [`Shown`].
pub fn path(p: &Path) -> Shown<'_> {
    Shown(p.as_os_str().as_bytes())
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed);
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if is_bidi_control(c) || (!json && (c.is_control() || c == '\\')) {
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

/// A URL's parts: scheme, user information (if any), host and the rest
/// (path, query, fragment); `None` for text that is not such a URL.
fn parts(url: &str) -> Option<(&str, Option<&str>, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    Some(match authority.rsplit_once('@') {
        Some((user, host)) => (scheme, Some(user), host, tail),
        None => (scheme, None, authority, tail),
    })
}

/// `url` with its user information (`user:password@`, or a token as the
/// user) and its query or fragment replaced by `***`, for output. Anything
/// that is not such a URL is returned as it is.
pub fn url(url: &str) -> String {
    let Some((scheme, user, host, tail)) = parts(url) else {
        return url.to_string();
    };
    // A query or fragment can hold a token: only that there is one shows.
    let tail = match tail.find(['?', '#']) {
        Some(i) => format!("{}{}***", &tail[..i], &tail[i..i + 1]),
        None => tail.to_string(),
    };
    let user = if user.is_some() { "***@" } else { "" };
    format!("{scheme}://{user}{host}{tail}")
}

/// `url` without its user information (`user:password@`).
pub fn without_userinfo(url: &str) -> String {
    match parts(url) {
        Some((scheme, _, host, tail)) => format!("{scheme}://{host}{tail}"),
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

/// The most bytes of an error's text that go into one log line: an
/// endpoint's error body can be megabytes, and it would be logged on every
/// retry.
pub const MAX_ERROR_TEXT: usize = 1024;

/// `what` as text, cut after [`MAX_ERROR_TEXT`] bytes (on a character
/// boundary, with a note of the cut), with URL secrets masked. The text is
/// never built whole: formatting stops once the bound is reached.
pub fn error_text(what: &dyn std::fmt::Display) -> String {
    struct Bounded {
        text: String,
        cut: bool,
    }
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let room = MAX_ERROR_TEXT.saturating_sub(self.text.len());
            if s.len() <= room {
                self.text.push_str(s);
                return Ok(());
            }
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
            self.cut = true;
            Err(std::fmt::Error)
        }
    }
    let mut b = Bounded {
        text: String::new(),
        cut: false,
    };
    // An error here is the bound being reached.
    let _ = std::fmt::write(&mut b, format_args!("{what}"));
    if b.cut {
        b.text.push_str(" [cut by kinetail]");
    }
    urls_in(&b.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_is_left_out() {
        assert_eq!(
            without_userinfo("http://u:p@h:1/x?y"),
            "http://h:1/x?y".to_string()
        );
        assert_eq!(without_userinfo("https://h"), "https://h".to_string());
    }

    #[test]
    fn error_text_is_bounded_and_masks_urls() {
        let huge = "é".repeat(5_000_000);
        let t = error_text(&format_args!("http://u:secret@h/ {huge}"));
        assert!(t.len() <= MAX_ERROR_TEXT + 40, "{} bytes", t.len());
        assert!(t.ends_with(" [cut by kinetail]"));
        assert!(!t.contains("secret"), "{}", &t[..40]);
        assert_eq!(error_text(&"short"), "short");
    }
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
