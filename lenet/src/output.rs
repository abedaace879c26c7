//! Printing that never panics: `println!` panics when stdout is closed
//! (`lenet ... | head -3` closes it after three lines), which used to kill
//! a run between an epoch's work and its save. [`say!`](crate::say) prints a
//! line to stdout and, when that fails, remembers it so the trainer can stop
//! quietly after saving; [`note!`](crate::note) prints to stderr and ignores
//! a failure (there is nowhere left to report it).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether a line to stdout has failed (a closed pipe, a full disk): the
/// reader is gone, so nothing more is printed and training stops after
/// its next save.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Writes one line to stdout; see [`say!`](crate::say).
pub fn say_line(args: std::fmt::Arguments<'_>) {
    if stdout_closed() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{args}").and_then(|_| out.flush()).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes one line to stderr, ignoring a failure; see [`note!`](crate::note).
pub fn note_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// `println!` that does not panic on a closed stdout.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::say_line(format_args!($($arg)*)) };
}

/// `eprintln!` that does not panic on a closed stderr.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => { $crate::output::note_line(format_args!($($arg)*)) };
}
