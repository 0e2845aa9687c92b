//! What Kinesis's answers mean: any error code and status classify without
//! a panic; an entry is confirmed exactly when it has a sequence number
//! Kinesis could have given (1 to 128 decimal digits) and no error code,
//! and every other entry is retried. Any bytes read as a
//! `PutRecords` answer give one entry per element of its `Records`, or
//! nothing (and then the SDK reads the body).
#![no_main]

use kinetail::kinesis::classify::{Failure, classify, entry_outcome, read_answer};

/// The oracle's own reading of a sequence number Kinesis could give.
fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_digit())
}
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Members other than Records, SequenceNumber and ErrorCode are skipped
    // by their grammar alone (as the SDK skips unknown members), so a body
    // whose skipped number is beyond a double's range is still an answer;
    // where serde_json's strict `Value` reads the body too, both agree.
    if let Some(entries) = read_answer(data).map(|a| a.entries)
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
    {
        let records = v["Records"].as_array().expect("an answer has Records");
        assert_eq!(entries.len(), records.len());
        for (e, r) in entries.iter().zip(records) {
            let seq = r.get("SequenceNumber").and_then(|s| s.as_str());
            let code = r.get("ErrorCode").and_then(|s| s.as_str());
            match e {
                Ok(s) => assert!(seq == Some(s.as_str()) && digits(s) && code.is_none()),
                Err(_) => assert!(!seq.is_some_and(digits) || code.is_some()),
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('|');
    let code = parts.next().map(str::to_string);
    let status = data.first().map(|b| 300 + *b as u16 * 2);
    let class = classify(code.as_deref(), status);
    if code.as_deref() == Some("ProvisionedThroughputExceededException") {
        assert_eq!(class, Failure::Retry);
    }
    // Entries: "s:SEQ" or "e:CODE" or both or neither, separated by '|'.
    for entry in parts {
        let seq = entry.split(',').find_map(|f| f.strip_prefix("s:")).map(str::to_string);
        let err = entry.split(',').find_map(|f| f.strip_prefix("e:")).map(str::to_string);
        let confirmed = seq.as_deref().is_some_and(digits) && err.is_none();
        match entry_outcome(seq.clone(), err.clone()) {
            Ok(s) => {
                assert!(confirmed);
                assert_eq!(Some(s), seq);
            }
            Err(c) => {
                assert!(!confirmed);
                assert!(!c.is_empty(), "a retried entry says why");
            }
        }
    }
});
