//! `[aws]`: how kinetail reaches Kinesis and Firehose.

use std::time::Duration;

use super::ConfigError;
use super::check::Locator;
use super::raw::{RawAws, Str};

pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// Where Firehose is reached, when not at `endpoint_url`.
    pub firehose_endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub request_timeout: Duration,
    /// A role to assume (with STS) on top of the default credentials.
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub role_session_name: String,
}

impl AwsSettings {
    pub(super) fn from_raw(loc: &Locator<'_>, raw: &RawAws) -> Result<AwsSettings, ConfigError> {
        // An optional string that must pass `ok`, else `rule` is the error.
        let checked = |v: Option<&Str>,
                       what: &str,
                       ok: &dyn Fn(&str) -> bool,
                       rule: &dyn Fn(&str) -> String| {
            let Some(v) = v else { return Ok(None) };
            let s = loc.string(v, what)?;
            if ok(&s) {
                Ok(Some(s))
            } else {
                Err(loc.at(v.span(), rule(&s)))
            }
        };
        Ok(AwsSettings {
            region: loc.opt_string(raw.region.as_ref(), "aws.region")?,
            endpoint_url: endpoint(loc, raw.endpoint_url.as_ref(), "aws.endpoint_url")?,
            firehose_endpoint_url: endpoint(
                loc,
                raw.firehose_endpoint_url.as_ref(),
                "aws.firehose_endpoint_url",
            )?,
            profile: loc.opt_string(raw.profile.as_ref(), "aws.profile")?,
            request_timeout: loc.positive_ms(
                raw.request_timeout_ms.as_ref(),
                DEFAULT_REQUEST_TIMEOUT_MS,
                "aws.request_timeout_ms",
            )?,
            role_arn: checked(
                raw.role_arn.as_ref(),
                "aws.role_arn",
                &|arn| {
                    arn.starts_with("arn:aws")
                        && arn.split(':').nth(2) == Some("iam")
                        && arn.contains(":role/")
                },
                &|arn| {
                    format!(
                        "aws.role_arn {arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
                    )
                },
            )?,
            external_id: checked(
                raw.external_id.as_ref(),
                "aws.external_id",
                &|id| (2..=1224).contains(&id.len()),
                &|_| "aws.external_id must be 2 to 1224 characters".into(),
            )?,
            role_session_name: checked(
                raw.role_session_name.as_ref(),
                "aws.role_session_name",
                &|n| {
                    (2..=64).contains(&n.len())
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
                },
                &|_| {
                    "aws.role_session_name must be 2 to 64 characters of a-z, A-Z, 0-9 and +=,.@_-"
                        .into()
                },
            )?
            .unwrap_or_else(|| "kinetail".to_string()),
        })
    }
}

/// An endpoint URL, checked: http or https, no query or fragment (nothing
/// of AWS's uses them, and the SDK would write them to its logs).
fn endpoint(
    loc: &Locator<'_>,
    value: Option<&Str>,
    what: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    let url = loc.string(v, what)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_some_and(|r| !r.contains(['?', '#'])) {
        return Ok(Some(url));
    }
    Err(loc.at(
        v.span(),
        format!(
            "{what} {:?} must start with http:// or https:// and have no query or fragment: AWS does not use them, and the AWS SDK would write them to its logs",
            crate::redact::url(&url)
        ),
    ))
}
