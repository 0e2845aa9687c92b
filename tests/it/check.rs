//! `kinetail check`: valid configs print the effective settings; broken
//! ones give `FILE:LINE:COL: message` and a non-zero exit, never a panic.

use std::path::PathBuf;

use crate::util::kinetail;

fn check(text: &str, env: &[(&str, &str)]) -> (i32, String, String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kinetail.toml");
    std::fs::write(&path, text).expect("write config");
    let mut cmd = kinetail();
    cmd.arg("check").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kinetail check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
        dir,
    )
}

const GOOD: &str = r#"state_dir = "/tmp/kinetail-check/state"

[aws]
region = "us-east-1"

[[flow]]
name = "syslog"
paths = ["/var/log/*.log"]
stream = "demo"
partition_key = { from = "regex", pattern = '^\S+ \S+ \S+ (\S+)', fallback = "random" }
"#;

/// Asserts a failed check whose message starts with `FILE:LINE:COL:` at
/// `line` and mentions `needle`.
fn assert_error_at(text: &str, env: &[(&str, &str)], line: usize, needle: &str) {
    let (code, _, err, path, _dir) = check(text, env);
    assert_ne!(code, 0, "check must fail for:\n{text}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    let prefix = format!("{}:{line}:", path.display());
    assert!(
        err.starts_with(&prefix),
        "error starts with {prefix:?}: {err}"
    );
    let col = err[prefix.len()..].split(':').next().unwrap_or("");
    assert!(
        col.parse::<usize>().is_ok_and(|c| c >= 1),
        "a column follows the line: {err}"
    );
    assert!(err.contains(needle), "error mentions {needle:?}: {err}");
}

#[test]
fn valid_config_prints_effective_settings() {
    let (code, out, err, _, _dir) = check(GOOD, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("name = \"syslog\""), "{out}");
    assert!(out.contains("linger_ms = 200"), "defaults are shown: {out}");
    assert!(out.contains("max_in_flight = 4"), "{out}");
    assert!(out.contains("worker_threads = 2"), "{out}");
}

#[test]
fn worker_threads_out_of_range_is_located() {
    let state = "state_dir = \"/tmp/kinetail-check/state\"\n";
    for bad in ["worker_threads = 0", "worker_threads = 65"] {
        let text = GOOD.replacen(state, &format!("{state}{bad}\n"), 1);
        assert_error_at(&text, &[], 2, "worker_threads must be between 1 and 64");
    }
    let text = GOOD.replacen(state, &format!("{state}worker_threads = 1\n"), 1);
    let (code, out, err, _, _dir) = check(&text, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("worker_threads = 1"), "{out}");
}

/// `key = value` or `# key = value` (the example's commented defaults):
/// the key and the value, without a trailing comment.
fn key_value(line: &str) -> Option<(String, String)> {
    let line = line.trim().trim_start_matches('#').trim();
    let (key, value) = line.split_once(" = ")?;
    if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return None;
    }
    let value = match value.find("  #").or_else(|| value.find(" # ")) {
        Some(i) => &value[..i],
        None => value,
    };
    Some((key.to_string(), value.trim().to_string()))
}

/// A section's id and its entries: key, value, commented out.
type Section = (String, Vec<(String, String, bool)>);

/// The `key = value` lines of a TOML-like text by section: the section's
/// header (`[aws]`; `[[flow]] NAME` for a flow), and each entry with whether
/// it is commented out.
fn sections(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = vec![(String::new(), Vec::new())];
    for line in text.lines() {
        let bare = line.trim().trim_start_matches('#').trim();
        if bare.starts_with('[') {
            let header = bare.split([':', ' ']).next().unwrap_or(bare).to_string();
            out.push((header, Vec::new()));
            continue;
        }
        let Some((key, value)) = key_value(line) else {
            continue;
        };
        let Some((id, entries)) = out.last_mut() else {
            continue;
        };
        if key == "name" && id == "[[flow]]" {
            id.push_str(&format!(" {value}"));
        }
        entries.push((key, value, line.trim_start().starts_with('#')));
    }
    out
}

/// The example is valid, and cannot drift from the code: every setting
/// `check` prints is in the example (set, or shown commented), and every
/// default the example shows commented is the value `check` prints where a
/// flow leaves it unset.
#[test]
fn the_example_config_shows_every_setting_with_the_code_defaults() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/kinetail.toml");
    let text = std::fs::read_to_string(&example).expect("example");
    let out = kinetail()
        .arg("check")
        .arg("--config")
        .arg(&example)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    // Every key check prints, as `key = value` or `# key: off`.
    let mut known: Vec<(String, String)> = printed.lines().filter_map(key_value).collect();
    for line in printed.lines() {
        if let Some(rest) = line.strip_prefix("# ")
            && let Some((key, _)) = rest.split_once(':')
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            known.push((key.to_string(), String::new()));
        }
    }
    assert!(known.len() > 30, "check printed its settings: {printed}");
    let shown: Vec<(String, String)> = text.lines().filter_map(key_value).collect();
    let missing: Vec<&String> = known
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !shown.iter().any(|(s, _)| s == *k))
        .collect();
    assert!(
        missing.is_empty(),
        "settings check knows that config/kinetail.toml does not show: {missing:?}"
    );
    // Commented defaults: the value check prints for the same section (the
    // same flow) where it leaves the key unset. A key check prints without
    // a value (off, or the SDK's chain) has no default to compare.
    let printed_sections = sections(&printed);
    let mut wrong = Vec::new();
    for (id, entries) in sections(&text) {
        let Some((_, theirs)) = printed_sections.iter().find(|(i, _)| *i == id) else {
            continue;
        };
        for (key, value, commented) in entries {
            let printed = theirs
                .iter()
                .find(|(k, v, _)| *k == key && !v.is_empty() && !v.starts_with('('));
            if let (true, Some((_, theirs, _))) = (commented, printed)
                && *theirs != value
            {
                wrong.push(format!(
                    "{id} {key}: the example says {value}, check prints {theirs}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "commented defaults that are not the code's:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn bad_toml_is_located() {
    assert_error_at(
        &GOOD.replace("region = \"us-east-1\"", "region = \"us-east-1"),
        &[],
        4,
        "",
    );
}

#[test]
fn unknown_key_is_located() {
    assert_error_at(
        &GOOD.replace("stream = \"demo\"", "stream = \"demo\"\nstreem = \"x\""),
        &[],
        10,
        "streem",
    );
}

#[test]
fn bad_regex_is_located() {
    assert_error_at(&GOOD.replace(r"(\S+)'", r"(\S+'"), &[], 10, "regex");
}

#[test]
fn regex_without_group_is_located() {
    assert_error_at(&GOOD.replace(r"(\S+)'", r"\S+'"), &[], 10, "capture group");
}

#[test]
fn unset_variable_is_located_and_defaults_apply() {
    let text = GOOD.replace(
        "stream = \"demo\"",
        "stream = \"${KINETAIL_TEST_UNSET_STREAM}\"",
    );
    assert_error_at(&text, &[], 9, "KINETAIL_TEST_UNSET_STREAM is not set");
    let (code, out, err, _, _dir) = check(&text, &[("KINETAIL_TEST_UNSET_STREAM", "from-env")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stream = \"from-env\""), "{out}");
    let text = GOOD.replace(
        "stream = \"demo\"",
        "stream = \"${KINETAIL_TEST_UNSET_STREAM:-fallback}\"",
    );
    let (code, out, err, _, _dir) = check(&text, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stream = \"fallback\""), "{out}");
}

#[test]
fn missing_stream_is_located() {
    assert_error_at(
        &GOOD.replace("stream = \"demo\"\n", ""),
        &[],
        7,
        "set stream (a Kinesis data stream) or firehose",
    );
}

#[test]
fn invalid_stream_and_start_at_are_located() {
    assert_error_at(
        &GOOD.replace("stream = \"demo\"", "stream = \"no spaces allowed\""),
        &[],
        9,
        "stream",
    );
    assert_error_at(
        &GOOD.replace(
            "stream = \"demo\"",
            "stream = \"demo\"\nstart_at = \"middle\"",
        ),
        &[],
        10,
        "start_at",
    );
}

#[test]
fn missing_file_is_reported() {
    let out = kinetail()
        .arg("check")
        .arg("--config")
        .arg("/nonexistent/kinetail.toml")
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/kinetail.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn invalid_explicit_hash_key_is_located() {
    let text = GOOD.replace(
        "stream = \"demo\"",
        "stream = \"demo\"\nexplicit_hash_key = { from = \"static\", value = \"340282366920938463463374607431768211456\" }",
    );
    assert_error_at(&text, &[], 10, "explicit_hash_key.value");
}

/// A Firehose flow of GOOD: `firehose` for `stream`, no partition key.
fn firehose_flow(extra: &str) -> String {
    let text = GOOD
        .replace("stream = \"demo\"", "firehose = \"logs-to-s3\"")
        .replace(
            "partition_key = { from = \"regex\", pattern = '^\\S+ \\S+ \\S+ (\\S+)', fallback = \"random\" }\n",
            "",
        );
    format!("{text}{extra}")
}

#[test]
fn a_firehose_flow_checks_with_its_own_defaults() {
    let (code, out, err, _, _dir) = check(&firehose_flow(""), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("firehose = \"logs-to-s3\""), "{out}");
    assert!(
        out.contains("aggregate = true\naggregate_max_bytes = 1024000"),
        "lines joined up to 1,000 KiB by default: {out}"
    );
    assert!(!out.contains("partition_key"), "no keys: {out}");
    let arn = firehose_flow("").replace(
        "\"logs-to-s3\"",
        "\"arn:aws:firehose:us-east-1:123456789012:deliverystream/logs-to-s3\"",
    );
    let (code, out, err, _, _dir) = check(&arn, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("firehose = \"logs-to-s3\""),
        "an ARN gives its name: {out}"
    );
}

#[test]
fn settings_that_mean_nothing_for_firehose_are_errors_naming_them() {
    for (setting, line) in [
        ("partition_key = { from = \"random\" }", 10),
        (
            "explicit_hash_key = { from = \"static\", value = \"0\" }",
            10,
        ),
        ("shard_records_per_sec = 500", 10),
        ("shard_bytes_per_sec = 500000", 10),
    ] {
        let key = setting.split(' ').next().unwrap_or_default();
        assert_error_at(&firehose_flow(&format!("{setting}\n")), &[], line, key);
    }
    // `pace` is reported at the flow's name.
    assert_error_at(&firehose_flow("pace = false\n"), &[], 7, "flow.pace");
    // And the Firehose limits on a stream's flow.
    let text = format!("{GOOD}firehose_records_per_sec = 100\n");
    assert_error_at(&text, &[], 11, "firehose_records_per_sec");
}

#[test]
fn a_flow_names_one_destination() {
    let both = GOOD.replace(
        "stream = \"demo\"",
        "stream = \"demo\"\nfirehose = \"logs\"",
    );
    assert_error_at(&both, &[], 10, "not both");
    let bad = firehose_flow("").replace("\"logs-to-s3\"", "\"no spaces allowed\"");
    assert_error_at(&bad, &[], 9, "delivery stream name");
}

#[test]
fn parsers_are_checked_and_shown() {
    let json = GOOD.replace("stream = \"demo\"", "stream = \"demo\"\nformat = \"json\"");
    let with = |extra: &str| format!("{json}{extra}\n");
    let (code, out, err, _, _dir) = check(
        &with(
            "parse = \"csv\"\ncsv_fields = [\"a\", \"b\"]\ncsv_delimiter = \";\"\ntypes = { b = \"int\" }",
        ),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("parse = \"csv\"\ncsv_fields = [\"a\", \"b\"]\ncsv_delimiter = \";\""),
        "{out}"
    );
    assert!(out.contains("types = { \"b\" = \"int\" }"), "{out}");
    let (code, out, err, _, _dir) = check(&with("parse = { regex = '^(?P<level>\\w+)' }"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("parse = { regex = "), "{out}");
    assert_error_at(&with("parse = \"yaml\""), &[], 12, "is not a format");
    assert_error_at(&with("parse = \"csv\""), &[], 12, "needs csv_fields");
    assert_error_at(
        &with("parse = { regex = '^\\w+' }"),
        &[],
        12,
        "no named capture",
    );
    assert_error_at(
        &with("parse = \"logfmt\"\ntypes = { took = \"integer\" }"),
        &[],
        13,
        "flow.types.took",
    );
    assert_error_at(
        &with("parse = \"csv\"\ncsv_fields = [\"a\"]\ncsv_delimiter = \"::\""),
        &[],
        14,
        "one ASCII character",
    );
    // Without the envelope, parsing has nowhere to put fields.
    let raw = format!("{GOOD}parse = \"syslog\"\n");
    assert_error_at(&raw, &[], 11, "needs format = \"json\"");
}

#[test]
fn container_format_and_kubernetes_keys_are_checked_where_written() {
    // Off by default, shown as such; each name accepted and shown.
    let (code, out, err, _, _dir) = check(GOOD, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("# container_format: off"), "{out}");
    for name in ["cri", "docker", "auto"] {
        let text = format!(
            "{GOOD}container_format = \"{name}\"\nformat = \"json\"\nmetadata = [\"kubernetes\"]\npartition_key = {{ from = \"kubernetes\", field = \"pod_uid\" }}\n"
        );
        let text = text.replace(
            "partition_key = { from = \"regex\", pattern = '^\\S+ \\S+ \\S+ (\\S+)', fallback = \"random\" }\n",
            "",
        );
        let (code, out, err, _, _dir) = check(&text, &[]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!("container_format = \"{name}\"")),
            "{out}"
        );
        assert!(out.contains("metadata = [\"kubernetes\"]"), "{out}");
        assert!(out.contains("\"kubernetes\" (\"pod_uid\")"), "{out}");
    }
    let base = GOOD.replace(
        "partition_key = { from = \"regex\", pattern = '^\\S+ \\S+ \\S+ (\\S+)', fallback = \"random\" }\n",
        "",
    );
    assert_error_at(
        &format!("{base}container_format = \"crio\"\n"),
        &[],
        10,
        "flow.container_format must be \"cri\", \"docker\" or \"auto\"",
    );
    assert_error_at(
        &format!("{base}partition_key = {{ from = \"kubernetes\" }}\n"),
        &[],
        10,
        "needs partition_key.field, one of namespace, pod, pod_uid",
    );
    assert_error_at(
        &format!("{base}partition_key = {{ from = \"kubernetes\", field = \"labels\" }}\n"),
        &[],
        10,
        "partition_key.field \"labels\" must be one of",
    );
    assert_error_at(
        &format!("{base}metadata = [\"kubernetes\"]\n"),
        &[],
        10,
        "flow.metadata needs format = \"json\"",
    );
}
