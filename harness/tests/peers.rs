//! The same-run peer plumbing, against a fake PyTorch peer
//! (tests/peers/fake_peer.py: plain python3, no torch) that speaks the
//! protocol of harness/peers/torch_ops.py: start, hello, compute, validate
//! against the f64 oracle, time, validate again, records, for every family
//! of ops (linear, max and average pooling, batch norm, dropout with its
//! own mask); and the ways a peer can fail (computes something else, a
//! dropout that ignores p, torch missing, an op it refuses). No torch
//! needed: `make test` and CI run it everywhere.

use std::path::{Path, PathBuf};

use harness::error::HarnessError;
use harness::ops::{Op, Shape};
use harness::peers::{TorchPeer, Unavailable};
use harness::problem::{Inputs, Oracle};
use harness::timing::Policy;
use kernels_naive::Naive;

/// The fake peer, copied to a file whose name selects its mode.
fn fake_peer(mode: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/fake_peer.py");
    let dir = std::env::temp_dir().join(format!("harness-fake-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let name = if mode.is_empty() { "fake_peer.py".to_string() } else { format!("fake_peer_{mode}.py") };
    let path = dir.join(name);
    std::fs::copy(&source, &path).unwrap();
    path
}

fn python3() -> &'static Path {
    Path::new("python3")
}

fn start(mode: &str) -> Result<TorchPeer, Unavailable> {
    TorchPeer::start(python3(), Some(&fake_peer(mode)), 2).expect("the harness side of the peer failed")
}

fn measure(peer: &mut TorchPeer, shape: &str, ops: &[Op]) -> harness::error::Result<Vec<harness::results::Record>> {
    let shape = Shape::parse(shape).unwrap();
    let inputs = Inputs::generate(&shape).unwrap();
    let mut oracle = Oracle::new(Naive::<f64>::new());
    for &op in ops {
        oracle.prepare(op, &shape, &inputs).unwrap();
    }
    peer.measure_shape(&shape, ops, &inputs, &oracle, &Policy::quick())
}

#[test]
fn a_correct_peer_is_validated_timed_and_recorded() {
    let mut peer = match start("") {
        Ok(peer) => peer,
        Err(Unavailable(why)) => panic!("the fake peer needs python3 on PATH: {why}"),
    };
    assert_eq!((peer.info.peer.as_str(), peer.info.version.as_str(), peer.info.threads), ("pytorch", "0.0-fake", 2));
    let records = measure(&mut peer, "lenet-fc3", &[Op::LinearForward, Op::LinearBackward]).unwrap();
    let ops: Vec<&str> = records.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(ops, ["linear-fwd", "linear-bwd"]);
    for r in &records {
        assert_eq!((r.backend.as_str(), r.shape.as_str(), r.threads), ("pytorch", "lenet-fc3", 2));
        assert_eq!(r.peer_version.as_deref(), Some("0.0-fake"));
        assert!(r.median_ms > 0.0 && r.repeats >= 1 && r.gflops > 0.0, "{r:?}");
        // The fake sums in f64 and rounds once: well inside the f32 tolerance.
        assert!(r.max_rel_err < 1e-5, "{r:?}");
    }
    assert_eq!(records[1].tolerances.len(), 3, "dx, dw and db were each validated");
}

#[test]
fn a_peer_that_computes_something_else_is_never_timed() {
    let mut peer = start("wrong").unwrap_or_else(|Unavailable(why)| panic!("{why}"));
    match measure(&mut peer, "lenet-fc3", &[Op::LinearForward]) {
        Err(HarnessError::Validation { stage, op, backend, detail, .. }) => {
            assert_eq!((stage, op.as_str(), backend.as_str()), ("before timing", "linear-fwd", "pytorch"));
            assert!(detail.contains("y: 1 of"), "{detail}");
        }
        other => panic!("expected a validation failure, got {other:?}"),
    }
}

#[test]
fn a_peer_without_torch_is_unavailable_with_its_reason() {
    match start("no-torch") {
        Err(Unavailable(why)) => assert!(why.contains("torch is not importable"), "{why}"),
        Ok(_) => panic!("a peer without torch started"),
    }
}

#[test]
fn a_peer_error_fails_loudly_with_the_peer_s_message() {
    let mut peer = start("").unwrap_or_else(|Unavailable(why)| panic!("{why}"));
    let err = measure(&mut peer, "lenet-c2", &[Op::ConvForward]).unwrap_err().to_string();
    assert!(err.contains("conv-fwd failed") && err.contains("linear, pool and norm ops only"), "{err}");
}

#[test]
fn average_pooling_runs_through_the_peer() {
    let mut peer = start("").unwrap_or_else(|Unavailable(why)| panic!("{why}"));
    // Average pooling only: the pure-Python fake takes seconds per pass
    // over lenet-p1, and max pooling's plumbing is the same request.
    let ops = [Op::AvgPoolForward, Op::AvgPoolBackward];
    let records = measure(&mut peer, "lenet-p1", &ops).unwrap();
    let names: Vec<&str> = records.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(names, ["avgpool-fwd", "avgpool-bwd"]);
    for r in &records {
        assert!(r.tolerances[0].contains("f32 reduction over 4 terms"), "{r:?}");
        assert!(r.max_rel_err < 1e-6, "{r:?}");
    }
}

#[test]
fn batch_norm_and_dropout_run_through_the_peer() {
    let mut peer = start("").unwrap_or_else(|Unavailable(why)| panic!("{why}"));
    let ops = [Op::BatchNormTrain, Op::BatchNormBackward, Op::BatchNormEval, Op::DropoutForward, Op::DropoutBackward];
    let records = measure(&mut peer, "lenet-bn3", &ops).unwrap();
    let names: Vec<&str> = records.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(names, ["bn-train", "bn-bwd", "bn-eval", "dropout-fwd", "dropout-bwd"]);
    let outputs = |r: &harness::results::Record| -> Vec<String> {
        r.tolerances.iter().map(|t| t.split(':').next().unwrap().to_string()).collect()
    };
    assert_eq!(outputs(&records[0]), ["y", "mean", "inv_std", "running_mean", "running_var"]);
    assert_eq!(outputs(&records[1]), ["dx", "dgamma", "dbeta"]);
    // The fake's dropout mask is not ours: its pattern is what was checked.
    assert_eq!(outputs(&records[3]), ["y", "kept fraction"]);
    assert_eq!(outputs(&records[4]), ["dx", "kept fraction"]);
    for r in &records {
        assert!(r.median_ms > 0.0 && r.flops > 0 && r.bytes > 0, "{r:?}");
    }
}

#[test]
fn a_wrong_batch_norm_is_never_timed() {
    let mut peer = start("wrong").unwrap_or_else(|Unavailable(why)| panic!("{why}"));
    match measure(&mut peer, "lenet-bn3", &[Op::BatchNormTrain]) {
        Err(HarnessError::Validation { stage, op, detail, .. }) => {
            assert_eq!((stage, op.as_str()), ("before timing", "bn-train"));
            assert!(detail.starts_with("y: 1 of 30720"), "{detail}");
        }
        other => panic!("expected a validation failure, got {other:?}"),
    }
}

#[test]
fn a_dropout_that_ignores_p_fails_its_kept_fraction() {
    let mut peer = start("keep-all").unwrap_or_else(|Unavailable(why)| panic!("{why}"));
    match measure(&mut peer, "lenet-bn3", &[Op::DropoutForward]) {
        Err(HarnessError::Validation { op, detail, .. }) => {
            assert_eq!(op, "dropout-fwd");
            assert!(detail.starts_with("kept fraction: 1 of 1"), "{detail}");
        }
        other => panic!("expected a validation failure, got {other:?}"),
    }
}

/// Issue 16: the LeNet request for every model reaches the peer well formed
/// (the fake checks each parameter's name, order and shape, batch norm's
/// running statistics, the batches and every epoch order) and a peer whose
/// step-0 loss differs from the f64 reference is refused before its time is
/// used.
#[test]
fn lenet_requests_are_well_formed_for_every_model_and_a_wrong_loss_is_refused() {
    use harness::backends::Backends;
    use harness::lenet_throughput::{LenetPlan, measure_all};
    use lenet::model::Model;
    let mut peer = start("").unwrap_or_else(|Unavailable(why)| panic!("{why}"));
    let none = Backends { naive: None, im2col: None, opencl: None };
    for model in Model::ALL {
        let plan = LenetPlan { models: vec![model], steps: 1, dropout: Some(0.5), epochs: Some(2), quick: true };
        let mut notes = Vec::new();
        match measure_all(&none, &[], Some(&mut peer), &plan, &mut notes) {
            Err(HarnessError::Validation { stage, op, backend, detail, .. }) => {
                assert_eq!((stage, backend.as_str()), ("before timing", "pytorch"));
                assert!(op.contains(&format!("lenet {} training step 0 loss", model.name())), "{op}");
                assert!(detail.starts_with("loss 0 on lenet's initial weights, the f64 reference gives "), "{detail}");
            }
            other => panic!("{model:?}: expected the step-0 loss to be refused, got {other:?}"),
        }
    }
}
