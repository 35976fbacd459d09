//! The edgehil board agent on a Cortex-M4F: the wire protocol over the
//! board's UART, micro-models read in place from flash, activations in a
//! heap arena under wire's capped accounting.
//!
//! The reset handler, vector table and fault handlers are our own (a few
//! dozen lines, no runtime crate): the firmware needs its own HardFault
//! handler anyway, to tell the host why it stopped.
#![no_std]
#![no_main]

extern crate alloc;

mod agent;
mod board;
mod mem;

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};

use edgehil_wire::AgentError;

/// What the core does at reset: memory set up, the FPU on, then the agent.
///
/// # Safety
/// Called by the core only, once, as the reset vector.
#[no_mangle]
pub unsafe extern "C" fn reset() -> ! {
    // SAFETY: the linker script defines these symbols around .data and .bss;
    // nothing has used a static yet.
    unsafe {
        board::enable_fpu();
        mem::init_statics();
        mem::paint_stack();
    }
    agent::run()
}

/// An exception handler as the vector table holds it, or a reserved slot.
#[derive(Clone, Copy)]
#[repr(C)]
union Vector {
    handler: unsafe extern "C" fn(),
    reserved: usize,
}

/// Exceptions 1 to 15; entry 0 (the initial stack pointer) is the linker script's.
#[link_section = ".vectors"]
#[used]
static VECTORS: [Vector; 15] = {
    let fault = Vector { handler: fault };
    let reserved = Vector { reserved: 0 };
    [
        // SAFETY (of the transmute): `reset` never returns; the core calls it like any handler.
        Vector {
            handler: unsafe { core::mem::transmute::<unsafe extern "C" fn() -> !, unsafe extern "C" fn()>(reset) },
        },
        fault, // NMI
        fault, // HardFault
        fault, // MemManage
        fault, // BusFault
        fault, // UsageFault
        reserved,
        reserved,
        reserved,
        reserved,
        fault, // SVCall
        fault, // DebugMonitor
        reserved,
        fault, // PendSV
        Vector { handler: board::systick },
    ]
};

/// Set by the first fault or panic: a second one (a fault while reporting) halts at once.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Sends the error frame that says why the board stops, then halts: the host
/// reports the fault instead of waiting for a timeout.
fn stop(error: AgentError) -> ! {
    if !STOPPING.swap(true, Ordering::SeqCst) {
        agent::send_last_words(error);
    }
    board::halt()
}

/// Every fault exception: the fault status registers name the cause.
extern "C" fn fault() {
    let mut text: heapless::String<160> = heapless::String::new();
    let f = board::FaultStatus::read();
    // A String that is too long for the buffer is cut, never refused.
    let _ = write!(text, "firmware fault: {f}");
    stop(AgentError::Engine(text.as_str().into()))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut text: heapless::String<240> = heapless::String::new();
    let _ = write!(text, "firmware panic: {info}");
    stop(AgentError::Engine(text.as_str().into()))
}
