//! What a process has used, from /proc.

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

/// What a process has used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// user + system seconds.
    pub cpu: f64,
    /// Peak resident set (KiB): anonymous memory and the pages of the
    /// binary and libraries it touched.
    pub hwm_kib: u64,
    /// Resident anonymous memory now (KiB): the heap and stacks, what the
    /// process itself costs beyond shared, reclaimable file pages.
    pub anon_kib: u64,
}

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after ") " they are at 11, 12.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// A `kB` field of /proc/<pid>/status, 0 when absent.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident memory of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

pub fn usage(pid: u32) -> Usage {
    Usage {
        cpu: cpu_ticks(pid) as f64 / TICKS_PER_SEC,
        hwm_kib: peak_rss_kib(pid),
        anon_kib: status_kib(pid, "RssAnon:"),
    }
}

/// The highest figures seen over repeated samples of a process.
#[derive(Debug, Default)]
pub struct Peak(pub Usage);

impl Peak {
    pub fn sample(&mut self, pid: u32) -> Usage {
        let u = usage(pid);
        if u.cpu > 0.0 {
            self.0.cpu = u.cpu;
        }
        self.0.hwm_kib = self.0.hwm_kib.max(u.hwm_kib);
        self.0.anon_kib = self.0.anon_kib.max(u.anon_kib);
        u
    }
}
