//! The candle peer (cargo feature `candle`, off by default): what a Rust
//! user would pick instead of these kernels. candle-core's CPU ops run in
//! process on the same inputs, on a rayon pool of `--threads` threads,
//! under the same repeat policy, validated against the same f64 oracle
//! before and after timing, like every backend.
//!
//! What candle can do alone, and so what is measured:
//! - conv-fwd: `conv2d` plus a broadcast bias add.
//! - conv-bwd, linear-bwd: candle's autograd (`backward`) on the graph
//!   `sum(y * dy)`, built once; each timed call is one `backward`, which
//!   also runs the (cheap, element-wise) backward of the product and sum.
//!   candle cannot ask for dx, dw or db alone: conv-dx, conv-dw and conv-db
//!   are not measured.
//! - pool-fwd, avgpool-fwd: `max_pool2d_with_stride`, `avg_pool2d_with_stride`;
//!   candle pools without padding, so padded shapes (resnet-p0) are not
//!   measured.
//! - avgpool-bwd: candle's autograd as above; its average-pool backward
//!   exists only for windows equal to their stride (it upsamples dy), which
//!   lenet-p1's 2x2 s2 is, and padding is out anyway.
//! - pool-bwd is not measured: candle 0.9.2's max-pool backward multiplies
//!   dy by the mean of the "is the max" mask over the window instead of
//!   dividing by the number of maxima, so a window's unique max gets dy / 4
//!   for 2x2 windows (the harness's validation caught it: 301051 of 1204224
//!   elements of lenet-p1's dx were off by 0.75 dy; see the test).
//! - linear-fwd: `matmul` with the transposed weight, plus the bias.
//! - bn-train, bn-bwd, bn-eval, dropout-fwd, dropout-bwd are not measured:
//!   candle-core has neither op. Batch norm and dropout live in candle-nn
//!   (its `BatchNorm` composes candle-core's mean, broadcast and sqrt ops;
//!   `ops::dropout` draws a mask with candle's RNG), a crate this feature
//!   does not pull in; composing them here would time our composition, not
//!   a candle kernel.

use candle_core::{DType, Device, Tensor as CTensor, Var};
use kernels_core::{Shaped, Tensor, compare};
use kernels_naive::Naive;

use crate::error::{HarnessError, Result};
use crate::ops::{Op, Shape};
use crate::peers::{PeerInfo, PeerStatus, peer_record};
use crate::problem::{Inputs, Oracle, Validation, output_names, tolerance};
use crate::results::Record;
use crate::timing::{self, Policy};

/// The backend name of candle's records.
pub const CANDLE: &str = "candle";
/// The exact version the workspace pins (`=0.9.2` in Cargo.toml).
pub const CANDLE_VERSION: &str = "0.9.2";

fn candle_error(what: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(format!("candle peer, {what}: {e}"))
}

/// candle-core on the CPU, on its own rayon pool.
pub struct CandlePeer {
    pool: rayon::ThreadPool,
    pub info: PeerInfo,
}

/// One op as candle runs it: a closure giving the outputs in the order of
/// [`output_names`].
type Call<'a> = Box<dyn Fn() -> candle_core::Result<Vec<CTensor>> + Send + Sync + 'a>;

fn host(t: &Tensor<f32>) -> candle_core::Result<CTensor> {
    CTensor::from_slice(t.data(), t.shape(), &Device::Cpu)
}

fn var(t: &Tensor<f32>) -> candle_core::Result<Var> {
    Var::from_tensor(&host(t)?)
}

impl CandlePeer {
    pub fn new(threads: usize) -> Result<CandlePeer> {
        let pool =
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| candle_error("thread pool", e))?;
        let gemm_threads = candle_core::utils::get_num_threads();
        let info = PeerInfo {
            peer: CANDLE.into(),
            version: CANDLE_VERSION.into(),
            threads,
            python: String::new(),
            detail: format!(
                "candle-core {CANDLE_VERSION} CPU, {threads} rayon threads (its gemm asks for {gemm_threads}), \
                 compiled with AVX: {} (its gemm picks its ISA at run time)",
                candle_core::utils::with_avx()
            ),
        };
        Ok(CandlePeer { pool, info })
    }

    pub fn status(&self) -> PeerStatus {
        PeerStatus { peer: CANDLE.into(), command: "in process".into(), info: Some(self.info.clone()), skipped: None }
    }

    /// Why candle does not run `op` on `shape` (see the module docs); None
    /// when it can, alone and right.
    pub fn why_not(op: Op, shape: &Shape) -> Option<&'static str> {
        match (op, shape) {
            (Op::ConvBackwardDx | Op::ConvBackwardDw | Op::ConvBackwardDb, _) => {
                Some("candle computes conv dx, dw and db only together, through its autograd")
            }
            (Op::PoolBackward, _) => {
                Some("candle 0.9.2's max-pool backward is wrong, a window's unique max gets dy over the window size")
            }
            (_, Shape::Pool(p)) if p.padding > 0 => Some("candle pools without padding only"),
            (_, Shape::Norm(_)) => Some("candle-core has no batch norm or dropout, they are candle-nn's"),
            _ => None,
        }
    }

    /// Whether candle can run `op` on `shape` alone, and right.
    pub fn supports(op: Op, shape: &Shape) -> bool {
        Self::why_not(op, shape).is_none()
    }

    /// The call for `op` on `shape`, its graph built once.
    fn call<'a>(op: Op, shape: &Shape, inputs: &'a Inputs) -> candle_core::Result<Call<'a>> {
        let missing = || candle_core::Error::Msg("the shape has no weights".into());
        let x = var(&inputs.x)?;
        let dy = host(&inputs.dy)?;
        let call: Call = match shape {
            Shape::Conv(c) => {
                let (stride, padding) = (c.stride, c.padding);
                let w = var(inputs.w.as_ref().ok_or_else(missing)?)?;
                let b = var(inputs.b.as_ref().ok_or_else(missing)?)?;
                let k = b.dims()[0];
                let forward = move |x: &CTensor, w: &CTensor, b: &CTensor| {
                    x.conv2d(w, padding, stride, 1, 1)?.broadcast_add(&b.reshape((1, k, 1, 1))?)
                };
                if op == Op::ConvForward {
                    let (x, w, b) = (x.as_tensor().clone(), w.as_tensor().clone(), b.as_tensor().clone());
                    Box::new(move || Ok(vec![forward(&x, &w, &b)?]))
                } else {
                    let loss = (forward(x.as_tensor(), w.as_tensor(), b.as_tensor())? * dy)?.sum_all()?;
                    Box::new(move || grads(&loss, &[x.as_tensor(), w.as_tensor(), b.as_tensor()]))
                }
            }
            Shape::Pool(p) => {
                let (window, stride) = (p.window, p.stride);
                let pool = move |x: &CTensor| {
                    if op.pool_kind() == Some(kernels_core::PoolKind::Avg) {
                        x.avg_pool2d_with_stride(window, stride)
                    } else {
                        x.max_pool2d_with_stride(window, stride)
                    }
                };
                if matches!(op, Op::PoolForward | Op::AvgPoolForward) {
                    let x = x.as_tensor().clone();
                    Box::new(move || Ok(vec![pool(&x)?]))
                } else {
                    let loss = (pool(x.as_tensor())? * dy)?.sum_all()?;
                    Box::new(move || grads(&loss, &[x.as_tensor()]))
                }
            }
            Shape::Norm(_) => {
                return Err(candle_core::Error::Msg(format!("candle does not run {} (see why_not)", op.name())));
            }
            Shape::Linear(_) => {
                let w = var(inputs.w.as_ref().ok_or_else(missing)?)?;
                let b = var(inputs.b.as_ref().ok_or_else(missing)?)?;
                let forward =
                    |x: &CTensor, w: &CTensor, b: &CTensor| x.matmul(&w.t()?)?.broadcast_add(&b.unsqueeze(0)?);
                if op == Op::LinearForward {
                    let (x, w, b) = (x.as_tensor().clone(), w.as_tensor().clone(), b.as_tensor().clone());
                    Box::new(move || Ok(vec![forward(&x, &w, &b)?]))
                } else {
                    let loss = (forward(x.as_tensor(), w.as_tensor(), b.as_tensor())? * dy)?.sum_all()?;
                    Box::new(move || grads(&loss, &[x.as_tensor(), w.as_tensor(), b.as_tensor()]))
                }
            }
        };
        Ok(call)
    }

    /// Validates, times and validates again every op of `ops` candle can
    /// run alone on `shape`; returns the records and the ops it skipped.
    pub fn measure_shape(
        &self,
        shape: &Shape,
        ops: &[Op],
        inputs: &Inputs,
        oracle: &Oracle<Naive<f64>>,
        policy: &Policy,
    ) -> Result<(Vec<Record>, Vec<Op>)> {
        let mut records = Vec::new();
        let mut skipped = Vec::new();
        for &op in ops {
            if !Self::supports(op, shape) {
                skipped.push(op);
                continue;
            }
            let want = oracle.expected(op, shape)?;
            let record = self.pool.install(|| -> Result<Record> {
                let fail = |e: candle_core::Error| candle_error(&format!("{} {}", op.name(), shape.name()), e);
                let call = Self::call(op, shape, inputs).map_err(fail)?;
                let before = validate(op, shape, &call().map_err(fail)?, &want, "before timing")?;
                let (stats, last) = timing::time(policy, std::time::Duration::ZERO, &call).map_err(fail)?;
                let after = validate(op, shape, &last, &want, "after timing")?;
                peer_record(CANDLE, &self.info, op, shape, &stats, &before, &after)
            })?;
            records.push(record);
        }
        Ok((records, skipped))
    }

    /// For the criterion benches: validates `op` on `shape` once against
    /// the oracle's `expected` outputs, then returns the call to time on
    /// candle's pool; None when candle cannot run the op alone.
    #[allow(clippy::type_complexity)]
    pub fn bench_call<'a>(
        &'a self,
        op: Op,
        shape: &Shape,
        inputs: &'a Inputs,
        expected: &[&Tensor<f64>],
    ) -> Result<Option<Box<dyn Fn() -> Result<()> + 'a>>> {
        if !Self::supports(op, shape) {
            return Ok(None);
        }
        let label = format!("{} {}", op.name(), shape.name());
        let call = Self::call(op, shape, inputs).map_err(|e| candle_error(&label, e))?;
        let outputs = self.pool.install(&call).map_err(|e| candle_error(&label, e))?;
        validate(op, shape, &outputs, expected, "before timing")?;
        Ok(Some(Box::new(move || self.pool.install(&call).map(drop).map_err(|e| candle_error(&label, e)))))
    }
}

/// The gradients of `loss` with respect to `wrt`, in that order.
fn grads(loss: &CTensor, wrt: &[&CTensor]) -> candle_core::Result<Vec<CTensor>> {
    let store = loss.backward()?;
    wrt.iter()
        .map(|t| store.get(t).cloned().ok_or_else(|| candle_core::Error::Msg("a gradient is missing".into())))
        .collect()
}

/// Compares candle's outputs with the oracle; a mismatch is a validation
/// failure naming candle, like any backend's.
fn validate(
    op: Op,
    shape: &Shape,
    outputs: &[CTensor],
    expected: &[&Tensor<f64>],
    stage: &'static str,
) -> Result<Validation> {
    let fail = |detail: String| HarnessError::Validation {
        stage,
        op: op.name().into(),
        shape: shape.name().into(),
        backend: CANDLE.into(),
        detail,
    };
    let names = output_names(op);
    if outputs.len() != names.len() {
        return Err(fail(format!("{} outputs, expected {}", outputs.len(), names.len())));
    }
    let mut result = Vec::new();
    for ((name, actual), want) in names.iter().zip(outputs).zip(expected) {
        if actual.dims() != want.shape() {
            return Err(fail(format!("{name} has shape {:?}, expected {:?}", actual.dims(), want.shape())));
        }
        let data: Vec<f32> = actual
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| fail(format!("{name}: {e}")))?;
        let tol = tolerance(op, shape, name, want.data())?;
        result.push((*name, compare(&data, want.data(), &tol)?));
    }
    let validation = Validation { outputs: result };
    if validation.passed() { Ok(validation) } else { Err(fail(validation.failures())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_runs_what_it_can_validated_and_skips_the_rest() {
        let peer = CandlePeer::new(2).unwrap();
        for (name, ops) in [
            ("lenet-c2", &Op::ALL[..5]),
            ("lenet-p1", &Op::ALL[5..9]),
            ("lenet-fc3", &[Op::LinearForward, Op::LinearBackward][..]),
            ("lenet-bn3", &Op::ALL[11..]),
        ] {
            let shape = Shape::parse(name).unwrap();
            let inputs = Inputs::generate(&shape).unwrap();
            let mut oracle = Oracle::new(Naive::<f64>::new());
            for &op in ops {
                oracle.prepare(op, &shape, &inputs).unwrap();
            }
            let (records, skipped) = peer.measure_shape(&shape, ops, &inputs, &oracle, &Policy::quick()).unwrap();
            for r in &records {
                assert_eq!((r.backend.as_str(), r.peer_version.as_deref()), ("candle", Some(CANDLE_VERSION)));
                assert!(r.median_ms > 0.0, "{r:?}");
            }
            match name {
                "lenet-c2" => {
                    assert_eq!(records.len(), 2, "conv-fwd and conv-bwd");
                    assert_eq!(skipped, [Op::ConvBackwardDx, Op::ConvBackwardDw, Op::ConvBackwardDb]);
                }
                "lenet-p1" => {
                    let measured: Vec<&str> = records.iter().map(|r| r.op.as_str()).collect();
                    assert_eq!(measured, ["pool-fwd", "avgpool-fwd", "avgpool-bwd"]);
                    assert_eq!(skipped, [Op::PoolBackward]);
                }
                "lenet-bn3" => assert_eq!((records.len(), skipped.len()), (0, 5)),
                _ => assert_eq!((records.len(), skipped.len()), (2, 0)),
            }
        }
        let padded = Shape::parse("resnet-p0").unwrap();
        assert!(!CandlePeer::supports(Op::PoolForward, &padded));
        assert!(CandlePeer::why_not(Op::AvgPoolBackward, &padded).unwrap().contains("padding"));
    }

    /// Why pool-bwd is left out: candle's max-pool backward computes
    /// something else, and validation says so loudly.
    #[test]
    fn candle_s_max_pool_backward_fails_validation() {
        let shape = Shape::parse("lenet-p1").unwrap();
        let inputs = Inputs::generate(&shape).unwrap();
        let mut oracle = Oracle::new(Naive::<f64>::new());
        oracle.prepare(Op::PoolBackward, &shape, &inputs).unwrap();
        let expected = oracle.expected(Op::PoolBackward, &shape).unwrap();
        let outputs = CandlePeer::call(Op::PoolBackward, &shape, &inputs).unwrap()().unwrap();
        match validate(Op::PoolBackward, &shape, &outputs, &expected, "before timing") {
            Err(HarnessError::Validation { backend, detail, .. }) => {
                assert_eq!(backend, "candle");
                assert!(detail.contains("dx:"), "{detail}");
            }
            other => panic!("candle's max-pool backward passed validation: {other:?}"),
        }
    }
}
