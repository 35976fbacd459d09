//! What the operating system tells about this process's memory, the
//! process data limit that holds allocations made outside Rust, and the
//! allocator under the agent's cap.

use std::alloc::{GlobalAlloc, Layout, System};
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

/// The agent's allocator under its cap: Rust blocks of [`MAPPED`] bytes or
/// more get mappings of their own, unmapped when freed; the rest come from
/// malloc.
///
/// tract frees its model tables while it loads, and from malloc's heap they
/// leave holes the resident set keeps: TinyLlama int4 in tract peaked at
/// 1.43 GB instead of 0.76 GB. glibc's own remedy, a fixed mmap threshold,
/// holds for every malloc in the process, ONNX Runtime's too, which then put
/// each weight and each run's buffer in a mapping of its own: 14% slower on
/// a TinyLlama prefill and 2–4% on GPT-2 int4 decoding than with malloc's
/// defaults, which C and C++ code keeps this way. 1 MiB, so that the buffers
/// of each decoding step (a logits row, one layer's cache) are left to malloc
/// and not mapped and faulted in anew every token.
pub struct MapLarge;

pub const MAPPED: usize = 1 << 20;

/// Every page size is a multiple of this, so a mapping is aligned to it.
const PAGE: usize = 4096;

fn mapped(layout: Layout) -> bool {
    layout.size() >= MAPPED && layout.align() <= PAGE
}

/// A mapping's address, or null where the call failed.
fn mapping(p: *mut libc::c_void) -> *mut u8 {
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p.cast()
    }
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
    mapping(unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    })
}

// SAFETY: mapped blocks are page-aligned, at least `align` (checked by
// `mapped`), and only `dealloc`/`realloc` of the same layout unmap them.
unsafe impl GlobalAlloc for MapLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            // Fresh anonymous pages are zero.
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(layout) {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded to `align`, fits an isize.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (mapped(layout), mapped(new)) {
            (false, false) => {
                // SAFETY: forwarded with the caller's guarantees.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
            #[cfg(target_os = "linux")]
            (true, true) => {
                // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map`;
                // the kernel moves it, pages and all, without copying.
                mapping(unsafe { libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE) })
            }
            _ => {
                // SAFETY: `new` has a non-zero size (`new_size` > 0 by contract).
                let p = unsafe { self.alloc(new) };
                if !p.is_null() {
                    // SAFETY: both blocks hold at least the smaller size and do not overlap.
                    unsafe {
                        core::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                p
            }
        }
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
    use super::*;

    /// Fills `len` bytes from `p` with a pattern and checks the first `kept` still hold it.
    unsafe fn fill_and_check(p: *mut u8, len: usize, kept: usize, seed: u8) {
        for i in 0..kept {
            assert_eq!(unsafe { *p.add(i) }, (i as u8).wrapping_add(seed), "byte {i} kept");
        }
        for i in 0..len {
            unsafe { *p.add(i) = (i as u8).wrapping_add(seed) };
        }
    }

    #[test]
    fn large_blocks_get_mappings_and_keep_their_bytes_across_every_realloc() {
        let a = MapLarge;
        let layout = |size| Layout::from_size_align(size, 8).unwrap();
        // A mapping starts on a page; malloc's blocks, large or small, start 16 bytes past a chunk header.
        let on_page = |p: *mut u8| (p as usize).is_multiple_of(PAGE);
        // SAFETY: each block is used within its size and freed with its layout.
        unsafe {
            let p = a.alloc(layout(1000));
            fill_and_check(p, 1000, 0, 1);
            // small → large → larger → small: contents kept at every step.
            let p = a.realloc(p, layout(1000), 3 * MAPPED);
            assert!(on_page(p));
            fill_and_check(p, 3 * MAPPED, 1000, 1);
            let p = a.realloc(p, layout(3 * MAPPED), 9 * MAPPED);
            assert!(on_page(p));
            fill_and_check(p, 9 * MAPPED, 3 * MAPPED, 1);
            let p = a.realloc(p, layout(9 * MAPPED), 500);
            fill_and_check(p, 500, 500, 1);
            a.dealloc(p, layout(500));

            let z = a.alloc_zeroed(layout(2 * MAPPED));
            assert!(on_page(z) && (0..2 * MAPPED).all(|i| *z.add(i) == 0));
            a.dealloc(z, layout(2 * MAPPED));
            // Alignment beyond a page is malloc's to give.
            let wide = Layout::from_size_align(2 * MAPPED, 2 * PAGE).unwrap();
            let w = a.alloc(wide);
            assert!(!w.is_null() && (w as usize).is_multiple_of(2 * PAGE));
            a.dealloc(w, wide);
        }
    }

    #[test]
    fn reads_kib_fields() {
        let text = "Name:\tx\nVmHWM:\t    2048 kB\nVmData:\t  10 kB\n";
        assert_eq!(kib_field(text, "VmHWM"), 2048 * 1024);
        assert_eq!(kib_field(text, "VmData"), 10 * 1024);
        assert_eq!(kib_field(text, "VmRSS"), 0);
        assert!(peak_rss() > 0, "this test process has a resident set");
    }
}
