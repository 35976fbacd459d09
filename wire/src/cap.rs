//! A global allocator that counts every byte in use, keeps the peak and
//! refuses past a cap.
//!
//! The cap is what makes the emulated board honest: a model that needs more
//! than the profile's usable RAM must fail here as it would on the device.
//! A refusal is reported through a hook that must not allocate (the
//! allocator is the thing that just said no), so the hook receives a plain
//! `Copy` value and the agent encodes its frame on the stack.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

/// What was refused, handed to the refusal hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub requested: usize,
    pub in_use: usize,
    pub cap: usize,
}

/// Called on refusal, before the allocator returns null. Must not allocate.
pub type RefusalHook = fn(Refusal);

/// Wraps an allocator `A` with a byte cap. A cap of 0 means no cap.
///
/// Every allocation and free writes `in_use`, on engine threads at once
/// (tract allocates some 5,200 times per decoded GPT-2 token), so it has a
/// cache line of its own, and `peak` is written only when passed. With all
/// four on one line and the peak raised on every allocation, the cap added
/// 91–97 ns per allocation and free on two threads, 59–67 ns now (bench
/// `capped_alloc`); what is left is `in_use`'s line moving between cores.
pub struct CappedAlloc<A> {
    inner: A,
    in_use: OwnLine,
    cap: AtomicUsize,
    peak: AtomicUsize,
    hook: AtomicUsize,
}

#[repr(align(64))]
struct OwnLine(AtomicUsize);

impl<A> CappedAlloc<A> {
    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            in_use: OwnLine(AtomicUsize::new(0)),
            cap: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            hook: AtomicUsize::new(0),
        }
    }

    /// Sets the cap in bytes (0: none). Bytes already in use count against it.
    pub fn set_cap(&self, bytes: usize) {
        self.cap.store(bytes, Ordering::SeqCst);
    }

    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::SeqCst)
    }

    pub fn in_use(&self) -> usize {
        self.in_use.0.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Starts a new peak measurement from what is in use now.
    pub fn reset_peak(&self) {
        self.peak.store(self.in_use(), Ordering::SeqCst);
    }

    pub fn set_refusal_hook(&self, hook: RefusalHook) {
        self.hook.store(hook as usize, Ordering::SeqCst);
    }

    /// Counts `bytes` held outside this allocator (an uploaded file kept in
    /// RAM) against the cap; false, and nothing counted, if they would pass
    /// it. The refusal hook is not called: the caller answers the refusal.
    pub fn try_hold(&self, bytes: usize) -> bool {
        self.reserve(bytes, false)
    }

    /// Stops counting bytes counted by [`try_hold`](Self::try_hold).
    pub fn let_go(&self, bytes: usize) {
        self.release(bytes);
    }

    /// Reserves `bytes` against the cap; false if it would pass it, after
    /// calling the hook if `hook` says so.
    fn reserve(&self, bytes: usize, hook: bool) -> bool {
        // Relaxed: the counters publish no other memory.
        let before = self.in_use.0.fetch_add(bytes, Ordering::Relaxed);
        let cap = self.cap.load(Ordering::Relaxed);
        let after = before.saturating_add(bytes);
        if cap != 0 && after > cap {
            self.in_use.0.fetch_sub(bytes, Ordering::Relaxed);
            let hook_fn = self.hook.load(Ordering::SeqCst);
            if hook && hook_fn != 0 {
                // SAFETY: only ever stored from a `RefusalHook` in `set_refusal_hook`.
                let hook: RefusalHook = unsafe { core::mem::transmute::<usize, RefusalHook>(hook_fn) };
                hook(Refusal { requested: bytes, in_use: before, cap });
            }
            return false;
        }
        if after > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(after, Ordering::Relaxed);
        }
        true
    }

    fn release(&self, bytes: usize) {
        self.in_use.0.fetch_sub(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `inner` with the caller's layout and only
// adds bookkeeping; a refused request returns null as `GlobalAlloc` allows.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CappedAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.reserve(layout.size(), true) {
            return core::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc(layout) };
        if p.is_null() {
            self.release(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !self.reserve(layout.size(), true) {
            return core::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if p.is_null() {
            self.release(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { self.inner.dealloc(ptr, layout) };
        self.release(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !self.reserve(new_size - old, true) {
            return core::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                self.release(new_size - old);
            }
        } else if new_size < old {
            self.release(old - new_size);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use core::sync::atomic::AtomicBool;
    use std::alloc::System;

    static REFUSED: AtomicBool = AtomicBool::new(false);
    fn note(_: Refusal) {
        REFUSED.store(true, Ordering::SeqCst);
    }

    #[test]
    fn counts_peak_and_refuses_past_the_cap() {
        let a = CappedAlloc::new(System);
        a.set_cap(1000);
        a.set_refusal_hook(note);
        let l600 = Layout::from_size_align(600, 8).unwrap();
        let l500 = Layout::from_size_align(500, 8).unwrap();
        unsafe {
            let p = a.alloc(l600);
            assert!(!p.is_null());
            assert_eq!(a.in_use(), 600);
            assert!(a.alloc(l500).is_null(), "600 + 500 passes a cap of 1000");
            assert!(REFUSED.load(Ordering::SeqCst));
            assert_eq!(a.in_use(), 600, "a refusal leaves the count as it was");
            let p = a.realloc(p, l600, 900);
            assert!(!p.is_null());
            assert_eq!(a.in_use(), 900);
            a.dealloc(p, Layout::from_size_align(900, 8).unwrap());
        }
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.peak(), 900);
    }

    #[test]
    fn held_bytes_count_against_the_cap_without_the_hook() {
        static HOOKED: AtomicBool = AtomicBool::new(false);
        let a = CappedAlloc::new(System);
        a.set_cap(1000);
        a.set_refusal_hook(|_| HOOKED.store(true, Ordering::SeqCst));
        assert!(a.try_hold(700));
        assert!(!a.try_hold(400), "700 held + 400 passes a cap of 1000");
        assert_eq!(a.in_use(), 700, "a refused hold counts nothing");
        assert!(!HOOKED.load(Ordering::SeqCst), "the caller answers a refused hold");
        let l400 = Layout::from_size_align(400, 8).unwrap();
        assert!(unsafe { a.alloc(l400) }.is_null(), "held bytes leave no room for the heap");
        a.let_go(700);
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.peak(), 700);
    }
}
