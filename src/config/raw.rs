//! The configuration file as written: these types mirror the TOML
//! (`deny_unknown_fields`), and every value keeps its position in the file
//! so that validation can point at it.

use serde::Deserialize;
use toml::Spanned;

pub(super) type Str = Spanned<String>;
pub(super) type Num = Spanned<u64>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub state_dir: Str,
    #[serde(default)]
    pub aws: RawAws,
    pub api: Option<Spanned<RawApi>>,
    pub kubernetes: Option<RawKubernetes>,
    pub checkpoint_interval_ms: Option<Num>,
    pub shutdown_grace_ms: Option<Num>,
    pub rescan_interval_ms: Option<Num>,
    pub max_buffer_bytes: Option<Num>,
    pub max_open_files: Option<Num>,
    pub worker_threads: Option<Num>,
    #[serde(default)]
    pub flow: Vec<Spanned<RawFlow>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub listen: Str,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKubernetes {
    pub api_url: Option<Str>,
    pub token_file: Option<Str>,
    pub ca_file: Option<Str>,
    pub labels: Option<bool>,
    pub annotations: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    pub region: Option<Str>,
    pub endpoint_url: Option<Str>,
    pub firehose_endpoint_url: Option<Str>,
    pub profile: Option<Str>,
    pub request_timeout_ms: Option<Num>,
    pub role_arn: Option<Str>,
    pub external_id: Option<Str>,
    pub role_session_name: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlow {
    pub name: Str,
    pub paths: Spanned<Vec<Str>>,
    #[serde(default)]
    pub exclude: Vec<Str>,
    pub stream: Option<Str>,
    pub firehose: Option<Str>,
    pub start_at: Option<Str>,
    pub partition_key: Option<Spanned<RawKey>>,
    pub linger_ms: Option<Num>,
    pub max_in_flight: Option<Num>,
    pub strip_cr: Option<bool>,
    pub container_format: Option<Str>,
    pub multiline: Option<Spanned<RawMultiline>>,
    pub oversize: Option<Str>,
    pub follow_symlinks: Option<Str>,
    pub idle_timeout_ms: Option<Num>,
    pub ignore_older_secs: Option<Num>,
    pub explicit_hash_key: Option<Spanned<RawKey>>,
    pub pace: Option<bool>,
    pub aggregate: Option<bool>,
    pub aggregate_max_bytes: Option<Num>,
    pub shard_records_per_sec: Option<Num>,
    pub shard_bytes_per_sec: Option<Num>,
    pub firehose_records_per_sec: Option<Num>,
    pub firehose_bytes_per_sec: Option<Num>,
    // What a record is made of (config/record.rs).
    pub format: Option<Str>,
    pub message_key: Option<Str>,
    pub timestamp_key: Option<Str>,
    pub host_key: Option<Str>,
    pub path_key: Option<Str>,
    pub offset_key: Option<Str>,
    pub flow_key: Option<Str>,
    pub fields_key: Option<Str>,
    pub metadata_key: Option<Str>,
    pub id_key: Option<Str>,
    pub stream_key: Option<Str>,
    pub kubernetes_key: Option<Str>,
    pub fields: Option<Spanned<toml::Table>>,
    pub parse: Option<Spanned<RawParse>>,
    pub csv_fields: Option<Spanned<Vec<Str>>>,
    pub csv_delimiter: Option<Str>,
    pub types: Option<Spanned<toml::Table>>,
    pub time_field: Option<Str>,
    pub time_format: Option<Str>,
    pub read_time_key: Option<Str>,
    pub parsed_key: Option<Str>,
    #[serde(default)]
    pub include_lines: Vec<Str>,
    #[serde(default)]
    pub exclude_lines: Vec<Str>,
    pub compression: Option<Str>,
    pub metadata: Option<Spanned<Vec<Str>>>,
    pub metadata_tags: Option<bool>,
}

/// `parse`: a format's name, or `{ regex = '...' }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawParse {
    Name(String),
    Regex { regex: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMultiline {
    pub start_pattern: Option<Str>,
    pub continue_pattern: Option<Str>,
    pub max_lines: Option<Num>,
    pub max_bytes: Option<Num>,
    pub timeout_ms: Option<Num>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub from: Option<Str>,
    pub pattern: Option<Str>,
    pub field: Option<Str>,
    pub value: Option<Str>,
    pub fallback: Option<Str>,
    pub fallback_value: Option<Str>,
}
