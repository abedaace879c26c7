//! # kernels-opencl: every op on an OpenCL device
//!
//! [`OpenCl`] implements `kernels_core::Backend` with the `ocl` crate. Its
//! tensors ([`ClTensor`]) live in device buffers between ops; data crosses
//! to the host only in `upload`, `download` and the scalar loss. Optimiser
//! updates run on the device.
//!
//! ## Layout
//! - `device.rs`: device choice and limits. `runtime.rs`: context, profiling
//!   queue, programs built once per instance, kernel cache, launches,
//!   live-buffer accounting. `profile.rs`: the event log behind [`Profile`]. `tiles.rs`: tile and
//!   work-group sizes from the device limits, passed as build options.
//! - `gemm.rs` + `cl/gemm.cl`: the tiled GEMM (register tiles, vector loads,
//!   a local-memory variant for GPUs, any size); conv and linear use it.
//! - `conv.rs` + `cl/conv.cl`: im2col (one launch per batch chunk) → GEMM
//!   with the bias in its epilogue; dX = GEMM → col2im; dW = batch-summing NT
//!   GEMM; db a reduction. 1x1 stride-1 unpadded convs skip im2col.
//! - `conv_direct.rs` + `cl/direct.cl`: stride-1 convs with a small
//!   reduction (LeNet's) compute forward and dX directly from a zero-padded
//!   copy of the input, no col matrix; `conv_direct::choose` is the
//!   documented predicate, everything else takes im2col + GEMM. On a CPU
//!   device dW of those convs is direct too (`conv_dw`).
//! - `ops.rs` + `cl/{pool,activation,loss,reduce,optim}.cl`: the rest. CPU
//!   devices take barrier-free variants where a GPU wants many work-items
//!   (bias gradient per channel, tiled pool backward per window row).
//!
//! ## Environment variables
//! - `KERNELS_OPENCL_DEVICE`: a device selector for [`OpenCl::new`]: "P:D"
//!   (platform and device index, as `clinfo -l` lists them) or a
//!   case-insensitive substring of "platform / device". Unset: the first GPU,
//!   else the first device.
//! - `KERNELS_OPENCL_GEMM_TILE`: "MRxNRxVW" overrides the NN GEMM register
//!   tile (tuning runs). `KERNELS_OPENCL_LOCAL_GEMM=1|0` forces the
//!   local-memory GEMM on or off (it is on for GPUs).
//!   `KERNELS_OPENCL_GROUP=LXxLY` fixes the GEMM work-group shape and
//!   `KERNELS_OPENCL_LINE_WG=N` the work-group of the row-wise kernels
//!   (tuning runs only; the defaults come from the device limits).
//!   [`Config`] overrides the first two from code.
//! - `KERNELS_OPENCL_CONV=direct|im2col`: send every stride-1 conv to the
//!   direct kernel, or none (A/B runs; unset: the size predicate decides).
//!   `Config::direct_conv` does the same from code.
//! - `KERNELS_OPENCL_CACHE=DIR|off`: where built program binaries are
//!   cached (default `$XDG_CACHE_HOME/kernels-opencl`, else
//!   `~/.cache/kernels-opencl`), or no cache; see `cache.rs`.
//! - `KERNELS_OPENCL_BUILD_OPTIONS="..."`: options appended to every build
//!   (`-cl-opt-disable` for Oclgrind's uninitialised-value checks).
//! - `KERNELS_OPENCL_BUILD_LOG=1`: print each program's build log to stderr
//!   (otherwise programs build with `-w`, so no compiler diagnostic reaches
//!   the terminal; a failed build's log is always in its error).
//!
//! ## Profiling
//! The queue has profiling on. [`OpenCl::profile`] sums kernel time and
//! transfer time (upload, download, the loss) and counts launches and
//! transfers since [`OpenCl::reset_profile`]; [`OpenCl::profile_by_kernel`]
//! splits kernel time by kernel. Events are read lazily, so profiling does
//! not serialise the queue. [`OpenCl::live_bytes`] counts the device bytes
//! this backend holds (tensors and its one reused scratch buffer).
//!
//! ## Devices
//! The backend needs OpenCL 1.2 (its kernel table reads
//! CL_PROGRAM_KERNEL_NAMES; `zeros` is a kernel, `fill_f32`, not 1.2's
//! clEnqueueFillBuffer): selection skips older devices and names the
//! reason ([`SelectError::TooOld`]) when only those
//! match. [`list_devices`] lists every platform's devices with the limits
//! that shape launches (for a `--list-devices` flag); [`select_device`]
//! says which device a selector picks, or why none fits.
//!
//! With no OpenCL platform at all, [`OpenCl::new`] returns
//! `Error::Device` saying so and how to install one (Debian:
//! pocl-opencl-icd and ocl-icd-opencl-dev, or `make setup`).
//!
//! ## Checking and timing
//! `cargo test -p kernels-opencl` checks every op against a host f64
//! reference; the cross-backend proptest suite is `harness/tests/opencl.rs`.
//! `cargo run --release -p kernels-opencl --example opencl_bench` validates, then
//! times GEMM, conv and pooling and splits kernel from transfer time (see
//! `OPTIMISATION.md` for the figures and how they were reached).

mod backend;
mod cache;
mod conv;
mod conv_direct;
mod device;
mod gemm;
mod kernel_names;
#[cfg(test)]
mod limits_tests;
mod norm;
mod ops;
mod profile;
mod runtime;
mod tensor;
mod tiles;

use kernels_core::Result;

pub use cache::{CACHE_ENV, CacheStats};
pub use device::{DEVICE_ENV, DeviceSummary, MIN_OPENCL, SelectError, list_devices, select_device};
pub use profile::Profile;
pub use runtime::{BUILD_LOG_ENV, EXTRA_BUILD_OPTIONS_ENV, PROGRAM_COUNT};
pub use tensor::ClTensor;
pub use tiles::{CONV_PATH_ENV, GEMM_TILE_ENV};

/// Environment variable forcing the local-memory GEMM on ("1") or off ("0").
pub const LOCAL_GEMM_ENV: &str = "KERNELS_OPENCL_LOCAL_GEMM";

/// Tuning choices that override the device-derived defaults (and the
/// environment variables); `Config::default()` changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    /// NN GEMM register tile (rows, columns, vector width) per work-item.
    pub gemm_tile: Option<(usize, usize, usize)>,
    /// Stage GEMM tiles in local memory (the GPU variant).
    pub local_gemm: Option<bool>,
    /// im2col one row per work-item (the GPU variant) instead of one plane.
    pub im2col_rows: Option<bool>,
    /// Direct conv (no col matrix) for every stride-1 conv (`Some(true)`),
    /// for none (`Some(false)`), or by size (`None`).
    pub direct_conv: Option<bool>,
}

/// The OpenCL backend: one device, one in-order profiling queue, programs
/// built once.
pub struct OpenCl {
    rt: runtime::Runtime,
}

impl OpenCl {
    /// The device named by `KERNELS_OPENCL_DEVICE`, else the first GPU, else
    /// any device.
    pub fn new() -> Result<Self> {
        Self::with_config(None, &Config::default())
    }

    /// The device matching `selector`: "P:D" indices or a case-insensitive
    /// name substring.
    pub fn with_device(selector: &str) -> Result<Self> {
        Self::with_config(Some(selector), &Config::default())
    }

    /// `selector` as in [`OpenCl::with_device`] (None: as [`OpenCl::new`]),
    /// with tuning overrides.
    pub fn with_config(selector: Option<&str>, config: &Config) -> Result<Self> {
        Self::serialised(|| {
            let chosen = match selector {
                Some(s) => device::select(s)?,
                None => device::default_device()?,
            };
            Ok(Self { rt: runtime::Runtime::new(chosen, config)? })
        })
    }

    /// The default device with its limits changed by `adjust` (tests
    /// simulating a smaller device).
    #[cfg(test)]
    fn with_limits(config: &Config, adjust: impl FnOnce(&mut device::Limits)) -> Result<Self> {
        Self::serialised(|| {
            let mut chosen = device::default_device()?;
            adjust(&mut chosen.limits);
            Ok(Self { rt: runtime::Runtime::new(chosen, config)? })
        })
    }

    /// Runs device discovery and setup one thread at a time: PoCL's lazy
    /// initialisation can report no device to a second thread racing the
    /// first.
    fn serialised<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
        static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = SETUP.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f()
    }

    /// What the on-disk program binary cache did while this backend was
    /// created (hits, misses, rejected files, writes).
    pub fn program_cache_stats(&self) -> CacheStats {
        self.rt.cache_stats
    }

    /// "platform / device" of the device in use.
    pub fn device_name(&self) -> &str {
        &self.rt.chosen.label
    }

    /// Kernel and transfer time and counts since the last reset. Waits for
    /// the queue to read the pending events.
    pub fn profile(&self) -> Profile {
        // Profiling is diagnostic: a failure to read it reads as nothing new.
        self.rt.profile().unwrap_or_default()
    }

    /// Like [`OpenCl::profile`], with the device error when reading fails.
    pub fn try_profile(&self) -> Result<Profile> {
        self.rt.profile()
    }

    /// Kernel time per kernel name since the last reset: (name, total ns,
    /// launches), longest first.
    pub fn profile_by_kernel(&self) -> Result<Vec<(&'static str, u64, u64)>> {
        self.rt.profile_by_kernel()
    }

    /// Starts a new profiling period.
    pub fn reset_profile(&self) {
        // As in `profile`: profiling never fails a computation.
        let _ = self.rt.reset_profile();
    }

    /// Bytes of device buffers this backend allocated that are still alive
    /// (tensors and scratch); flat over a training loop.
    pub fn live_bytes(&self) -> usize {
        self.rt.live_bytes()
    }

    /// C [m, n] = A [m, k] · B [k, n], row-major matrices on the device: the
    /// GEMM conv and linear use, exposed for benchmarks and tests.
    pub fn matmul(&self, a: &ClTensor, b: &ClTensor) -> Result<ClTensor> {
        use kernels_core::Shaped;
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() != 2 || sb.len() != 2 || sa[1] != sb[0] || sa.contains(&0) || sb.contains(&0) {
            return Err(kernels_core::Error::shape("matmul", format!("cannot multiply {sa:?} by {sb:?}")));
        }
        let (m, k, n) = (sa[0], sa[1], sb[1]);
        let c = ClTensor::new(self.rt.alloc(m * n)?, &[m, n]);
        gemm::run(
            &self.rt,
            &gemm::Gemm {
                form: gemm::Form::Nn,
                m,
                n,
                k,
                a: gemm::Operand::rows(a.buf(), k, 0),
                b: gemm::Operand::rows(b.buf(), n, 0),
                c: gemm::Operand::rows(c.buf(), n, 0),
                bias: gemm::Bias::None,
                batches: 1,
                reduce: false,
                accumulate: false,
            },
        )?;
        Ok(c)
    }

    /// The build options the programs were compiled with (tile sizes).
    pub fn build_options(&self) -> String {
        self.rt.tiles.build_options()
    }
}

impl std::fmt::Debug for OpenCl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCl").field("device", &self.rt.chosen.label).finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_backend_and_its_tensors_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::OpenCl>();
        send_sync::<super::ClTensor>();
    }
}
