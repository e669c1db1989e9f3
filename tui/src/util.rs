//! Small helpers shared across the client: paths, time, output. Imports nothing of this crate, so
//! any module may use it without tying modules to each other.

/// `println!` that returns the write's error instead of panicking: output into a closed pipe
/// (`flotilla agents | head -1`) ends the command through the caller's error path, where it is
/// recognised as a broken pipe and ends quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `print!` that returns the write's error instead of panicking (see [`outln`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

pub(crate) use {out, outln};
