//! Seeded inputs for every suite shape, the f64 oracle's outputs (computed
//! once per shape and op, then shared by every backend), and the named
//! tolerance each output is judged by.
//!
//! Inputs are drawn in f32 and widened to f64 for the oracle, so the oracle
//! and the timed backends see bit-identical inputs (max pooling picks the
//! same winners).
//!
//! Batch norm's inputs: x = uniform [-1, 1) plus a per-channel offset in
//! [-1, 1) (so a mean taken over the wrong channel is off by about the
//! offset, not lost in the noise of zero-mean data), γ in [0.5, 1.5), β in
//! [-1, 1), running mean in [-0.5, 0.5), running variance in [0.5, 1.5),
//! and the saved batch statistics the backward starts from: the f64
//! reference's μ and 1/√(σ² + ε) of x, rounded to f32, so every backend and
//! peer differentiates at the same point. Dropout uses x (forward) and dy
//! (backward) with [`crate::ops::DROPOUT`].

use std::collections::HashMap;

use kernels_core::{
    Backend, BatchStats, Comparison, Error, GradRequest, Grads, Result, Shaped, SplitMix64, Tensor, Tolerance, compare,
};
use kernels_naive::Naive;

use crate::ops::{BATCH_NORM, DROPOUT, Op, Shape};

/// Batch norm's extra host inputs (see the module docs).
#[derive(Debug, Clone)]
pub struct NormInputs {
    pub running_mean: Tensor<f32>,
    pub running_var: Tensor<f32>,
    /// μ of x per channel, as a training forward saves it.
    pub save_mean: Tensor<f32>,
    /// 1/√(σ² + ε) of x per channel.
    pub save_inv_std: Tensor<f32>,
}

/// Host inputs of one shape: x, weight and bias (conv and linear; γ and β
/// for batch norm), an output gradient dy for the backward ops, and batch
/// norm's statistics.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub x: Tensor<f32>,
    pub w: Option<Tensor<f32>>,
    pub b: Option<Tensor<f32>>,
    pub dy: Tensor<f32>,
    pub norm: Option<NormInputs>,
}

/// A stable seed per shape name (FNV-1a), so runs are reproducible.
fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn uniform(rng: &mut SplitMix64, shape: &[usize]) -> Tensor<f32> {
    Tensor::from_fn(shape, |_| rng.uniform(-1.0, 1.0) as f32)
}

fn uniform_in(rng: &mut SplitMix64, shape: &[usize], lo: f64, hi: f64) -> Tensor<f32> {
    Tensor::from_fn(shape, |_| rng.uniform(lo, hi) as f32)
}

impl Inputs {
    /// Uniform [-1, 1) inputs for `shape`, seeded by its name.
    pub fn generate(shape: &Shape) -> Result<Inputs> {
        let mut rng = SplitMix64::new(seed(shape.name()));
        Ok(match shape {
            Shape::Conv(case) => {
                let g = case.geometry()?;
                Inputs {
                    x: uniform(&mut rng, &g.x_shape()),
                    w: Some(uniform(&mut rng, &g.w_shape())),
                    b: Some(uniform(&mut rng, &g.b_shape())),
                    dy: uniform(&mut rng, &g.y_shape()),
                    norm: None,
                }
            }
            Shape::Pool(case) => {
                // Max and average pooling share the geometry.
                let g = case.geometry(kernels_core::PoolKind::Max)?;
                Inputs {
                    x: uniform(&mut rng, &g.x_shape()),
                    w: None,
                    b: None,
                    dy: uniform(&mut rng, &g.y_shape()),
                    norm: None,
                }
            }
            Shape::Linear(case) => {
                let g = case.geometry()?;
                Inputs {
                    x: uniform(&mut rng, &g.x_shape()),
                    w: Some(uniform(&mut rng, &g.w_shape())),
                    b: Some(uniform(&mut rng, &[g.o])),
                    dy: uniform(&mut rng, &g.y_shape()),
                    norm: None,
                }
            }
            Shape::Norm(case) => {
                let g = case.geometry()?;
                let c = [g.c];
                let offsets = uniform(&mut rng, &c);
                let noise = uniform(&mut rng, &g.x_shape());
                let x = Tensor::from_fn(&g.x_shape(), |i| noise.data()[i] + offsets.data()[(i / g.spatial) % g.c]);
                let gamma = uniform_in(&mut rng, &c, 0.5, 1.5);
                let beta = uniform(&mut rng, &c);
                let running_mean = uniform_in(&mut rng, &c, -0.5, 0.5);
                let running_var = uniform_in(&mut rng, &c, 0.5, 1.5);
                let dy = uniform(&mut rng, &g.x_shape());
                // The saved statistics from the reference's own training forward.
                let reference = Naive::<f64>::new();
                let (mut rm, mut rv) = (running_mean.cast::<f64>(), running_var.cast::<f64>());
                let (_, stats) = reference.batch_norm_train(
                    &x.cast(),
                    &gamma.cast(),
                    &beta.cast(),
                    &mut rm,
                    &mut rv,
                    &BATCH_NORM,
                )?;
                let norm = NormInputs {
                    running_mean,
                    running_var,
                    save_mean: stats.mean.cast(),
                    save_inv_std: stats.inv_std.cast(),
                };
                Inputs { x, w: Some(gamma), b: Some(beta), dy, norm: Some(norm) }
            }
        })
    }

    /// Every input tensor with its name, for peers that read them from files
    /// (PyTorch's names for batch norm's statistics).
    pub fn named(&self) -> Vec<(&'static str, &Tensor<f32>)> {
        let mut named = vec![("x", &self.x)];
        named.extend(self.w.as_ref().map(|w| ("w", w)));
        named.extend(self.b.as_ref().map(|b| ("b", b)));
        named.push(("dy", &self.dy));
        if let Some(n) = &self.norm {
            named.extend([
                ("running_mean", &n.running_mean),
                ("running_var", &n.running_var),
                ("save_mean", &n.save_mean),
                ("save_invstd", &n.save_inv_std),
            ]);
        }
        named
    }
}

/// Batch norm's statistics on one backend: the running statistics (host
/// copies too: a training forward updates them in place, so each call
/// starts from a fresh upload) and the saved statistics for the backward.
pub struct DeviceNorm<B: Backend> {
    pub running_mean_host: Tensor<B::Elem>,
    pub running_var_host: Tensor<B::Elem>,
    pub running_mean: B::Tensor,
    pub running_var: B::Tensor,
    pub saved: BatchStats<B::Tensor>,
}

/// Inputs uploaded to one backend.
pub struct DeviceInputs<B: Backend> {
    pub x: B::Tensor,
    pub w: Option<B::Tensor>,
    pub b: Option<B::Tensor>,
    pub dy: B::Tensor,
    pub norm: Option<DeviceNorm<B>>,
}

/// Uploads `inputs` to `backend`, converting f32 to the backend's element type.
pub fn upload<B: Backend>(backend: &B, inputs: &Inputs) -> Result<DeviceInputs<B>> {
    let put = |t: &Tensor<f32>| backend.upload(&t.cast::<B::Elem>());
    let norm = match &inputs.norm {
        Some(n) => Some(DeviceNorm {
            running_mean_host: n.running_mean.cast(),
            running_var_host: n.running_var.cast(),
            running_mean: put(&n.running_mean)?,
            running_var: put(&n.running_var)?,
            saved: BatchStats { mean: put(&n.save_mean)?, inv_std: put(&n.save_inv_std)? },
        }),
        None => None,
    };
    Ok(DeviceInputs {
        x: put(&inputs.x)?,
        w: inputs.w.as_ref().map(put).transpose()?,
        b: inputs.b.as_ref().map(put).transpose()?,
        dy: put(&inputs.dy)?,
        norm,
    })
}

fn missing(what: &str) -> Error {
    Error::Device(format!("harness: the backend returned no {what} although it was requested"))
}

fn take_grads<T>(grads: Grads<T>, need: GradRequest) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (wanted, grad, name) in [(need.dx, grads.dx, "dx"), (need.dw, grads.dw, "dw"), (need.db, grads.db, "db")] {
        if wanted {
            out.push(grad.ok_or_else(|| missing(name))?);
        }
    }
    Ok(out)
}

fn weights<B: Backend>(d: &DeviceInputs<B>) -> Result<&B::Tensor> {
    d.w.as_ref().ok_or_else(|| missing("weight input"))
}

fn bias<B: Backend>(d: &DeviceInputs<B>) -> Result<&B::Tensor> {
    d.b.as_ref().ok_or_else(|| missing("bias input"))
}

fn not_on(op: Op, shape: &Shape) -> Error {
    Error::Device(format!("harness: op {} does not run on shape {}", op.name(), shape.name()))
}

/// Runs `op` on `shape` once and returns its outputs in the order of
/// [`output_names`]. Nothing is synchronised here: the caller decides.
pub fn run_op<B: Backend>(backend: &B, op: Op, shape: &Shape, d: &DeviceInputs<B>) -> Result<Vec<B::Tensor>> {
    if op.family() != shape.family() {
        return Err(not_on(op, shape));
    }
    match shape {
        Shape::Conv(case) => {
            let params = case.params();
            if op == Op::ConvForward {
                Ok(vec![backend.conv2d_forward(&d.x, weights(d)?, d.b.as_ref(), &params)?])
            } else {
                let need = op.grad_request();
                take_grads(backend.conv2d_backward(&d.x, weights(d)?, &d.dy, &params, need)?, need)
            }
        }
        Shape::Pool(case) => {
            let params = case.params(op.pool_kind().ok_or_else(|| not_on(op, shape))?);
            if matches!(op, Op::PoolForward | Op::AvgPoolForward) {
                Ok(vec![backend.pool2d_forward(&d.x, &params)?])
            } else {
                Ok(vec![backend.pool2d_backward(&d.x, &d.dy, &params)?])
            }
        }
        Shape::Linear(_) => {
            if op == Op::LinearForward {
                Ok(vec![backend.linear_forward(&d.x, weights(d)?, d.b.as_ref())?])
            } else {
                take_grads(backend.linear_backward(&d.x, weights(d)?, &d.dy, GradRequest::ALL)?, GradRequest::ALL)
            }
        }
        Shape::Norm(_) => {
            let norm = || d.norm.as_ref().ok_or_else(|| missing("batch-norm statistics input"));
            match op {
                Op::BatchNormTrain => {
                    let n = norm()?;
                    // Fresh running statistics per call (2·C elements): the
                    // update is validated, and repeated calls do not drift.
                    let mut rm = backend.upload(&n.running_mean_host)?;
                    let mut rv = backend.upload(&n.running_var_host)?;
                    let (y, stats) =
                        backend.batch_norm_train(&d.x, weights(d)?, bias(d)?, &mut rm, &mut rv, &BATCH_NORM)?;
                    Ok(vec![y, stats.mean, stats.inv_std, rm, rv])
                }
                Op::BatchNormEval => {
                    let n = norm()?;
                    let (rm, rv) = (&n.running_mean, &n.running_var);
                    Ok(vec![backend.batch_norm_eval(&d.x, weights(d)?, bias(d)?, rm, rv, &BATCH_NORM)?])
                }
                Op::BatchNormBackward => {
                    let n = norm()?;
                    let grads = backend.batch_norm_backward(
                        &d.x,
                        weights(d)?,
                        &n.saved,
                        &d.dy,
                        &BATCH_NORM,
                        GradRequest::ALL,
                    )?;
                    take_grads(grads, GradRequest::ALL)
                }
                Op::DropoutForward => Ok(vec![backend.dropout_forward(&d.x, &DROPOUT)?]),
                Op::DropoutBackward => Ok(vec![backend.dropout_backward(&d.dy, &DROPOUT)?]),
                _ => Err(not_on(op, shape)),
            }
        }
    }
}

/// Names of the outputs `op` returns, in order.
pub fn output_names(op: Op) -> &'static [&'static str] {
    match op {
        Op::ConvForward
        | Op::PoolForward
        | Op::AvgPoolForward
        | Op::LinearForward
        | Op::BatchNormEval
        | Op::DropoutForward => &["y"],
        Op::ConvBackward | Op::LinearBackward => &["dx", "dw", "db"],
        Op::ConvBackwardDx | Op::PoolBackward | Op::AvgPoolBackward | Op::DropoutBackward => &["dx"],
        Op::ConvBackwardDw => &["dw"],
        Op::ConvBackwardDb => &["db"],
        Op::BatchNormTrain => &["y", "mean", "inv_std", "running_mean", "running_var"],
        Op::BatchNormBackward => &["dx", "dgamma", "dbeta"],
    }
}

/// The length of the f32 reduction behind each element of `output`.
fn reduction_len(op: Op, shape: &Shape, output: &str) -> Result<usize> {
    Ok(match shape {
        Shape::Conv(case) => {
            let g = case.geometry()?;
            match output {
                "y" => g.c * g.r * g.s + 1,
                "dx" => g.k * g.r * g.s,
                _ => g.n * g.oh * g.ow,
            }
        }
        // An average-pool y sums its window; a pool dx element sums the dy
        // of every window it wins (max) or lies in (average).
        Shape::Pool(case) => case.window * case.window,
        Shape::Linear(case) => match output {
            "y" => case.inputs + 1,
            "dx" => case.outputs,
            _ => case.batch,
        },
        // Every training-mode output goes through the per-channel sums over
        // N·H·W; evaluation mode reduces nothing.
        Shape::Norm(case) => match op {
            Op::BatchNormEval => 1,
            _ => case.geometry()?.per_channel(),
        },
    })
}

/// Batch norm's conditioning on the generated inputs: max|x| ≤ 2 over a
/// spread of σ ≈ 0.58 (1/σ ≈ 1.7), so x − μ loses up to ε·2 before it is
/// scaled by 1/σ: about 4x the error of a zero-mean, unit-spread input
/// (harness/tests/common/norm.rs scales its tolerances the same way).
const NORM_CONDITIONING: f64 = 4.0;

/// The tolerance `output` of `op` on `shape` is held to, scaled by the
/// largest |expected| element.
pub fn tolerance(op: Op, shape: &Shape, output: &str, expected: &[f64]) -> Result<Tolerance> {
    // Max pooling selects and dropout multiplies by 1/(1 − p) = 2: exact
    // up to the f32 inputs.
    if matches!(op, Op::PoolForward | Op::DropoutForward | Op::DropoutBackward) {
        return Ok(Tolerance::f32_elementwise());
    }
    let largest = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scale = match shape {
        // Batch-norm outputs are O(1) whatever their own size (a mean near
        // zero is still computed from values near 2).
        Shape::Norm(_) => NORM_CONDITIONING * largest.max(1.0),
        _ => largest,
    };
    Ok(Tolerance::f32_reduction(reduction_len(op, shape, output)?, scale))
}

/// The op whose oracle run covers `op`: conv's dx, dw and db alone are
/// picked from one full backward.
fn oracle_op(op: Op) -> Op {
    match op {
        Op::ConvBackwardDx | Op::ConvBackwardDw | Op::ConvBackwardDb => Op::ConvBackward,
        other => other,
    }
}

/// The f64 oracle's outputs, computed on demand and cached per (shape, op).
pub struct Oracle<O: Backend<Elem = f64>> {
    backend: O,
    cache: HashMap<(&'static str, Op), Vec<Tensor<f64>>>,
}

impl<O: Backend<Elem = f64>> Oracle<O> {
    pub fn new(backend: O) -> Self {
        Self { backend, cache: HashMap::new() }
    }

    /// Runs the oracle for what `op` on `shape` needs, unless cached.
    pub fn prepare(&mut self, op: Op, shape: &Shape, inputs: &Inputs) -> Result<()> {
        let key = (shape.name(), oracle_op(op));
        if self.cache.contains_key(&key) {
            return Ok(());
        }
        let device = upload(&self.backend, inputs)?;
        let outputs = run_op(&self.backend, key.1, shape, &device)?;
        let host = outputs.iter().map(|t| self.backend.download(t)).collect::<Result<Vec<_>>>()?;
        self.cache.insert(key, host);
        Ok(())
    }

    /// The expected outputs of `op` on `shape`, in the order of
    /// [`output_names`]; [`Oracle::prepare`] must have run.
    pub fn expected(&self, op: Op, shape: &Shape) -> Result<Vec<&Tensor<f64>>> {
        let all = self.cache.get(&(shape.name(), oracle_op(op))).ok_or_else(|| missing("prepared oracle output"))?;
        let pick = |i: usize| all.get(i).ok_or_else(|| missing("oracle output"));
        match op {
            Op::ConvBackwardDx => Ok(vec![pick(0)?]),
            Op::ConvBackwardDw => Ok(vec![pick(1)?]),
            Op::ConvBackwardDb => Ok(vec![pick(2)?]),
            _ => Ok(all.iter().collect()),
        }
    }

    /// Drops the cached outputs (between shapes, to bound memory).
    pub fn clear(&mut self) {
        self.cache.clear();
    }
}

/// Per-output comparisons of one run against the oracle.
#[derive(Debug, Clone)]
pub struct Validation {
    pub outputs: Vec<(&'static str, Comparison)>,
}

impl Validation {
    pub fn passed(&self) -> bool {
        self.outputs.iter().all(|(_, c)| c.passed())
    }
    pub fn max_abs_err(&self) -> f64 {
        self.outputs.iter().fold(0.0, |m, (_, c)| m.max(c.max_abs_err))
    }
    pub fn max_rel_err(&self) -> f64 {
        self.outputs.iter().fold(0.0, |m, (_, c)| m.max(c.max_rel_err))
    }
    /// The failing outputs, each with its worst elements.
    pub fn failures(&self) -> String {
        let failing = self.outputs.iter().filter(|(_, c)| !c.passed());
        failing.map(|(name, c)| format!("{name}: {c}")).collect::<Vec<_>>().join("\n")
    }
}

/// Downloads `outputs` and compares them with `expected`.
pub fn validate<B: Backend>(
    backend: &B,
    op: Op,
    shape: &Shape,
    outputs: &[B::Tensor],
    expected: &[&Tensor<f64>],
) -> Result<Validation> {
    let names = output_names(op);
    if outputs.len() != names.len() || expected.len() != names.len() {
        return Err(missing("output (count mismatch)"));
    }
    let mut result = Vec::new();
    for ((name, actual), want) in names.iter().zip(outputs).zip(expected) {
        if actual.shape() != want.shape() {
            return Err(Error::shape(
                "harness validate",
                format!("{name} has shape {:?}, expected {:?}", actual.shape(), want.shape()),
            ));
        }
        let host = backend.download(actual)?;
        let tol = tolerance(op, shape, name, want.data())?;
        result.push((*name, compare(host.data(), want.data(), &tol)?));
    }
    Ok(Validation { outputs: result })
}

/// Validates a dropout output drawn with a mask other than ours (a peer's
/// own generator cannot match [`kernels_core::DropoutMask`] bit for bit):
/// every element must be 0 or input · 1/(1 − p) (f32 element-wise), and the
/// kept fraction must lie within 6 standard deviations of 1 − p. Inputs
/// that are exactly 0 say nothing about the mask and are not counted.
pub fn validate_dropout_pattern(name: &'static str, input: &[f32], output: &[f32], p: f64) -> Result<Validation> {
    if input.len() != output.len() {
        return Err(Error::shape(
            "harness dropout check",
            format!("{} outputs for {} inputs", output.len(), input.len()),
        ));
    }
    let scale = 1.0 / (1.0 - p);
    let expected: Vec<f64> =
        input.iter().zip(output).map(|(&x, &y)| if y == 0.0 { 0.0 } else { x as f64 * scale }).collect();
    let values = compare(output, &expected, &Tolerance::f32_elementwise())?;
    let (kept, counted) = input
        .iter()
        .zip(output)
        .filter(|(x, _)| **x != 0.0)
        .fold((0usize, 0usize), |(k, n), (_, y)| (k + usize::from(*y != 0.0), n + 1));
    let counted = counted.max(1) as f64;
    let sd = (p * (1.0 - p) / counted).sqrt();
    let tol = Tolerance::new(format!("kept fraction within 6 sd ({sd:.2e}) of 1 - p"), 6.0 * sd, 0.0);
    let fraction = compare(&[kept as f64 / counted], &[1.0 - p], &tol)?;
    Ok(Validation { outputs: vec![(name, values), ("kept fraction", fraction)] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Family, Shape};

    #[test]
    fn every_op_runs_on_its_family_and_the_oracle_agrees_with_itself() {
        let nn = Naive::<f64>::new();
        for shape in Shape::all().into_iter().filter(|s| matches!(s.name(), "lenet-p1" | "lenet-bn3")) {
            let inputs = Inputs::generate(&shape).unwrap();
            let mut oracle = Oracle::new(Naive::<f64>::new());
            let device = upload(&nn, &inputs).unwrap();
            for op in Op::ALL {
                if op.family() != shape.family() {
                    assert!(run_op(&nn, op, &shape, &device).is_err(), "{} on {}", op.name(), shape.name());
                    continue;
                }
                oracle.prepare(op, &shape, &inputs).unwrap();
                let outputs = run_op(&nn, op, &shape, &device).unwrap();
                assert_eq!(outputs.len(), output_names(op).len(), "{}", op.name());
                let v = validate(&nn, op, &shape, &outputs, &oracle.expected(op, &shape).unwrap()).unwrap();
                assert!(v.passed() && v.max_abs_err() == 0.0, "{}: {}", op.name(), v.failures());
            }
        }
    }

    #[test]
    fn max_and_average_pooling_are_kept_apart() {
        let shape = Shape::parse("lenet-p1").unwrap();
        let inputs = Inputs::generate(&shape).unwrap();
        let mut oracle = Oracle::new(Naive::<f64>::new());
        oracle.prepare(Op::PoolForward, &shape, &inputs).unwrap();
        oracle.prepare(Op::AvgPoolForward, &shape, &inputs).unwrap();
        let max = oracle.expected(Op::PoolForward, &shape).unwrap()[0].data().to_vec();
        let avg = oracle.expected(Op::AvgPoolForward, &shape).unwrap()[0];
        // Feeding max pooling's result to the average-pool check fails it.
        let tol = tolerance(Op::AvgPoolForward, &shape, "y", avg.data()).unwrap();
        assert!(!compare(&max, avg.data(), &tol).unwrap().passed());
    }

    #[test]
    fn norm_inputs_carry_the_reference_statistics() {
        let shape = Shape::parse("lenet-bn3").unwrap();
        assert_eq!(shape.family(), Family::Norm);
        let inputs = Inputs::generate(&shape).unwrap();
        let n = inputs.norm.as_ref().unwrap();
        assert_eq!((inputs.x.shape(), n.save_mean.shape()), (&[256, 120][..], &[120][..]));
        // The per-feature offsets show in the means: they are not all near 0.
        assert!(n.save_mean.data().iter().any(|m| m.abs() > 0.3), "{:?}", n.save_mean.data());
        let names: Vec<&str> = inputs.named().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["x", "w", "b", "dy", "running_mean", "running_var", "save_mean", "save_invstd"]);
    }

    #[test]
    fn the_dropout_pattern_check_accepts_another_mask_and_refuses_wrong_values() {
        let x: Vec<f32> = (0..4000).map(|i| (i as f32 - 1999.5) / 1000.0).collect();
        let other_mask: Vec<f32> = x.iter().enumerate().map(|(i, v)| if i % 2 == 0 { 2.0 * v } else { 0.0 }).collect();
        assert!(validate_dropout_pattern("y", &x, &other_mask, 0.5).unwrap().passed());
        let unscaled: Vec<f32> = x.iter().enumerate().map(|(i, v)| if i % 2 == 0 { *v } else { 0.0 }).collect();
        let v = validate_dropout_pattern("y", &x, &unscaled, 0.5).unwrap();
        assert!(!v.passed() && v.failures().starts_with("y: 2000 of 4000"), "{}", v.failures());
        let kept_all: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
        let v = validate_dropout_pattern("y", &x, &kept_all, 0.5).unwrap();
        assert!(!v.passed() && v.failures().starts_with("kept fraction: 1 of 1"), "{}", v.failures());
    }
}
