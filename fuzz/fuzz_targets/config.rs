//! The configuration parser and `${VAR}` expansion: any text gives settings
//! or a located error, never a panic; expansion without variables changes
//! nothing that has no `$`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/fuzz/kinetail.toml");
    if let Err(e) = kinetail::config::Settings::from_toml(path, text) {
        // Every error names the file.
        assert!(e.to_string().contains("kinetail.toml"), "{e}");
    }
    let lookup = |name: &str| (name == "SET").then(|| "value".to_string());
    match kinetail::config::expand_env(text, lookup) {
        Ok(out) if !text.contains('$') => assert_eq!(out, text),
        _ => {}
    }
});
