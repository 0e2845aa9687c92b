//! AWS resource names and ARNs, as the APIs take them.

/// Whether `n` is a resource name of 1 to `max` letters, digits, `_`, `.`
/// or `-` (a stream's, a delivery stream's).
pub fn valid_name(n: &str, max: usize) -> bool {
    (1..=max).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The name in `arn:PARTITION:SERVICE:REGION:ACCOUNT:PREFIX/NAME`, when `s`
/// is such an ARN of `service` with a valid name of at most `max`.
pub fn arn_name<'a>(s: &'a str, service: &str, prefix: &str, max: usize) -> Option<&'a str> {
    let rest = s.strip_prefix("arn:")?;
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    let ok = parts.len() == 5
        && parts[0].starts_with("aws")
        && parts[1] == service
        && !parts[2].is_empty()
        && parts[3].len() == 12
        && parts[3].chars().all(|c| c.is_ascii_digit());
    let name = parts.get(4)?.strip_prefix(prefix)?;
    (ok && valid_name(name, max)).then_some(name)
}
