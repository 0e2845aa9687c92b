//! Delivery stream names, as `PutRecordBatch` takes them: a name, or an ARN
//! whose name is used.

/// The delivery stream name of `s`: a name (1 to 64 of `[a-zA-Z0-9_.-]`),
/// or `arn:PARTITION:firehose:REGION:ACCOUNT:deliverystream/NAME`.
pub fn parse_delivery_stream(s: &str) -> Result<String, String> {
    fn valid_name(n: &str) -> bool {
        (1..=64).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }
    if let Some(rest) = s.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let ok = parts.len() == 5
            && parts[0].starts_with("aws")
            && parts[1] == "firehose"
            && !parts[2].is_empty()
            && parts[3].len() == 12
            && parts[3].chars().all(|c| c.is_ascii_digit());
        return match parts.get(4).and_then(|r| r.strip_prefix("deliverystream/")) {
            Some(name) if ok && valid_name(name) => Ok(name.to_string()),
            _ => Err(format!(
                "{s:?} is not a Firehose delivery stream ARN (arn:aws:firehose:REGION:ACCOUNT:deliverystream/NAME)"
            )),
        };
    }
    if valid_name(s) {
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
