//! One `PutRecordBatch` call: the body written by
//! `records::batcher::put_record_batch_body`, signed and sent by the SDK,
//! and its answer read entry by entry. An entry is confirmed only by a
//! non-empty `RecordId`; anything else is a failed entry, retried.

use aws_sdk_firehose::Client;
use aws_sdk_firehose::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_firehose::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_firehose::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata};
use aws_smithy_types::body::SdkBody;

use crate::kinesis::classify::{CallResult, Failure, classify};
use crate::records::batcher::{Entry, put_record_batch_body};

/// A body kinetail wrote, put into the SDK's request before it is signed
/// (each attempt starts from the SDK's own): the SDK does not copy every
/// record into its own types to serialize them (ARCHITECTURE.md, "Where
/// the CPU goes").
#[derive(Debug)]
struct PreparedBody(bytes::Bytes);

impl Intercept for PreparedBody {
    fn name(&self) -> &'static str {
        "kinetail::firehose::put::PreparedBody"
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

/// Sends `entries` to the delivery stream `name`.
pub async fn put(client: &Client, name: &str, entries: &[Entry]) -> CallResult {
    let body = PreparedBody(bytes::Bytes::from(put_record_batch_body(entries, name)));
    // The SDK's request carries no records; the interceptor puts the
    // prepared body in before signing.
    let sent = client
        .put_record_batch()
        .delivery_stream_name(name)
        .set_records(Some(Vec::new()))
        .customize()
        .interceptor(body)
        .send()
        .await;
    match sent {
        Ok(out) => {
            let answers: Vec<Result<String, String>> = out
                .request_responses
                .into_iter()
                .map(|r| entry_outcome(r.record_id, r.error_code))
                .collect();
            if answers.len() != entries.len() {
                return CallResult::Failed {
                    class: Failure::Retry,
                    code: None,
                    message: format!(
                        "response has {} entries for {} records",
                        answers.len(),
                        entries.len()
                    ),
                };
            }
            CallResult::Entries(answers)
        }
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            CallResult::Failed {
                class: classify(e.code(), status),
                message: crate::redact::error_text(&DisplayErrorContext(&e)),
                code: e.code().map(str::to_string),
            }
        }
    }
}

/// One entry of an answer: its `RecordId` when it has a non-empty one and
/// no error code, else the error code (or `MissingRecordId`).
pub fn entry_outcome(
    record_id: Option<String>,
    error_code: Option<String>,
) -> Result<String, String> {
    match (record_id, error_code) {
        (_, Some(code)) if !code.is_empty() => Err(code),
        (Some(id), _) if !id.is_empty() => Ok(id),
        _ => Err("MissingRecordId".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_record_id_confirms() {
        assert_eq!(entry_outcome(Some("abc".into()), None), Ok("abc".into()));
        assert!(entry_outcome(Some(String::new()), None).is_err());
        assert!(entry_outcome(None, None).is_err());
        assert_eq!(
            entry_outcome(
                Some("abc".into()),
                Some("ServiceUnavailableException".into())
            ),
            Err("ServiceUnavailableException".into())
        );
    }
}
