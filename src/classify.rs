//! What Kinesis's answers mean: the classification of failed calls and of
//! the entries of a `PutRecords` answer (pure; the README has the table).

/// What a failed call means for the records in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Throttling, server errors, timeouts, connection trouble: send again.
    Retry,
    /// The request itself was rejected as invalid: some record is at fault.
    Invalid,
    /// Retrying alone will not fix it (stream missing, access denied,
    /// credentials, KMS): keep the data, retry slowly, say so loudly.
    Stuck,
}

/// Classifies an error code (and HTTP status, when there was a response).
pub fn classify(code: Option<&str>, status: Option<u16>) -> Failure {
    match code {
        Some(
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "ThrottlingException"
            | "KMSThrottlingException"
            | "InternalFailure"
            | "InternalFailureException"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "SlowDown",
        ) => Failure::Retry,
        Some("InvalidArgumentException" | "ValidationException" | "SerializationException") => {
            Failure::Invalid
        }
        Some(_) if status.is_some_and(|s| s >= 500 || s == 429) => Failure::Retry,
        Some(_) => Failure::Stuck,
        None => match status {
            Some(s) if (400..500).contains(&s) && s != 429 && s != 408 => Failure::Stuck,
            _ => Failure::Retry,
        },
    }
}

/// One entry of a `PutRecords` answer: the sequence number of a confirmed
/// record, or the error code of a failed one (an entry with neither, or
/// with both, is a failure: only a sequence number alone confirms).
pub fn entry_outcome(
    sequence_number: Option<String>,
    error_code: Option<String>,
) -> Result<String, String> {
    match (sequence_number, error_code) {
        (Some(seq), None) => Ok(seq),
        (_, Some(code)) if !code.is_empty() => Err(code),
        // Neither, or an empty code: retried under a name that says so.
        _ => Err("NoSequenceNumber".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_error_table() {
        assert_eq!(
            classify(Some("ProvisionedThroughputExceededException"), Some(400)),
            Failure::Retry
        );
        assert_eq!(classify(Some("InternalFailure"), Some(500)), Failure::Retry);
        assert_eq!(
            classify(Some("KMSThrottlingException"), Some(400)),
            Failure::Retry
        );
        assert_eq!(
            classify(Some("ResourceNotFoundException"), Some(400)),
            Failure::Stuck
        );
        assert_eq!(
            classify(Some("AccessDeniedException"), Some(400)),
            Failure::Stuck
        );
        assert_eq!(
            classify(Some("ExpiredTokenException"), Some(403)),
            Failure::Stuck
        );
        assert_eq!(
            classify(Some("KMSDisabledException"), Some(400)),
            Failure::Stuck
        );
        assert_eq!(
            classify(Some("InvalidArgumentException"), Some(400)),
            Failure::Invalid
        );
        assert_eq!(classify(Some("SomethingNew"), Some(503)), Failure::Retry);
        assert_eq!(
            classify(None, None),
            Failure::Retry,
            "no response: connection or timeout"
        );
        assert_eq!(classify(None, Some(502)), Failure::Retry);
        assert_eq!(classify(None, Some(403)), Failure::Stuck);
    }
}
