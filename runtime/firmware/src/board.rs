//! The board's registers: the CMSDK UART, the cycle counters (DWT's CYCCNT,
//! SysTick), the FPU, the core's identity and the fault status, at the
//! addresses of Arm's MPS2 boards as QEMU has them (`mps2-an386`, Cortex-M4;
//! `mps2-an500`, Cortex-M7).

use core::fmt;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};

/// The MPS2's system clock: the core, SysTick and the UART's baud divider run on it.
pub const CLOCK_HZ: u32 = 25_000_000;

const UART0: usize = 0x4000_4000;
const UART_DATA: usize = UART0;
const UART_STATE: usize = UART0 + 0x04;
const UART_CTRL: usize = UART0 + 0x08;
const UART_BAUDDIV: usize = UART0 + 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const BAUD: u32 = 115_200;

const SYST_CSR: usize = 0xE000_E010;
const SYST_RVR: usize = 0xE000_E014;
const SYST_CVR: usize = 0xE000_E018;
const SYST_MAX: u32 = 0x00FF_FFFF;

const DEMCR: usize = 0xE000_EDFC;
const DEMCR_TRCENA: u32 = 1 << 24;
const DWT_CTRL: usize = 0xE000_1000;
const DWT_CYCCNT: usize = 0xE000_1004;
const DWT_CYCCNTENA: u32 = 1 << 0;

const CPUID: usize = 0xE000_ED00;
const CPACR: usize = 0xE000_ED88;
const CFSR: usize = 0xE000_ED28;
const HFSR: usize = 0xE000_ED2C;
const MMFAR: usize = 0xE000_ED34;
const BFAR: usize = 0xE000_ED38;

fn read(addr: usize) -> u32 {
    // SAFETY: every address passed is one of the board's 32-bit registers above.
    unsafe { read_volatile(addr as *const u32) }
}

fn write(addr: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { write_volatile(addr as *mut u32, value) }
}

/// Gives the core the FPU (CP10 and CP11, full access); the hard-float ABI uses it everywhere.
///
/// # Safety
/// Before any floating-point instruction runs.
pub unsafe fn enable_fpu() {
    write(CPACR, read(CPACR) | (0xF << 20));
    // SAFETY: barriers only; the FPU is usable after them.
    unsafe { core::arch::asm!("dsb", "isb") };
}

/// The core, by CPUID's part number: what `Hello` reports with the arch.
pub fn core() -> &'static str {
    match (read(CPUID) >> 4) & 0xFFF {
        0xC24 => "thumbv7em (Cortex-M4F, Arm MPS2)",
        0xC27 => "thumbv7em (Cortex-M7, Arm MPS2)",
        _ => "thumbv7em (an unknown Cortex-M, Arm MPS2)",
    }
}

/// Turns on the UART (transmit and receive) and the cycle counters.
pub fn init() {
    write(UART_BAUDDIV, CLOCK_HZ / BAUD);
    write(UART_CTRL, 0b11);
    write(SYST_RVR, SYST_MAX);
    write(SYST_CVR, 0);
    // Enabled, with its interrupt (a wrap counts in `WRAPS`), on the core clock.
    write(SYST_CSR, 0b111);
    write(DEMCR, read(DEMCR) | DEMCR_TRCENA);
    write(DWT_CYCCNT, 0);
    write(DWT_CTRL, read(DWT_CTRL) | DWT_CYCCNTENA);
    // A core without DWT (or QEMU, whose DWT reads as zero) leaves it still.
    let before = read(DWT_CYCCNT);
    for _ in 0..16 {
        // SAFETY: does nothing but take a cycle.
        unsafe { core::arch::asm!("nop") };
    }
    COUNTER.store(if read(DWT_CYCCNT) != before { Counter::Dwt } else { Counter::SysTick } as u32, Ordering::Relaxed);
}

pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        while read(UART_STATE) & STATE_TX_FULL != 0 {}
        write(UART_DATA, u32::from(b));
    }
}

/// The next received byte, if one is waiting.
pub fn read_byte() -> Option<u8> {
    (read(UART_STATE) & STATE_RX_FULL != 0).then(|| read(UART_DATA) as u8)
}

static WRAPS: AtomicU32 = AtomicU32::new(0);

/// SysTick's interrupt: the 24-bit counter wrapped.
pub extern "C" fn systick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// What counts the core's cycles.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// The DWT's cycle counter: every core cycle, 32 bits.
    Dwt = 0,
    /// SysTick at the core clock with its wraps counted: what a core without DWT has.
    SysTick = 1,
}

static COUNTER: AtomicU32 = AtomicU32::new(Counter::SysTick as u32);

pub fn counter() -> Counter {
    if COUNTER.load(Ordering::Relaxed) == Counter::Dwt as u32 {
        Counter::Dwt
    } else {
        Counter::SysTick
    }
}

/// Core cycles from `start` to now, by the counter `init` chose. DWT's 32
/// bits wrap after 2^32 cycles (a minute at 64 MHz), longer than any run.
pub fn cycles_since(start: u64) -> u64 {
    match counter() {
        Counter::Dwt => u64::from((cycles() as u32).wrapping_sub(start as u32)),
        Counter::SysTick => cycles().saturating_sub(start),
    }
}

/// The cycle counter's reading, to pass to [`cycles_since`].
pub fn cycles() -> u64 {
    if counter() == Counter::Dwt {
        return u64::from(read(DWT_CYCCNT));
    }
    loop {
        let wraps = WRAPS.load(Ordering::Relaxed);
        let count = read(SYST_CVR);
        // A wrap between the two reads would pair an old count with a new wrap total.
        if wraps == WRAPS.load(Ordering::Relaxed) {
            return (u64::from(wraps) << 24) + u64::from(SYST_MAX - count);
        }
    }
}

pub fn nanos(cycles: u64) -> u64 {
    cycles.saturating_mul(1_000_000_000) / u64::from(CLOCK_HZ)
}

/// The System Control Block's fault registers at the time of a fault.
pub struct FaultStatus {
    cfsr: u32,
    hfsr: u32,
    mmfar: u32,
    bfar: u32,
}

impl FaultStatus {
    pub fn read() -> Self {
        FaultStatus { cfsr: read(CFSR), hfsr: read(HFSR), mmfar: read(MMFAR), bfar: read(BFAR) }
    }
}

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // CFSR: MemManage (bits 0-7), BusFault (8-15), UsageFault (16-31); the
        // fault address registers are valid when MMARVALID (7) / BFARVALID (15) say so.
        let cause = match self.cfsr {
            c if c & (1 << 16) != 0 => "undefined instruction",
            c if c & (1 << 17) != 0 => "invalid state",
            c if c & (1 << 24) != 0 => "unaligned access",
            c if c & (1 << 25) != 0 => "division by zero",
            c if c & 0xFF00 != 0 => "bus fault",
            c if c & 0xFF != 0 => "memory management fault",
            _ => "hard fault",
        };
        write!(f, "{cause} (CFSR {:#010x}, HFSR {:#010x}", self.cfsr, self.hfsr)?;
        if self.cfsr & (1 << 15) != 0 {
            write!(f, ", address {:#010x}", self.bfar)?;
        } else if self.cfsr & (1 << 7) != 0 {
            write!(f, ", address {:#010x}", self.mmfar)?;
        }
        write!(f, ")")
    }
}

/// Stops the core for good, as a board does after a fault.
pub fn halt() -> ! {
    loop {
        // SAFETY: waits for an interrupt; nothing else.
        unsafe { core::arch::asm!("wfi") };
    }
}
