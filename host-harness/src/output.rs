//! Printing for the commands: stdout that tolerates a closed reader, stderr
//! that tolerates nobody listening.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether stdout's reader has gone (`edgehil … | head -1`): from then on
/// what would be printed is dropped and the command finishes its work (the
/// journal, --json and --out files) with its own exit code. Rust's println!
/// would panic instead, and restoring SIGPIPE's default would also kill the
/// host when an emulated board's agent dies with its pipe open.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

pub fn write_out(args: std::fmt::Arguments) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => STDOUT_GONE.store(true, Ordering::Relaxed),
        Err(e) => panic!("writing to stdout: {e}"),
    }
}

/// Progress and errors: a closed stderr leaves nobody to tell.
pub fn write_err(args: std::fmt::Arguments) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

macro_rules! out {
    ($($t:tt)*) => { $crate::output::write_out(format_args!($($t)*)) };
}

macro_rules! outln {
    () => { $crate::output::write_out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::output::write_out(format_args!("{}\n", format_args!($($t)*))) };
}

macro_rules! errln {
    ($($t:tt)*) => { $crate::output::write_err(format_args!("{}\n", format_args!($($t)*))) };
}
