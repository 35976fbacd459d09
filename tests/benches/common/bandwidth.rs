//! This machine's memory bandwidth, measured the way the benches compare against it.
//!
//! Both figures use libc's vectorised routines, so they do not depend on
//! this crate's opt-level; each is the best of 3 passes over a 512 MiB
//! buffer, far larger than the caches, split across `threads` threads.

use std::time::Instant;

const SIZE: usize = 512 << 20;

/// Best bytes per second of `pass` over `threads` chunks of a buffer of ones,
/// counting `bytes_per_byte` bytes moved per byte of the buffer.
fn best(threads: usize, bytes_per_byte: f64, pass: impl Fn(&[u8], &mut [u8]) + Sync) -> f64 {
    let src = vec![1u8; SIZE];
    let mut dst = vec![0u8; SIZE];
    let chunk = SIZE / threads;
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                    let pass = &pass;
                    s.spawn(move || pass(c, d));
                }
            });
            std::hint::black_box(&dst);
            bytes_per_byte * SIZE as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// STREAM Copy: memcpy, read and write both counted.
pub fn copy(threads: usize) -> f64 {
    best(threads, 2.0, |src, dst| dst.copy_from_slice(src))
}

/// Reading only, as decoding reads the weights: memchr for a byte the buffer lacks.
pub fn read(threads: usize) -> f64 {
    best(threads, 1.0, |src, _| {
        // SAFETY: `src` is a valid slice of `src.len()` bytes.
        let found = unsafe { libc::memchr(src.as_ptr().cast(), 0, src.len()) };
        std::hint::black_box(found);
    })
}

/// The highest of `reads` (B/s): other tenants of a shared machine take some
/// of the bandwidth at times, so what the machine can do is its best read.
/// Prints how many reads were taken `when`, their range, what the highest is
/// used for, and the copy bandwidth beside them.
pub fn highest(reads: &[f64], threads: usize, when: &str, used_for: &str) -> f64 {
    let best = reads.iter().copied().fold(0.0, f64::max);
    let lowest = reads.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "memory bandwidth ({threads} threads, 512 MiB): {} reads {when}, {:.2} to {:.2} GB/s; the highest {used_for} (copy {:.2} GB/s)",
        reads.len(),
        lowest / 1e9,
        best / 1e9,
        copy(threads) / 1e9
    );
    best
}
