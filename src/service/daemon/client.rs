//! The AWS clients: one configuration (region, profile, role, timeouts)
//! for every destination (Kinesis and Firehose), with the SDK's own
//! retries off.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::Region;
use aws_sdk_kinesis::config::SharedCredentialsProvider;

use crate::config::AwsSettings;
use crate::kinesis::direct::{CachedCredentials, Direct, EndpointSettings};
use crate::state::checkpoint::StoreError;
use std::sync::Arc;

/// How long a connection may take to open, for every call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "AWS configuration: no AWS region: set aws.region in the configuration, or AWS_REGION in the environment"
    )]
    NoRegion,
}

/// The clients of every destination, from one AWS configuration.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Kinesis's other calls (the stream's shards, `kinetail status`).
    pub kinesis: Client,
    /// The lanes' `PutRecords` calls.
    pub puts: std::sync::Arc<crate::kinesis::direct::Direct>,
    pub firehose: aws_sdk_firehose::Client,
}

/// The clients for `aws`. The SDK's own retries are off: the sink retries
/// every failure itself, with the classification it documents.
pub async fn aws_clients(aws: &AwsSettings) -> Result<Clients, DaemonError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(aws.request_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(r) = &aws.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(p) = &aws.profile {
        loader = loader.profile_name(p);
    }
    let conf = loader.load().await;
    if conf.region().is_none() {
        return Err(DaemonError::NoRegion);
    }
    // endpoint_url is Kinesis's and Firehose's: STS (for role_arn) keeps
    // its own endpoint, or AWS_ENDPOINT_URL_STS. Firehose goes to
    // firehose_endpoint_url when set, else to AWS_ENDPOINT_URL_FIREHOSE when
    // that is in the environment (the SDK reads it), else to endpoint_url.
    let mut kinesis = aws_sdk_kinesis::config::Builder::from(&conf);
    let mut kinesis_url = kinesis_endpoint_url(&conf);
    let mut firehose = aws_sdk_firehose::config::Builder::from(&conf);
    if let Some(u) = &aws.endpoint_url {
        // User information (a proxy's `user:password@`) is not sent by the
        // SDK, but its debug lines would show it: it stays with kinetail.
        kinesis = kinesis.endpoint_url(crate::redact::without_userinfo(u));
        kinesis_url = Some(crate::redact::without_userinfo(u));
    }
    let firehose_env = std::env::var_os("AWS_ENDPOINT_URL_FIREHOSE").is_some();
    match (&aws.firehose_endpoint_url, &aws.endpoint_url) {
        (Some(u), _) => firehose = firehose.endpoint_url(crate::redact::without_userinfo(u)),
        (None, Some(u)) if !firehose_env => {
            firehose = firehose.endpoint_url(crate::redact::without_userinfo(u));
        }
        _ => {}
    }
    let mut chain = conf.credentials_provider();
    if let Some(role) = &aws.role_arn {
        let mut assume = AssumeRoleProvider::builder(role)
            .session_name(aws.role_session_name.clone())
            .configure(&conf);
        if let Some(id) = &aws.external_id {
            assume = assume.external_id(id);
        }
        chain = Some(SharedCredentialsProvider::new(assume.build().await));
    }
    // One cache for every caller: the chain (or the role) is asked once,
    // and credentials refused as expired are fetched again for all.
    let credentials = CachedCredentials::new(chain);
    let shared = SharedCredentialsProvider::new(credentials.clone());
    kinesis = kinesis.credentials_provider(shared.clone());
    firehose = firehose.credentials_provider(shared);
    let endpoint = EndpointSettings {
        region: conf.region().map(|r| r.to_string()).unwrap_or_default(),
        url: kinesis_url,
        use_fips: conf.use_fips().unwrap_or(false),
        use_dual_stack: conf.use_dual_stack().unwrap_or(false),
        account_id_endpoint_mode: conf
            .account_id_endpoint_mode()
            .cloned()
            .unwrap_or_default()
            .to_string(),
    };
    Ok(Clients {
        puts: Arc::new(Direct::new(
            credentials,
            endpoint,
            CONNECT_TIMEOUT,
            aws.request_timeout,
        )),
        kinesis: Client::from_conf(kinesis.build()),
        firehose: aws_sdk_firehose::Client::from_conf(firehose.build()),
    })
}

/// Kinesis's endpoint URL as the SDK's client takes it from `conf`:
/// `AWS_ENDPOINT_URL_KINESIS` (or the profile's `services` section), else
/// `AWS_ENDPOINT_URL` (or the profile's `endpoint_url`).
fn kinesis_endpoint_url(conf: &aws_config::SdkConfig) -> Option<String> {
    let key = aws_types::service_config::ServiceConfigKey::builder()
        .service_id("Kinesis")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok()?;
    conf.service_config()
        .and_then(|c| c.load_config(key))
        .or_else(|| conf.endpoint_url().map(str::to_string))
}
