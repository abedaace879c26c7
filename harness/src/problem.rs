//! Seeded inputs for every suite shape, the f64 oracle's outputs (computed
//! once per shape and pass, then shared by every backend), and the named
//! tolerance each output is judged by.
//!
//! Inputs are drawn in f32 and widened to f64 for the oracle, so the oracle
//! and the timed backends see bit-identical inputs (max pooling picks the
//! same winners).

use std::collections::HashMap;

use kernels_core::{
    Backend, Comparison, Error, GradRequest, Grads, PoolKind, Result, Shaped, SplitMix64, Tensor, Tolerance, compare,
};

use crate::ops::{Op, Shape};

/// Host inputs of one shape: x, weight and bias (conv and linear), and an
/// output gradient dy for the backward ops.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub x: Tensor<f32>,
    pub w: Option<Tensor<f32>>,
    pub b: Option<Tensor<f32>>,
    pub dy: Tensor<f32>,
}

/// A stable seed per shape name (FNV-1a), so runs are reproducible.
fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn uniform(rng: &mut SplitMix64, shape: &[usize]) -> Tensor<f32> {
    Tensor::from_fn(shape, |_| rng.uniform(-1.0, 1.0) as f32)
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
                }
            }
            Shape::Pool(case) => {
                let g = case.geometry(PoolKind::Max)?;
                Inputs { x: uniform(&mut rng, &g.x_shape()), w: None, b: None, dy: uniform(&mut rng, &g.y_shape()) }
            }
            Shape::Linear(case) => {
                let g = case.geometry()?;
                Inputs {
                    x: uniform(&mut rng, &g.x_shape()),
                    w: Some(uniform(&mut rng, &g.w_shape())),
                    b: Some(uniform(&mut rng, &[g.o])),
                    dy: uniform(&mut rng, &g.y_shape()),
                }
            }
        })
    }
}

/// Inputs uploaded to one backend.
pub struct DeviceInputs<B: Backend> {
    pub x: B::Tensor,
    pub w: Option<B::Tensor>,
    pub b: Option<B::Tensor>,
    pub dy: B::Tensor,
}

/// Uploads `inputs` to `backend`, converting f32 to the backend's element type.
pub fn upload<B: Backend>(backend: &B, inputs: &Inputs) -> Result<DeviceInputs<B>> {
    let put = |t: &Tensor<f32>| backend.upload(&t.cast::<B::Elem>());
    Ok(DeviceInputs {
        x: put(&inputs.x)?,
        w: inputs.w.as_ref().map(put).transpose()?,
        b: inputs.b.as_ref().map(put).transpose()?,
        dy: put(&inputs.dy)?,
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

/// Runs `op` on `shape` once and returns its outputs in the order of
/// [`output_names`]. Nothing is synchronised here: the caller decides.
pub fn run_op<B: Backend>(backend: &B, op: Op, shape: &Shape, d: &DeviceInputs<B>) -> Result<Vec<B::Tensor>> {
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
            let params = case.params(PoolKind::Max);
            if op == Op::PoolForward {
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
    }
}

/// Names of the outputs `op` returns, in order.
pub fn output_names(op: Op) -> &'static [&'static str] {
    match op {
        Op::ConvForward | Op::PoolForward | Op::LinearForward => &["y"],
        Op::ConvBackward | Op::LinearBackward => &["dx", "dw", "db"],
        Op::ConvBackwardDx | Op::PoolBackward => &["dx"],
        Op::ConvBackwardDw => &["dw"],
        Op::ConvBackwardDb => &["db"],
    }
}

/// The length of the f32 reduction behind each element of `output`.
fn reduction_len(shape: &Shape, output: &str) -> Result<usize> {
    Ok(match shape {
        Shape::Conv(case) => {
            let g = case.geometry()?;
            match output {
                "y" => g.c * g.r * g.s + 1,
                "dx" => g.k * g.r * g.s,
                _ => g.n * g.oh * g.ow,
            }
        }
        // A max-pool dx element sums the dy of every window it wins.
        Shape::Pool(case) => case.window * case.window,
        Shape::Linear(case) => match output {
            "y" => case.inputs + 1,
            "dx" => case.outputs,
            _ => case.batch,
        },
    })
}

/// The tolerance `output` of `shape` is held to, scaled by the largest
/// |expected| element.
pub fn tolerance(shape: &Shape, output: &str, expected: &[f64]) -> Result<Tolerance> {
    if let (Shape::Pool(_), "y") = (shape, output) {
        // Max pooling selects, it does not round: exact up to the f32 inputs.
        return Ok(Tolerance::f32_elementwise());
    }
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    Ok(Tolerance::f32_reduction(reduction_len(shape, output)?, scale))
}

/// Forward or backward: the oracle runs each at most once per shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    Backward,
}

fn pass(op: Op) -> Pass {
    match op {
        Op::ConvForward | Op::PoolForward | Op::LinearForward => Pass::Forward,
        _ => Pass::Backward,
    }
}

/// The f64 oracle's outputs, computed on demand and cached per (shape, pass).
pub struct Oracle<O: Backend<Elem = f64>> {
    backend: O,
    cache: HashMap<(&'static str, Pass), Vec<Tensor<f64>>>,
}

impl<O: Backend<Elem = f64>> Oracle<O> {
    pub fn new(backend: O) -> Self {
        Self { backend, cache: HashMap::new() }
    }

    /// Runs the oracle for what `op` on `shape` needs, unless cached.
    pub fn prepare(&mut self, op: Op, shape: &Shape, inputs: &Inputs) -> Result<()> {
        let key = (shape.name(), pass(op));
        if self.cache.contains_key(&key) {
            return Ok(());
        }
        // The full pass: the forward, or every gradient in one call.
        let full = match (pass(op), shape) {
            (Pass::Forward, _) => op,
            (Pass::Backward, Shape::Conv(_)) => Op::ConvBackward,
            (Pass::Backward, Shape::Pool(_)) => Op::PoolBackward,
            (Pass::Backward, Shape::Linear(_)) => Op::LinearBackward,
        };
        let device = upload(&self.backend, inputs)?;
        let outputs = run_op(&self.backend, full, shape, &device)?;
        let host = outputs.iter().map(|t| self.backend.download(t)).collect::<Result<Vec<_>>>()?;
        self.cache.insert(key, host);
        Ok(())
    }

    /// The expected outputs of `op` on `shape`, in the order of
    /// [`output_names`]; [`Oracle::prepare`] must have run.
    pub fn expected(&self, op: Op, shape: &Shape) -> Result<Vec<&Tensor<f64>>> {
        let all = self.cache.get(&(shape.name(), pass(op))).ok_or_else(|| missing("prepared oracle output"))?;
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
        let tol = tolerance(shape, name, want.data())?;
        result.push((*name, compare(host.data(), want.data(), &tol)?));
    }
    Ok(Validation { outputs: result })
}
