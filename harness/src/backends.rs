//! The backends the harness can measure, built once per run, and the
//! OpenCL-only pieces: event profiling and the device's best GEMM rate.

use std::time::Duration;

use kernels_core::{Backend, Tensor};
use kernels_im2col::Im2col;
use kernels_naive::Naive;
use kernels_opencl::OpenCl;

use crate::ceilings::Ceiling;
use crate::cli::Selection;
use crate::error::{HarnessError, Result};
use crate::measure::{DeviceProfile, ProfileCounters};
use crate::timing::{self, Policy};

/// A backend by its command-line name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    Naive,
    Im2col,
    OpenCl,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [BackendKind::Naive, BackendKind::Im2col, BackendKind::OpenCl];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Naive => "naive",
            BackendKind::Im2col => "im2col",
            BackendKind::OpenCl => "opencl",
        }
    }

    pub fn parse(name: &str) -> Option<BackendKind> {
        BackendKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The selected backends, constructed.
pub struct Backends {
    pub naive: Option<Naive<f32>>,
    pub im2col: Option<Im2col>,
    pub opencl: Option<OpenCl>,
}

impl Backends {
    /// Builds each selected backend; `threads` sizes im2col's pool and
    /// `opencl_device` picks the OpenCL device (else OpenCl::new's choice).
    /// OpenCL failing to start is an error when it was named on the command
    /// line, and a note in `notes` when it came in through `all`.
    pub fn build(
        selection: &Selection,
        threads: usize,
        isa: Option<kernels_im2col::Isa>,
        force: kernels_im2col::Forced,
        opencl_device: Option<&str>,
        notes: &mut Vec<String>,
    ) -> Result<Backends> {
        let setup = |kind: BackendKind, e: kernels_core::Error| {
            HarnessError::Setup(format!("cannot start backend {}: {e}", kind.name()))
        };
        let has = |k| selection.backends.contains(&k);
        let im2col = if has(BackendKind::Im2col) {
            let im2col = Im2col::with_threads(threads).map_err(|e| setup(BackendKind::Im2col, e))?;
            let targets = kernels_im2col::TileTargets { force, ..im2col.tile_targets() };
            let im2col = im2col.with_tile_targets(targets);
            Some(match isa {
                Some(isa) => im2col.with_isa(isa),
                None => im2col,
            })
        } else {
            None
        };
        let opencl = if has(BackendKind::OpenCl) {
            let cl = match opencl_device {
                Some(selector) => OpenCl::with_device(selector),
                None => OpenCl::new(),
            };
            match cl {
                Ok(cl) => Some(cl),
                Err(e) if !selection.required.contains(&BackendKind::OpenCl) => {
                    notes.push(format!("opencl skipped: it could not start ({e})"));
                    None
                }
                Err(e) => return Err(setup(BackendKind::OpenCl, e)),
            }
        } else {
            None
        };
        Ok(Backends { naive: has(BackendKind::Naive).then(Naive::<f32>::new), im2col, opencl })
    }

    /// The backends that started, in order.
    pub fn kinds(&self) -> Vec<BackendKind> {
        let started = [self.naive.is_some(), self.im2col.is_some(), self.opencl.is_some()];
        BackendKind::ALL.into_iter().zip(started).filter(|(_, on)| *on).map(|(k, _)| k).collect()
    }
}

/// OpenCL event profiling behind [`DeviceProfile`].
pub struct ClProfile<'a>(pub &'a OpenCl);

impl DeviceProfile for ClProfile<'_> {
    fn reset(&self) {
        self.0.reset_profile();
    }
    fn read(&self) -> Option<ProfileCounters> {
        let p = self.0.try_profile().ok()?;
        Some(ProfileCounters {
            kernel_ns: p.kernel_ns,
            transfer_ns: p.transfer_ns,
            launches: p.launches,
            transfers: p.transfers,
        })
    }
}

/// y = x·wᵀ on n x n matrices checked at a few elements against f64 sums,
/// so a broken GEMM cannot set the ceiling.
fn check_square_gemm(cl: &OpenCl, n: usize, x: &Tensor<f32>, w: &Tensor<f32>, y: &Tensor<f32>) -> Result<()> {
    for (i, j) in [(0, 0), (n - 1, n - 1), (n / 3, n / 2), (n / 2, 1)] {
        let want: f64 = (0..n).map(|p| x.data()[i * n + p] as f64 * w.data()[j * n + p] as f64).sum();
        let got = y.data()[i * n + j] as f64;
        if (got - want).abs() > 1e-3 * (1.0 + want.abs()) {
            return Err(HarnessError::Validation {
                stage: "before timing",
                op: format!("opencl gemm ceiling n={n}"),
                shape: format!("{n}x{n}"),
                backend: format!("opencl ({})", cl.device_name()),
                detail: format!("y[{i}][{j}] = {got}, expected {want}"),
            });
        }
    }
    Ok(())
}

/// The best rate of the OpenCL backend's GEMM (`linear_forward` without
/// bias) over square sizes, larger sizes only while a call stays short.
pub fn opencl_gemm_ceiling(cl: &OpenCl, quick: bool) -> Result<Ceiling> {
    let policy = Policy {
        warmup: Duration::from_millis(if quick { 20 } else { 200 }),
        min_repeats: if quick { 2 } else { 5 },
        min_time: Duration::from_millis(if quick { 100 } else { 800 }),
        time_cap: Duration::from_secs(if quick { 1 } else { 4 }),
        max_repeats: 50,
        rounds: 1,
    };
    let sizes: &[usize] = if quick { &[256] } else { &[256, 512, 1024, 2048] };
    let mut best: Option<Ceiling> = None;
    for &n in sizes {
        let x = Tensor::from_fn(&[n, n], |i| ((i % 17) as f32 - 8.0) * 0.05);
        let w = Tensor::from_fn(&[n, n], |i| ((i % 11) as f32 - 5.0) * 0.05);
        let (dx, dw) = (cl.upload(&x)?, cl.upload(&w)?);
        let y = cl.download(&cl.linear_forward(&dx, &dw, None)?)?;
        check_square_gemm(cl, n, &x, &w, &y)?;
        let (stats, _) = timing::time(&policy, Duration::ZERO, || -> Result<_> {
            let y = cl.linear_forward(&dx, &dw, None)?;
            cl.sync()?;
            Ok(y)
        })?;
        let what = format!("OpenCL GEMM (linear_forward) n={n} on {}", cl.device_name());
        let ceiling = Ceiling::new(what, 2.0 * (n as f64).powi(3), "GFLOP/s", stats);
        if best.as_ref().is_none_or(|b| ceiling.rate > b.rate) {
            best = Some(ceiling);
        }
        // Stop growing once one call takes a quarter of a second.
        if stats.median_s > 0.25 {
            break;
        }
    }
    best.ok_or_else(|| HarnessError::Setup("no OpenCL GEMM size was measured".into()))
}
