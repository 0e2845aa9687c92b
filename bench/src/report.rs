//! A scenario's figures, and how they are printed (a table, or JSON).

pub struct Row {
    pub name: String,
    pub lines: u64,
    pub wall: f64,
    pub cpu: f64,
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub kinesis_records: u64,
    pub mb: f64,
    /// PUT payload units of what was sent.
    pub units: u64,
    /// Megabytes sent (data and keys, as Kinesis counts them).
    pub sent_mb: f64,
    /// PutRecords calls answered (retries included).
    pub calls: u64,
}

/// The run with the median CPU of `runs`, after printing every run's CPU
/// per million lines when there are several.
pub fn median(name: &str, mut runs: Vec<Row>, repeat: usize) -> Row {
    runs.sort_by(|x, y| x.cpu.total_cmp(&y.cpu));
    if repeat > 1 {
        let per_m: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.3}", r.cpu / (r.lines.max(1) as f64 / 1e6)))
            .collect();
        eprintln!("{name}: CPU s per million lines over {repeat} runs: {per_m:?}");
    }
    runs.swap_remove(runs.len() / 2)
}

pub fn print(rows: &[Row], floor: &Row) {
    println!(
        "{:<44} {:>10} {:>12} {:>8} {:>7} {:>14} {:>10} {:>9} {:>9} {:>12} {:>10} {:>9} {:>14} {:>10}",
        "scenario",
        "lines",
        "lines/s",
        "MB/s",
        "CPU %",
        "CPU s/M lines",
        "vs floor",
        "peak RSS",
        "anon RSS",
        "Kinesis recs",
        "units/GB",
        "sent MB",
        "CPU s/GB sent",
        "recs/call"
    );
    for r in rows.iter().chain(std::iter::once(floor)) {
        let per_m = if r.lines > 0 {
            r.cpu / (r.lines as f64 / 1e6)
        } else {
            0.0
        };
        let floor_per_m = floor.cpu / (floor.lines as f64 / 1e6);
        println!(
            "{:<44} {:>10} {:>12.0} {:>8.1} {:>7.1} {:>14.3} {:>9.1}x {:>6} MiB {:>6} MiB {:>12} {:>10.0} {:>9.1} {:>14.2} {:>10.1}",
            r.name,
            r.lines,
            r.lines as f64 / r.wall.max(1e-9),
            r.mb / r.wall.max(1e-9),
            100.0 * r.cpu / r.wall.max(1e-9),
            per_m,
            if floor_per_m > 0.0 && r.mb > 0.0 {
                per_m / floor_per_m
            } else {
                0.0
            },
            r.rss_kib / 1024,
            r.anon_kib / 1024,
            r.kinesis_records,
            // PUT payload units per GB of log read.
            r.units as f64 / (r.mb / 1000.0).max(1e-9),
            r.sent_mb,
            if r.sent_mb > 0.0 {
                r.cpu / (r.sent_mb / 1000.0)
            } else {
                0.0
            },
            r.kinesis_records as f64 / r.calls.max(1) as f64
        );
    }
}

pub fn to_json(rows: &[Row], floor: &Row) -> String {
    let all: Vec<serde_json::Value> = rows
        .iter()
        .chain(std::iter::once(floor))
        .map(|r| {
            serde_json::json!({
                "scenario": r.name, "lines": r.lines, "wall_seconds": r.wall, "cpu_seconds": r.cpu,
                "lines_per_second": r.lines as f64 / r.wall.max(1e-9),
                "cpu_seconds_per_million_lines": if r.lines > 0 { r.cpu / (r.lines as f64 / 1e6) } else { 0.0 },
                "peak_rss_kib": r.rss_kib, "peak_anon_rss_kib": r.anon_kib, "kinesis_records": r.kinesis_records, "megabytes": r.mb,
                "put_payload_units": r.units, "units_per_gb": r.units as f64 / (r.mb / 1000.0).max(1e-9), "sent_megabytes": r.sent_mb,
                "calls": r.calls,
            })
        })
        .collect();
    serde_json::to_string_pretty(&all).unwrap_or_default()
}
