//! `partition_key` and `explicit_hash_key`: where each record's keys come
//! from.

use std::ops::Range;

use toml::Spanned;

use super::ConfigError;
use super::check::Locator;
use super::raw::RawKey;
use crate::kinesis::shards::is_hash_key;
use crate::records::batcher::MAX_KEY_CHARS;
use crate::records::keying::{KeySource, KeySpec};

pub(super) fn key_spec(loc: &Locator<'_>, key: &Spanned<RawKey>) -> Result<KeySpec, ConfigError> {
    let k = key.get_ref();
    let (from, span) = match k.from.as_ref() {
        Some(v) => (loc.string(v, "partition_key.from")?, v.span()),
        None => ("random".to_string(), key.span()),
    };
    let primary = key_source(loc, k, &from, span, false)?;
    let fallback = match k.fallback.as_ref() {
        Some(v) => key_source(
            loc,
            k,
            &loc.string(v, "partition_key.fallback")?,
            v.span(),
            true,
        )?,
        None => KeySource::Random,
    };
    Ok(KeySpec { primary, fallback })
}

/// As [`key_spec`]; a static value must also be a hash key.
pub(super) fn explicit_hash_key(
    loc: &Locator<'_>,
    key: &Spanned<RawKey>,
) -> Result<KeySpec, ConfigError> {
    let spec = key_spec(loc, key)?;
    if let (KeySource::Static(v), Some(raw)) = (&spec.primary, key.get_ref().value.as_ref())
        && !is_hash_key(v)
    {
        return Err(loc.at(
            raw.span(),
            format!("explicit_hash_key.value {v:?} must be a decimal from 0 to 2^128-1"),
        ));
    }
    Ok(spec)
}

fn key_source(
    loc: &Locator<'_>,
    key: &RawKey,
    from: &str,
    span: Range<usize>,
    for_fallback: bool,
) -> Result<KeySource, ConfigError> {
    let what = if for_fallback {
        "partition_key.fallback"
    } else {
        "partition_key.from"
    };
    Ok(match from {
        "random" => KeySource::Random,
        "deterministic" => KeySource::Deterministic,
        "path" => KeySource::Path,
        "hostname" => KeySource::Hostname,
        "static" => static_key(loc, key, what, span, for_fallback)?,
        "regex" if !for_fallback => {
            let p = key.pattern.as_ref().ok_or_else(|| {
                loc.at(
                    span.clone(),
                    "partition_key.from = \"regex\" needs partition_key.pattern",
                )
            })?;
            let re = loc.regex(p, "partition_key.pattern")?;
            let group = match re.capture_names().position(|n| n == Some("key")) {
                Some(i) => i,
                None if re.captures_len() > 1 => 1,
                None => {
                    return Err(loc.at(
                        p.span(),
                        "partition_key.pattern needs a capture group (the first one, or one named `key`, is the key)",
                    ));
                }
            };
            KeySource::Regex {
                re: re.into(),
                group,
            }
        }
        // `field` reads the parsed fields of any parser (and JSON lines
        // without one); `json` is its first name.
        "json" | "field" if !for_fallback => {
            let f = key.field.as_ref().ok_or_else(|| {
                loc.at(
                    span.clone(),
                    "partition_key.from = \"json\" needs partition_key.field",
                )
            })?;
            let s = loc.string(f, "partition_key.field")?;
            let parts: Vec<String> = s.split('.').map(str::to_string).collect();
            if parts.iter().any(String::is_empty) {
                return Err(loc.at(
                    f.span(),
                    format!("partition_key.field {s:?} must be a dotted path like \"user.id\""),
                ));
            }
            KeySource::Json(parts)
        }
        "kubernetes" if !for_fallback => kubernetes_key(loc, key, span)?,
        other => {
            let allowed = if for_fallback {
                "random, deterministic, static, path, hostname"
            } else {
                "random, deterministic, static, regex, json, kubernetes, path, hostname"
            };
            return Err(loc.at(
                span,
                format!("{what} must be one of {allowed}, not {other:?}"),
            ));
        }
    })
}

/// `from = "kubernetes"`: a field of the file's pod.
fn kubernetes_key(
    loc: &Locator<'_>,
    key: &RawKey,
    span: Range<usize>,
) -> Result<KeySource, ConfigError> {
    let fields = crate::records::kubernetes::KEY_FIELDS;
    let f = key.field.as_ref().ok_or_else(|| {
        loc.at(
            span,
            format!(
                "partition_key.from = \"kubernetes\" needs partition_key.field, one of {}",
                fields.join(", ")
            ),
        )
    })?;
    let s = loc.string(f, "partition_key.field")?;
    if !fields.contains(&s.as_str()) {
        return Err(loc.at(
            f.span(),
            format!(
                "partition_key.field {s:?} must be one of {}",
                fields.join(", ")
            ),
        ));
    }
    Ok(KeySource::Kubernetes(s))
}

fn static_key(
    loc: &Locator<'_>,
    key: &RawKey,
    what: &str,
    span: Range<usize>,
    for_fallback: bool,
) -> Result<KeySource, ConfigError> {
    let (v, field) = if for_fallback {
        (key.fallback_value.as_ref(), "fallback_value")
    } else {
        (key.value.as_ref(), "value")
    };
    let v = v.ok_or_else(|| {
        loc.at(
            span,
            format!("{what} = \"static\" needs partition_key.{field}"),
        )
    })?;
    let s = loc.string(v, &format!("partition_key.{field}"))?;
    let n = s.chars().count();
    if !(1..=MAX_KEY_CHARS).contains(&n) {
        return Err(loc.at(
            v.span(),
            format!("partition_key.{field} must be 1 to {MAX_KEY_CHARS} characters, not {n}"),
        ));
    }
    Ok(KeySource::Static(s))
}
