//! What the agent's capped allocator adds to each allocation, against the
//! system allocator it wraps, measured side by side in one run.
//!
//! It matters because tract allocates some 5,200 times per decoded GPT-2
//! token, on each of its threads: what the count costs, mostly the cache
//! line of the shared byte count moving between cores, is paid per token.
//!
//! Run: `cargo bench -p edgehil-tests --profile dev --bench capped_alloc`

use std::alloc::{GlobalAlloc, Layout, System};
use std::time::Instant;

use edgehil_runtime::cap::CappedAlloc;

static CAPPED: CappedAlloc<System> = CappedAlloc::new(System);
static SYSTEM: System = System;

const PER_THREAD: usize = 2_000_000;
const ROUNDS: usize = 7;

/// Nanoseconds per allocation and free, `threads` threads at once, each
/// holding up to 16 small blocks as an op's temporaries do.
fn per_pair(a: &'static (impl GlobalAlloc + Sync), threads: usize) -> f64 {
    let layout = Layout::from_size_align(64, 8).expect("layout");
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(move || {
                let mut held = Vec::with_capacity(16);
                for _ in 0..PER_THREAD / 16 {
                    // SAFETY: each block is freed once, with the layout it was allocated with.
                    unsafe {
                        held.extend((0..16).map(|_| a.alloc(layout)));
                        held.drain(..).for_each(|p| a.dealloc(p, layout));
                    }
                }
            });
        }
    });
    start.elapsed().as_secs_f64() * 1e9 / (PER_THREAD * threads) as f64
}

fn main() {
    for threads in [1, 2] {
        // Alternating, and the median round by the difference, so drift hits both alike.
        let mut rounds: Vec<(f64, f64)> =
            (0..ROUNDS).map(|_| (per_pair(&SYSTEM, threads), per_pair(&CAPPED, threads))).collect();
        rounds.sort_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)));
        let (system, capped) = rounds[ROUNDS / 2];
        println!(
            "{threads} thread(s): system {system:.1} ns per allocation and free, capped {capped:.1} ns: {:+.1} ns added",
            capped - system
        );
    }
}
