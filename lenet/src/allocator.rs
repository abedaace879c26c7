//! Keeps freed activations mapped: a process-wide glibc malloc setting for
//! the binaries that train or time (lenet, harness).
//!
//! Why: a training step allocates and frees the same few-MB activations
//! and gradients every step (lenet5 at batch 256: 4.8 MB per conv-1 output,
//! its ReLU and its pool gradient). With glibc's defaults those blocks are
//! mmap'ed, or trimmed off the heap top, when freed and handed back to the
//! kernel, so the next step faults every page in again, zeroed. Measured
//! on Zen 4 (`perf record`/`perf stat` of `KERNELS_ISA=avx2 lenet --epochs 1
//! --limit 30720 --threads 2`, kernels-im2col/OPTIMISATION.md step 58):
//! ~20% of all samples in page-fault handling, 387k faults; with the two
//! settings below 21k faults and 1.7-1.9x the examples/s. Either setting
//! alone did not help (the mmap threshold alone: 419k faults; trim alone:
//! 913k).
//!
//! The cost: memory freed by the process stays mapped up to the trim
//! threshold (512 MiB) rather than going back to the system at once, and
//! blocks up to 32 MiB come from the heap. Library users who allocate in a
//! loop can do the same with `GLIBC_TUNABLES=glibc.malloc.trim_threshold=
//! 536870912:glibc.malloc.mmap_threshold=33554432`. Elsewhere (musl, macOS,
//! Windows) this does nothing.

/// Blocks below this come from the heap, not from mmap (glibc's ceiling
/// for the setting is 32 MiB on 64-bit).
pub const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;

/// Free memory at the heap top kept before it is returned to the system.
pub const TRIM_THRESHOLD_BYTES: i32 = 512 << 20;

/// Applies both settings once, before the process allocates its tensors.
/// Returns whether glibc accepted them (false elsewhere).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two ints and only changes malloc's own
        // parameters; the values are in the ranges glibc documents
        // (mmap threshold <= 32 MiB on 64-bit, any trim threshold), and
        // changing them while other threads allocate is what glibc's
        // locking of mp_ parameters allows (each call takes the arena lock).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_accepts_the_settings_and_large_blocks_still_allocate() {
        let accepted = keep_freed_memory();
        assert_eq!(accepted, cfg!(all(target_os = "linux", target_env = "gnu")));
        // A block above the mmap threshold and one below it still work.
        for len in [(MMAP_THRESHOLD_BYTES as usize) / 4 + 1, 2 * MMAP_THRESHOLD_BYTES as usize] {
            let v = vec![1u8; len];
            assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), len);
        }
    }
}
