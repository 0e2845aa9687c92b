//! The checks every section shares: positions for messages, `${VAR}`
//! expansion, "default, then range" for numbers, and one-of-these choices.

use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use super::ConfigError;
use super::raw::{Num, Str};

/// Turns byte spans into messages with line and column, and checks values
/// where they stand.
pub(super) struct Locator<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Locator<'_> {
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            position: Some(self.position(span.start)),
            message: message.into(),
        }
    }

    /// An error about the whole file.
    pub fn whole(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            position: None,
            message: message.into(),
        }
    }

    /// Expands `${VAR}` in a string value; errors point at the value.
    pub fn string(&self, value: &Str, what: &str) -> Result<String, ConfigError> {
        expand_env(value.get_ref(), |name| std::env::var(name).ok())
            .map_err(|m| self.at(value.span(), format!("{what}: {m}")))
    }

    /// An optional string value, expanded.
    pub fn opt_string(
        &self,
        value: Option<&Str>,
        what: &str,
    ) -> Result<Option<String>, ConfigError> {
        value.map(|v| self.string(v, what)).transpose()
    }

    /// A number that must lie in `range`, if it is set.
    pub fn in_range(
        &self,
        value: Option<&Num>,
        range: RangeInclusive<u64>,
        what: &str,
    ) -> Result<Option<u64>, ConfigError> {
        let Some(v) = value else { return Ok(None) };
        if range.contains(v.get_ref()) {
            return Ok(Some(*v.get_ref()));
        }
        let (lo, hi) = (*range.start(), *range.end());
        let rule = match (lo, hi) {
            (1, u64::MAX) => "greater than 0".to_string(),
            (lo, u64::MAX) => format!("at least {lo}"),
            (lo, hi) => format!("between {lo} and {hi}"),
        };
        Err(self.at(v.span(), format!("{what} must be {rule}")))
    }

    /// A number: `default` when it is not set, else it must lie in `range`.
    pub fn ranged(
        &self,
        value: Option<&Num>,
        default: u64,
        range: RangeInclusive<u64>,
        what: &str,
    ) -> Result<u64, ConfigError> {
        Ok(self.in_range(value, range, what)?.unwrap_or(default))
    }

    /// A count or a size in memory: as [`Self::ranged`], as a `usize`.
    pub fn size(
        &self,
        value: Option<&Num>,
        default: u64,
        range: RangeInclusive<u64>,
        what: &str,
    ) -> Result<usize, ConfigError> {
        let n = self.ranged(value, default, range, what)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Milliseconds greater than 0, `default` when not set.
    pub fn positive_ms(
        &self,
        value: Option<&Num>,
        default: u64,
        what: &str,
    ) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.ranged(
            value,
            default,
            1..=u64::MAX,
            what,
        )?))
    }

    /// One of the named `choices`, `default` when not set.
    pub fn choice<T: Copy>(
        &self,
        value: Option<&Str>,
        default: T,
        choices: &[(&str, T)],
        what: &str,
    ) -> Result<T, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let s = self.string(v, what)?;
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == s) {
            return Ok(*t);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        let list = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        Err(self.at(v.span(), format!("{what} must be {list}, not {s:?}")))
    }

    /// A regex over bytes.
    pub fn regex(&self, value: &Str, what: &str) -> Result<regex::bytes::Regex, ConfigError> {
        let s = self.string(value, what)?;
        regex::bytes::Regex::new(&s)
            .map_err(|e| self.at(value.span(), format!("{what} is not a valid regex: {e}")))
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` from `lookup`. `$${` stands for
/// a literal `${`. An unset variable without a default is an error.
pub fn expand_env(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(body_start) = after.strip_prefix("${") {
            let end = body_start
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {input:?}"))?;
            let body = &body_start[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("`${{{body}}}` is not a valid variable reference"));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                    ));
                }
            }
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
