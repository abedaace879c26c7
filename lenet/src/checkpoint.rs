//! Checkpoints in safetensors, loadable by PyTorch.
//!
//! Tensors: the parameters under PyTorch's `state_dict` names and shapes
//! (`conv1.weight [6, 1, 5, 5]`, ..., `fc3.bias [10]`; batch norm's
//! `bn1.weight`, `bn1.bias`, `bn1.running_mean`, `bn1.running_var` and, as
//! I64 scalars, `bn1.num_batches_tracked`, so `load_state_dict` is strict)
//! and the optimiser's buffers as `optim.<param>.<slot>` (slot 0 is
//! momentum, AdaGrad's or RMSprop's square sum, or Adam's first moment;
//! slot 1 Adam's second), all F32 but the batch counts.
//! `__metadata__` holds `format`, `model`, `epoch`, `step`, `seed`,
//! `activation`, `pool`, `dropout` (when the model has dropout layers),
//! `optimizer` and its hyper-parameters. A checkpoint without `model` is
//! LeNet-5's (written before there was a choice).
//!
//! A save writes a uniquely named temporary file beside `FILE` (created
//! exclusively, so a planted file or symlink is never written through),
//! syncs it, renames it over `FILE` and syncs the directory, so an
//! interrupted save leaves the previous checkpoint whole. A load refuses a
//! missing, extra or wrongly shaped tensor and unknown metadata.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use kernels_core::{Backend, Float, Optimizer, Shaped, Tensor};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{LenetError, Result};
use crate::model::{Activation, Architecture, LeNet, Model, Pooling};
use crate::train::Trainer;

const FORMAT: &str = "lenet-safetensors-1";

/// Everything a checkpoint holds, on the host.
#[derive(Debug, Clone)]
pub struct Checkpoint<T> {
    pub arch: Architecture,
    pub optimizer: Optimizer,
    pub epoch: usize,
    pub step: u64,
    pub seed: u64,
    /// Parameters in the model's `state_dict` order.
    pub params: Vec<Tensor<T>>,
    /// Batch norm's running statistics, in the model's order.
    pub running: Vec<Tensor<T>>,
    /// Optimiser buffers per parameter.
    pub slots: Vec<Vec<Tensor<T>>>,
}

fn optimizer_metadata(opt: &Optimizer, meta: &mut HashMap<String, String>) {
    let mut put = |k: &str, v: f64| {
        meta.insert(k.to_string(), format!("{v:e}"));
    };
    put("lr", opt.lr());
    put("weight_decay", opt.weight_decay());
    match *opt {
        Optimizer::Sgd { .. } => {}
        Optimizer::Momentum { momentum, .. } | Optimizer::Nesterov { momentum, .. } => put("momentum", momentum),
        Optimizer::AdaGrad { eps, .. } => put("eps", eps),
        Optimizer::RmsProp { alpha, eps, .. } => {
            put("alpha", alpha);
            put("eps", eps);
        }
        Optimizer::Adam { beta1, beta2, eps, .. } => {
            put("beta1", beta1);
            put("beta2", beta2);
            put("eps", eps);
        }
    }
    meta.insert("optimizer".into(), opt.name().into());
}

/// Downloads the trainer's parameters and optimiser state and writes them
/// to `path` (through a temporary file and a rename).
pub fn save<B: Backend>(be: &B, trainer: &Trainer<B>, path: &Path) -> Result<()> {
    let params = trainer.model.to_host(be)?;
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    // Checked before anything is written: a diverged run's state never
    // replaces a good checkpoint.
    let finite_bytes = |name: String, t: &Tensor<B::Elem>| match le_bytes(t) {
        Some(bytes) => Ok((name, t.shape().to_vec(), bytes)),
        None => Err(LenetError::NonFiniteState { path: path.to_path_buf(), tensor: name, kept: String::new() }),
    };
    let spec = trainer.model.spec();
    for (p, t) in spec.params.iter().zip(&params) {
        named.push(finite_bytes(p.name.clone(), t)?);
    }
    for ((name, _), t) in spec.running.iter().zip(&trainer.model.running_to_host(be)?) {
        named.push(finite_bytes(name.clone(), t)?);
    }
    for (p, state) in spec.params.iter().zip(&trainer.states) {
        for (i, slot) in state.slots.iter().enumerate() {
            named.push(finite_bytes(format!("optim.{}.{i}", p.name), &be.download(slot)?)?);
        }
    }
    // PyTorch counts the training batches each batch norm has seen; here
    // every step passes every layer once.
    let batches = i64::try_from(trainer.step).unwrap_or(i64::MAX).to_le_bytes().to_vec();
    let counts: Vec<(String, Vec<u8>)> = batch_norm_prefixes(&trainer.model.arch)
        .into_iter()
        .map(|prefix| (format!("{prefix}.num_batches_tracked"), batches.clone()))
        .collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("epoch".into(), trainer.epoch.to_string());
    meta.insert("step".into(), trainer.step.to_string());
    meta.insert("seed".into(), trainer.seed.to_string());
    meta.insert("model".into(), trainer.model.arch.model.name().into());
    if let Some(p) = trainer.model.arch.dropout {
        meta.insert("dropout".into(), format!("{p:e}"));
    }
    meta.insert("activation".into(), trainer.model.arch.activation.name().into());
    meta.insert("pool".into(), trainer.model.arch.pool.name().into());
    optimizer_metadata(&trainer.optimizer, &mut meta);

    let views = named
        .iter()
        .map(|(name, shape, bytes)| Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
        .chain(counts.iter().map(|(name, bytes)| Ok((name.clone(), TensorView::new(Dtype::I64, vec![], bytes)?))))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| LenetError::checkpoint(path, e.to_string()))?;
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| LenetError::checkpoint(path, e.to_string()))?;
    write_atomically(path, &bytes)
}

/// The tensor as little-endian f32 bytes, or None when a value is NaN or
/// infinite as the f32 that is written.
fn le_bytes<T: Float>(t: &Tensor<T>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(4 * t.data().len());
    for v in t.data() {
        let v = v.to_f64() as f32;
        if !v.is_finite() {
            return None;
        }
        out.extend(v.to_le_bytes());
    }
    Some(out)
}

/// Writes `bytes` to a fresh temporary file in `path`'s directory (created
/// exclusively under a random name, so an existing file or symlink is never
/// opened and followed), flushes it to disk, renames it over `path` and
/// syncs the directory so the rename itself survives a crash. A crash or an
/// error mid-write never leaves a half-written `path`; the temporary file is
/// removed on every error.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let prefix = format!(".{}.", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // A checkpoint gets the mode `File::create` would give it (0666 less the
    // umask), not the temporary file's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(|e| LenetError::io(dir, e))?;
    tmp.write_all(bytes).and_then(|_| tmp.as_file().sync_all()).map_err(|e| LenetError::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| LenetError::io(path, e.error))?;
    sync_dir(dir)
}

/// The directory a path's file lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a directory's entries (the rename) to disk.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| LenetError::io(dir, e))
}

/// Directories cannot be opened as files here; the rename is what there is.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// Room for the JSON header (30 tensor entries and the metadata take about
/// 3 KiB) and its alignment padding: generous, so only absurd files fail.
const HEADER_ALLOWANCE: u64 = 1 << 20;

/// Epochs and steps above this are refused: no real run comes near, and
/// counts stay exact as the f64 the metrics and bias corrections use.
pub const MAX_COUNT: u64 = 1 << 53;

/// The batch-norm layers' name prefixes (`bn1`, ...), from the running
/// statistics' names.
fn batch_norm_prefixes(arch: &Architecture) -> Vec<String> {
    arch.spec().running.iter().filter_map(|(name, _)| name.strip_suffix(".running_mean").map(str::to_string)).collect()
}

/// The largest checkpoint file any model can need: the largest model's
/// parameters and running statistics as F32 with the most state buffers any
/// optimiser keeps, plus 1 MiB for the header. A larger file is refused
/// before it is read (the model is only known once the header is read).
pub fn max_file_size() -> u64 {
    let params: usize = Model::ALL
        .iter()
        .map(|&model| {
            let spec = Architecture { model, ..Architecture::lenet5(Activation::Relu, Pooling::Max) }.spec();
            spec.params.iter().map(|p| p.shape.iter().product::<usize>()).sum::<usize>()
                + spec.running.iter().map(|(_, c)| c).sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    let slots = [
        Optimizer::sgd(0.1),
        Optimizer::momentum(0.1, 0.9),
        Optimizer::nesterov(0.1, 0.9),
        Optimizer::adagrad(0.1),
        Optimizer::rmsprop(0.1),
        Optimizer::adam(0.1),
    ]
    .iter()
    .map(Optimizer::state_slots)
    .max()
    .unwrap_or(0);
    (params * (1 + slots) * std::mem::size_of::<f32>()) as u64 + HEADER_ALLOWANCE
}

/// Reads a checkpoint file's bytes: a regular file no larger than
/// [`max_file_size`], checked before reading and enforced while reading (a
/// file growing meanwhile is cut off and refused).
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| LenetError::io(path, e))?;
    let meta = file.metadata().map_err(|e| LenetError::io(path, e))?;
    if !meta.is_file() {
        return Err(LenetError::checkpoint(path, "not a regular file"));
    }
    let limit = max_file_size();
    let too_big = |len: u64| {
        LenetError::checkpoint(
            path,
            format!("{len} bytes is larger than any model's checkpoint ({limit} bytes at most)"),
        )
    };
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, limit + 1), &mut bytes)
        .map_err(|e| LenetError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads and validates a checkpoint.
pub fn load<T: Float>(path: &Path) -> Result<Checkpoint<T>> {
    let bytes = read_bounded(path)?;
    let bad = |detail: String| LenetError::checkpoint(path, detail);
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |key: &str| meta.get(key).ok_or_else(|| bad(format!("metadata lacks `{key}`")));
    let num = |key: &str| -> Result<f64> {
        get(key)?.parse::<f64>().map_err(|_| bad(format!("metadata `{key}` is not a number")))
    };
    if get("format")? != FORMAT {
        return Err(bad(format!("format `{}` is not {FORMAT}", get("format")?)));
    }
    let activation = Activation::parse(get("activation")?).ok_or_else(|| bad("unknown activation".into()))?;
    let pool = Pooling::parse(get("pool")?).ok_or_else(|| bad("unknown pool".into()))?;
    let model = match meta.get("model") {
        None => Model::Lenet5,
        Some(name) => Model::parse(name).ok_or_else(|| bad(format!("unknown model `{name}`")))?,
    };
    let dropout = match meta.get("dropout") {
        None => None,
        Some(_) => Some(num("dropout")?),
    };
    let arch = Architecture { model, activation, pool, dropout };
    arch.validate().map_err(|e| bad(e.to_string()))?;
    let (lr, wd) = (num("lr")?, num("weight_decay")?);
    let optimizer = match get("optimizer")?.as_str() {
        "sgd" => Optimizer::Sgd { lr, weight_decay: wd },
        "momentum" => Optimizer::Momentum { lr, momentum: num("momentum")?, weight_decay: wd },
        "nesterov" => Optimizer::Nesterov { lr, momentum: num("momentum")?, weight_decay: wd },
        "adagrad" => Optimizer::AdaGrad { lr, eps: num("eps")?, weight_decay: wd },
        "rmsprop" => Optimizer::RmsProp { lr, alpha: num("alpha")?, eps: num("eps")?, weight_decay: wd },
        "adam" => {
            Optimizer::Adam { lr, beta1: num("beta1")?, beta2: num("beta2")?, eps: num("eps")?, weight_decay: wd }
        }
        other => return Err(bad(format!("unknown optimizer `{other}`"))),
    };
    optimizer.validate().map_err(|e| bad(e.to_string()))?;
    let parse_int =
        |key: &str| get(key)?.parse::<u64>().map_err(|_| bad(format!("metadata `{key}` is not an integer")));
    let count = |key: &str| -> Result<u64> {
        let v = parse_int(key)?;
        if v > MAX_COUNT {
            return Err(bad(format!("metadata `{key}` is {v}, more than the {MAX_COUNT} a run can reach")));
        }
        Ok(v)
    };
    let epoch =
        usize::try_from(count("epoch")?).map_err(|_| bad("metadata `epoch` does not fit this machine".into()))?;
    let (step, seed) = (count("step")?, parse_int("seed")?);

    let read = |name: &str, shape: &[usize]| -> Result<Tensor<T>> {
        let view = st.tensor(name).map_err(|_| bad(format!("tensor `{name}` is missing")))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor `{name}` is {:?}, expected F32", view.dtype())));
        }
        if view.shape() != shape {
            return Err(bad(format!("tensor `{name}` has shape {:?}, {} needs {shape:?}", view.shape(), model.name())));
        }
        let mut data = Vec::with_capacity(view.data().len() / 4);
        for (i, b) in view.data().chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if !v.is_finite() {
                return Err(bad(format!(
                    "tensor `{name}` holds a non-finite value ({v} at index {i}): the state of a diverged run \
                     cannot be resumed or evaluated"
                )));
            }
            data.push(T::from_f64(v as f64));
        }
        Ok(Tensor::new(shape, data)?)
    };
    let spec = arch.spec();
    let mut expected: Vec<String> = Vec::new();
    let mut params = Vec::new();
    let mut slots = Vec::new();
    for p in &spec.params {
        params.push(read(&p.name, &p.shape)?);
        expected.push(p.name.clone());
        let mut mine = Vec::new();
        for i in 0..optimizer.state_slots() {
            let slot_name = format!("optim.{}.{i}", p.name);
            mine.push(read(&slot_name, &p.shape)?);
            expected.push(slot_name);
        }
        slots.push(mine);
    }
    let mut running = Vec::new();
    for (name, c) in &spec.running {
        running.push(read(name, &[*c])?);
        expected.push(name.clone());
    }
    // Batch counts: PyTorch's bookkeeping, carried for a strict
    // load_state_dict; an I64 scalar that must not be negative.
    for prefix in batch_norm_prefixes(&arch) {
        let name = format!("{prefix}.num_batches_tracked");
        let view = st.tensor(&name).map_err(|_| bad(format!("tensor `{name}` is missing")))?;
        let bytes: Option<[u8; 8]> = view.data().try_into().ok();
        match (view.dtype(), view.shape().is_empty(), bytes.map(i64::from_le_bytes)) {
            (Dtype::I64, true, Some(v)) if v >= 0 => {}
            _ => return Err(bad(format!("tensor `{name}` must be a non-negative I64 scalar"))),
        }
        expected.push(name);
    }
    if let Some(extra) = st.names().into_iter().find(|n| !expected.iter().any(|e| e == n)) {
        return Err(bad(format!(
            "unexpected tensor `{extra}` (not a {} tensor or {} state)",
            model.name(),
            optimizer.name()
        )));
    }
    Ok(Checkpoint { arch, optimizer, epoch, step, seed, params, running, slots })
}

impl<T: Float> Checkpoint<T> {
    /// Uploads the checkpoint into a trainer on `be`, ready to continue.
    pub fn into_trainer<B: Backend<Elem = T>>(self, be: &B) -> Result<Trainer<B>> {
        let model = LeNet::from_host(be, self.arch, &self.params, &self.running, self.seed)?;
        let slots = self
            .slots
            .iter()
            .map(|s| s.iter().map(|t| be.upload(t)).collect::<kernels_core::Result<Vec<_>>>())
            .collect::<kernels_core::Result<Vec<_>>>()?;
        Trainer::resume(be, model, self.optimizer, slots, self.epoch, self.step, self.seed)
    }
}
