//! # harness: validated FLOP and throughput reports for every backend
//!
//! `cargo run --release -p harness -- [flags]` (or `make report`) measures
//! every op x shape x backend and writes `results.json`, `SCHEMA.md`,
//! `README.md` and SVG charts into `--out` (default `reports/`).
//!
//! ## What a run does
//! 1. **Ceilings** ([`ceilings`], [`backends::opencl_gemm_ceiling`]):
//!    matrixmultiply sgemm n=2048 on `--threads` threads, a 256 MiB copy
//!    bandwidth, for OpenCL the device's name and its best GEMM rate with
//!    our kernel (`linear_forward` on square sizes), and an FMA peak per ISA
//!    this CPU runs (portable, AVX2 + FMA, AVX-512) at 1 and `--threads`
//!    threads; the machine section names the ISA each backend ran at.
//! 2. **Per shape** of the suite ([`ops::Shape`], from
//!    `kernels_core::suite`): seeded inputs ([`problem::Inputs`]); the f64
//!    naive oracle runs once per pass and its outputs are cached
//!    ([`problem::Oracle`]); then per op ([`ops::Op`]: conv forward, conv
//!    backward whole and as dx / dw / db alone, max- and average-pool
//!    forward and backward, linear forward and backward, batch norm's
//!    training forward, training backward and evaluation forward, dropout
//!    forward and backward) and per backend
//!    ([`measure::Job`]): validate against the oracle, warm up, time
//!    (median, min, max; OpenCL synchronised inside the timed region and
//!    split into kernel and transfer time by event profiling), validate the
//!    last timed call's output again. A failure stops the run with the op,
//!    shape, backend and worst elements, exit status 1.
//!    **Peers** ([`peers`]): the same ops on the same inputs by PyTorch's
//!    CPU kernels (harness/peers/torch_ops.py, a subprocess on `--python`,
//!    the same threads and repeat policy), validated against the same
//!    oracle before and after timing; skipped with a note when torch is not
//!    importable. With the cargo feature `candle` (on in `make report`, off
//!    by default and in CI), candle-core's CPU ops too, in process
//!    (`candle_peer`).
//! 3. **Costs** from `kernels_core::cost`: GFLOP/s, GB/s, arithmetic
//!    intensity, % of the roofline bound, speed-up over naive f32, and our
//!    time over each peer's.
//! 4. `--lenet`: training throughput of each LeNet model (`--lenet-models`,
//!    default all four of `lenet --model`) per backend and on the PyTorch
//!    peer with the same recipe; `--lenet-epochs N` adds the test accuracy
//!    after N epochs ([`lenet_throughput`]).
//! 5. **Files** ([`run::write_report`]): results.json ([`results`], schema
//!    in SCHEMA.md), README.md tables ([`markdown`]), charts ([`charts`]).
//!
//! ## Flags
//! `--backends naive,im2col,opencl|all`, `--ops <op>,...|conv|pool|linear|norm|all`,
//! `--shapes <name>,...|lenet|all`, `--threads N` (default 2), `--quick`
//! (few repeats on lenet-c2, lenet-p1, lenet-fc1, lenet-bn3: CI), `--out DIR`,
//! `--rounds N` (each row the best of N back-to-back rounds),
//! `--lenet`, `--lenet-steps N`, `--lenet-models M,...|all`, `--lenet-dropout P`,
//! `--lenet-epochs N` (1 to 50), `--opencl-device SEL`, `--peers auto|pytorch|none`,
//! `--python PATH`, `--force-threads` (more than 4 threads per core); `--replot FILE`
//! re-renders README.md and the charts from an existing results.json. A progress bar
//! shows on a terminal, plain lines otherwise.
//!
//! ## Environment
//! `KERNELS_OPENCL_DEVICE` picks the OpenCL device when `--opencl-device`
//! is not given; `FASHION_MNIST_DIR` the data for `--lenet`; `KERNELS_PYTHON`
//! the Python of the PyTorch peer when `--python` is not given.
//!
//! ## Benches
//! `cargo bench -p harness` (`make bench`) runs the criterion benches in
//! benches/ops.rs: one group per op, ids `backend/shape`, throughput in
//! FLOPs; see that file for filtering and the time budget.

pub mod backends;
#[cfg(feature = "candle")]
pub mod candle_peer;
pub mod ceilings;
pub mod charts;
pub mod cli;
pub mod error;
#[cfg(test)]
mod faulty;
pub mod lenet_throughput;
pub mod machine;
pub mod markdown;
pub mod measure;
pub mod ops;
pub mod peers;
pub mod problem;
pub mod progress;
pub mod results;
pub mod run;
pub mod timing;
