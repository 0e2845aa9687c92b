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
use crate::state::checkpoint::StoreError;

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
    pub kinesis: Client,
    pub firehose: aws_sdk_firehose::Client,
}

/// The clients for `aws`. The SDK's own retries are off: the sink retries
/// every failure itself, with the classification it documents.
pub async fn aws_clients(aws: &AwsSettings) -> Result<Clients, DaemonError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
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
    let mut firehose = aws_sdk_firehose::config::Builder::from(&conf);
    if let Some(u) = &aws.endpoint_url {
        // User information (a proxy's `user:password@`) is not sent by the
        // SDK, but its debug lines would show it: it stays with kinetail.
        kinesis = kinesis.endpoint_url(crate::redact::without_userinfo(u));
    }
    let firehose_env = std::env::var_os("AWS_ENDPOINT_URL_FIREHOSE").is_some();
    match (&aws.firehose_endpoint_url, &aws.endpoint_url) {
        (Some(u), _) => firehose = firehose.endpoint_url(crate::redact::without_userinfo(u)),
        (None, Some(u)) if !firehose_env => {
            firehose = firehose.endpoint_url(crate::redact::without_userinfo(u));
        }
        _ => {}
    }
    if let Some(role) = &aws.role_arn {
        let mut assume = AssumeRoleProvider::builder(role)
            .session_name(aws.role_session_name.clone())
            .configure(&conf);
        if let Some(id) = &aws.external_id {
            assume = assume.external_id(id);
        }
        let credentials = SharedCredentialsProvider::new(assume.build().await);
        kinesis = kinesis.credentials_provider(credentials.clone());
        firehose = firehose.credentials_provider(credentials);
    }
    Ok(Clients {
        kinesis: Client::from_conf(kinesis.build()),
        firehose: aws_sdk_firehose::Client::from_conf(firehose.build()),
    })
}
