//! What a record is made of: `format` and the envelope's keys, static
//! `fields`, `parse`, the line filters, `compression` and cloud `metadata`.

use std::collections::BTreeMap;

use toml::Spanned;

use super::ConfigError;
use super::check::Locator;
use super::raw::{RawFlow, RawParse, Str};
use crate::re::Re;
use crate::records::compress::Compression;
use crate::records::envelope::TimeRule;
use crate::records::envelope::{Envelope, FieldKeys, Placement};
use crate::records::parse::{Format, Kind};
use crate::records::time::TimeFormat;

/// Instance tags in the EC2 metadata only when asked (they need the
/// instance metadata option, or an API call).
pub const DEFAULT_METADATA_TAGS: bool = false;

/// Where cloud metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource {
    /// The EC2 instance metadata service, with IMDSv2 session tokens.
    Ec2,
    /// The ECS task metadata endpoint (`ECS_CONTAINER_METADATA_URI_V4`).
    Ecs,
    /// Each file's pod, from its path (and the API server, when it can be
    /// reached): under its own key, per file.
    Kubernetes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordSettings {
    /// `format = "json"`; `None` sends the raw line.
    pub envelope: Option<Envelope>,
    /// A line (or multi-line event) is sent only if it matches one of
    /// these, when there are any...
    pub include_lines: Vec<Re>,
    /// ...and none of these.
    pub exclude_lines: Vec<Re>,
    pub compression: Compression,
    pub metadata: Vec<MetadataSource>,
    /// Also fetch the EC2 instance's tags.
    pub metadata_tags: bool,
}

impl RecordSettings {
    pub(super) fn from_raw(loc: &Locator<'_>, f: &RawFlow) -> Result<RecordSettings, ConfigError> {
        let json = loc.choice(
            f.format.as_ref(),
            false,
            &[("raw", false), ("json", true)],
            "flow.format",
        )?;
        let envelope = if json {
            Some(envelope(loc, f)?)
        } else {
            // Settings of the envelope without one are a mistake to point at.
            let envelope_only = [
                (f.message_key.as_ref(), "message_key"),
                (f.timestamp_key.as_ref(), "timestamp_key"),
                (f.host_key.as_ref(), "host_key"),
                (f.path_key.as_ref(), "path_key"),
                (f.offset_key.as_ref(), "offset_key"),
                (f.flow_key.as_ref(), "flow_key"),
                (f.fields_key.as_ref(), "fields_key"),
                (f.metadata_key.as_ref(), "metadata_key"),
                (f.id_key.as_ref(), "id_key"),
                (f.stream_key.as_ref(), "stream_key"),
                (f.kubernetes_key.as_ref(), "kubernetes_key"),
                (f.time_field.as_ref(), "time_field"),
                (f.time_format.as_ref(), "time_format"),
                (f.read_time_key.as_ref(), "read_time_key"),
                (f.parsed_key.as_ref(), "parsed_key"),
                (f.csv_delimiter.as_ref(), "csv_delimiter"),
            ];
            if let Some((v, name)) = envelope_only.iter().find_map(|(v, n)| v.map(|v| (v, n))) {
                return Err(loc.at(v.span(), format!("flow.{name} needs format = \"json\"")));
            }
            if let Some(t) = &f.fields {
                return Err(loc.at(t.span(), "flow.fields needs format = \"json\""));
            }
            if let Some(p) = &f.parse {
                return Err(loc.at(p.span(), "flow.parse needs format = \"json\""));
            }
            if let Some(c) = &f.csv_fields {
                return Err(loc.at(c.span(), "flow.csv_fields needs format = \"json\""));
            }
            if let Some(t) = &f.types {
                return Err(loc.at(t.span(), "flow.types needs format = \"json\""));
            }
            if let Some(m) = &f.metadata {
                return Err(loc.at(m.span(), "flow.metadata needs format = \"json\""));
            }
            None
        };
        let regexes = |list: &[Str], what: &str| -> Result<Vec<Re>, ConfigError> {
            list.iter()
                .map(|p| loc.regex(p, what).map(Re::from))
                .collect()
        };
        Ok(RecordSettings {
            envelope,
            include_lines: regexes(&f.include_lines, "flow.include_lines")?,
            exclude_lines: regexes(&f.exclude_lines, "flow.exclude_lines")?,
            compression: loc.choice(
                f.compression.as_ref(),
                Compression::None,
                &[
                    ("none", Compression::None),
                    ("gzip", Compression::Gzip),
                    ("zstd", Compression::Zstd),
                ],
                "flow.compression",
            )?,
            metadata: metadata(loc, f.metadata.as_ref())?,
            metadata_tags: f.metadata_tags.unwrap_or(DEFAULT_METADATA_TAGS),
        })
    }
}

fn envelope(loc: &Locator<'_>, f: &RawFlow) -> Result<Envelope, ConfigError> {
    let d = FieldKeys::default();
    let name = |v: Option<&Str>, default: String, what: &str| -> Result<String, ConfigError> {
        Ok(loc.opt_string(v, what)?.unwrap_or(default))
    };
    let keys = FieldKeys {
        message: name(f.message_key.as_ref(), d.message, "flow.message_key")?,
        timestamp: name(f.timestamp_key.as_ref(), d.timestamp, "flow.timestamp_key")?,
        host: name(f.host_key.as_ref(), d.host, "flow.host_key")?,
        path: name(f.path_key.as_ref(), d.path, "flow.path_key")?,
        offset: name(f.offset_key.as_ref(), d.offset, "flow.offset_key")?,
        flow: name(f.flow_key.as_ref(), d.flow, "flow.flow_key")?,
        fields: name(f.fields_key.as_ref(), d.fields, "flow.fields_key")?,
        metadata: name(f.metadata_key.as_ref(), d.metadata, "flow.metadata_key")?,
        id: name(f.id_key.as_ref(), d.id, "flow.id_key")?,
        stream: name(f.stream_key.as_ref(), d.stream, "flow.stream_key")?,
        kubernetes: name(
            f.kubernetes_key.as_ref(),
            d.kubernetes,
            "flow.kubernetes_key",
        )?,
    };
    let mut fields = Vec::new();
    if let Some(t) = &f.fields {
        for (k, v) in t.get_ref() {
            let Some(s) = v.as_str() else {
                return Err(loc.at(t.span(), format!("flow.fields.{k} must be a string")));
            };
            let value = super::check::expand_env(s, |n| std::env::var(n).ok())
                .map_err(|m| loc.at(t.span(), format!("flow.fields.{k}: {m}")))?;
            fields.push((k.clone(), value));
        }
    }
    let format = parser(loc, f)?;
    let parsed_key = loc.opt_string(f.parsed_key.as_ref(), "flow.parsed_key")?;
    if let (None, Some(v)) = (&format, f.parsed_key.as_ref()) {
        return Err(loc.at(v.span(), "flow.parsed_key needs parse"));
    }
    let placement = match parsed_key {
        Some(k) if !k.is_empty() => Placement::Under(k),
        _ => Placement::Merge,
    };
    let parse = format.is_some().then_some(placement);
    Ok(Envelope {
        keys,
        fields,
        parse,
        time: time_rule(loc, f, format.as_ref())?,
        read_time_key: loc
            .opt_string(f.read_time_key.as_ref(), "flow.read_time_key")?
            .unwrap_or_default(),
        format: format.unwrap_or(Format::Json),
        types: types(loc, f)?,
    })
}

fn metadata(
    loc: &Locator<'_>,
    list: Option<&Spanned<Vec<Str>>>,
) -> Result<Vec<MetadataSource>, ConfigError> {
    let mut out = Vec::new();
    for v in list.map(|l| l.get_ref().as_slice()).unwrap_or_default() {
        let source = loc.choice(
            Some(v),
            MetadataSource::Ec2,
            &[
                ("ec2", MetadataSource::Ec2),
                ("ecs", MetadataSource::Ecs),
                ("kubernetes", MetadataSource::Kubernetes),
            ],
            "flow.metadata entry",
        )?;
        if !out.contains(&source) {
            out.push(source);
        }
    }
    Ok(out)
}

/// `parse`: `None` for `"none"` (the default).
fn parser(loc: &Locator<'_>, f: &RawFlow) -> Result<Option<Format>, ConfigError> {
    let Some(p) = &f.parse else {
        if let Some(c) = &f.csv_fields {
            return Err(loc.at(c.span(), "flow.csv_fields needs parse = \"csv\""));
        }
        return Ok(None);
    };
    let name = match p.get_ref() {
        RawParse::Regex { regex } => {
            let re = regex::bytes::Regex::new(regex)
                .map_err(|e| loc.at(p.span(), format!("flow.parse regex: {e}")))?;
            if re.capture_names().flatten().next().is_none() {
                return Err(loc.at(
                    p.span(),
                    "flow.parse regex has no named capture group ((?P<name>...)): it would give no field",
                ));
            }
            return Ok(Some(Format::Regex(Re::from(re))));
        }
        RawParse::Name(n) => n.as_str(),
    };
    let format = match name {
        "none" => return Ok(None),
        "json" => Format::Json,
        "logfmt" => Format::Logfmt,
        "apache_common" => Format::ApacheCommon,
        "apache_combined" | "nginx" => Format::ApacheCombined,
        "apache_error" => Format::ApacheError,
        "syslog" => Format::Syslog,
        "csv" => csv(loc, f, p.span())?,
        other => {
            return Err(loc.at(
                p.span(),
                format!(
                    "flow.parse {other:?} is not a format: none, json, logfmt, apache_common, apache_combined, apache_error, syslog, csv, or {{ regex = '...' }}"
                ),
            ));
        }
    };
    if let (false, Some(c)) = (matches!(format, Format::Csv { .. }), &f.csv_fields) {
        return Err(loc.at(c.span(), "flow.csv_fields needs parse = \"csv\""));
    }
    Ok(Some(format))
}

/// `parse = "csv"` with its `csv_fields` and `csv_delimiter` (one byte).
fn csv(loc: &Locator<'_>, f: &RawFlow, at: std::ops::Range<usize>) -> Result<Format, ConfigError> {
    let Some(names) = &f.csv_fields else {
        return Err(loc.at(at, "parse = \"csv\" needs csv_fields = [\"name\", ...]"));
    };
    let fields = names
        .get_ref()
        .iter()
        .map(|n| loc.string(n, "flow.csv_fields"))
        .collect::<Result<Vec<String>, ConfigError>>()?;
    let delimiter = match &f.csv_delimiter {
        None => b',',
        Some(d) => match d.get_ref().as_bytes() {
            [b] if b.is_ascii() => *b,
            _ => {
                return Err(loc.at(d.span(), "flow.csv_delimiter must be one ASCII character"));
            }
        },
    };
    Ok(Format::Csv { fields, delimiter })
}

/// `types = { field = "int" | "float" | "bool" }`.
fn types(loc: &Locator<'_>, f: &RawFlow) -> Result<BTreeMap<String, Kind>, ConfigError> {
    let mut out = BTreeMap::new();
    let Some(t) = &f.types else {
        return Ok(out);
    };
    for (name, v) in t.get_ref() {
        let kind = match v.as_str() {
            Some("int") => Kind::Int,
            Some("float") => Kind::Float,
            Some("bool") => Kind::Bool,
            _ => {
                return Err(loc.at(
                    t.span(),
                    format!("flow.types.{name} must be \"int\", \"float\" or \"bool\""),
                ));
            }
        };
        out.insert(name.clone(), kind);
    }
    Ok(out)
}

/// Where a parsed line's own time is: the named formats know their field
/// and how it is written (`time_field` and `time_format` may rename or
/// restate them); JSON, logfmt, CSV and regex lines have one when
/// `time_field` names it (`time_format` is RFC 3339 unless it says
/// otherwise).
fn time_rule(
    loc: &Locator<'_>,
    f: &RawFlow,
    format: Option<&Format>,
) -> Result<Option<TimeRule>, ConfigError> {
    let field = loc.opt_string(f.time_field.as_ref(), "flow.time_field")?;
    let written = match &f.time_format {
        None => None,
        Some(v) => Some(match loc.string(v, "flow.time_format")?.as_str() {
            "rfc3339" => TimeFormat::Rfc3339,
            "unix" => TimeFormat::Unix,
            "unix_ms" => TimeFormat::UnixMs,
            p if p.contains('%') => TimeFormat::Strftime(p.to_string()),
            other => {
                return Err(loc.at(
                    v.span(),
                    format!("flow.time_format {other:?} is not \"rfc3339\", \"unix\", \"unix_ms\" nor a strftime pattern (%Y-%m-%d %H:%M:%S)"),
                ));
            }
        }),
    };
    let own = match format {
        None => {
            if let Some(v) = f.time_field.as_ref().or(f.time_format.as_ref()) {
                return Err(loc.at(v.span(), "flow.time_field and time_format need parse"));
            }
            return Ok(None);
        }
        Some(Format::ApacheCommon | Format::ApacheCombined) => Some(TimeFormat::Apache),
        Some(Format::ApacheError) => Some(TimeFormat::ApacheError),
        Some(Format::Syslog) => Some(TimeFormat::Syslog),
        Some(_) => None,
    };
    match (own, field) {
        (Some(own), field) => Ok(Some(TimeRule {
            field: field.unwrap_or_else(|| "time".to_string()),
            format: written.unwrap_or(own),
        })),
        (None, Some(field)) => Ok(Some(TimeRule {
            field,
            format: written.unwrap_or(TimeFormat::Rfc3339),
        })),
        (None, None) => match &f.time_format {
            Some(v) => Err(loc.at(v.span(), "flow.time_format needs time_field")),
            None => Ok(None),
        },
    }
}
