//! Host depth on the command line: per-series history (`flotilla metrics NAME --series …`) and
//! top processes per minute (`flotilla top NAME`).

pub mod cli;
pub mod when;
