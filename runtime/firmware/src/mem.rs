//! RAM as the board has it: statics, the main stack (painted at reset, so
//! its peak can be read back), and the heap arena (all RAM left, from the
//! linker script) behind wire's capped allocator, whose cap the host sets
//! from the profile's usable RAM.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{addr_of, addr_of_mut, NonNull};

use edgehil_wire::cap::{CappedAlloc, Refusal};
use linked_list_allocator::Heap;

extern "C" {
    static mut _data_start: u32;
    static mut _data_end: u32;
    static _data_load: u32;
    static mut _bss_start: u32;
    static mut _bss_end: u32;
    static mut _stack_start: u32;
    static _stack_end: u32;
    static mut _heap_start: u8;
    static _heap_end: u8;
    static _boot_cap: u32;
    static _models_start: u8;
    static _models_end: u8;
    static _flash_total: u8;
}

/// What an untouched stack word holds.
const PAINT: u32 = 0xC5C5_C5C5;

/// Copies .data from flash and zeroes .bss.
///
/// # Safety
/// At reset, before any static is read or written.
pub unsafe fn init_statics() {
    // SAFETY: the linker script places these word-aligned regions; nothing else uses them yet.
    unsafe {
        let (mut dst, end, mut src) = (addr_of_mut!(_data_start), addr_of_mut!(_data_end), addr_of!(_data_load));
        while dst < end {
            dst.write_volatile(src.read());
            dst = dst.add(1);
            src = src.add(1);
        }
        let (mut dst, end) = (addr_of_mut!(_bss_start), addr_of_mut!(_bss_end));
        while dst < end {
            dst.write_volatile(0);
            dst = dst.add(1);
        }
    }
}

/// Fills the stack below the current frame with [`PAINT`].
///
/// # Safety
/// At reset, from the reset handler (its frame is near the stack's top).
pub unsafe fn paint_stack() {
    let sp: usize;
    // SAFETY: reads the stack pointer.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) sp) };
    // Leave the words just below the current frame alone: this function's own calls use them.
    let stop = (sp - 64) as *mut u32;
    // SAFETY: from the stack's bottom (linker script) up to below the live frame.
    unsafe {
        let mut p = addr_of_mut!(_stack_start);
        while p < stop {
            p.write_volatile(PAINT);
            p = p.add(1);
        }
    }
}

/// The deepest the stack has been since reset, in bytes: the painted words
/// from the bottom up that are still untouched are the ones never reached.
pub fn peak_stack() -> u64 {
    let (start, end) = stack_bounds();
    let mut p = start as *const u32;
    // SAFETY: reads within the stack region.
    while (p as usize) < end && unsafe { p.read_volatile() } == PAINT {
        p = p.wrapping_add(1);
    }
    (end - p as usize) as u64
}

fn stack_bounds() -> (usize, usize) {
    (addr_of!(_stack_start) as usize, addr_of!(_stack_end) as usize)
}

/// RAM taken by statics (.data and .bss: frame buffers, allocator state).
pub fn static_bytes() -> u64 {
    let (start, end) = (addr_of!(_stack_end) as usize, addr_of!(_heap_start) as usize);
    (end - start) as u64
}

pub fn ram_total() -> u64 {
    (addr_of!(_heap_end) as usize - addr_of!(_stack_start) as usize) as u64
}

pub fn heap_bytes() -> usize {
    addr_of!(_heap_end) as usize - addr_of!(_heap_start) as usize
}

pub fn flash_total() -> u64 {
    // An absolute symbol: its address is the value.
    addr_of!(_flash_total) as usize as u64
}

/// Where micro-models may be placed, as a byte slice of flash.
pub fn models_region() -> (usize, usize) {
    (addr_of!(_models_start) as usize, addr_of!(_models_end) as usize)
}

/// The cap word the host placed in flash (0: none, the arena's size caps).
fn boot_cap() -> usize {
    // SAFETY: a word of flash the linker script reserves for it.
    unsafe { addr_of!(_boot_cap).read_volatile() as usize }
}

/// A first-fit free list over the heap arena, which it takes at its first
/// allocation. One core and no allocation in interrupts: no lock is needed.
pub struct Arena(UnsafeCell<Option<Heap>>);

impl Arena {
    /// The free list, set over the arena the first time.
    ///
    /// # Safety
    /// Thread mode only, and no other reference to the list alive.
    #[allow(clippy::mut_from_ref)]
    unsafe fn heap(&self) -> &mut Heap {
        // SAFETY: the caller's promise; the arena is ours alone (linker script).
        unsafe { (*self.0.get()).get_or_insert_with(|| Heap::new(addr_of_mut!(_heap_start), heap_bytes())) }
    }
}

// SAFETY: used from thread mode only (see above).
unsafe impl Sync for Arena {}

// SAFETY: forwards to the free list, which returns null (Err) when it has no room.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded use (see `Arena`).
        unsafe { self.heap() }.allocate_first_fit(layout).map_or(core::ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with `layout` (GlobalAlloc's contract).
        unsafe { self.heap().deallocate(NonNull::new_unchecked(ptr), layout) }
    }
}

#[global_allocator]
pub static HEAP: CappedAlloc<Arena> = CappedAlloc::new(Arena(UnsafeCell::new(None)));

/// Sets the cap (the host's, or the arena's size) and what a refusal does.
pub fn init_heap(on_refusal: fn(Refusal)) {
    let size = heap_bytes();
    let cap = match boot_cap() {
        0 => size,
        cap => cap.min(size),
    };
    HEAP.set_cap(cap);
    HEAP.set_refusal_hook(on_refusal);
}
