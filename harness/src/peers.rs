//! Same-run peers: other implementations of the same ops (PyTorch on the
//! CPU), measured in this run, on these inputs, with these threads, and
//! validated against the same f64 oracle as our backends before any of
//! their times is used.
//!
//! The PyTorch peer is `harness/peers/torch_ops.py` (embedded in the binary,
//! run as `PYTHON -c SCRIPT`), a subprocess that speaks line-delimited JSON:
//! see the script's docstring for the protocol. Tensors travel as raw
//! little-endian f32 files in a scratch directory. Per shape the harness
//! writes the inputs once; per op it asks the peer to `compute` once
//! (outputs validated, "before timing"), then to `time` under the harness's
//! repeat policy (outputs of the last timed call validated, "after
//! timing"). A peer whose outputs fail stops the run like any backend.
//!
//! When the peer cannot start (no such Python, torch not importable), the
//! run goes on without it and the report says why in its notes: the peer's
//! columns are then empty, never filled from elsewhere.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use kernels_core::{PoolKind, Shaped, Tensor, compare};
use kernels_naive::Naive;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{HarnessError, Result};
use crate::ops::{BATCH_NORM, DROPOUT, Op, Shape};
use crate::problem::{Inputs, Oracle, Validation, output_names, tolerance, validate_dropout_pattern};
use crate::results::Record;
use crate::timing::{Policy, PolicySummary, Stats};

/// The PyTorch peer script, run with `PYTHON -c`.
pub const TORCH_SCRIPT: &str = include_str!("../peers/torch_ops.py");

/// The backend name of the PyTorch peer's records.
pub const TORCH: &str = "pytorch";

/// Names of every peer's records (backend field): what the tables set
/// beside our backends and divide by.
pub const PEER_NAMES: [&str; 2] = [TORCH, "candle"];

/// The longest the harness waits for one reply (a `time` request of the
/// slowest shape under the full policy takes seconds).
const REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest the harness waits for the peer to start (importing torch
/// took 17 s on a loaded 2-core machine): a Python that hangs is skipped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(180);

/// The Python the PyTorch peer runs on: `--python`, else `KERNELS_PYTHON`
/// (clap reads it into `--python`), else `python3`.
pub fn python_or_default(python: Option<&Path>) -> PathBuf {
    python.map_or_else(|| PathBuf::from("python3"), Path::to_path_buf)
}

/// What a peer said about itself on start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// "pytorch".
    pub peer: String,
    /// The peer library's version (torch.__version__).
    pub version: String,
    /// The threads the peer runs on (torch.get_num_threads() after set_num_threads).
    pub threads: usize,
    /// The Python version.
    pub python: String,
    /// One line for tables: library, version, threads, ISA.
    pub detail: String,
}

/// results.json's account of one peer: measured (with its version and
/// threads), or skipped and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub peer: String,
    /// The command that started it (interpreter and script).
    pub command: String,
    /// Set when it started; its records carry `backend == peer`.
    pub info: Option<PeerInfo>,
    /// Why it was not measured, when it was not.
    pub skipped: Option<String>,
}

/// A LeNet throughput request: the model, lenet's initial weights and
/// running statistics (spec order, with their `state_dict` names), the
/// images of every step's batch in order, their labels, Adam's
/// hyper-parameters, and optionally a full training run.
pub struct LenetJob<'a> {
    /// `lenet --model` name: lenet5, lenet5-bn, mxnet-lenet, simplecnn.
    pub model: &'a str,
    pub dropout: Option<f64>,
    pub params: &'a [(String, Tensor<f32>)],
    /// Batch norm's running means and variances (empty without batch norm).
    pub running: &'a [(String, Tensor<f32>)],
    /// [(warmup_steps + steps) * batch, 1, 28, 28].
    pub x: &'a Tensor<f32>,
    pub labels: &'a [usize],
    pub batch: usize,
    pub warmup_steps: usize,
    pub steps: usize,
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub train: Option<LenetTrainJob<'a>>,
}

/// `--lenet-epochs`: train from the same initial weights on the whole
/// training set in lenet's epoch orders, then evaluate on the test set.
pub struct LenetTrainJob<'a> {
    pub epochs: usize,
    /// [n, 1, 28, 28] and n labels.
    pub x: &'a Tensor<f32>,
    pub labels: &'a [usize],
    /// Each epoch's order of the n examples, epoch after epoch (epochs x n).
    pub orders: &'a [usize],
    pub test_x: &'a Tensor<f32>,
    pub test_labels: &'a [usize],
}

/// What the peer measured on a [`LenetJob`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct LenetReply {
    pub seconds: f64,
    pub examples_per_s: f64,
    /// The loss of step 0, before any update, in training mode with dropout
    /// off (batch norm on the batch's statistics).
    pub initial_loss: f64,
    /// The first and last timed steps' losses.
    pub first_loss: f64,
    pub last_loss: f64,
    /// With [`LenetJob::train`]: the test set after the last epoch.
    #[serde(default)]
    pub trained: Option<LenetTrained>,
}

/// The peer's full training run.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct LenetTrained {
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub train_seconds: f64,
}

/// Why a peer did not start: it is skipped with a note (unless required).
#[derive(Debug, Clone, PartialEq)]
pub struct Unavailable(pub String);

/// A running PyTorch peer.
pub struct TorchPeer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
    pub info: PeerInfo,
    pub command: String,
    /// Removed when the peer is dropped (after the child has quit).
    scratch: tempfile::TempDir,
}

fn peer_error(what: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(format!("pytorch peer: {what}"))
}

/// A fresh directory of its own for each peer: a name made of the process
/// id and the clock was shared by two peers started at once (tests run in
/// parallel), and the first to quit deleted the other's inputs.
fn scratch_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("harness-peer-").tempdir().map_err(|source| HarnessError::Io {
        action: "creating the peer's scratch directory",
        path: std::env::temp_dir(),
        source,
    })
}

impl TorchPeer {
    /// Starts `python` on the PyTorch script (or on `script`, a replacement
    /// speaking the same protocol, as the tests' fake peer does) and asks it
    /// to run on `threads` threads. Ok(Err(_)) when the peer is unavailable
    /// (the run goes on without it); Err when the harness itself failed.
    pub fn start(
        python: &Path,
        script: Option<&Path>,
        threads: usize,
    ) -> Result<std::result::Result<TorchPeer, Unavailable>> {
        let mut command = Command::new(python);
        let described = match script {
            Some(path) => {
                command.arg(path);
                format!("{} {}", python.display(), path.display())
            }
            None => {
                command.arg("-c").arg(TORCH_SCRIPT);
                format!("{} -c <harness/peers/torch_ops.py>", python.display())
            }
        };
        let spawned = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return Ok(Err(Unavailable(format!("cannot start `{}`: {e}", python.display())))),
        };
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(peer_error("no pipes to the child process"));
        };
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let scratch = scratch_dir()?;
        let placeholder = PeerInfo {
            peer: TORCH.into(),
            version: String::new(),
            threads,
            python: String::new(),
            detail: String::new(),
        };
        let mut peer = TorchPeer { child, stdin, lines, info: placeholder, command: described, scratch };
        let hello = match peer.request(&json!({ "cmd": "hello", "threads": threads }), HELLO_TIMEOUT) {
            Ok(v) => v,
            Err(e) => return Ok(Err(Unavailable(e.to_string()))),
        };
        if hello.get("ok") != Some(&Value::Bool(true)) {
            let why = hello.get("error").and_then(Value::as_str).unwrap_or("the peer refused to start");
            return Ok(Err(Unavailable(why.to_string())));
        }
        peer.info = serde_json::from_value(hello).map_err(|e| peer_error(format!("bad hello reply: {e}")))?;
        Ok(Ok(peer))
    }

    /// Sends one request and waits for its reply line.
    fn request(&mut self, request: &Value, timeout: Duration) -> Result<Value> {
        let line = serde_json::to_string(request)?;
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| peer_error(format!("writing to the peer: {e}")))?;
        let reply = match self.lines.recv_timeout(timeout) {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(peer_error(format!("reading from the peer: {e}"))),
            Err(RecvTimeoutError::Timeout) => {
                return Err(peer_error(format!("no reply within {} s", timeout.as_secs())));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                return Err(peer_error(format!(
                    "the peer exited without replying ({})",
                    status.map_or("still running".into(), |s| s.to_string())
                )));
            }
        };
        serde_json::from_str(&reply).map_err(|e| peer_error(format!("reply is not JSON ({e}): {reply}")))
    }

    /// Sends a request that must succeed; the peer's error otherwise.
    fn checked(&mut self, request: &Value) -> Result<Value> {
        let reply = self.request(request, REPLY_TIMEOUT)?;
        if reply.get("ok") == Some(&Value::Bool(true)) {
            Ok(reply)
        } else {
            let why = reply.get("error").and_then(Value::as_str).unwrap_or("no reason given");
            Err(peer_error(format!("{} failed: {why}", request.get("op").and_then(Value::as_str).unwrap_or("request"))))
        }
    }

    /// Writes the inputs of `shape` into the scratch directory: the JSON
    /// the requests carry.
    fn write_inputs(&self, shape: &Shape, inputs: &Inputs) -> Result<Value> {
        let mut specs = serde_json::Map::new();
        for (name, t) in inputs.named() {
            let path = self.scratch.path().join(format!("{}-{name}.f32", shape.name()));
            write_f32(&path, t.data())?;
            specs.insert(name.into(), json!({ "path": path, "shape": t.shape() }));
        }
        Ok(Value::Object(specs))
    }

    /// Validates, times and validates again every op of `ops` on `shape`;
    /// one [`Record`] per op, with backend "pytorch".
    pub fn measure_shape(
        &mut self,
        shape: &Shape,
        ops: &[Op],
        inputs: &Inputs,
        oracle: &Oracle<Naive<f64>>,
        policy: &Policy,
    ) -> Result<Vec<Record>> {
        let input_specs = self.write_inputs(shape, inputs)?;
        let out_dir = self.scratch.path().join("out");
        std::fs::create_dir_all(&out_dir).map_err(|source| HarnessError::Io {
            action: "creating the peer's output directory",
            path: out_dir.clone(),
            source,
        })?;
        let mut records = Vec::new();
        for &op in ops {
            let want = oracle.expected(op, shape)?;
            let (family, params) = request_params(op, shape);
            let mut request = json!({
                "cmd": "compute", "family": family, "params": params, "inputs": input_specs,
                "op": op.name(), "policy": PolicySummary::from(policy), "out_dir": out_dir,
            });
            let computed = self.checked(&request)?;
            let before = self.validate(op, shape, inputs, &computed, &want, "before timing")?;
            request["cmd"] = json!("time");
            let timed = self.checked(&request)?;
            let after = self.validate(op, shape, inputs, &timed, &want, "after timing")?;
            let stats: Stats = serde_json::from_value(timed.get("stats").cloned().unwrap_or(Value::Null))
                .map_err(|e| peer_error(format!("{} {}: bad timing reply: {e}", op.name(), shape.name())))?;
            records.push(peer_record(TORCH, &self.info, op, shape, &stats, &before, &after)?);
        }
        Ok(records)
    }

    /// Reads the outputs a reply names and compares them with the oracle
    /// (dropout: with the pattern its own mask must follow, see
    /// [`validate_dropout_pattern`]).
    fn validate(
        &self,
        op: Op,
        shape: &Shape,
        inputs: &Inputs,
        reply: &Value,
        expected: &[&Tensor<f64>],
        stage: &'static str,
    ) -> Result<Validation> {
        let fail = |detail: String| HarnessError::Validation {
            stage,
            op: op.name().into(),
            shape: shape.name().into(),
            backend: TORCH.into(),
            detail,
        };
        let names = output_names(op);
        let outputs = reply.get("outputs").and_then(Value::as_object);
        let mut result = Vec::new();
        for (name, want) in names.iter().zip(expected) {
            let spec = outputs.and_then(|o| o.get(*name)).ok_or_else(|| fail(format!("{name}: not returned")))?;
            let dims: Vec<usize> = serde_json::from_value(spec.get("shape").cloned().unwrap_or(Value::Null))
                .map_err(|e| fail(format!("{name}: bad shape ({e})")))?;
            if dims != want.shape() {
                return Err(fail(format!("{name} has shape {dims:?}, expected {:?}", want.shape())));
            }
            let path = spec.get("path").and_then(Value::as_str).ok_or_else(|| fail(format!("{name}: no path")))?;
            let data = read_f32(Path::new(path), want.data().len()).map_err(|e| fail(format!("{name}: {e}")))?;
            match op {
                Op::DropoutForward | Op::DropoutBackward => {
                    let input = if op == Op::DropoutForward { &inputs.x } else { &inputs.dy };
                    result.extend(validate_dropout_pattern(name, input.data(), &data, DROPOUT.p)?.outputs);
                }
                _ => {
                    let tol = tolerance(op, shape, name, want.data())?;
                    result.push((*name, compare(&data, want.data(), &tol)?));
                }
            }
        }
        let validation = Validation { outputs: result };
        if validation.passed() { Ok(validation) } else { Err(fail(validation.failures())) }
    }

    /// LeNet training steps in the peer with lenet's recipe, on `job`'s
    /// weights and batches; returns what the peer measured (the caller
    /// checks `initial_loss` against its reference).
    pub fn lenet(&mut self, job: &LenetJob) -> Result<LenetReply> {
        let dir = self.scratch.path().join("lenet");
        std::fs::create_dir_all(&dir).map_err(|source| HarnessError::Io {
            action: "creating the peer's LeNet directory",
            path: dir.clone(),
            source,
        })?;
        let spec = |name: &str, t: &Tensor<f32>| -> Result<Value> {
            let path = dir.join(format!("{name}.f32"));
            write_f32(&path, t.data())?;
            Ok(json!({ "path": path, "shape": t.shape() }))
        };
        let named = |list: &[(String, Tensor<f32>)]| -> Result<Vec<Value>> {
            list.iter()
                .map(|(name, t)| {
                    let mut s = spec(name, t)?;
                    s["name"] = json!(name);
                    Ok(s)
                })
                .collect()
        };
        // Indices and labels travel as f32: exact below 2^24.
        let as_f32 = |name: &str, v: &[usize]| -> Result<Value> {
            let values: Vec<f32> = v.iter().map(|&l| l as f32).collect();
            spec(name, &Tensor::new(&[values.len()], values)?)
        };
        let train = match &job.train {
            Some(t) => json!({
                "epochs": t.epochs, "x": spec("train-x", t.x)?, "labels": as_f32("train-labels", t.labels)?,
                "orders": as_f32("orders", t.orders)?, "test_x": spec("test-x", t.test_x)?,
                "test_labels": as_f32("test-labels", t.test_labels)?,
            }),
            None => Value::Null,
        };
        let request = json!({
            "cmd": "lenet", "op": "lenet", "model": job.model, "activation": "relu", "pool": "max",
            "dropout": job.dropout, "x": spec("x", job.x)?, "labels": as_f32("labels", job.labels)?,
            "params": named(job.params)?, "running": named(job.running)?, "batch": job.batch,
            "warmup_steps": job.warmup_steps, "steps": job.steps,
            "lr": job.lr, "betas": [job.betas.0, job.betas.1], "eps": job.eps, "train": train,
        });
        // A training run waits longer: up to 5 minutes per epoch besides.
        let epochs = job.train.as_ref().map_or(0, |t| t.epochs) as u64;
        let reply = self.request(&request, REPLY_TIMEOUT + Duration::from_secs(300 * epochs))?;
        if reply.get("ok") != Some(&Value::Bool(true)) {
            let why = reply.get("error").and_then(Value::as_str).unwrap_or("no reason given");
            return Err(peer_error(format!("lenet {} failed: {why}", job.model)));
        }
        serde_json::from_value(reply).map_err(|e| peer_error(format!("bad lenet reply: {e}")))
    }

    /// The peer's account for results.json.
    pub fn status(&self) -> PeerStatus {
        PeerStatus { peer: TORCH.into(), command: self.command.clone(), info: Some(self.info.clone()), skipped: None }
    }
}

/// The family and parameters a request carries for `op` on `shape`.
fn request_params(op: Op, shape: &Shape) -> (&'static str, Value) {
    match shape {
        Shape::Conv(c) => ("conv", json!({ "stride": c.stride, "padding": c.padding })),
        Shape::Pool(p) => {
            let kind = if op.pool_kind() == Some(PoolKind::Avg) { "avg" } else { "max" };
            ("pool", json!({ "window": p.window, "stride": p.stride, "padding": p.padding, "kind": kind }))
        }
        Shape::Linear(_) => ("linear", json!({})),
        Shape::Norm(_) => ("norm", json!({ "eps": BATCH_NORM.eps, "momentum": BATCH_NORM.momentum, "p": DROPOUT.p })),
    }
}

/// A peer's record of `op` on `shape` (every peer's: PyTorch here, candle
/// in candle_peer): the costs, the peer's timing, the larger error of the
/// two validations, its version and threads. Timings no run can produce
/// are refused.
pub fn peer_record(
    backend: &str,
    info: &PeerInfo,
    op: Op,
    shape: &Shape,
    stats: &Stats,
    before: &Validation,
    after: &Validation,
) -> Result<Record> {
    let cost = shape
        .cost(op)?
        .ok_or_else(|| HarnessError::Usage(format!("op {} does not run on {}", op.name(), shape.name())))?;
    if !(stats.repeats > 0 && stats.median_s > 0.0 && stats.median_s.is_finite()) {
        return Err(HarnessError::Setup(format!(
            "{backend} peer: {} {}: implausible timing {stats:?}",
            op.name(),
            shape.name()
        )));
    }
    Ok(Record {
        op: op.name().into(),
        shape: shape.name().into(),
        backend: backend.into(),
        backend_name: info.detail.clone(),
        threads: info.threads,
        flops: cost.flops,
        bytes: cost.bytes,
        intensity: cost.intensity(),
        repeats: stats.repeats,
        median_ms: stats.median_s * 1e3,
        min_ms: stats.min_s * 1e3,
        max_ms: stats.max_s * 1e3,
        gflops: cost.flops as f64 / stats.median_s / 1e9,
        gbps: cost.bytes as f64 / stats.median_s / 1e9,
        bound_gflops: f64::NAN,
        compute_ceiling: "sgemm".into(),
        pct_of_bound: f64::NAN,
        speedup_vs_naive: None,
        peer_version: Some(info.version.clone()),
        max_abs_err: before.max_abs_err().max(after.max_abs_err()),
        max_rel_err: before.max_rel_err().max(after.max_rel_err()),
        tolerances: after.outputs.iter().map(|(name, c)| format!("{name}: {}", c.tolerance.name)).collect(),
        device_split: None,
        plan: None,
    })
}

impl Drop for TorchPeer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({ "cmd": "quit" }));
        let _ = self.stdin.flush();
        // A peer that ignores quit is not waited for forever.
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write_f32(path: &Path, data: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|source| HarnessError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

fn read_f32(path: &Path, len: usize) -> std::result::Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if bytes.len() != 4 * len {
        return Err(format!("{} holds {} bytes, expected {} ({len} f32)", path.display(), bytes.len(), 4 * len));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_files_round_trip_and_a_short_file_is_refused() {
        let dir = scratch_dir().unwrap();
        let path = dir.path().join("t.f32");
        write_f32(&path, &[1.5, -2.0, f32::MIN_POSITIVE]).unwrap();
        assert_eq!(read_f32(&path, 3).unwrap(), [1.5, -2.0, f32::MIN_POSITIVE]);
        assert!(read_f32(&path, 4).unwrap_err().contains("expected 16"));
    }

    #[test]
    fn a_missing_python_makes_the_peer_unavailable_not_an_error() {
        let missing = Path::new("/nonexistent/python-for-harness-test");
        match TorchPeer::start(missing, None, 1).unwrap() {
            Err(Unavailable(why)) => assert!(why.contains("python-for-harness-test"), "{why}"),
            Ok(_) => panic!("a peer started on a missing interpreter"),
        }
    }
}
