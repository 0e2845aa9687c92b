//! Delivery stream names, as `PutRecordBatch` takes them: a name, or an ARN
//! whose name is used.

use crate::arn::{arn_name, valid_name};

/// The delivery stream name of `s`: a name (1 to 64 of `[a-zA-Z0-9_.-]`),
/// or `arn:PARTITION:firehose:REGION:ACCOUNT:deliverystream/NAME`.
pub fn parse_delivery_stream(s: &str) -> Result<String, String> {
    if s.starts_with("arn:") {
        return arn_name(s, "firehose", "deliverystream/", 64)
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a Firehose delivery stream ARN (arn:aws:firehose:REGION:ACCOUNT:deliverystream/NAME)"
                )
            });
    }
    if valid_name(s, 64) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a delivery stream name (1 to 64 letters, digits, '_', '.' or '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        assert_eq!(parse_delivery_stream("logs-to-s3"), Ok("logs-to-s3".into()));
        assert_eq!(
            parse_delivery_stream("arn:aws:firehose:eu-west-1:123456789012:deliverystream/logs"),
            Ok("logs".into())
        );
        assert!(parse_delivery_stream("").is_err());
        assert!(parse_delivery_stream("has space").is_err());
        assert!(parse_delivery_stream(&"x".repeat(65)).is_err());
        let kinesis = parse_delivery_stream("arn:aws:kinesis:eu-west-1:123456789012:stream/logs");
        assert!(kinesis.is_err_and(|e| e.contains("deliverystream/NAME")));
    }
}
