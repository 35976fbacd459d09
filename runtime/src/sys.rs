//! What the operating system tells about this process's memory, and the
//! process data limit that holds allocations made outside Rust.

use std::string::String;

/// A field of /proc/self/status in bytes (Linux reports kB); 0 where unknown.
fn status_field(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    kib_field(&status, field)
}

fn kib_field(text: &str, field: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Peak resident set (VmHWM).
pub fn peak_rss() -> u64 {
    status_field("VmHWM")
}

/// Private writable memory (VmData), what RLIMIT_DATA counts.
pub fn data_bytes() -> u64 {
    status_field("VmData")
}

/// (total, available) RAM of the machine.
pub fn ram() -> (u64, u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    (kib_field(&meminfo, "MemTotal"), kib_field(&meminfo, "MemAvailable"))
}

/// Makes glibc give large freed blocks back to the system at once.
///
/// glibc raises its mmap threshold to the size of each large block freed, so
/// after the first model table is freed, later ones come from the heap, and
/// freeing them leaves holes the resident set keeps: loading TinyLlama int4
/// in tract then stays at 1.35 GB instead of 0.66 GB. A fixed threshold
/// stops that. It is 1 MiB, not glibc's 128 KiB, so that the buffers of each
/// decoding step (a logits row, one layer's cache) stay in the heap instead
/// of being mapped and faulted in anew every token. Elsewhere this does nothing.
pub fn return_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Limits the process's private writable memory to what it has now plus
/// `extra` bytes. This is what holds ONNX Runtime, whose allocations go
/// through malloc and never reach the capped Rust allocator.
pub fn limit_data(extra: u64) -> Result<u64, String> {
    let limit = data_bytes().saturating_add(extra);
    let rl = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &rl) } != 0 {
        return Err(std::format!("setrlimit(RLIMIT_DATA, {limit}): {}", std::io::Error::last_os_error()));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_kib_fields() {
        let text = "Name:\tx\nVmHWM:\t    2048 kB\nVmData:\t  10 kB\n";
        assert_eq!(super::kib_field(text, "VmHWM"), 2048 * 1024);
        assert_eq!(super::kib_field(text, "VmData"), 10 * 1024);
        assert_eq!(super::kib_field(text, "VmRSS"), 0);
        assert!(super::peak_rss() > 0, "this test process has a resident set");
    }
}
