//! `PutRecords` without the SDK's orchestrator: the lanes' one call, made
//! from the parts the SDK itself uses (ARCHITECTURE.md, "Where the CPU
//! goes"). Per call the orchestrator built a config bag, ran a dozen
//! interceptors, resolved the endpoint, looked up the identity and set up
//! retries it was told not to make; here the endpoint is resolved once per
//! stream by the SDK's own rules, the credentials come from the same
//! provider chain (cached until a minute before they expire, or for 15
//! minutes when they do not), the body is
//! signed with `aws-sigv4` (what the SDK signs with) and sent on the SDK's
//! HTTP connector (rustls with aws-lc, its pool, its connect timeout).
//!
//! The answer is classified as before (`classify`): the service's error
//! code from the `x-amzn-ErrorType` header or the body's `__type` (as the
//! SDK's AWS JSON 1.1 reader takes them), with the HTTP status; no answer
//! within `request_timeout_ms`, or a connection that fails, is retried.
//! Two things the SDK did per call are kept: a clock that disagrees with
//! the service's by minutes is corrected from the service's `Date` (its
//! clock-skew correction), and credentials the service calls expired are
//! fetched again at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_kinesis::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::display::DisplayErrorContext;
use http_body_util::BodyExt;

use crate::kinesis::classify::{Answered, Failure, classify, read_answer};

/// How long before they expire cached credentials are fetched again.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// The least time between two fetches of credentials that keep coming
/// back about to expire (the provider's own cache then answers).
const REFETCH_AFTER: Duration = Duration::from_secs(5);
/// How long credentials without an expiry are kept (the SDK's identity
/// cache keeps them as long): a profile's keys rotated on disk are read
/// again.
const UNDATED_FOR: Duration = Duration::from_secs(15 * 60);
/// The most of an answer read: 500 entries take about 75 KB; an endpoint
/// that sends more is not Kinesis, and the call is retried.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Skew below this is left alone (the service accepts 5 minutes).
const SKEW_IGNORED: Duration = Duration::from_secs(60);

/// A failed call, as the lane logs and retries it.
#[derive(Debug)]
pub struct Failed {
    pub class: Failure,
    pub message: String,
    pub code: Option<String>,
}

impl Failed {
    fn retry(message: String) -> Self {
        Failed {
            class: Failure::Retry,
            message,
            code: None,
        }
    }
}

/// Where the endpoint's settings come from: the same values the SDK's
/// Kinesis client was built with.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub region: String,
    /// `aws.endpoint_url`, `AWS_ENDPOINT_URL_KINESIS` or `AWS_ENDPOINT_URL`.
    pub url: Option<String>,
    pub use_fips: bool,
    pub use_dual_stack: bool,
    pub account_id_endpoint_mode: String,
}

/// The lanes' `PutRecords` caller, one per process.
#[derive(Debug)]
pub struct Direct {
    http: Connector,
    credentials: CachedCredentials,
    endpoint: EndpointSettings,
    /// Each stream's URL, by its ARN (`None` for a stream named).
    urls: Mutex<HashMap<Option<String>, String>>,
    attempt_timeout: Duration,
    /// The service's clock less ours, in ms, once it mattered.
    skew_ms: AtomicI64,
}

impl Direct {
    pub fn new(
        credentials: CachedCredentials,
        endpoint: EndpointSettings,
        connect_timeout: Duration,
        attempt_timeout: Duration,
    ) -> Self {
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(connect_timeout)
            .build();
        let http = Connector::builder()
            .connector_settings(settings)
            .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .build();
        Direct {
            http,
            credentials,
            endpoint,
            urls: Mutex::new(HashMap::new()),
            attempt_timeout,
            skew_ms: AtomicI64::new(0),
        }
    }

    /// One `PutRecords` call of `body` (written by
    /// `batcher::put_records_body`) to the stream `arn` names, or the one
    /// the body names. `on_send` runs as the request is handed to the
    /// connection (signed, its body built).
    pub async fn put_records(
        &self,
        body: bytes::Bytes,
        arn: Option<&str>,
        on_send: impl FnOnce(),
    ) -> Result<Answered, Failed> {
        let url = self.url(arn).await?;
        // A provider that does not answer (an instance metadata service
        // that hangs) is bounded like the call itself, as the SDK's
        // attempt timeout bounded it.
        let credentials = match tokio::time::timeout(self.attempt_timeout, self.credentials()).await
        {
            Ok(c) => c?,
            Err(_) => {
                return Err(Failed::retry(format!(
                    "timeout: no credentials within {} ms",
                    self.attempt_timeout.as_millis()
                )));
            }
        };
        let request = self.signed(&url, body, credentials)?;
        on_send();
        let sent = async {
            let response = self.http.call(request).await.map_err(|e| {
                Failed::retry(format!(
                    "dispatch failure: {}",
                    crate::redact::error_text(&DisplayErrorContext(&e))
                ))
            })?;
            let status = response.status().as_u16();
            let header = |name: &str| response.headers().get(name).map(str::to_string);
            let (error_type, date) = (header("x-amzn-errortype"), header("date"));
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    Failed::retry(format!(
                        "reading the answer (at most {MAX_ANSWER_BYTES} bytes): {}",
                        crate::redact::error_text(&DisplayErrorContext(&*e))
                    ))
                })?
                .to_bytes();
            Ok::<_, Failed>((status, error_type, date, body))
        };
        let (status, error_type, date, body) =
            match tokio::time::timeout(self.attempt_timeout, sent).await {
                Ok(answer) => answer?,
                Err(_) => {
                    return Err(Failed::retry(format!(
                        "timeout: no answer within {} ms",
                        self.attempt_timeout.as_millis()
                    )));
                }
            };
        if status == 200 {
            return read_answer(&body)
                .ok_or_else(|| Failed::retry("an answer that is not a PutRecords answer".into()));
        }
        let mut failed = service_error(status, error_type.as_deref(), &body);
        self.learn(&mut failed, date.as_deref()).await;
        Err(failed)
    }

    /// The request of `body` to `url`, signed now (by the service's clock).
    fn signed(
        &self,
        url: &str,
        body: bytes::Bytes,
        credentials: Credentials,
    ) -> Result<aws_smithy_runtime_api::client::orchestrator::HttpRequest, Failed> {
        let stuck = |what: &str, e: &dyn std::fmt::Display| Failed {
            class: Failure::Stuck,
            message: format!("{what}: {e}"),
            code: None,
        };
        let length = body.len().to_string();
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "Kinesis_20131202.PutRecords"),
            ("content-length", length.as_str()),
            (
                "user-agent",
                concat!("kinetail/", env!("CARGO_PKG_VERSION")),
            ),
        ];
        let identity = Identity::from(credentials);
        let skew = self.skew_ms.load(Ordering::Relaxed);
        let now = SystemTime::now();
        let time = if skew >= 0 {
            now + Duration::from_millis(skew.unsigned_abs())
        } else {
            now - Duration::from_millis(skew.unsigned_abs())
        };
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.endpoint.region)
            .name("kinesis")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| stuck("signing", &e))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| stuck("signing", &e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| stuck("signing", &e))?
            .into_parts();
        let mut request = http::Request::builder().method("POST").uri(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut request = request
            .body(SdkBody::from(body))
            .map_err(|e| stuck("the request", &e))?;
        instructions.apply_to_request_http1x(&mut request);
        aws_smithy_runtime_api::client::orchestrator::HttpRequest::try_from(request)
            .map_err(|e| stuck("the request", &e))
    }

    /// The URL of the stream `arn` names (or of a stream named), by the
    /// SDK's endpoint rules, resolved once.
    async fn url(&self, arn: Option<&str>) -> Result<String, Failed> {
        let key = arn.map(str::to_string);
        if let Some(url) = lock(&self.urls).get(&key) {
            return Ok(url.clone());
        }
        let e = &self.endpoint;
        let params = Params::builder()
            .region(e.region.clone())
            .use_fips(e.use_fips)
            .use_dual_stack(e.use_dual_stack)
            .set_endpoint(e.url.clone())
            .account_id_endpoint_mode(e.account_id_endpoint_mode.clone())
            .operation_type("data")
            .set_stream_arn(key.clone())
            .build();
        let resolved = match params {
            Ok(p) => DefaultResolver::new().resolve_endpoint(&p).await,
            Err(e) => Err(e.into()),
        };
        let endpoint = resolved.map_err(|e| Failed {
            class: Failure::Stuck,
            message: format!(
                "resolving the endpoint: {}",
                crate::redact::error_text(&DisplayErrorContext(&*e))
            ),
            code: None,
        })?;
        // The operation's path, `/`, after the endpoint's own.
        let url = format!("{}/", endpoint.url().trim_end_matches('/'));
        lock(&self.urls).insert(key, url.clone());
        Ok(url)
    }

    /// The credentials to sign with.
    async fn credentials(&self) -> Result<Credentials, Failed> {
        self.credentials
            .provide_credentials()
            .await
            .map_err(|e| Failed {
                class: Failure::Stuck,
                message: format!(
                    "failed to load credentials: {}",
                    crate::redact::error_text(&DisplayErrorContext(&e))
                ),
                code: None,
            })
    }

    /// What a failure teaches: the service's clock when a signature was
    /// refused as too old or too new (a call refused so is retried at
    /// once when that corrected the clock), credentials to fetch again
    /// when they were refused as expired.
    async fn learn(&self, failed: &mut Failed, date: Option<&str>) {
        match failed.code.as_deref() {
            Some(
                "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "RequestTimeTooSkewed"
                | "RequestExpired",
            ) => {
                if let Some(skew) = date.and_then(skew_from) {
                    let before = self.skew_ms.swap(skew, Ordering::Relaxed);
                    if (skew - before).abs() > 1000 {
                        failed.class = Failure::Retry;
                        failed
                            .message
                            .push_str(&format!("; signing by the service's clock from now on ({skew} ms from this machine's)"));
                    }
                }
            }
            Some("ExpiredTokenException" | "ExpiredToken" | "UnrecognizedClientException") => {
                self.credentials.forget().await;
            }
            _ => {}
        }
    }
}

/// The credentials of every call, Kinesis's and Firehose's, from one
/// provider chain: kept until a minute before they expire (or 15 minutes
/// when they do not, as the SDK's identity cache keeps them), fetched once
/// for all callers, and forgotten when the service refuses them as expired
/// (a revoked session; the SDK would sign with them until they expire).
#[derive(Debug, Clone)]
pub struct CachedCredentials {
    /// The provider chain (`None` only where the SDK would have none).
    inner: Option<SharedCredentialsProvider>,
    /// The credentials in use and when they were fetched.
    held: Arc<tokio::sync::Mutex<Option<(Credentials, Instant)>>>,
}

impl CachedCredentials {
    pub fn new(inner: Option<SharedCredentialsProvider>) -> Self {
        CachedCredentials {
            inner,
            held: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    async fn get(&self) -> aws_credential_types::provider::Result {
        use aws_credential_types::provider::error::CredentialsError;
        let mut held = self.held.lock().await;
        if let Some((c, fetched)) = held.as_ref() {
            let fresh = match c.expiry() {
                Some(at) => at > SystemTime::now() + REFRESH_BEFORE,
                None => fetched.elapsed() < UNDATED_FOR,
            };
            if fresh || fetched.elapsed() < REFETCH_AFTER {
                return Ok(c.clone());
            }
        }
        let Some(provider) = &self.inner else {
            return Err(CredentialsError::not_loaded("no credentials provider"));
        };
        let c = provider.provide_credentials().await?;
        *held = Some((c.clone(), Instant::now()));
        Ok(c)
    }

    /// Drops the held credentials: the next call fetches new ones.
    async fn forget(&self) {
        *self.held.lock().await = None;
    }
}

impl ProvideCredentials for CachedCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(self.get())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The service's clock less ours (ms), from an HTTP `Date`, when it is off
/// by more than [`SKEW_IGNORED`] (else 0).
fn skew_from(date: &str) -> Option<i64> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let theirs = DateTime::from_str(date, Format::HttpDate).ok()?;
    let ours = DateTime::from(SystemTime::now());
    let ms = (theirs.as_secs_f64() - ours.as_secs_f64()) * 1000.0;
    if ms.abs() < SKEW_IGNORED.as_millis() as f64 {
        return Some(0);
    }
    Some(ms as i64)
}

/// An error answer: its code (the header's, else the body's `__type` or
/// `code`, without a namespace before `#` or anything after `:`), its
/// message, and what it means.
pub fn service_error(status: u16, error_type: Option<&str>, body: &[u8]) -> Failed {
    #[derive(serde::Deserialize, Default)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        kind: Option<String>,
        code: Option<String>,
        message: Option<String>,
        #[serde(rename = "Message")]
        message_upper: Option<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = error_type
        .map(str::to_string)
        .or(parsed.code)
        .or(parsed.kind)
        .map(|c| {
            let c = c.split(':').next().unwrap_or_default();
            c.rsplit('#').next().unwrap_or_default().trim().to_string()
        })
        .filter(|c| !c.is_empty());
    let message = parsed.message.or(parsed.message_upper);
    let text = match (&code, &message) {
        (Some(c), Some(m)) => format!("service error: {c}: {m} (HTTP {status})"),
        (Some(c), None) => format!("service error: {c} (HTTP {status})"),
        (None, _) => format!(
            "unhandled error: HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    };
    Failed {
        class: classify(code.as_deref(), Some(status)),
        message: crate::redact::error_text(&text),
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_give_the_code_the_sdk_would_read() {
        let f = service_error(
            400,
            None,
            br#"{"__type":"ResourceNotFoundException","message":"Stream s under account 1 not found."}"#,
        );
        assert_eq!(f.code.as_deref(), Some("ResourceNotFoundException"));
        assert_eq!(f.class, Failure::Stuck);
        assert!(f.message.contains("Stream s under account 1 not found."));
        // The header wins; a namespace and a trailing part are dropped.
        let f = service_error(
            400,
            Some("ProvisionedThroughputExceededException:http://internal.amazon.com/"),
            br#"{"__type":"com.amazonaws.kinesis#Other"}"#,
        );
        assert_eq!(
            f.code.as_deref(),
            Some("ProvisionedThroughputExceededException")
        );
        assert_eq!(f.class, Failure::Retry);
        let f = service_error(400, None, br#"{"__type":"com.amazon.coral.validate#ValidationException","Message":"1 validation error"}"#);
        assert_eq!(f.code.as_deref(), Some("ValidationException"));
        assert_eq!(f.class, Failure::Invalid);
        assert!(f.message.contains("1 validation error"));
        // No code: the status decides, and the body is shown.
        let f = service_error(503, None, b"<html>busy</html>");
        assert_eq!((f.code, f.class), (None, Failure::Retry));
        assert!(f.message.contains("503") && f.message.contains("busy"));
        let f = service_error(403, None, b"");
        assert_eq!(f.class, Failure::Stuck);
    }

    #[test]
    fn a_clock_off_by_minutes_is_measured_and_a_close_one_left_alone() {
        use aws_smithy_types::date_time::{DateTime, Format};
        let at = |offset: i64| {
            let t = SystemTime::now() + Duration::from_secs(3600);
            let t = t - Duration::from_secs((3600 - offset) as u64);
            DateTime::from(t).fmt(Format::HttpDate).unwrap_or_default()
        };
        let skew = skew_from(&at(600)).unwrap_or_default();
        assert!((598_000..=601_000).contains(&skew), "{skew}");
        let skew = skew_from(&at(-900)).unwrap_or_default();
        assert!((-901_000..=-898_000).contains(&skew), "{skew}");
        assert_eq!(skew_from(&at(10)), Some(0));
        assert_eq!(skew_from("yesterday"), None);
    }
}
