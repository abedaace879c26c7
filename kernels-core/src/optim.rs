//! Optimiser update rules, as PyTorch defines them, and the per-parameter
//! state a backend keeps on its device.
//!
//! With g the gradient, p the parameter and t the 1-based step:
//! - SGD:       p -= lr·g
//! - Momentum:  v = μ·v + g;            p -= lr·v
//! - Nesterov:  v = μ·v + g;            p -= lr·(g + μ·v)
//! - AdaGrad:   s += g²;                p -= lr·g / (√s + ε)
//! - RMSprop:   s = α·s + (1−α)·g²;     p -= lr·g / (√s + ε)
//! - Adam:      m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;
//!   p -= lr·(m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε)
//!
//! Weight decay, when non-zero, adds wd·p to g first (PyTorch's L2 form).

use crate::error::{Error, Result};
use crate::float::Float;
use crate::params::check_same_shape;

/// An optimiser and its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Sgd { lr: f64, weight_decay: f64 },
    Momentum { lr: f64, momentum: f64, weight_decay: f64 },
    Nesterov { lr: f64, momentum: f64, weight_decay: f64 },
    AdaGrad { lr: f64, eps: f64, weight_decay: f64 },
    RmsProp { lr: f64, alpha: f64, eps: f64, weight_decay: f64 },
    Adam { lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64 },
}

impl Optimizer {
    pub fn sgd(lr: f64) -> Self {
        Self::Sgd { lr, weight_decay: 0.0 }
    }
    pub fn momentum(lr: f64, momentum: f64) -> Self {
        Self::Momentum { lr, momentum, weight_decay: 0.0 }
    }
    pub fn nesterov(lr: f64, momentum: f64) -> Self {
        Self::Nesterov { lr, momentum, weight_decay: 0.0 }
    }
    pub fn adagrad(lr: f64) -> Self {
        Self::AdaGrad { lr, eps: 1e-10, weight_decay: 0.0 }
    }
    pub fn rmsprop(lr: f64) -> Self {
        Self::RmsProp { lr, alpha: 0.99, eps: 1e-8, weight_decay: 0.0 }
    }
    pub fn adam(lr: f64) -> Self {
        Self::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }

    /// Lower-case name ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam").
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "sgd",
            Self::Momentum { .. } => "momentum",
            Self::Nesterov { .. } => "nesterov",
            Self::AdaGrad { .. } => "adagrad",
            Self::RmsProp { .. } => "rmsprop",
            Self::Adam { .. } => "adam",
        }
    }

    pub fn lr(&self) -> f64 {
        match *self {
            Self::Sgd { lr, .. }
            | Self::Momentum { lr, .. }
            | Self::Nesterov { lr, .. }
            | Self::AdaGrad { lr, .. }
            | Self::RmsProp { lr, .. }
            | Self::Adam { lr, .. } => lr,
        }
    }

    pub fn weight_decay(&self) -> f64 {
        match *self {
            Self::Sgd { weight_decay, .. }
            | Self::Momentum { weight_decay, .. }
            | Self::Nesterov { weight_decay, .. }
            | Self::AdaGrad { weight_decay, .. }
            | Self::RmsProp { weight_decay, .. }
            | Self::Adam { weight_decay, .. } => weight_decay,
        }
    }

    /// How many state buffers of the parameter's shape the rule keeps.
    pub fn state_slots(&self) -> usize {
        match self {
            Self::Sgd { .. } => 0,
            Self::Momentum { .. } | Self::Nesterov { .. } | Self::AdaGrad { .. } | Self::RmsProp { .. } => 1,
            Self::Adam { .. } => 2,
        }
    }

    /// Checks the hyper-parameters in the type the backends compute with
    /// (f32): finite, lr and eps > 0 after rounding to f32 (1e-50 would
    /// round to 0, 1e39 to infinity), weight decay ≥ 0, coefficients in
    /// [0, 1).
    pub fn validate(&self) -> Result<()> {
        let op = "optimizer";
        let bad = |what: &str, v: f64| {
            Error::param(
                op,
                format!(
                    "{} {what} = {v} is out of range (the backends compute in f32: it must stay finite and, where it must be positive, nonzero as an f32)",
                    self.name()
                ),
            )
        };
        let finite_f32 = |v: f64| v.is_finite() && (v as f32).is_finite();
        let positive = |what: &str, v: f64| if finite_f32(v) && v as f32 > 0.0 { Ok(()) } else { Err(bad(what, v)) };
        positive("lr", self.lr())?;
        if !(finite_f32(self.weight_decay()) && self.weight_decay() >= 0.0) {
            return Err(bad("weight_decay", self.weight_decay()));
        }
        let unit = |what: &str, v: f64| if (0.0..1.0).contains(&v) { Ok(()) } else { Err(bad(what, v)) };
        match *self {
            Self::Sgd { .. } => Ok(()),
            Self::Momentum { momentum, .. } | Self::Nesterov { momentum, .. } => unit("momentum", momentum),
            Self::AdaGrad { eps, .. } => positive("eps", eps),
            Self::RmsProp { alpha, eps, .. } => unit("alpha", alpha).and(positive("eps", eps)),
            Self::Adam { beta1, beta2, eps, .. } => {
                unit("beta1", beta1).and(unit("beta2", beta2)).and(positive("eps", eps))
            }
        }
    }

    /// Scalars a device kernel needs for step `t` (1-based), in f32: what the
    /// OpenCL kernels take as arguments. Bias corrections are folded in here,
    /// once per step, rather than per element.
    pub fn step_scalars(&self, t: u64) -> StepScalars {
        let ti = t.min(i32::MAX as u64) as i32;
        match *self {
            Self::Adam { lr, beta1, beta2, eps, weight_decay } => StepScalars {
                lr: lr as f32,
                a: beta1 as f32,
                b: beta2 as f32,
                one_minus_a: (1.0 - beta1) as f32,
                one_minus_b: (1.0 - beta2) as f32,
                eps: eps as f32,
                weight_decay: weight_decay as f32,
                correction1: (1.0 - beta1.powi(ti)) as f32,
                correction2: (1.0 - beta2.powi(ti)) as f32,
            },
            Self::Momentum { momentum, .. } | Self::Nesterov { momentum, .. } => {
                StepScalars { a: momentum as f32, ..StepScalars::plain(self) }
            }
            Self::RmsProp { alpha, eps, .. } => StepScalars {
                a: alpha as f32,
                one_minus_a: (1.0 - alpha) as f32,
                eps: eps as f32,
                ..StepScalars::plain(self)
            },
            Self::AdaGrad { eps, .. } => StepScalars { eps: eps as f32, ..StepScalars::plain(self) },
            Self::Sgd { .. } => StepScalars::plain(self),
        }
    }

    /// Checks the operands of [`Optimizer::update_slice`] by length: as many
    /// state buffers as the rule keeps, every buffer and the gradient as long
    /// as the parameter, and t ≥ 1. Backends that split an update into
    /// blocks call it once for the whole tensor.
    pub fn check_slices(&self, param: usize, grad: usize, slots: &[usize], t: u64) -> Result<()> {
        let op = "optimizer_step";
        if slots.len() != self.state_slots() {
            return Err(Error::param(
                op,
                format!("{} needs {} state buffers, got {}", self.name(), self.state_slots(), slots.len()),
            ));
        }
        if grad != param || slots.iter().any(|&len| len != param) {
            return Err(Error::shape(op, format!("param has {param} elements, grad {grad}, state buffers {slots:?}")));
        }
        if t == 0 {
            return Err(Error::param(op, "step t is 1-based, got 0"));
        }
        Ok(())
    }

    /// The update rule on host slices: the reference every backend matches.
    /// `slots` holds `state_slots()` buffers of the parameter's length; `t` is
    /// the 1-based step number. Mismatched lengths, a wrong slot count or
    /// t = 0 are an error, checked before anything is written.
    pub fn update_slice<T: Float>(&self, param: &mut [T], grad: &[T], slots: &mut [&mut [T]], t: u64) -> Result<()> {
        let slot_lens: Vec<usize> = slots.iter().map(|s| s.len()).collect();
        self.check_slices(param.len(), grad.len(), &slot_lens, t)?;
        let f = T::from_f64;
        let wd = f(self.weight_decay());
        let ti = t.min(i32::MAX as u64) as i32;
        let lr = f(self.lr());
        let g_at = |i: usize, p: T| if self.weight_decay() != 0.0 { grad[i] + wd * p } else { grad[i] };
        match (*self, slots) {
            (Self::Sgd { .. }, []) => {
                for (i, p) in param.iter_mut().enumerate() {
                    *p -= lr * g_at(i, *p);
                }
            }
            (Self::Momentum { momentum, .. }, [v]) | (Self::Nesterov { momentum, .. }, [v]) => {
                let mu = f(momentum);
                let nesterov = matches!(self, Self::Nesterov { .. });
                for (i, p) in param.iter_mut().enumerate() {
                    let g = g_at(i, *p);
                    v[i] = mu * v[i] + g;
                    *p -= lr * if nesterov { g + mu * v[i] } else { v[i] };
                }
            }
            (Self::AdaGrad { eps, .. }, [s]) => {
                for (i, p) in param.iter_mut().enumerate() {
                    let g = g_at(i, *p);
                    s[i] += g * g;
                    *p -= lr * g / (s[i].sqrt() + f(eps));
                }
            }
            (Self::RmsProp { alpha, eps, .. }, [s]) => {
                // 1 − α is formed in f64 and rounded once (as PyTorch does):
                // from an f32 α its relative error would be ε·α/(1 − α).
                let (a, one_minus_a) = (f(alpha), f(1.0 - alpha));
                for (i, p) in param.iter_mut().enumerate() {
                    let g = g_at(i, *p);
                    s[i] = a * s[i] + one_minus_a * g * g;
                    *p -= lr * g / (s[i].sqrt() + f(eps));
                }
            }
            (Self::Adam { beta1, beta2, eps, .. }, [m, v]) => {
                let (b1, b2) = (f(beta1), f(beta2));
                // As for RMSprop: 1 − β in f64, rounded once.
                let (one_minus_b1, one_minus_b2) = (f(1.0 - beta1), f(1.0 - beta2));
                let c1 = f(1.0 - beta1.powi(ti));
                let c2 = f(1.0 - beta2.powi(ti));
                for (i, p) in param.iter_mut().enumerate() {
                    let g = g_at(i, *p);
                    m[i] = b1 * m[i] + one_minus_b1 * g;
                    v[i] = b2 * v[i] + one_minus_b2 * g * g;
                    *p -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + f(eps));
                }
            }
            // Every rule with its slot count is matched above, and the count
            // was checked on entry: nothing else can reach here.
            _ => {}
        }
        Ok(())
    }
}

/// Per-step scalars for device kernels (see [`Optimizer::step_scalars`]).
/// `a` is momentum, alpha or beta1; `b` is beta2. `one_minus_a` and
/// `one_minus_b` are 1 − a and 1 − b formed in f64 and rounded once: a kernel
/// that formed them from the f32 `a` would carry a relative error of
/// ε·a/(1 − a) (1.4e-3 at β = 0.99999), far from PyTorch's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    pub lr: f32,
    pub a: f32,
    pub b: f32,
    pub one_minus_a: f32,
    pub one_minus_b: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub correction1: f32,
    pub correction2: f32,
}

impl StepScalars {
    fn plain(opt: &Optimizer) -> Self {
        Self {
            lr: opt.lr() as f32,
            a: 0.0,
            b: 0.0,
            one_minus_a: 1.0,
            one_minus_b: 1.0,
            eps: 0.0,
            weight_decay: opt.weight_decay() as f32,
            correction1: 1.0,
            correction2: 1.0,
        }
    }
}

/// One parameter's optimiser state on a backend: the step count and the
/// rule's buffers (velocity, square averages, moments), zero-initialised.
#[derive(Debug)]
pub struct OptimizerState<T> {
    pub optimizer: Optimizer,
    /// Steps taken so far; the next update uses t = step + 1.
    pub step: u64,
    pub slots: Vec<T>,
}

/// Validates an optimiser step's operands: the hyper-parameters, param and
/// grad shapes, and the state's slots.
pub fn check_step(optimizer: &Optimizer, param: &[usize], grad: &[usize], slot_shapes: &[&[usize]]) -> Result<()> {
    optimizer.validate()?;
    check_same_shape("optimizer_step", "param", param, "grad", grad)?;
    if slot_shapes.len() != optimizer.state_slots() {
        return Err(Error::param(
            "optimizer_step",
            format!(
                "{} needs {} state buffers, the state holds {}",
                optimizer.name(),
                optimizer.state_slots(),
                slot_shapes.len()
            ),
        ));
    }
    for s in slot_shapes {
        check_same_shape("optimizer_step", "param", param, "state buffer", s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(opt: Optimizer, steps: u64) -> f64 {
        // Minimise (p - 3)² from p = 0; every rule must approach 3.
        let mut p = [0.0f64];
        let mut slots = vec![vec![0.0f64]; opt.state_slots()];
        for t in 1..=steps {
            let g = [2.0 * (p[0] - 3.0)];
            let mut views: Vec<&mut [f64]> = slots.iter_mut().map(|s| s.as_mut_slice()).collect();
            opt.update_slice(&mut p, &g, &mut views, t).unwrap();
        }
        p[0]
    }

    #[test]
    fn every_rule_minimises_a_quadratic() {
        for opt in [
            Optimizer::sgd(0.1),
            Optimizer::momentum(0.05, 0.9),
            Optimizer::nesterov(0.05, 0.9),
            Optimizer::adagrad(0.5),
            Optimizer::rmsprop(0.01),
            Optimizer::adam(0.05),
        ] {
            let p = run(opt, 2000);
            assert!((p - 3.0).abs() < 1e-2, "{} ended at {p}", opt.name());
        }
    }

    #[test]
    fn first_adam_step_is_lr_times_sign() {
        // With bias correction, Adam's first step is lr·g/(|g| + ε) ≈ lr.
        let opt = Optimizer::adam(0.01);
        let mut p = [1.0f64];
        let (mut m, mut v) = ([0.0f64], [0.0f64]);
        opt.update_slice(&mut p, &[4.0], &mut [&mut m, &mut v], 1).unwrap();
        assert!((p[0] - 0.99).abs() < 1e-9, "{}", p[0]);
    }

    #[test]
    fn one_minus_beta_is_rounded_once_in_f32() {
        // v after one step is (1 − β2)·g²; in f32 it must be the f64 value to
        // within f32 rounding, also for β close to 1 (PyTorch forms 1 − β in
        // double). From the f32 β, the error was 1.4e-3 relative at 0.99999.
        for beta in [0.999, 0.9999, 0.99999, 0.999999] {
            let exact = (1.0 - beta) * 9.0;
            let adam = Optimizer::Adam { lr: 0.01, beta1: beta, beta2: beta, eps: 1e-8, weight_decay: 0.0 };
            let (mut p, mut m, mut v) = ([1.0f32], [0.0f32], [0.0f32]);
            adam.update_slice(&mut p, &[3.0], &mut [&mut m, &mut v], 1).unwrap();
            let rmsprop = Optimizer::RmsProp { lr: 0.01, alpha: beta, eps: 1e-8, weight_decay: 0.0 };
            let (mut q, mut s) = ([1.0f32], [0.0f32]);
            rmsprop.update_slice(&mut q, &[3.0], &mut [&mut s], 1).unwrap();
            for (what, got, want) in
                [("adam m", m[0], (1.0 - beta) * 3.0), ("adam v", v[0], exact), ("rmsprop", s[0], exact)]
            {
                let rel = (f64::from(got) - want).abs() / want;
                assert!(rel < 2.0 * f64::from(f32::EPSILON), "{what} at β = {beta}: {got} vs {want} (rel {rel:e})");
            }
            let scalars = adam.step_scalars(1);
            assert_eq!(scalars.one_minus_a, (1.0 - beta) as f32);
            assert_eq!(scalars.one_minus_b, (1.0 - beta) as f32);
        }
    }

    #[test]
    fn invalid_hyperparameters_are_refused() {
        assert!(Optimizer::sgd(0.0).validate().is_err());
        assert!(Optimizer::sgd(f64::NAN).validate().is_err());
        assert!(Optimizer::momentum(0.1, 1.0).validate().is_err());
        assert!(Optimizer::adam(0.1).validate().is_ok());
        // Valid as f64 but not as the f32 the backends use.
        assert!(Optimizer::sgd(1e39).validate().is_err());
        assert!(Optimizer::sgd(1e-50).validate().is_err());
        assert!(
            Optimizer::Adam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-50, weight_decay: 0.0 }.validate().is_err()
        );
        assert!(Optimizer::Sgd { lr: 0.1, weight_decay: 1e39 }.validate().is_err());
        assert!(check_step(&Optimizer::adam(0.1), &[3], &[3], &[&[3]]).is_err());
        assert!(check_step(&Optimizer::sgd(0.1), &[3], &[4], &[]).is_err());
        let mut p = [0.0f32; 3];
        assert!(Optimizer::adam(0.1).update_slice(&mut p, &[0.0; 3], &mut [], 1).is_err());
        assert!(Optimizer::sgd(0.1).update_slice(&mut p, &[0.0; 2], &mut [], 1).is_err());
        assert!(Optimizer::sgd(0.1).update_slice(&mut p, &[0.0; 3], &mut [], 0).is_err());
    }
}
