//! Checkpoints: save, load and evaluate give the same accuracy; resume
//! continues the epoch count (and the very same run); wrong names and
//! shapes are refused; a diverging run leaves the last checkpoint intact.

mod common;

use std::collections::HashMap;

use common::{scratch_dir, synthetic};
use kernels_core::{Backend, Optimizer, Shaped};
use kernels_im2col::Im2col;
use kernels_naive::Naive;
use lenet::LenetError;
use lenet::checkpoint;
use lenet::model::{Activation, Architecture, Pooling};
use lenet::train::{FitPlan, Quiet, Trainer, evaluate};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

const ARCH: Architecture = Architecture::lenet5(Activation::Relu, Pooling::Max);

#[test]
fn save_load_evaluate_gives_the_same_accuracy() {
    let dir = scratch_dir("ckpt-roundtrip");
    let path = dir.join("lenet.safetensors");
    let (train, test) = (synthetic(120, 1), synthetic(60, 2));
    let be = Im2col::with_threads(2).unwrap();
    let mut trainer = Trainer::new(&be, ARCH, Optimizer::adam(2e-3), 3).unwrap();
    let plan = FitPlan { epochs: 2, batch_size: 20, save: Some(&path) };
    trainer.fit(&be, &train, &test, &plan, &mut Quiet).unwrap();
    let trained = evaluate(&be, &trainer.model, &test, 50).unwrap();

    let loaded = checkpoint::load::<f32>(&path).unwrap();
    assert_eq!((loaded.epoch, loaded.step, loaded.seed), (2, 12, 3));
    assert_eq!(loaded.arch, ARCH);
    assert_eq!(loaded.optimizer, Optimizer::adam(2e-3));
    let restored = loaded.into_trainer(&be).unwrap();
    assert_eq!(evaluate(&be, &restored.model, &test, 50).unwrap(), trained);
    // No temporary file is left beside the checkpoint.
    let names: Vec<_> = std::fs::read_dir(&*dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["lenet.safetensors"]);

    // PyTorch's names and shapes, and the optimiser state beside them.
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("conv1.weight").unwrap().shape(), [6, 1, 5, 5]);
    assert_eq!(st.tensor("fc1.weight").unwrap().shape(), [120, 400]);
    assert_eq!(st.tensor("optim.fc3.bias.1").unwrap().shape(), [10]);
    assert_eq!(st.len(), 30);
}

#[test]
fn resume_continues_the_epoch_count_and_the_run() {
    let dir = scratch_dir("ckpt-resume");
    let path = dir.join("lenet.safetensors");
    let (train, test) = (synthetic(64, 4), synthetic(30, 5));
    let be = Naive::<f32>::new();
    let opt = Optimizer::momentum(0.02, 0.9);

    let mut straight = Trainer::new(&be, ARCH, opt, 9).unwrap();
    let plan = FitPlan { epochs: 2, batch_size: 16, save: None };
    let uninterrupted = straight.fit(&be, &train, &test, &plan, &mut Quiet).unwrap();

    let mut first = Trainer::new(&be, ARCH, opt, 9).unwrap();
    let plan = FitPlan { epochs: 1, batch_size: 16, save: Some(&path) };
    first.fit(&be, &train, &test, &plan, &mut Quiet).unwrap();
    let mut resumed = checkpoint::load::<f32>(&path).unwrap().into_trainer(&be).unwrap();
    assert_eq!(resumed.epoch, 1);
    let plan = FitPlan { epochs: 1, batch_size: 16, save: Some(&path) };
    let second = resumed.fit(&be, &train, &test, &plan, &mut Quiet).unwrap();
    assert_eq!(second[0].epoch, 2);
    assert_eq!(resumed.step, straight.step);
    // Same shuffle, same momentum buffers: the very same second epoch.
    assert_eq!((second[0].loss, second[0].test_acc), (uninterrupted[1].loss, uninterrupted[1].test_acc));
    assert_eq!(checkpoint::load::<f32>(&path).unwrap().epoch, 2);
}

fn rewrite(path: &std::path::Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, s, d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).unwrap())).collect();
    let meta: Option<HashMap<String, String>> = header.metadata().clone();
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

fn checkpoint_error(path: &std::path::Path) -> String {
    match checkpoint::load::<f32>(path) {
        Err(e @ LenetError::Checkpoint { .. }) => e.to_string(),
        Err(other) => panic!("expected a checkpoint error, got {other}"),
        Ok(_) => panic!("{} was accepted", path.display()),
    }
}

#[test]
fn wrong_names_and_shapes_are_refused() {
    let dir = scratch_dir("ckpt-wrong");
    let good = dir.join("good.safetensors");
    let be = Naive::<f32>::new();
    let trainer = Trainer::new(&be, ARCH, Optimizer::sgd(0.1), 0).unwrap();
    checkpoint::save(&be, &trainer, &good).unwrap();
    assert!(checkpoint::load::<f32>(&good).is_ok());

    let shape = dir.join("shape.safetensors");
    std::fs::copy(&good, &shape).unwrap();
    rewrite(&shape, |t| {
        let fc1 = t.iter_mut().find(|(n, _, _)| n == "fc1.weight").unwrap();
        fc1.1 = vec![400, 120];
    });
    let msg = checkpoint_error(&shape);
    assert!(msg.contains("fc1.weight") && msg.contains("[400, 120]") && msg.contains("[120, 400]"), "{msg}");

    let renamed = dir.join("renamed.safetensors");
    std::fs::copy(&good, &renamed).unwrap();
    rewrite(&renamed, |t| {
        let conv = t.iter_mut().find(|(n, _, _)| n == "conv2.bias").unwrap();
        conv.0 = "conv2.b".into();
    });
    let msg = checkpoint_error(&renamed);
    assert!(msg.contains("conv2.bias") && msg.contains("missing"), "{msg}");

    let extra = dir.join("extra.safetensors");
    std::fs::copy(&good, &extra).unwrap();
    rewrite(&extra, |t| t.push(("fc4.weight".into(), vec![2], vec![0; 8])));
    let msg = checkpoint_error(&extra);
    assert!(msg.contains("fc4.weight"), "{msg}");

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    assert!(checkpoint_error(&garbage).contains("not a safetensors file"));
}

#[test]
fn divergence_stops_training_and_keeps_the_last_checkpoint() {
    let dir = scratch_dir("ckpt-diverge");
    let path = dir.join("lenet.safetensors");
    let (train, test) = (synthetic(64, 6), synthetic(20, 7));
    let be = Im2col::with_threads(2).unwrap();
    let mut trainer = Trainer::new(&be, ARCH, Optimizer::sgd(0.05), 1).unwrap();
    let plan = FitPlan { epochs: 1, batch_size: 16, save: Some(&path) };
    trainer.fit(&be, &train, &test, &plan, &mut Quiet).unwrap();
    let saved = std::fs::read(&path).unwrap();

    let mut ckpt = checkpoint::load::<f32>(&path).unwrap();
    ckpt.optimizer = Optimizer::sgd(1e30);
    let mut wild = ckpt.into_trainer(&be).unwrap();
    let plan = FitPlan { epochs: 3, batch_size: 16, save: Some(&path) };
    let err = wild.fit(&be, &train, &test, &plan, &mut Quiet).unwrap_err();
    assert!(matches!(err, LenetError::NonFinite { epoch: 2, .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), saved, "the checkpoint of epoch 1 changed");
}

/// Issue 12 item 2: a symlink where the old fixed temporary name
/// (`FILE.tmp`) would go must not be followed: the file it points to keeps
/// its bytes, and FILE becomes a regular file holding the checkpoint.
#[cfg(unix)]
#[test]
fn save_does_not_follow_a_symlink_at_the_temporary_name() {
    let dir = scratch_dir("ckpt-symlink");
    let path = dir.join("lenet.safetensors");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("lenet.safetensors.tmp")).unwrap();

    let be = Naive::<f32>::new();
    let trainer = Trainer::new(&be, ARCH, Optimizer::sgd(0.1), 0).unwrap();
    checkpoint::save(&be, &trainer, &path).unwrap();

    assert!(std::fs::read(&victim).unwrap() == b"precious", "the save wrote through the symlink");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file(), "{} is not a regular file", path.display());
    assert!(checkpoint::load::<f32>(&path).is_ok());
    // The link itself is left alone, and no temporary file is left behind.
    assert!(std::fs::symlink_metadata(dir.join("lenet.safetensors.tmp")).unwrap().file_type().is_symlink());
    let mut names: Vec<String> =
        std::fs::read_dir(&*dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["lenet.safetensors", "lenet.safetensors.tmp", "victim.txt"]);
}

/// Issue 12 item 1: when the update of an epoch's last step sends the
/// weights off to infinity, the loss of the steps is still finite, so only
/// a check after the last step sees it. The epoch's save must not replace
/// the good checkpoint, and the error must say what the file holds.
#[test]
fn divergence_on_the_last_step_of_an_epoch_keeps_the_last_checkpoint() {
    let dir = scratch_dir("ckpt-diverge-last");
    let path = dir.join("lenet.safetensors");
    // One batch per epoch: every step is an epoch's last.
    let (train, test) = (synthetic(64, 6), synthetic(20, 7));
    let be = Im2col::with_threads(2).unwrap();
    let mut trainer = Trainer::new(&be, ARCH, Optimizer::sgd(0.05), 1).unwrap();
    let plan = FitPlan { epochs: 1, batch_size: 64, save: Some(&path) };
    trainer.fit(&be, &train, &test, &plan, &mut Quiet).unwrap();
    let saved = std::fs::read(&path).unwrap();

    let mut ckpt = checkpoint::load::<f32>(&path).unwrap();
    ckpt.optimizer = Optimizer::sgd(1e30);
    let mut wild = ckpt.into_trainer(&be).unwrap();
    let err = wild.fit(&be, &train, &test, &plan, &mut Quiet).unwrap_err();
    assert!(matches!(err, LenetError::NonFinite { epoch: 2, step: 2, .. }), "{err}");
    assert!(std::fs::read(&path).unwrap() == saved, "the checkpoint of epoch 1 was replaced");
    assert!(checkpoint::load::<f32>(&path).is_ok());
    let msg = err.to_string();
    assert!(msg.contains(&format!("{} was not written by this run", path.display())), "{msg}");
}

/// Issue 12 item 1: whatever the caller does, a save never writes NaN or
/// infinite parameters or optimiser state, and says the file was not written.
#[test]
fn save_refuses_non_finite_parameters_and_state() {
    let dir = scratch_dir("ckpt-save-nan");
    let path = dir.join("lenet.safetensors");
    let be = Naive::<f32>::new();
    let good = Trainer::new(&be, ARCH, Optimizer::adam(1e-3), 0).unwrap();
    let mut params = good.model.to_host(&be).unwrap();
    let mut data = params[4].data().to_vec();
    data[17] = f32::NAN;
    params[4] = kernels_core::Tensor::new(params[4].shape(), data).unwrap();
    let model = lenet::model::LeNet::from_host(&be, ARCH, &params, &[], 0).unwrap();
    let bad = Trainer::resume(&be, model, Optimizer::adam(1e-3), Vec::new(), 3, 30, 0).unwrap();
    let msg = checkpoint::save(&be, &bad, &path).unwrap_err().to_string();
    assert!(msg.contains("fc1.weight") && msg.contains(&path.display().to_string()), "{msg}");
    assert!(!path.exists(), "a non-finite checkpoint was written");

    // The optimiser state too.
    let mut bad = Trainer::new(&be, ARCH, Optimizer::adam(1e-3), 0).unwrap();
    let slot = &bad.states[9].slots[1];
    let mut host = be.download(slot).unwrap().data().to_vec();
    host[0] = f32::INFINITY;
    bad.states[9].slots[1] = be.upload(&kernels_core::Tensor::new(&[10], host).unwrap()).unwrap();
    let msg = checkpoint::save(&be, &bad, &path).unwrap_err().to_string();
    assert!(msg.contains("optim.fc3.bias.1"), "{msg}");
    assert!(!path.exists(), "a non-finite checkpoint was written");
    assert_eq!(std::fs::read_dir(&*dir).unwrap().count(), 0, "a temporary file was left behind");
}

/// Issue 12 item 1: a checkpoint holding NaN or inf (written by an older
/// build, or edited) is refused by `load`, naming the file and the tensor.
#[test]
fn load_refuses_non_finite_values() {
    let dir = scratch_dir("ckpt-load-nan");
    let be = Naive::<f32>::new();
    let trainer = Trainer::new(&be, ARCH, Optimizer::adam(1e-3), 0).unwrap();
    for (tensor, value) in [("conv2.weight", f32::NAN), ("optim.fc2.bias.0", f32::NEG_INFINITY)] {
        let path = dir.join(format!("{tensor}.safetensors"));
        checkpoint::save(&be, &trainer, &path).unwrap();
        rewrite(&path, |t| {
            let (_, _, bytes) = t.iter_mut().find(|(n, _, _)| n == tensor).unwrap();
            bytes[8..12].copy_from_slice(&value.to_le_bytes());
        });
        let msg = checkpoint_error(&path);
        assert!(msg.contains(&path.display().to_string()) && msg.contains(tensor), "{msg}");
        assert!(msg.contains("non-finite"), "{msg}");
    }
}

/// Issue 12 item 8: a checkpoint larger than LeNet with the largest
/// optimiser state could need, or one that is not a regular file (a
/// directory, /dev/zero), is refused before it is read.
#[test]
fn oversized_and_non_regular_checkpoints_are_refused_before_reading() {
    let dir = scratch_dir("ckpt-size");
    let huge = dir.join("huge.safetensors");
    std::fs::File::create(&huge).unwrap().set_len(checkpoint::max_file_size() + 1).unwrap();
    let msg = checkpoint_error(&huge);
    assert!(msg.contains(&huge.display().to_string()) && msg.contains("larger than"), "{msg}");

    let msg = checkpoint_error(&dir);
    assert!(msg.contains("not a regular file"), "{msg}");
    #[cfg(unix)]
    {
        let msg = checkpoint_error(std::path::Path::new("/dev/zero"));
        assert!(msg.contains("/dev/zero") && msg.contains("not a regular file"), "{msg}");
    }

    // The bound leaves room: a real Adam checkpoint is well inside it.
    let be = Naive::<f32>::new();
    let path = dir.join("adam.safetensors");
    checkpoint::save(&be, &Trainer::new(&be, ARCH, Optimizer::adam(1e-3), 0).unwrap(), &path).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < checkpoint::max_file_size());
}

/// Rewrites one `__metadata__` entry of a checkpoint.
fn rewrite_metadata(path: &std::path::Path, key: &str, value: &str) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, s, d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).unwrap())).collect();
    let mut meta: HashMap<String, String> = header.metadata().clone().unwrap();
    meta.insert(key.into(), value.into());
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// Issue 12 item 10: an `epoch` or `step` of 2^64 − 1 is refused at load
/// with an error naming the file, rather than wrapping to epoch 0 (release)
/// or panicking (debug) when training continues.
#[test]
fn epoch_and_step_counts_that_would_overflow_are_refused() {
    let dir = scratch_dir("ckpt-counts");
    let be = Naive::<f32>::new();
    let trainer = Trainer::new(&be, ARCH, Optimizer::adam(1e-3), 0).unwrap();
    for key in ["epoch", "step"] {
        let path = dir.join(format!("{key}.safetensors"));
        checkpoint::save(&be, &trainer, &path).unwrap();
        rewrite_metadata(&path, key, &u64::MAX.to_string());
        let msg = checkpoint_error(&path);
        assert!(msg.contains(&path.display().to_string()) && msg.contains(&format!("`{key}`")), "{msg}");
    }
    // And a trainer at the largest count stops with an error, not a wrap.
    let model = lenet::model::LeNet::init(&be, ARCH, 0).unwrap();
    let mut at_max = Trainer::resume(&be, model, Optimizer::sgd(0.1), Vec::new(), usize::MAX, u64::MAX, 0).unwrap();
    let (train, test) = (synthetic(8, 1), synthetic(8, 2));
    let plan = FitPlan { epochs: 1, batch_size: 8, save: None };
    let err = at_max.fit(&be, &train, &test, &plan, &mut Quiet).unwrap_err();
    assert!(matches!(err, LenetError::Config(_)), "{err}");
}

/// Issue 16: every model saves and loads with its batch-norm running
/// statistics and PyTorch's batch counts, and evaluates the same after the
/// round trip (evaluation uses the running statistics, so they must survive).
#[test]
fn every_model_round_trips_with_running_statistics_and_batch_counts() {
    use lenet::model::Model;
    let dir = scratch_dir("ckpt-models");
    let (train, test) = (synthetic(48, 11), synthetic(30, 12));
    let be = Im2col::with_threads(2).unwrap();
    for model in Model::ALL {
        let path = dir.join(format!("{}.safetensors", model.name()));
        let arch = Architecture { model, dropout: Some(0.25), ..ARCH };
        let mut trainer = Trainer::new(&be, arch, Optimizer::adam(1e-3), 5).unwrap();
        let plan = FitPlan { epochs: 1, batch_size: 16, save: Some(&path) };
        trainer.fit(&be, &train, &test, &plan, &mut Quiet).unwrap();
        let trained = evaluate(&be, &trainer.model, &test, 50).unwrap();

        let loaded = checkpoint::load::<f32>(&path).unwrap();
        assert_eq!(loaded.arch, arch, "{model:?}");
        let restored = loaded.into_trainer(&be).unwrap();
        assert_eq!(evaluate(&be, &restored.model, &test, 50).unwrap(), trained, "{model:?}");

        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        if model == Model::Lenet5Bn {
            let mean = st.tensor("bn1.running_mean").unwrap();
            assert_eq!(mean.shape(), [6]);
            // Three steps of momentum 0.1 moved the mean off its zero start.
            assert!(mean.data().chunks_exact(4).any(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) != 0.0));
            let count = st.tensor("bn4.num_batches_tracked").unwrap();
            assert_eq!((count.dtype(), count.shape()), (Dtype::I64, &[][..]));
            assert_eq!(i64::from_le_bytes(count.data().try_into().unwrap()), 3);
            assert_eq!(st.tensor("bn3.running_var").unwrap().shape(), [120]);
        } else {
            assert!(st.names().iter().all(|n| !n.contains("running")), "{model:?}");
        }
    }
}
