//! The effective settings as TOML-like text, for `kinetail check`: every
//! setting with the value in force, defaults included, secrets masked.

use std::fmt::Write;
use std::time::Duration;

use super::{
    AwsSettings, Destination, FlowSettings, FollowSymlinks, MetadataSource, Oversize,
    RecordSettings, Settings, StartAt,
};
use crate::lines::multiline::Rule;
use crate::records::envelope::{Envelope, Placement};
use crate::records::parse::{Format, Kind};
use crate::records::time::TimeFormat;

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

impl Settings {
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# effective settings from {}", self.source.display());
        let _ = writeln!(s, "state_dir = {:?}", self.state_dir.display().to_string());
        let _ = writeln!(
            s,
            "checkpoint_interval_ms = {}",
            ms(self.checkpoint_interval)
        );
        let _ = writeln!(s, "shutdown_grace_ms = {}", ms(self.shutdown_grace));
        let _ = writeln!(s, "rescan_interval_ms = {}", ms(self.rescan_interval));
        let _ = writeln!(s, "max_buffer_bytes = {}", self.max_buffer_bytes);
        let _ = writeln!(s, "max_open_files = {}", self.max_open_files);
        let _ = writeln!(s, "worker_threads = {}", self.worker_threads);
        match self.api {
            Some(a) => {
                let _ = write!(s, "\n[api]\nlisten = \"{a}\"\n");
            }
            None => s.push_str("\n# [api]: off\n"),
        }
        describe_aws(&mut s, &self.aws);
        describe_kubernetes(&mut s, &self.kubernetes);
        for f in &self.flows {
            describe_flow(&mut s, f);
        }
        s
    }
}

fn describe_aws(s: &mut String, aws: &AwsSettings) {
    let opt = |o: &Option<String>| match o {
        Some(v) => format!("{v:?}"),
        None => "(SDK default chain)".to_string(),
    };
    s.push_str("\n[aws]\n");
    let _ = writeln!(s, "region = {}", opt(&aws.region));
    let endpoint = aws.endpoint_url.as_deref().map(crate::redact::url);
    let _ = writeln!(s, "endpoint_url = {}", opt(&endpoint));
    let _ = match (&aws.firehose_endpoint_url, &endpoint) {
        (Some(u), _) => writeln!(s, "firehose_endpoint_url = {:?}", crate::redact::url(u)),
        (None, Some(e)) => writeln!(
            s,
            "firehose_endpoint_url = {e:?} # endpoint_url's, unless AWS_ENDPOINT_URL_FIREHOSE is set"
        ),
        (None, None) => writeln!(s, "firehose_endpoint_url = (SDK default chain)"),
    };
    let _ = writeln!(s, "profile = {}", opt(&aws.profile));
    let _ = writeln!(s, "request_timeout_ms = {}", ms(aws.request_timeout));
    match &aws.role_arn {
        Some(r) => {
            let id = if aws.external_id.is_some() {
                "(set)"
            } else {
                "(none)"
            };
            let _ = writeln!(
                s,
                "role_arn = {r:?}\nexternal_id = {id}\nrole_session_name = {:?}",
                aws.role_session_name
            );
        }
        None => s.push_str("# role_arn: none (the default credential chain as it is)\n"),
    }
}

fn describe_kubernetes(s: &mut String, k: &super::KubernetesSettings) {
    s.push_str("\n[kubernetes]\n");
    match &k.api_url {
        Some(u) => {
            let _ = writeln!(s, "api_url = {:?}", crate::redact::url(u));
        }
        None => s.push_str(
            "api_url = (in-cluster: KUBERNETES_SERVICE_HOST and _PORT; no lookups without them)\n",
        ),
    }
    let _ = writeln!(s, "token_file = {:?}", k.token_file.display().to_string());
    let _ = writeln!(s, "ca_file = {:?}", k.ca_file.display().to_string());
    let _ = writeln!(s, "labels = {}\nannotations = {}", k.labels, k.annotations);
}

/// How the flow's records are packed and paced, as its destination has it.
fn describe_sending(s: &mut String, f: &FlowSettings) {
    if !f.destination.is_firehose() {
        match &f.explicit_hash_key {
            Some(k) => {
                let _ = writeln!(s, "explicit_hash_key = {}", k.describe());
            }
            None => s.push_str("# explicit_hash_key: off (Kinesis hashes the partition key)\n"),
        }
    }
    match f.aggregate_bytes {
        0 => s.push_str("aggregate = false\n"),
        n => {
            let _ = writeln!(s, "aggregate = true\naggregate_max_bytes = {n}");
        }
    }
    match (f.destination.is_firehose(), f.pace) {
        (false, Some(l)) => {
            let _ = writeln!(
                s,
                "pace = true\nshard_records_per_sec = {}\nshard_bytes_per_sec = {}",
                l.records_per_sec, l.bytes_per_sec
            );
        }
        (false, None) => s.push_str("pace = false\n"),
        (true, Some(l)) => {
            let limit = |v: u64| match v {
                u64::MAX => "(no limit)".to_string(),
                v => v.to_string(),
            };
            let _ = writeln!(
                s,
                "firehose_records_per_sec = {}\nfirehose_bytes_per_sec = {}",
                limit(l.records_per_sec),
                limit(l.bytes_per_sec)
            );
        }
        (true, None) => s.push_str(
            "# firehose_records_per_sec: off (not paced; backs off when throttled)\n# firehose_bytes_per_sec: off\n",
        ),
    }
}

fn describe_flow(s: &mut String, f: &FlowSettings) {
    s.push_str("\n[[flow]]\n");
    let _ = writeln!(s, "name = {:?}", f.name);
    let _ = writeln!(s, "paths = {:?}", f.paths);
    let ex: Vec<&str> = f.exclude.iter().map(|p| p.as_str()).collect();
    let _ = writeln!(s, "exclude = {ex:?}");
    match &f.destination {
        Destination::Stream(stream) => {
            let _ = writeln!(s, "stream = {:?}", stream.to_string());
        }
        Destination::Firehose(name) => {
            let _ = writeln!(s, "firehose = {name:?}");
        }
    }
    let start = match f.start_at {
        StartAt::Beginning => "beginning",
        StartAt::End => "end",
    };
    let _ = writeln!(s, "start_at = {start:?}");
    if !f.destination.is_firehose() {
        let _ = writeln!(s, "partition_key = {}", f.partition_key.describe());
    }
    let _ = writeln!(s, "linger_ms = {}", ms(f.linger));
    let _ = writeln!(s, "max_in_flight = {}", f.max_in_flight);
    let _ = writeln!(s, "strip_cr = {}", f.strip_cr);
    match f.container_format {
        Some(c) => {
            let _ = writeln!(s, "container_format = {:?}", c.name());
        }
        None => s.push_str(
            "# container_format: off
",
        ),
    }
    let oversize = match f.oversize {
        Oversize::Split => "split",
        Oversize::Truncate => "truncate",
        Oversize::Drop => "drop",
    };
    let _ = writeln!(s, "oversize = {oversize:?}");
    let follow = match f.follow_symlinks {
        FollowSymlinks::Owned => "owned",
        FollowSymlinks::Always => "always",
        FollowSymlinks::Never => "never",
    };
    let _ = writeln!(s, "follow_symlinks = {follow:?}");
    let _ = writeln!(s, "idle_timeout_ms = {}", ms(f.idle_timeout));
    describe_sending(s, f);
    match f.ignore_older {
        Some(d) => {
            let _ = writeln!(s, "ignore_older_secs = {}", d.as_secs());
        }
        None => s.push_str("# ignore_older_secs: off\n"),
    }
    describe_record(s, &f.record);
    match &f.multiline {
        None => s.push_str("# multiline: off\n"),
        Some(m) => {
            let (k, re) = match &m.rule {
                Rule::Start(re) => ("start_pattern", re),
                Rule::Continue(re) => ("continue_pattern", re),
            };
            let _ = writeln!(
                s,
                "multiline = {{ {k} = {:?}, max_lines = {}, max_bytes = {}, timeout_ms = {} }}",
                re.as_str(),
                m.max_lines,
                m.max_bytes,
                ms(m.timeout)
            );
        }
    }
}

/// `parse` and what goes with it.
fn describe_parse(s: &mut String, env: &Envelope) {
    let Some(placement) = &env.parse else {
        s.push_str("parse = \"none\"\n");
        return;
    };
    let _ = match &env.format {
        Format::Json => writeln!(s, "parse = \"json\""),
        Format::Logfmt => writeln!(s, "parse = \"logfmt\""),
        Format::ApacheCommon => writeln!(s, "parse = \"apache_common\""),
        Format::ApacheCombined => writeln!(s, "parse = \"apache_combined\""),
        Format::ApacheError => writeln!(s, "parse = \"apache_error\""),
        Format::Syslog => writeln!(s, "parse = \"syslog\""),
        Format::Csv { fields, delimiter } => writeln!(
            s,
            "parse = \"csv\"\ncsv_fields = {fields:?}\ncsv_delimiter = {:?}",
            (*delimiter as char).to_string()
        ),
        Format::Regex(re) => writeln!(s, "parse = {{ regex = {:?} }}", re.as_str()),
    };
    let _ = match placement {
        Placement::Merge => writeln!(s, "parsed_key = \"\" # merged at the top"),
        Placement::Under(key) => writeln!(s, "parsed_key = {key:?}"),
    };
    let types: Vec<String> = env
        .types
        .iter()
        .map(|(name, kind)| {
            let kind = match kind {
                Kind::Int => "int",
                Kind::Float => "float",
                Kind::Bool => "bool",
            };
            format!("{name:?} = {kind:?}")
        })
        .collect();
    match &env.time {
        None => s.push_str("# time_field: none (the timestamp is the read time)\n"),
        Some(rule) => {
            let format = match &rule.format {
                TimeFormat::Rfc3339 => "rfc3339".to_string(),
                TimeFormat::Unix => "unix".to_string(),
                TimeFormat::UnixMs => "unix_ms".to_string(),
                TimeFormat::Apache => "%d/%b/%Y:%H:%M:%S %z".to_string(),
                TimeFormat::ApacheError => "%a %b %d %H:%M:%S%.f %Y".to_string(),
                TimeFormat::Syslog => "syslog (%b %e %H:%M:%S, or rfc3339)".to_string(),
                TimeFormat::Strftime(p) => p.clone(),
            };
            let _ = writeln!(s, "time_field = {:?}\ntime_format = {format:?}", rule.field);
        }
    }
    let _ = writeln!(s, "read_time_key = {:?}", env.read_time_key);
    let _ = match types.is_empty() {
        true => writeln!(s, "types = {{}}"),
        false => writeln!(s, "types = {{ {} }}", types.join(", ")),
    };
}

fn describe_record(s: &mut String, r: &RecordSettings) {
    match &r.envelope {
        None => s.push_str("format = \"raw\"\n"),
        Some(env) => {
            s.push_str("format = \"json\"\n");
            let k = &env.keys;
            for (name, value) in [
                ("message_key", &k.message),
                ("timestamp_key", &k.timestamp),
                ("host_key", &k.host),
                ("path_key", &k.path),
                ("offset_key", &k.offset),
                ("flow_key", &k.flow),
                ("fields_key", &k.fields),
                ("metadata_key", &k.metadata),
                ("id_key", &k.id),
                ("stream_key", &k.stream),
                ("kubernetes_key", &k.kubernetes),
            ] {
                let _ = writeln!(s, "{name} = {value:?}");
            }
            let fields: Vec<String> = env
                .fields
                .iter()
                .map(|(k, v)| format!("{k:?} = {v:?}"))
                .collect();
            let _ = writeln!(s, "fields = {{ {} }}", fields.join(", "));
            describe_parse(s, env);
            let sources: Vec<&str> = r
                .metadata
                .iter()
                .map(|m| match m {
                    MetadataSource::Ec2 => "ec2",
                    MetadataSource::Ecs => "ecs",
                    MetadataSource::Kubernetes => "kubernetes",
                })
                .collect();
            let _ = writeln!(
                s,
                "metadata = {sources:?}\nmetadata_tags = {}",
                r.metadata_tags
            );
        }
    }
    let patterns = |v: &[crate::re::Re]| {
        v.iter()
            .map(|re| re.as_str().to_string())
            .collect::<Vec<_>>()
    };
    let _ = writeln!(s, "include_lines = {:?}", patterns(&r.include_lines));
    let _ = writeln!(s, "exclude_lines = {:?}", patterns(&r.exclude_lines));
    let _ = writeln!(s, "compression = {:?}", r.compression.name());
}
