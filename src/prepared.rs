//! A request body written by kinetail (`records::batcher`), put into an AWS
//! SDK request before it is signed: the SDK still resolves the endpoint,
//! signs, sends and parses the answer, but does not copy every record into
//! its own types to serialize them (see ARCHITECTURE.md, "Where the CPU
//! goes"). The same interceptor serves `PutRecords` and `PutRecordBatch`.

use aws_sdk_kinesis::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::error::BoxError;
use aws_smithy_types::body::SdkBody;

/// The prepared body, put into the SDK's request before it is signed (each
/// attempt starts from the SDK's own).
#[derive(Debug)]
pub struct PreparedBody(pub bytes::Bytes);

impl Intercept for PreparedBody {
    fn name(&self) -> &'static str {
        "kinetail::prepared::PreparedBody"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        *request.body_mut() = SdkBody::from(self.0.clone());
        request
            .headers_mut()
            .insert("content-length", self.0.len().to_string());
        Ok(())
    }
}
