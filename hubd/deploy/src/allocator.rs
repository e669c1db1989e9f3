//! Allocator settings of a daemon process, applied once at start.

use crate::Daemon;

/// Keeps glibc's allocator from handing transfer buffers back to the kernel between chunks.
///
/// A transfer allocates a 256 KiB buffer per chunk (the source's read, the hub's gather, the
/// destination's frame) and frees it when the next hop has it. By default glibc serves
/// allocations past 128 KiB with their own `mmap` until a free raises that threshold, and trims a
/// thread arena's free top back to the kernel past twice the threshold; both made the next buffer
/// fault its pages in afresh and the kernel zero them (4.4 % of the hub's CPU in a relay; measured
/// in docs/benchmarks.md). Buffers up to 1 MiB now come from the arenas, and an arena keeps some
/// free memory at its top: 16 MiB in the hub (a few transfers' pipelines, small beside a fleet's
/// state), 4 MiB in an agent (one pipeline, so an idle agent stays small).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune(daemon: Daemon) {
    const MMAP_THRESHOLD: libc::c_int = 1024 * 1024;
    let trim_threshold: libc::c_int = match daemon {
        Daemon::Hub => 16 * 1024 * 1024,
        Daemon::Agent => 4 * 1024 * 1024,
    };
    // SAFETY: mallopt only sets allocator parameters; it is called at start, before any other
    // thread exists, and a refused setting (return 0) leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold);
    }
}

/// Other allocators and platforms keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune(_daemon: Daemon) {}
