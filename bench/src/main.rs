//! `kinetail-bench`: what kinetail costs per line, against the cost of the
//! work itself.
//!
//! It starts a fast local PutRecords endpoint (parses every request fully:
//! JSON, base64, the API limits; answers a sequence number per record),
//! writes generated logs, runs the real `kinetail` binary (next to this one)
//! over them, and reads the shipper's CPU time and peak memory from /proc.
//! The floor is one thread doing the unavoidable part of the work on the
//! same lines: read, split, base64, serialize the PutRecords JSON bodies and
//! hash each with SHA-256 as SigV4 does; no network. Timings are wall-clock
//! and noisy on shared machines: compare ratios taken in the same run.
//!
//! Usage: kinetail-bench [--quick] [--lines N] [--only a,b,...,n] [--repeat N] [--json FILE]
//!                       [--against NAME=COMMAND] [--against-rows a,v,...]
//!
//! `--repeat N` runs each backlog scenario N times and reports the run with
//! the median CPU per line (shared machines are noisy).
//!
//! `--against NAME=COMMAND` runs another shipper on the backlog of (a), after
//! each run of (a), and on the quiet files of (c) and (j), after kinetail,
//! and reports it as rows (x): `COMMAND` is run by the shell with `{port}`
//! (the endpoint's) and `{dir}` (whose `logs/*.log` are the files to ship)
//! filled in; it should ship every line to `http://127.0.0.1:{port}` and
//! keep its own state under `{dir}`. `--against-rows` names the backlogs it
//! runs on besides (a) (the same lines: its parsers against kinetail's),
//! `{row}` in `COMMAND` being the backlog's letter (a configuration per
//! row, say).
//!
//! `KINETAIL_BENCH_TOP` (say `max_buffer_bytes = 4194304`) is added to the
//! top of every configuration, to try other settings.

mod endpoint;
mod report;
mod scenarios;
mod shippers;

use std::collections::BTreeMap;

use report::{Row, median, print, to_json};
use scenarios::{backlog, floor, quiet_files, steady};
use shippers::{Lines, Shipper};

/// A backlog scenario: lines written before the shipper starts, shipped as
/// fast as it goes.
struct Backlog {
    letter: &'static str,
    name: &'static str,
    /// Settings before the first table.
    top: &'static str,
    /// Settings in the flow.
    flow: &'static str,
    lines: Lines,
    /// Shards the endpoint lists.
    shards: u64,
    /// `pace` left at its default (paced, for a stream; Firehose flows
    /// have no such setting and are not paced by default). The others set
    /// `pace = false`: pacing holds a backlog to the shards' write limits,
    /// and these measure the shipper.
    default_pace: bool,
    /// The most lines it writes: a paced shard's rate shows in seconds.
    max_lines: Option<u64>,
    /// Run unless `--only` names others; the rest only when named.
    by_default: bool,
    /// kinetail sends over TLS (to the same endpoint), as another shipper
    /// that speaks only HTTPS does.
    tls: bool,
}

const BACKLOGS: &[Backlog] = &[
    Backlog {
        letter: "a",
        name: "(a) backlog, 100-byte lines",
        top: "",
        flow: "",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "l",
        name: "(l) backlog, worker_threads 1",
        top: "worker_threads = 1",
        flow: "",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "k",
        name: "(k) backlog, tuned: max_in_flight 8, linger 20 ms",
        top: "",
        flow: "max_in_flight = 8\nlinger_ms = 20",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "i",
        name: "(i) backlog, paced (the default), 64 shards",
        top: "",
        flow: "",
        lines: Lines::Text,
        shards: 64,
        default_pace: true,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    // One paced shard: its lines/s is against its budget of 900 records a
    // second (90% of 1,000), so a few seconds of it suffice.
    Backlog {
        letter: "m",
        name: "(m) backlog, paced (the default), one shard: budget 900 records/s",
        top: "",
        flow: "",
        lines: Lines::Text,
        shards: 1,
        default_pace: true,
        max_lines: Some(18_000),
        by_default: false,
        tls: false,
    },
    // The same for bytes, 0.9 MiB a second; 18 MB of lines.
    Backlog {
        letter: "n",
        name: "(n) backlog of 2 KB lines, paced, one shard: budget 0.94 MB/s",
        top: "",
        flow: "",
        lines: Lines::Long,
        shards: 1,
        default_pace: true,
        max_lines: Some(9_000),
        by_default: false,
        tls: false,
    },
    // Firehose: its defaults (whole lines joined into records of up to
    // 1,000 KiB, unpaced) on the backlog of (a): CPU per line beside (a),
    // and records per GB (units/GB counts its 5 KB billing steps).
    Backlog {
        letter: "o",
        name: "(o) backlog to Firehose (lines joined, its default)",
        top: "",
        flow: "firehose = \"bench\"",
        lines: Lines::Text,
        shards: 4,
        default_pace: true,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "d",
        name: "(d) backlog, aggregated (4 shards)",
        top: "",
        flow: "aggregate = true",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "e",
        name: "(e) backlog, JSON lines in JSON envelopes",
        top: "",
        flow: "format = \"json\"\nparse = \"json\"",
        lines: Lines::Json,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    // Parsers, one per family, on lines of their format in envelopes:
    // CPU per line beside (e), JSON lines in envelopes.
    Backlog {
        letter: "p",
        name: "(p) backlog, access lines parsed (apache_combined)",
        top: "",
        flow: "format = \"json\"\nparse = \"apache_combined\"",
        lines: Lines::Access,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "q",
        name: "(q) backlog, syslog lines parsed (syslog)",
        top: "",
        flow: "format = \"json\"\nparse = \"syslog\"",
        lines: Lines::Syslog,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "r",
        name: "(r) backlog, logfmt lines parsed (logfmt)",
        top: "",
        flow: "format = \"json\"\nparse = \"logfmt\"\ntime_field = \"ts\"",
        lines: Lines::Logfmt,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    // A node's containers: 100 pods' CRI files, their entries unwrapped
    // (CPU per line beside (a), the same lines unwrapped), then the
    // DaemonSet's flow (packaging/kubernetes): JSON envelopes with each
    // file's pod, keyed by pod.
    Backlog {
        letter: "s",
        name: "(s) backlog, 100 pods' CRI files unwrapped",
        top: "",
        flow: "container_format = \"cri\"",
        lines: Lines::Cri,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "t",
        name: "(t) backlog, 100 pods' CRI files, the DaemonSet's flow",
        top: "",
        flow: "container_format = \"auto\"\nformat = \"json\"\nmetadata = [\"kubernetes\"]\npartition_key = { from = \"kubernetes\", field = \"pod_uid\" }",
        lines: Lines::Cri,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    // (a) over TLS: how Fluent Bit's Kinesis output always sends (rows
    // (x) with `{tls_port}`), so that the two compare like for like.
    Backlog {
        letter: "w",
        name: "(w) backlog of (a) over TLS",
        top: "",
        flow: "",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: true,
    },
    // The envelope on the text lines of (a): its default members, and the
    // message alone (every other key ""), the shape Fluent Bit ships
    // (`{"log": ...}`): CPU per line and per byte sent beside (a).
    Backlog {
        letter: "u",
        name: "(u) backlog, the default JSON envelope",
        top: "",
        flow: "format = \"json\"",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "v",
        name: "(v) backlog, an envelope of the message alone",
        top: "",
        flow: "format = \"json\"\ntimestamp_key = \"\"\nhost_key = \"\"\npath_key = \"\"\noffset_key = \"\"\nflow_key = \"\"",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "f",
        name: "(f) backlog, gzip",
        top: "",
        flow: "compression = \"gzip\"",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "g",
        name: "(g) backlog, zstd",
        top: "",
        flow: "compression = \"zstd\"",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
    Backlog {
        letter: "h",
        name: "(h) backlog, aggregated + zstd (4 shards)",
        top: "",
        flow: "aggregate = true\ncompression = \"zstd\"",
        lines: Lines::Text,
        shards: 4,
        default_pace: false,
        max_lines: None,
        by_default: true,
        tls: false,
    },
];

/// The other scenarios, run unless `--only` names others.
const OTHERS: &[&str] = &["b", "c", "j"];

/// The command line.
struct Args {
    quick: bool,
    /// Lines of a backlog.
    n: u64,
    only: Option<String>,
    repeat: usize,
    /// `--against NAME=COMMAND`: another shipper measured on the backlog of
    /// (a), interleaved with it (see `start_other`).
    against: Option<(String, String)>,
    /// The backlogs the other shipper runs on (`--against-rows`; (a) by
    /// default).
    against_rows: Vec<String>,
    json: Option<String>,
}

impl Args {
    fn parse() -> Args {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        Args {
            quick,
            n: value("--lines")
                .and_then(|v| v.parse().ok())
                .unwrap_or(if quick { 50_000 } else { 2_000_000 }),
            only: value("--only"),
            repeat: value("--repeat")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .max(1),
            against: value("--against").map(|v| match v.split_once('=') {
                Some((name, command)) => (name.to_string(), command.to_string()),
                None => ("other".to_string(), v),
            }),
            against_rows: value("--against-rows")
                .unwrap_or_else(|| "a".into())
                .split(',')
                .map(|r| r.trim().to_string())
                .collect(),
            json: value("--json"),
        }
    }

    /// Whether scenario `letter` runs: named by `--only`, or run by default.
    fn wants(&self, letter: &str, by_default: bool) -> bool {
        match &self.only {
            Some(only) => only.split(',').any(|o| o.trim() == letter),
            None => by_default,
        }
    }
}

/// Runs a backlog scenario `--repeat` times (and the other shipper after
/// each run of (a)); adds the median rows.
async fn run_backlog(args: &Args, b: &Backlog, rows: &mut Vec<Row>) -> std::io::Result<u64> {
    let n = b.max_lines.map_or(args.n, |m| args.n.min(m));
    let flow = if b.default_pace {
        b.flow.to_string()
    } else {
        format!("pace = false\n{}", b.flow)
    };
    let (mut runs, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        let shipper = Shipper::Kinetail {
            top: b.top,
            flow_extra: &flow,
        };
        runs.push(backlog(b.name, n, shipper, b.lines, b.shards, b.tls).await?);
        if let Some((other, command)) = &args.against
            && args.against_rows.iter().any(|r| r == b.letter)
        {
            let name = format!("(x{}) {other}, the backlog of ({})", b.letter, b.letter);
            let command = command.replace("{row}", b.letter);
            let shipper = Shipper::Other { command: &command };
            theirs.push(backlog(&name, n, shipper, b.lines, b.shards, false).await?);
        }
    }
    rows.push(median(b.name, runs, args.repeat));
    if let Some(first) = theirs.first() {
        let name = first.name.clone();
        rows.push(median(&name, theirs, args.repeat));
    }
    Ok(n)
}

/// (c) a line a second in each file, 30 s; (j) a line a second in all, two
/// minutes: two of the periodic rescans and four of the safety polls of
/// each file fall in it. The other shipper after kinetail.
async fn run_quiet(args: &Args, rows: &mut Vec<Row>) -> std::io::Result<()> {
    for (letter, each, full_seconds) in [("c", true, 30), ("j", false, 120)] {
        if !args.wants(letter, true) {
            continue;
        }
        let files = if args.quick { 100 } else { 1_000 };
        let seconds = if args.quick { 3 } else { full_seconds };
        let shipper = Shipper::Kinetail {
            top: "",
            flow_extra: "",
        };
        rows.push(quiet_files(files, seconds, each, shipper).await?);
        if let Some((other, command)) = &args.against {
            // Quiet files are plain lines, as in (a).
            let command = command.replace("{row}", "a");
            let shipper = Shipper::Other { command: &command };
            let mut row = quiet_files(files, seconds, each, shipper).await?;
            row.name = format!("(x) {other} on ({letter})");
            rows.push(row);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if !testkit::kinetail_bin().exists() {
        eprintln!(
            "kinetail-bench: {} not found; build it with `cargo build --release`",
            testkit::kinetail_bin().display()
        );
        std::process::exit(2);
    }
    if let Some(unknown) = args.only.as_deref().and_then(|only| {
        only.split(',')
            .map(str::trim)
            .find(|o| !BACKLOGS.iter().any(|b| b.letter == *o) && !OTHERS.contains(o))
    }) {
        eprintln!("kinetail-bench: no scenario {unknown:?}");
        std::process::exit(2);
    }
    let mut rows = Vec::new();
    // Lines each backlog scenario writes.
    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
    for b in BACKLOGS
        .iter()
        .filter(|b| args.wants(b.letter, b.by_default))
    {
        let n = run_backlog(&args, b, &mut rows).await?;
        wanted.insert(b.name.to_string(), n);
    }
    let mut delay = None;
    if args.wants("b", true) {
        let (row, p50, p99) = if args.quick {
            steady(5_000, 3).await?
        } else {
            steady(50_000, 30).await?
        };
        rows.push(row);
        delay = Some((p50, p99));
    }
    run_quiet(&args, &mut rows).await?;
    report(&args, &rows, delay, &wanted)
}

/// Prints the table (and writes `--json`); fails when a backlog lost lines.
fn report(
    args: &Args,
    rows: &[Row],
    delay: Option<(u64, u64)>,
    wanted: &BTreeMap<String, u64>,
) -> std::io::Result<()> {
    let fl = floor(args.n)?;
    print(rows, &fl);
    if let Some((p50, p99)) = delay {
        println!("(b) write-to-confirmation delay: p50 {p50} ms, p99 {p99} ms (linger 200 ms)");
    }
    firehose_against_kinesis(rows);
    if let Some(path) = &args.json {
        let mut v: serde_json::Value =
            serde_json::from_str(&to_json(rows, &fl)).unwrap_or_default();
        if let (Some(a), Some((p50, p99))) = (v.as_array_mut(), delay) {
            a.push(serde_json::json!({"scenario": "(b) delay", "p50_ms": p50, "p99_ms": p99}));
        }
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap_or_default())?;
    }
    let summary: BTreeMap<&str, u64> = rows.iter().map(|r| (r.name.as_str(), r.lines)).collect();
    let short = rows
        .iter()
        .filter(|r| r.name.contains("backlog"))
        .any(|r| r.lines < wanted.get(&r.name).copied().unwrap_or(args.n));
    if short {
        eprintln!("kinetail-bench: not every line arrived: {summary:?}");
        std::process::exit(1);
    }
    Ok(())
}

/// Row (o) against row (a): CPU per line, and the records Firehose took
/// against the fewest that could hold the bytes (1,000 KiB each).
fn firehose_against_kinesis(rows: &[Row]) {
    let find = |letter: &str| rows.iter().find(|r| r.name.starts_with(letter));
    let (Some(a), Some(o)) = (find("(a)"), find("(o)")) else {
        return;
    };
    let per_line = |r: &Row| r.cpu / r.lines.max(1) as f64;
    let fewest =
        (o.sent_mb * 1e6 / kinetail::records::batcher::FIREHOSE_RECORD.bytes as f64).ceil();
    println!(
        "(o) Firehose: CPU per line {:.2}x the Kinesis backlog (a); {} records for {:.1} MB sent, {:.3}x the fewest of 1,000 KiB",
        per_line(o) / per_line(a).max(1e-12),
        o.kinesis_records,
        o.sent_mb,
        o.kinesis_records as f64 / fewest.max(1.0)
    );
}
