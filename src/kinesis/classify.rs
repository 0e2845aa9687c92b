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

/// What a call came to.
pub enum CallResult {
    /// One answer per record, in request order: the sequence number of a
    /// confirmed record, or the error code of a failed one.
    Entries(Vec<Result<String, String>>),
    Failed {
        class: Failure,
        message: String,
        /// The service's error code, when it answered.
        code: Option<String>,
    },
}

/// The longest sequence number Kinesis gives (the API allows 128 digits).
const MAX_SEQUENCE_DIGITS: usize = 128;

/// Whether `s` is a sequence number Kinesis could have given: 1 to 128
/// decimal digits. An endpoint that answers anything else (empty, `abc`)
/// has not stored the record, whatever it says.
pub fn is_sequence_number(s: &str) -> bool {
    (1..=MAX_SEQUENCE_DIGITS).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// One entry of a `PutRecords` answer: the sequence number of a confirmed
/// record, or the error code of a failed one. Only a sequence number that
/// Kinesis could have given ([`is_sequence_number`]), alone, confirms;
/// every other entry (neither, both, an empty code, a sequence number that
/// is not one) is a failure, retried.
pub fn entry_outcome(
    sequence_number: Option<String>,
    error_code: Option<String>,
) -> Result<String, String> {
    match (sequence_number, error_code) {
        (Some(seq), None) if is_sequence_number(&seq) => Ok(seq),
        (Some(_), None) => Err("InvalidSequenceNumber".into()),
        (_, Some(code)) if !code.is_empty() => Err(code),
        // Neither, or an empty code: retried under a name that says so.
        _ => Err("NoSequenceNumber".into()),
    }
}

/// The entries of a successful `PutRecords` answer (HTTP 200), each read
/// as [`entry_outcome`] does, from the body's bytes: only the two members
/// that decide an entry are kept (no shard id, no message), and strings
/// are copied once, into what is kept. `None` when the body is not
/// such an answer (the call is then retried).
pub fn read_answer(body: &[u8]) -> Option<Answered> {
    // Valid UTF-8 as a whole, as the SDK's reader wants it (serde_json
    // does not check the strings of members it skips).
    let answer: Answer = serde_json::from_str(std::str::from_utf8(body).ok()?).ok()?;
    Some(answer.0)
}

/// What a `PutRecords` answer says: per entry, as [`entry_outcome`] reads
/// it, and the shards that took the confirmed records (each once), which
/// tell a reshard the moment it happens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answered {
    pub entries: Vec<Result<String, String>>,
    pub shards: Vec<String>,
}

impl Answered {
    /// `shard` noted once, for a confirmed entry.
    pub fn note_shard(&mut self, shard: &str) {
        if !self.shards.iter().any(|s| s == shard) {
            self.shards.push(shard.to_string());
        }
    }
}

/// A `PutRecords` answer's entries; objects only (serde's derived structs
/// would take arrays too, which the SDK does not).
struct Answer(Answered);

/// One entry of an answer, read by [`entry_outcome`], with the shard it
/// names (borrowed from the body: a shard id written with escapes makes
/// the body one for the SDK to read).
struct AnswerEntry<'a>(Result<String, String>, Option<&'a str>);

/// The members of an answer or an entry that matter; the others are
/// skipped unread.
enum Member {
    Records,
    SequenceNumber,
    ErrorCode,
    ShardId,
    Other,
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Member;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, name: &str) -> Result<Member, E> {
                Ok(match name {
                    "Records" => Member::Records,
                    "SequenceNumber" => Member::SequenceNumber,
                    "ErrorCode" => Member::ErrorCode,
                    "ShardId" => Member::ShardId,
                    _ => Member::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> serde::Deserialize<'de> for Answer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Answer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a PutRecords answer")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Answer, M::Error> {
                let mut records = None;
                while let Some(member) = m.next_key::<Member>()? {
                    match member {
                        Member::Records => {
                            let entries: Vec<AnswerEntry<'de>> = m.next_value()?;
                            let mut answered = Answered {
                                entries: Vec::with_capacity(entries.len()),
                                shards: Vec::new(),
                            };
                            for AnswerEntry(outcome, shard) in entries {
                                if let (Ok(_), Some(shard)) = (&outcome, shard) {
                                    answered.note_shard(shard);
                                }
                                answered.entries.push(outcome);
                            }
                            records = Some(answered);
                        }
                        _ => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                records
                    .map(Answer)
                    .ok_or_else(|| serde::de::Error::missing_field("Records"))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> serde::Deserialize<'de> for AnswerEntry<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AnswerEntry<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a PutRecords answer entry")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<AnswerEntry<'de>, M::Error> {
                let (mut seq, mut code, mut shard) = (None, None, None);
                while let Some(member) = m.next_key::<Member>()? {
                    match member {
                        Member::SequenceNumber => seq = m.next_value::<Option<String>>()?,
                        Member::ErrorCode => code = m.next_value::<Option<String>>()?,
                        Member::ShardId => shard = m.next_value::<Option<&'de str>>()?,
                        _ => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(AnswerEntry(entry_outcome(seq, code), shard))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firehose_failures_mean_what_they_say() {
        // PutRecordBatch's own codes: over the delivery stream's throughput,
        // a record at fault, a missing stream or KMS key.
        assert_eq!(
            classify(Some("ServiceUnavailableException"), Some(400)),
            Failure::Retry
        );
        assert_eq!(
            classify(Some("InvalidArgumentException"), Some(400)),
            Failure::Invalid
        );
        assert_eq!(
            classify(Some("ResourceNotFoundException"), Some(400)),
            Failure::Stuck
        );
        assert_eq!(
            classify(Some("InvalidKMSResourceException"), Some(400)),
            Failure::Stuck
        );
        assert_eq!(classify(None, Some(503)), Failure::Retry);
    }

    #[test]
    fn answers_are_read_as_the_sdk_reads_them() {
        let body = br#"{"EncryptionType":"NONE","FailedRecordCount":3,"Records":[
            {"SequenceNumber":"4962","ShardId":"shardId-000000000000"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard"},
            {"SequenceNumber":"49\u0036","ShardId":"shardId-000000000001","ErrorCode":"InternalFailure"},
            {"SequenceNumber":null,"ErrorCode":null},
            {"SequenceNumber":"4970","ErrorCode":"","Unknown":{"a":[1,2]}},
            {"SequenceNumber":""},
            {"SequenceNumber":"abc","ShardId":"shardId-000000000000"},
            {"SequenceNumber":"-1"}
        ]}"#;
        let answered = read_answer(body);
        assert_eq!(
            answered.as_ref().map(|a| a.shards.clone()),
            Some(vec!["shardId-000000000000".to_string()]),
            "the shards of confirmed entries, once each"
        );
        assert_eq!(
            answered.map(|a| a.entries),
            Some(vec![
                Ok("4962".to_string()),
                Err("ProvisionedThroughputExceededException".to_string()),
                Err("InternalFailure".to_string()),
                Err("NoSequenceNumber".to_string()),
                Err("NoSequenceNumber".to_string()),
                Err("InvalidSequenceNumber".to_string()),
                Err("InvalidSequenceNumber".to_string()),
                Err("InvalidSequenceNumber".to_string()),
            ])
        );
        assert_eq!(read_answer(br#"{"Records":[]}"#), Some(Answered::default()));
        for not_an_answer in [
            &b""[..],
            b"{}",
            b"{\"Records\":{}}",
            b"{\"Records\":[{\"SequenceNumber\":7}]}",
            b"<html>",
            b"{\"Records\":[],\"Other\":\"\xac\"}",
            b"[[]]",
            b"{\"Records\":[[\"1\",null]]}",
        ] {
            assert_eq!(read_answer(not_an_answer), None, "{not_an_answer:?}");
        }
    }

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
