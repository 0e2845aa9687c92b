//! `multiline`: how lines group into events.

use toml::Spanned;

use super::ConfigError;
use super::check::Locator;
use super::raw::RawMultiline;
use crate::lines::multiline::{MultilineSettings, Rule};
use crate::records::batcher::MAX_DATA_BYTES;

pub const DEFAULT_MULTILINE_MAX_LINES: u64 = 500;
pub const DEFAULT_MULTILINE_TIMEOUT_MS: u64 = 1_000;

impl MultilineSettings {
    pub(super) fn from_raw(
        loc: &Locator<'_>,
        m: &Spanned<RawMultiline>,
    ) -> Result<MultilineSettings, ConfigError> {
        let raw = m.get_ref();
        let rule = match (raw.start_pattern.as_ref(), raw.continue_pattern.as_ref()) {
            (Some(p), None) => Rule::Start(loc.regex(p, "multiline.start_pattern")?.into()),
            (None, Some(p)) => Rule::Continue(loc.regex(p, "multiline.continue_pattern")?.into()),
            _ => {
                return Err(loc.at(
                    m.span(),
                    "multiline needs exactly one of start_pattern and continue_pattern",
                ));
            }
        };
        Ok(MultilineSettings {
            rule,
            max_lines: loc.size(
                raw.max_lines.as_ref(),
                DEFAULT_MULTILINE_MAX_LINES,
                1..=u64::MAX,
                "multiline.max_lines",
            )?,
            max_bytes: loc.size(
                raw.max_bytes.as_ref(),
                MAX_DATA_BYTES as u64,
                1..=MAX_DATA_BYTES as u64,
                "multiline.max_bytes",
            )?,
            timeout: loc.positive_ms(
                raw.timeout_ms.as_ref(),
                DEFAULT_MULTILINE_TIMEOUT_MS,
                "multiline.timeout_ms",
            )?,
        })
    }
}
