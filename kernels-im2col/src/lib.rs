//! # kernels-im2col: every op through im2col + GEMM on the CPU
//!
//! [`Im2col`] implements the whole [`Backend`] contract of kernels-core in
//! f32 on host `Vec`s ([`Tensor<f32>`]).
//!
//! ## Layout
//! Dependencies point one way: the backend (this file) → `conv/` (entry
//! and planner) → the algorithm families → `conv/workers.rs`, `gemm/` and
//! `simd.rs`. No module imports one that imports it back
//! (`scripts/import_cycles.py` checks).
//! - `conv/mod.rs`: conv2d forward (im2col + sgemm + bias) and the dispatch
//!   to the other algorithms; `conv/backward.rs` its backward (dW = dY·colᵀ,
//!   dX = col2im(Wᵀ·dY), db = Σ dY); `conv/plan.rs` the planner ([`ConvPlan`]:
//!   path, tiling, ISA, scratch bound); `conv/workers.rs` what every
//!   algorithm's workers share (scratch, per-worker image runs and partial
//!   sums, row sums, [`TILE_FLOATS`]).
//! - `unfold.rs`: im2col / col2im of one tile.
//! - `direct/`: the implicit-GEMM kernels — `tiny.rs` (tiny reductions) and
//!   `tiny_grad.rs` (their dW, db), `filters.rs` (few filters) and
//!   `filters_grad.rs` (its dW, and by blocks of 16 filters the dW of
//!   `wide.rs`'s geometries), `wide.rs` (many filters over few
//!   channels or many output pixels), `dx.rs` (dX on narrow images).
//! - `winograd/`: F(2x2, 3x3) both ways (`mod.rs`), its blocking
//!   (`blocking.rs`), its tile transforms (`transforms.rs`, in AVX-512 or
//!   AVX2 registers in `input.rs`, `output.rs`, `dm.rs` and `dx.rs`, the
//!   AVX2 ones on `avx2.rs`'s 8-lane helpers).
//! - `subpixel.rs`: dX of stride-2 convs by input phase.
//! - `gemm/mod.rs`: the one bounds-checked door to `matrixmultiply::sgemm`;
//!   `gemm/unpacked.rs`: this crate's AVX-512 and AVX2 GEMM on unpacked
//!   operands; `gemm/packed.rs`: this crate's packed AVX-512 and AVX2 GEMM
//!   (gemm/mod.rs says which runs where).
//! - `simd.rs`: the CPU-feature layer (see below); `lanes.rs`: the vector
//!   trait the Winograd transforms are written over.
//! - `pool.rs`: max / avg pooling as direct loops over (n, c) planes
//!   (2x2 stride 2 unpadded windows take dedicated loops both ways).
//! - `linear.rs`: linear layers through sgemm. `elementwise.rs`: relu,
//!   sigmoid, softmax cross-entropy, optimiser steps.
//!
//! ## Special cases (they fall back visibly)
//! - A 1x1, stride-1, unpadded conv skips im2col and goes straight to GEMM
//!   ([`ConvPath::Pointwise`]).
//! - A forward with a tiny reduction (stride 1, dilation 1, C·R·S ≤ 64,
//!   OW ≥ 16: the C = 1 first layers lenet-c1 and simplecnn-c1) runs a
//!   direct register-blocked kernel ([`ConvPath::Direct`], `direct/tiny.rs`,
//!   compiled for AVX-512 / AVX2 and picked at run time); its backward
//!   computes dW and db directly (`direct/tiny_grad.rs`, vectorised over output
//!   columns, when its padded image and dy fit a tile, else unfolding) and
//!   dX by col2im.
//! - A forward with at most 16 filters on images smaller than a GEMM tile
//!   and C·R·S ≥ 64 (lenet-c2) runs an implicit-GEMM kernel vectorised
//!   across filters ([`ConvPath::DirectFilters`], `direct/filters.rs`),
//!   reading the input where im2col would have copied it. Its backward
//!   computes dW the same way (`direct/filters_grad.rs`) and dX by col2im.
//! - A forward with more than 16 filters, C·R·S ≥ 64, and at most 4 input
//!   channels (alexnet-c1) or at least 96 output pixels (mxnet-c2,
//!   resnet-s2; OPTIMISATION.md step 63) runs the same implicit GEMM with
//!   blocks of 32 filters ([`ConvPath::DirectWide`], `direct/wide.rs`, AVX-512 and
//!   AVX2 intrinsics). Its dX unfolds; its dW runs `direct/filters_grad.rs`'s
//!   kernel over blocks of 16 filters ([`DwPath::DirectWide`]) where that
//!   measured faster: K a multiple of 16 and, at AVX-512, more than 4
//!   channels (resnet-s2; OPTIMISATION.md step 65); elsewhere it unfolds.
//! - The three direct forwards above have AVX-512 and AVX2 + FMA variants;
//!   at [`Isa::Portable`] (no AVX2, or any non-x86 CPU) their plain loops
//!   lost 3-8x to unfolding (matrixmultiply's SIMD GEMM) and tied on
//!   lenet-c1, so there the planner sends those forwards down the unfold
//!   path and keeps their backward kernels (OPTIMISATION.md step 53).
//! - The dX of the direct paths on images at most 16 columns wide
//!   (lenet-c2) is computed directly (`direct/dx.rs`), not by col2im.
//! - A 3x3, stride-1, undilated conv with C and K ≥ 32 and at least one
//!   image per thread (resnet-3x3) runs Winograd F(2x2, 3x3) forward and
//!   backward ([`ConvPath::Winograd`], `winograd/mod.rs`): 16 GEMMs of 2.25x
//!   fewer FLOPs in all than im2col's.
//! - On the unfold path (and direct_wide's backward, which unfolds) with
//!   AVX-512 and at least 32 filters (resnet-s2, mxnet-c2, alexnet-c1's
//!   backward), both directions' GEMMs run through `gemm/unpacked.rs` instead
//!   of matrixmultiply ([`ConvPlan::unpacked_gemms`]): it reads its
//!   operands where they lie, where matrixmultiply packs both on every
//!   call; 6-22% off those ops here. At AVX2 its 6x16 kernel lost 7-19%
//!   on those shapes to matrixmultiply's AVX2 kernel (OPTIMISATION.md step
//!   54), so AVX2 and every other shape run `gemm/packed.rs`, our packed
//!   GEMM, which follows the cap and ties matrixmultiply (step 56); the
//!   portable level keeps matrixmultiply. On that plan a stride-2 conv with H = 2·OH and W =
//!   2·OW takes its dX by input phase (`subpixel.rs`,
//!   [`ConvPlan::subpixel_dx`]): one GEMM per tap into one of four phase
//!   planes, no col2im.
//! - One planner (conv/plan.rs) decides every pass: [`Im2col::conv_plan`]
//!   names the forward ([`ConvPath`]), dX ([`DxPath`]), dW ([`DwPath`]) and
//!   db ([`DbPath`]) algorithms, the tiling and the ISA of a geometry.
//!   [`TileTargets`] can switch Winograd, DirectWide and the unpacked GEMMs
//!   off, or force any path per pass where it applies ([`Forced`]: one
//!   that does not is refused with `Error::Param`), for tests and
//!   comparisons.
//!
//! ## Tiling and scratch
//! - The im2col buffer is never a whole batch, nor even a whole image: it is
//!   a tile of channels x output pixels of about [`TILE_FLOATS`] floats per
//!   worker; images with fewer than [`TILE_COLUMNS`] output pixels are
//!   grouped, several per tile, so one GEMM covers them. With a column
//!   stride > 1, im2col reads a copy of the image split by column phase
//!   (when a tile's copies fit 1 MiB), so it copies instead of gathering.
//!   Scratch (col tile, gathered output, phased images, padded images of
//!   the direct kernels, partial dW) stays below [`SCRATCH_LIMIT_BYTES`]
//!   (64 MiB) for every suite shape whatever the batch; a call that would
//!   need more (kernels of hundreds of thousands of taps) is refused with
//!   `Error::Scratch` rather than run. One piece outlives its call:
//!   direct_wide keeps each rayon thread's padded image (at most 4 MiB) for
//!   the next call.
//! - [`TileTargets`] (via [`Im2col::with_tile_targets`]) changes the two
//!   targets, for tuning sweeps and for tests that force every branch.
//!
//! ## Threads
//! - [`Im2col::new`] runs on rayon's global pool, so the thread count follows
//!   `RAYON_NUM_THREADS`; [`Im2col::with_threads`] builds its own pool and
//!   runs every op inside it. [`Backend::threads`] reports the real count.
//! - Parallelism is rayon's alone, over images (and filter blocks when there
//!   are fewer images than threads) or row blocks; each worker calls a
//!   single-threaded sgemm. matrixmultiply's `threading` feature stays off:
//!   its own pool would run beside rayon's and oversubscribe the cores, and
//!   the per-image GEMMs here (m = K filters, often 6 to 64) are too small
//!   for its internal split to pay, whereas independent images need no
//!   synchronisation at all and keep each worker's col tile in its own L2.
//!
//! ## Features
//! - This crate turns on matrixmultiply's `avx512` feature (a default of
//!   matrixmultiply that the workspace pin switches off): a 16x16 AVX-512
//!   micro-kernel, chosen at run time only when the CPU has AVX-512F, else
//!   the AVX2/FMA one. It measured 1.8x the AVX2 kernel's rate on this
//!   machine kind (see OPTIMISATION.md).
//!
//! ## Checking and timing
//! - Unit tests here; harness/tests/im2col.rs runs the cross-backend
//!   proptest suite against the f64 reference and a gradient check of this
//!   backend's own backward.
//! - `cargo run --release -p kernels-im2col --example im2col_bench -- [filters]`
//!   validates then times every suite shape beside a same-run sgemm (see
//!   the example's header for its flags). OPTIMISATION.md logs each step
//!   with its prediction and measurement.
//!
//! ## Environment
//! - `RAYON_NUM_THREADS`: threads of [`Im2col::new`] (rayon's global pool).
//! - `KERNELS_ISA=portable|avx2|avx512`: caps the ISA of this crate's
//!   kernels, read when a backend is built ([`Im2col::with_threads`]
//!   refuses an unknown value with `Error::Param`; [`Im2col::new`], which
//!   cannot fail, returns that error from its conv ops instead).
//!
//! ## CPU features (simd.rs)
//! - The CPU is asked once per process which of [`Isa::Portable`],
//!   [`Isa::Avx2`] (AVX2 + FMA) and [`Isa::Avx512`] (AVX-512F + AVX2 + FMA)
//!   it runs; each conv's plan records the ISA its kernels run at
//!   ([`ConvPlan::isa`]): the CPU's best, capped by `KERNELS_ISA` and by
//!   [`Im2col::with_isa`] / [`TileTargets::isa`]. Kernels dispatch on a
//!   token that only detection can make, so a cap can lower the ISA but
//!   never claim one the CPU lacks. [`Isa::supported`] lists what the tests
//!   loop over.
//! - Tokens written here, not `pulp` or `multiversion`: the kernels are
//!   `core::arch` intrinsics in `#[target_feature]` functions whose
//!   variants differ in code, not only in features (pulp would mean
//!   rewriting them against its vector types), and multiversion selects
//!   from the CPU alone, with no run-time cap for tests and measurements
//!   (simd.rs says more).
//! - What runs at each level. AVX-512: every kernel's AVX-512 variant (the
//!   direct forwards, the Winograd transforms, the unpacked GEMM and its
//!   transpose). AVX2 + FMA: AVX2 intrinsics for the same set (the direct
//!   forwards since step 53; the Winograd transforms, the unpacked GEMM
//!   and its 8 x 8 transposes on the Winograd path since step 54), and the
//!   AVX2 variants of the direct family's backward kernels (direct/); the
//!   unfold path runs the packed GEMM's AVX2 kernel there, and col2im for
//!   dX. Portable: plain loops, the direct forwards replaced by
//!   unfolding, every GEMM matrixmultiply's. Each kernel call is counted at
//!   the level it ran ([`dispatch_counts`], with the `dispatch-counts`
//!   feature).
//! - matrixmultiply (now only linear.rs's GEMMs and the portable level)
//!   picks its own micro-kernel from the CPU; the cap does not reach it (its compile-time `MMTEST_FEATURE` variable, a testing
//!   hook, can; OPTIMISATION.md step 53 used it to emulate an AVX2 CPU).
//! - Other architectures (aarch64: Apple silicon, Graviton) run at
//!   [`Isa::Portable`]: every kernel's portable variant (plain Rust that
//!   LLVM may auto-vectorise for NEON), the Winograd transforms and the
//!   unfold path without the x86 register kernels (no unpacked GEMM, no
//!   subpixel dX), and matrixmultiply's own NEON micro-kernel for every
//!   GEMM. `cargo clippy --target aarch64-unknown-linux-gnu -p
//!   kernels-im2col --all-targets -- -D warnings` checks that it builds,
//!   and `make test-aarch64` runs this crate's, kernels-core's and
//!   kernels-naive's tests built for aarch64 under qemu-user (correctness
//!   only: emulated, nothing there is timed).

mod conv;
mod direct;
mod dropout;
mod elementwise;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod lanes;
mod linear;
mod norm;
mod pool;
mod simd;
mod subpixel;
mod unfold;
mod winograd;

use kernels_core::{
    Backend, BatchNormGeometry, BatchStats, ConvGeometry, DropoutMask, Error, GradRequest, Grads, LinearGeometry,
    Optimizer, PoolGeometry, Result, Shaped, Tensor,
};

pub use conv::plan::{
    ConvPath, ConvPlan, DbPath, DwPath, DxPath, Forced, SCRATCH_LIMIT_BYTES, TILE_COLUMNS, TileTargets,
};
pub use conv::workers::TILE_FLOATS;
pub use simd::{ISA_ENV, Isa, UnknownIsa, dispatch_counts};

/// The im2col + GEMM CPU backend (f32). Clones share the thread pool.
#[derive(Debug, Clone)]
pub struct Im2col {
    /// Own pool from `with_threads`; None runs on rayon's global pool.
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
    /// Conv tiling targets (the defaults unless a bench sweeps them), their
    /// ISA cap already lowered to `env_isa`.
    targets: TileTargets,
    /// The cap `KERNELS_ISA` set when the backend was built, or the value
    /// it could not parse: [`Im2col::new`] cannot fail, so its conv ops
    /// report it instead.
    env_isa: std::result::Result<Option<Isa>, UnknownIsa>,
}

impl Default for Im2col {
    fn default() -> Self {
        Self::new()
    }
}

impl Im2col {
    /// Runs on rayon's global pool (RAYON_NUM_THREADS threads, else one per
    /// core), with the ISA cap of `KERNELS_ISA`. An invalid `KERNELS_ISA`
    /// makes every conv op of this backend return `Error::Param` (this
    /// constructor cannot fail; [`Im2col::with_threads`] refuses it at once).
    pub fn new() -> Self {
        Self::build(None, Isa::from_env())
    }

    /// Runs on a pool of its own with `threads` threads, with the ISA cap
    /// of `KERNELS_ISA` (an invalid value is an `Error::Param` here).
    pub fn with_threads(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::param("im2col", "thread count must be positive, got 0"));
        }
        let env_isa = Isa::from_env().map_err(|e| Error::param("im2col", format!("{ISA_ENV}: {e}")))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Device(format!("im2col: cannot start {threads} threads: {e}")))?;
        Ok(Self::build(Some(std::sync::Arc::new(pool)), Ok(env_isa)))
    }

    fn build(
        pool: Option<std::sync::Arc<rayon::ThreadPool>>,
        env_isa: std::result::Result<Option<Isa>, UnknownIsa>,
    ) -> Self {
        let targets = TileTargets { isa: env_isa.clone().ok().flatten(), ..TileTargets::default() };
        Self { pool, targets, env_isa }
    }

    /// Same backend with its kernels capped at `isa` (lowered to what the
    /// CPU has, and to `KERNELS_ISA`'s cap if lower).
    pub fn with_isa(self, isa: Isa) -> Self {
        let targets = TileTargets { isa: Some(isa), ..self.targets };
        self.with_tile_targets(targets)
    }

    /// The ISA this backend's kernels run at (its caps applied to the CPU).
    pub fn isa(&self) -> Isa {
        self.conv_isa()
    }

    fn conv_isa(&self) -> Isa {
        simd::Simd::new(self.targets.isa.unwrap_or(Isa::Avx512)).isa()
    }

    /// The environment's ISA error, if `KERNELS_ISA` was invalid.
    fn check_env(&self) -> Result<()> {
        match &self.env_isa {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::param("im2col", format!("{ISA_ENV}: {e}"))),
        }
    }

    /// Runs `f` on one of this backend's threads (the caller waits), so the
    /// ops `f` calls start right there instead of each being handed from
    /// the calling thread to the pool and back. For a loop of many short
    /// ops, such as a LeNet training step, that hand-off is a visible share
    /// of the time (OPTIMISATION.md, step 27).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => rayon::scope(|_| f()),
        }
    }

    /// The conv tiling targets in use (forced paths and ISA cap included).
    pub fn tile_targets(&self) -> TileTargets {
        self.targets
    }

    /// Same backend with other conv tiling targets (for tuning sweeps and
    /// tests); their ISA cap is lowered to `KERNELS_ISA`'s if that is lower.
    pub fn with_tile_targets(self, targets: TileTargets) -> Self {
        let env = self.env_isa.clone().ok().flatten();
        let targets = TileTargets { isa: Isa::min_cap(targets.isa, env), ..targets };
        Self { targets, ..self }
    }

    /// What runs for a conv geometry on this backend: the forward, dX, dW
    /// and db algorithms, the tiling and the ISA (`Error::Param` when the
    /// options force a path that does not apply, or `KERNELS_ISA` was
    /// invalid).
    pub fn conv_plan(&self, g: &ConvGeometry) -> Result<ConvPlan> {
        self.check_env()?;
        ConvPlan::new(g, self.threads(), self.targets)
    }

    /// Runs `op` on this backend's threads.
    fn run<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(op),
            None => op(),
        }
    }
}

/// The `exec_*` methods are public: a geometry that does not match the
/// tensors must be an error, not an out-of-bounds index.
fn check_batch_norm(g: &BatchNormGeometry, x: &Tensor<f32>, per_channel: &[&Tensor<f32>]) -> Result<()> {
    if x.shape() != g.x_shape().as_slice() {
        return Err(Error::shape(
            "batch_norm",
            format!("input x must have shape {:?}, got {:?}", g.x_shape(), x.shape()),
        ));
    }
    per_channel.iter().try_for_each(|t| g.check_channel("per-channel tensor", t.shape()))
}

fn check_len(op: &'static str, t: &Tensor<f32>, len: usize) -> Result<()> {
    if t.len() != len {
        return Err(Error::shape(op, format!("expected {len} elements, got shape {:?}", t.shape())));
    }
    Ok(())
}

fn tensor(shape: &[usize], data: Vec<f32>) -> Result<Tensor<f32>> {
    Tensor::new(shape, data)
}

fn maybe(shape: &[usize], data: Option<Vec<f32>>) -> Result<Option<Tensor<f32>>> {
    data.map(|d| tensor(shape, d)).transpose()
}

impl Backend for Im2col {
    type Elem = f32;
    type Tensor = Tensor<f32>;

    fn name(&self) -> String {
        "im2col".to_string()
    }

    fn threads(&self) -> usize {
        match &self.pool {
            Some(pool) => pool.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    fn upload(&self, host: &Tensor<f32>) -> Result<Tensor<f32>> {
        Ok(host.clone())
    }

    fn download(&self, tensor: &Tensor<f32>) -> Result<Tensor<f32>> {
        Ok(tensor.clone())
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor<f32>> {
        Ok(Tensor::zeros(shape))
    }

    fn reshape(&self, tensor: Tensor<f32>, shape: &[usize]) -> Result<Tensor<f32>> {
        tensor.reshape(shape)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn exec_conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        b: Option<&Tensor<f32>>,
    ) -> Result<Tensor<f32>> {
        self.check_env()?;
        let y = self.run(|| conv::forward(g, self.targets, x.data(), w.data(), b.map(|b| b.data())))?;
        tensor(&g.y_shape(), y)
    }

    fn exec_conv2d_backward(
        &self,
        g: &ConvGeometry,
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        dy: &Tensor<f32>,
        need: GradRequest,
    ) -> Result<Grads<Tensor<f32>>> {
        self.check_env()?;
        let grads = self.run(|| conv::backward::backward(g, self.targets, x.data(), w.data(), dy.data(), need))?;
        Ok(Grads {
            dx: maybe(&g.x_shape(), grads.dx)?,
            dw: maybe(&g.w_shape(), grads.dw)?,
            db: maybe(&g.b_shape(), grads.db)?,
        })
    }

    fn exec_pool2d_forward(&self, g: &PoolGeometry, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        tensor(&g.y_shape(), self.run(|| pool::forward(g, x.data())))
    }

    fn exec_pool2d_backward(&self, g: &PoolGeometry, x: &Tensor<f32>, dy: &Tensor<f32>) -> Result<Tensor<f32>> {
        tensor(&g.x_shape(), self.run(|| pool::backward(simd::Simd::new(self.conv_isa()), g, x.data(), dy.data())))
    }

    fn exec_linear_forward(
        &self,
        g: &LinearGeometry,
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        b: Option<&Tensor<f32>>,
    ) -> Result<Tensor<f32>> {
        tensor(&g.y_shape(), self.run(|| linear::forward(g, x.data(), w.data(), b.map(|b| b.data()))))
    }

    fn exec_linear_backward(
        &self,
        g: &LinearGeometry,
        x: &Tensor<f32>,
        w: &Tensor<f32>,
        dy: &Tensor<f32>,
        need: GradRequest,
    ) -> Result<Grads<Tensor<f32>>> {
        let grads = self.run(|| linear::backward(g, x.data(), w.data(), dy.data(), need));
        Ok(Grads {
            dx: maybe(&g.x_shape(), grads.dx)?,
            dw: maybe(&g.w_shape(), grads.dw)?,
            db: maybe(&[g.o], grads.db)?,
        })
    }

    fn exec_relu_forward(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        tensor(x.shape(), self.run(|| elementwise::relu_forward(x.data())))
    }

    fn exec_relu_backward(&self, x: &Tensor<f32>, dy: &Tensor<f32>) -> Result<Tensor<f32>> {
        tensor(x.shape(), self.run(|| elementwise::relu_backward(x.data(), dy.data())))
    }

    fn exec_sigmoid_forward(&self, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        tensor(x.shape(), self.run(|| elementwise::sigmoid_forward(x.data())))
    }

    fn exec_sigmoid_backward(&self, y: &Tensor<f32>, dy: &Tensor<f32>) -> Result<Tensor<f32>> {
        tensor(y.shape(), self.run(|| elementwise::sigmoid_backward(y.data(), dy.data())))
    }

    fn exec_softmax_cross_entropy(&self, logits: &Tensor<f32>, labels: &[usize]) -> Result<(f64, Tensor<f32>)> {
        let classes = logits.shape()[1];
        let (loss, dlogits) = self.run(|| elementwise::softmax_cross_entropy(logits.data(), classes, labels));
        Ok((loss, tensor(logits.shape(), dlogits)?))
    }

    fn exec_batch_norm_train(
        &self,
        g: &BatchNormGeometry,
        x: &Tensor<f32>,
        gamma: &Tensor<f32>,
        beta: &Tensor<f32>,
        running_mean: &mut Tensor<f32>,
        running_var: &mut Tensor<f32>,
    ) -> Result<(Tensor<f32>, BatchStats<Tensor<f32>>)> {
        check_batch_norm(g, x, &[gamma, beta, running_mean, running_var])?;
        let (y, mean, inv_std) = self.run(|| {
            norm::train(g, x.data(), gamma.data(), beta.data(), running_mean.data_mut(), running_var.data_mut())
        });
        Ok((tensor(x.shape(), y)?, BatchStats { mean: tensor(&[g.c], mean)?, inv_std: tensor(&[g.c], inv_std)? }))
    }

    fn exec_batch_norm_eval(
        &self,
        g: &BatchNormGeometry,
        x: &Tensor<f32>,
        gamma: &Tensor<f32>,
        beta: &Tensor<f32>,
        running_mean: &Tensor<f32>,
        running_var: &Tensor<f32>,
    ) -> Result<Tensor<f32>> {
        check_batch_norm(g, x, &[gamma, beta, running_mean, running_var])?;
        let y =
            self.run(|| norm::eval(g, x.data(), gamma.data(), beta.data(), running_mean.data(), running_var.data()));
        tensor(x.shape(), y)
    }

    fn exec_batch_norm_backward(
        &self,
        g: &BatchNormGeometry,
        x: &Tensor<f32>,
        gamma: &Tensor<f32>,
        stats: &BatchStats<Tensor<f32>>,
        dy: &Tensor<f32>,
        need: GradRequest,
    ) -> Result<Grads<Tensor<f32>>> {
        check_batch_norm(g, x, &[gamma, &stats.mean, &stats.inv_std])?;
        g.check_dy(dy.shape())?;
        let (dx, dgamma, dbeta) =
            self.run(|| norm::backward(g, x.data(), gamma.data(), stats.mean.data(), stats.inv_std.data(), dy.data()));
        Ok(Grads {
            dx: maybe(x.shape(), need.dx.then_some(dx))?,
            dw: maybe(&[g.c], need.dw.then_some(dgamma))?,
            db: maybe(&[g.c], need.db.then_some(dbeta))?,
        })
    }

    fn exec_dropout_forward(&self, mask: &DropoutMask, x: &Tensor<f32>) -> Result<Tensor<f32>> {
        check_len("dropout", x, mask.len)?;
        tensor(x.shape(), self.run(|| dropout::apply(mask, x.data())))
    }

    fn exec_dropout_backward(&self, mask: &DropoutMask, dy: &Tensor<f32>) -> Result<Tensor<f32>> {
        check_len("dropout", dy, mask.len)?;
        tensor(dy.shape(), self.run(|| dropout::apply(mask, dy.data())))
    }

    fn exec_optimizer_step(
        &self,
        optimizer: &Optimizer,
        param: &mut Tensor<f32>,
        grad: &Tensor<f32>,
        slots: &mut [Tensor<f32>],
        t: u64,
    ) -> Result<()> {
        let mut views: Vec<&mut [f32]> = slots.iter_mut().map(|s| s.data_mut()).collect();
        if elementwise::runs_inline(param.data().len()) {
            // One block: handing it to the pool would cost more than the
            // update. update_slice checks every length before writing.
            return optimizer.update_slice(param.data_mut(), grad.data(), &mut views, t);
        }
        self.run(|| elementwise::optimizer_step(optimizer, param.data_mut(), grad.data(), &mut views, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::{Conv2d, SplitMix64};

    /// Forward and backward of one conv on `backend`, for the counters.
    fn run_conv(backend: &Im2col, input: [usize; 4], filters: [usize; 3], params: Conv2d) -> ConvPlan {
        let g = ConvGeometry::from_dims(input, filters, &params).unwrap();
        let mut rng = SplitMix64::new(1);
        let mut data = |shape: &[usize]| {
            let len = shape.iter().product();
            Tensor::new(shape, (0..len).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()).unwrap()
        };
        let (x, w, dy) = (data(&g.x_shape()), data(&g.w_shape()), data(&g.y_shape()));
        backend.exec_conv2d_forward(&g, &x, &w, None).unwrap();
        backend.exec_conv2d_backward(&g, &x, &w, &dy, GradRequest::ALL).unwrap();
        backend.conv_plan(&g).unwrap()
    }

    #[test]
    fn a_capped_backend_runs_the_kernels_of_its_isa() {
        // Every ISA this CPU has, on the direct path (its three variants),
        // the Winograd path (AVX-512 transforms and the unpacked GEMM, or their
        // portable stand-ins) and the unfold path's unpacked GEMMs.
        println!("ISAs exercised: {:?}", Isa::reachable());
        for isa in Isa::reachable() {
            let backend = Im2col::with_threads(2).unwrap().with_isa(isa);
            assert_eq!(backend.isa(), isa);
            // The direct family is where every ISA has a variant (forward,
            // dW and dX kernels).
            // (forced: at the portable level the planner prefers unfolding).
            let force = Forced { forward: Some(ConvPath::Direct), ..Forced::default() };
            let direct_backend =
                backend.clone().with_tile_targets(TileTargets { force, isa: Some(isa), ..TileTargets::default() });
            let before = dispatch_counts().unwrap()[isa as usize];
            let direct = run_conv(&direct_backend, [2, 1, 12, 20], [6, 3, 3], Conv2d::new(1, 1));
            assert_eq!((direct.path, direct.isa), (ConvPath::Direct, isa));
            // Counters are process-wide and other tests run beside this one,
            // but they only grow: at least this test's calls are counted.
            let after = dispatch_counts().unwrap()[isa as usize];
            assert!(after >= before + 2, "{isa}: {before} -> {after} kernel calls");
            let winograd = run_conv(&backend, [2, 32, 6, 6], [32, 3, 3], Conv2d::new(1, 1));
            assert_eq!((winograd.path, winograd.isa), (ConvPath::Winograd, isa));
            let unfold = run_conv(&backend, [2, 8, 8, 8], [32, 3, 3], Conv2d::new(2, 1));
            assert_eq!(unfold.unpacked_gemms, isa == Isa::Avx512, "{unfold:?}");
        }
    }

    #[test]
    fn isa_caps_combine_and_never_exceed_the_cpu() {
        // What this run allows: the CPU's best, under KERNELS_ISA if set.
        let best = Isa::detected().min(Isa::from_env().unwrap().unwrap_or(Isa::Avx512));
        let backend = Im2col::with_threads(1).unwrap();
        assert_eq!(backend.isa(), best);
        assert_eq!(backend.clone().with_isa(Isa::Portable).isa(), Isa::Portable);
        assert_eq!(backend.clone().with_isa(Isa::Avx512).isa(), best);
        let capped = backend.with_isa(Isa::Avx2).with_tile_targets(TileTargets::default());
        assert_eq!(capped.isa(), best, "new targets replace the options' cap");
    }
}
