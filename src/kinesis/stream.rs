//! Stream references: a stream named by its name or by its ARN, as
//! `PutRecords` and `ListShards` accept them.

use std::fmt;

use crate::arn::{arn_name, valid_name};

/// How a flow names its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRef {
    Name(String),
    /// A stream ARN and the stream name it ends with.
    Arn {
        arn: String,
        name: String,
    },
}

impl StreamRef {
    pub fn name(&self) -> &str {
        match self {
            StreamRef::Name(n) => n,
            StreamRef::Arn { name, .. } => name,
        }
    }
}

impl fmt::Display for StreamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamRef::Name(n) => f.write_str(n),
            StreamRef::Arn { arn, .. } => f.write_str(arn),
        }
    }
}

/// Parses a stream name or ARN, as `PutRecords` accepts them.
pub fn parse_stream(s: &str) -> Result<StreamRef, String> {
    if s.starts_with("arn:") {
        match arn_name(s, "kinesis", "stream/", 128) {
            Some(name) => Ok(StreamRef::Arn {
                arn: s.to_string(),
                name: name.to_string(),
            }),
            None => Err(format!(
                "{s:?} is not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)"
            )),
        }
    } else if valid_name(s, 128) {
        Ok(StreamRef::Name(s.to_string()))
    } else {
        Err(format!(
            "{s:?} is not a valid stream name (1 to 128 characters of a-z, A-Z, 0-9, _ . -) nor a stream ARN"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stream_names_and_arns() {
        assert_eq!(parse_stream("demo"), Ok(StreamRef::Name("demo".into())));
        assert_eq!(
            parse_stream("arn:aws:kinesis:us-east-1:000000000000:stream/demo"),
            Ok(StreamRef::Arn {
                arn: "arn:aws:kinesis:us-east-1:000000000000:stream/demo".into(),
                name: "demo".into()
            })
        );
        assert!(parse_stream("arn:aws:s3:::bucket").is_err());
        assert!(parse_stream("has space").is_err());
        assert!(parse_stream("").is_err());
    }
}
