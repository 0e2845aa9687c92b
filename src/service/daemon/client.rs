//! The AWS clients: one configuration (region, profile, role, timeouts)
//! for every destination, with the SDK's own retries off.

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

/// The Kinesis client for `aws`. The SDK's own retries are off: the sink
/// retries every failure itself, with the classification it documents.
pub async fn kinesis_client(aws: &AwsSettings) -> Result<Client, DaemonError> {
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
    // endpoint_url is Kinesis's alone: STS (for role_arn) keeps its own
    // endpoint, or AWS_ENDPOINT_URL_STS.
    let mut kinesis = aws_sdk_kinesis::config::Builder::from(&conf);
    if let Some(u) = &aws.endpoint_url {
        // User information (a proxy's `user:password@`) is not sent by the
        // SDK, but its debug lines would show it: it stays with kinetail.
        kinesis = kinesis.endpoint_url(crate::redact::without_userinfo(u));
    }
    if let Some(role) = &aws.role_arn {
        let mut assume = AssumeRoleProvider::builder(role)
            .session_name(aws.role_session_name.clone())
            .configure(&conf);
        if let Some(id) = &aws.external_id {
            assume = assume.external_id(id);
        }
        kinesis =
            kinesis.credentials_provider(SharedCredentialsProvider::new(assume.build().await));
    }
    Ok(Client::from_conf(kinesis.build()))
}
