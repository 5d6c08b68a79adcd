//! The machine line the benchmark binaries print into docs/BENCHMARKS.md.

/// `N cores, model` (the model from /proc/cpuinfo, empty where it has none).
pub fn machine() -> String {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {cpu_model}")
}

/// `N GiB RAM, F GiB free, C GiB page cache` from /proc/meminfo, read when called: whether
/// writes through the page cache find free memory or must reclaim decides much of a
/// buffered writer's time (pg_basebackup's, tar's), so each section records it.
pub fn memory() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let gib = |key: &str| -> f64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / (1024.0 * 1024.0))
    };
    format!(
        "{:.0} GiB RAM, {:.1} GiB free, {:.1} GiB page cache",
        gib("MemTotal:"),
        gib("MemFree:"),
        gib("Cached:")
    )
}

/// Writes back dirty pages and empties the page cache (root only), so that a run starts with
/// free memory instead of reclaiming the cache left by earlier work.
pub fn drop_caches() -> Result<(), String> {
    let synced = std::process::Command::new("sync").status();
    if !synced.is_ok_and(|s| s.success()) {
        return Err("sync failed".into());
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| format!("writing /proc/sys/vm/drop_caches (needs root): {e}"))
}
