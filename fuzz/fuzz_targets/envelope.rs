//! The JSON envelope: any line (any bytes, JSON or not) encodes to one
//! valid JSON object, parsed by every parser family (JSON, logfmt, access
//! lines, Apache errors, syslog, CSV, regex) or not, merged or under a key;
//! a line that is kept as a message gives its exact bytes back.
#![no_main]

use std::collections::BTreeMap;

use kinetail::re::Re;
use kinetail::records::envelope::{Envelope, FieldKeys, LineContext, Placement, TimeRule};
use kinetail::records::time::TimeFormat;
use kinetail::records::parse::{Format, Kind};
use kinetail::lines::framing::{Line, Piece};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = Line {
        data: data.to_vec(),
        piece: Piece::Whole,
        part: 0,
        start: 0,
        end: data.len() as u64 + 1,
        entry: None,
    };
    let ctx = LineContext {
        timestamp: "2026-11-26T00:00:00.000Z",
        host: "h",
        path: "/p",
        flow: "f",
        metadata: "\"provider\":\"aws\"",
        kubernetes: "\"pod\":\"p\"",
        reading: 7,
        read_ms: 1_767_571_200_000,
    };
    let formats = [
        Format::Json,
        Format::Logfmt,
        Format::ApacheCommon,
        Format::ApacheCombined,
        Format::ApacheError,
        Format::Syslog,
        Format::Csv {
            fields: vec!["a".into(), "host".into()],
            delimiter: b',',
        },
        Format::Regex(Re::new(r"^(?P<level>\w+)[: ]+(?P<rest>.*)$").expect("regex")),
    ];
    let types: BTreeMap<String, Kind> = [
        ("code".to_string(), Kind::Int),
        ("a".to_string(), Kind::Float),
        ("level".to_string(), Kind::Bool),
    ]
    .into();
    let placements = [None, Some(Placement::Merge), Some(Placement::Under("json".into()))];
    for (format, parse) in formats
        .iter()
        .flat_map(|f| placements.iter().map(move |p| (f.clone(), p.clone())))
    {
        let env = Envelope {
            keys: FieldKeys::default(),
            fields: vec![("k".into(), "v".into())],
            parse,
            time: match &format {
                Format::Syslog => Some(TimeRule {
                    field: "time".into(),
                    format: TimeFormat::Syslog,
                }),
                Format::ApacheCombined | Format::ApacheCommon => Some(TimeRule {
                    field: "time".into(),
                    format: TimeFormat::Apache,
                }),
                _ => Some(TimeRule {
                    field: "a".into(),
                    format: TimeFormat::Strftime("%Y-%m-%d %H:%M:%S".into()),
                }),
            },
            read_time_key: "read".into(),
            format,
            types: types.clone(),
        };
        let mut out = Vec::new();
        let found = env.encode(&line, ctx, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("the envelope is JSON");
        if env.parse.is_none() || found.parse_failed {
            let back = match v.get("message_base64").and_then(|b| b.as_str()) {
                Some(b) => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(b).expect("base64")
                }
                None => v["message"].as_str().expect("message").as_bytes().to_vec(),
            };
            assert_eq!(back, data);
        }
    }
});
