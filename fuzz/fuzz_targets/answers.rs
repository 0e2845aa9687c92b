//! What Kinesis's answers mean: any error code and status classify without
//! a panic; an entry is confirmed exactly when it has a sequence number and
//! no error code, and every other entry is retried.
#![no_main]

use kinetail::classify::{Failure, classify, entry_outcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
        let confirmed = seq.is_some() && err.is_none();
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
