//! The `lenet` binary end to end on a small data set written here: train
//! with every output, evaluate the checkpoint, resume; and its errors for
//! missing data, corrupt files and bad checkpoints (plain message, exit 1).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{scratch_dir, write_dataset};

fn lenet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lenet")).args(args).env_remove("FASHION_MNIST_DIR").output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_eval_and_resume_through_the_binary() {
    let dir = scratch_dir("cli-train");
    write_dataset(&dir, 80, 40, true);
    let (ckpt, metrics, plot, filters) =
        (dir.join("c.safetensors"), dir.join("m.json"), dir.join("p.svg"), dir.join("f.svg"));
    let common = ["--backend", "naive", "--batch-size", "16", "--data", s(&dir)];
    let mut args = vec!["train", "--epochs", "2", "--save", s(&ckpt), "--metrics", s(&metrics)];
    args.extend(["--plot", s(&plot), "--filters", s(&filters)]);
    args.extend(common);
    let out = lenet(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("epoch 2  loss "), "{stdout}");
    assert!(stdout.contains("examples/s  (naive f32, 1 thread)"), "{stdout}");

    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert_eq!(json["backend"], "naive");
    assert_eq!(json["config"]["batch_size"], 16);
    assert_eq!(json["config"]["optimizer"]["name"], "adam");
    let epochs = json["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    for key in ["loss", "train_acc", "test_acc", "examples_per_s", "seconds"] {
        assert!(epochs[1][key].as_f64().is_some(), "{key} missing in {json}");
    }
    for svg in [&plot, &filters] {
        let body = std::fs::read_to_string(svg).unwrap();
        assert!(body.starts_with("<svg") && body.contains("</svg>"), "{}", svg.display());
    }
    assert!(std::fs::read_to_string(&filters).unwrap().matches("<rect").count() >= 2 * 6 * 25);

    // eval reports the accuracy the last epoch reported.
    let mut args = vec!["eval", "--load", s(&ckpt)];
    args.extend(common);
    let out = lenet(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let expected = format!("test acc {:.4}", epochs[1]["test_acc"].as_f64().unwrap());
    assert!(stdout.contains(&expected) && stdout.contains("epoch 2"), "{stdout} lacks {expected}");

    // Resuming numbers epochs on from the checkpoint.
    let mut args = vec!["--epochs", "1", "--load", s(&ckpt), "--save", s(&ckpt)];
    args.extend(common);
    let out = lenet(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("epoch 3  loss") && !stdout.contains("epoch 1  loss"), "{stdout}");

    // A mismatched architecture is refused rather than loaded into the wrong model.
    let mut args = vec!["--epochs", "1", "--load", s(&ckpt), "--activation", "sigmoid"];
    args.extend(common);
    let out = lenet(&args);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("activation relu"), "{stderr}");
}

#[test]
fn bad_input_gives_a_plain_error_and_exit_code_one() {
    let dir = scratch_dir("cli-errors");
    let missing = dir.join("no-such-dir");
    let out = lenet(&["--backend", "naive", "--data", s(&missing)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.starts_with("error: Fashion-MNIST not found"), "{stderr}");
    assert!(stderr.contains(&format!("{} (from --data): no such directory", s(&missing))), "{stderr}");
    assert!(stderr.contains("make setup"), "{stderr}");

    write_dataset(&dir, 20, 10, false);
    let labels = dir.join("t10k-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&labels).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&labels, bytes).unwrap();
    let out = lenet(&["--backend", "naive", "--data", s(&dir)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains(s(&labels)) && stderr.contains("truncated"), "{stderr}");

    write_dataset(&dir, 20, 10, false);
    let out = lenet(&["eval", "--backend", "naive", "--data", s(&dir)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("eval needs --load"));

    let bogus = dir.join("bogus.safetensors");
    std::fs::write(&bogus, b"\x08\0\0\0\0\0\0\0{}      ").unwrap();
    let out = lenet(&["eval", "--backend", "naive", "--data", s(&dir), "--load", s(&bogus)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("bogus.safetensors"), "{stderr}");
}

/// Rewrites one value of tensor `name` in a checkpoint to `value`.
fn poison(path: &Path, name: &str, value: f32) {
    use safetensors::{SafeTensors, tensor::TensorView};
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    let target = tensors.iter_mut().find(|(n, _, _)| n == name).unwrap();
    target.2[..4].copy_from_slice(&value.to_le_bytes());
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| (n.clone(), TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, header.metadata().clone()).unwrap()).unwrap();
}

/// Issue 12 item 1: `eval` and `--load` refuse a checkpoint holding NaN,
/// naming the file, instead of printing "test loss NaN" and exiting 0.
#[test]
fn eval_and_load_refuse_a_non_finite_checkpoint() {
    let dir = scratch_dir("cli-nan");
    write_dataset(&dir, 20, 10, false);
    let ckpt = dir.join("c.safetensors");
    let common = ["--backend", "naive", "--batch-size", "10", "--data", s(&dir)];
    let mut args = vec!["--epochs", "1", "--save", s(&ckpt)];
    args.extend(common);
    let out = lenet(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    poison(&ckpt, "fc2.weight", f32::NAN);
    for command in ["eval", "train"] {
        let mut args = vec![command, "--epochs", "1", "--load", s(&ckpt)];
        args.extend(common);
        let out = lenet(&args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{command}: {stdout}\n{stderr}");
        assert!(stderr.contains(s(&ckpt)) && stderr.contains("non-finite"), "{command}: {stderr}");
        assert!(!stdout.contains("test loss"), "{command}: {stdout}");
    }
}

/// Runs lenet with `--data data`, the naive backend unless `extra` names
/// one, and `extra`; asserts exit 1 before any epoch ran and returns stderr.
fn refused_before_training(data: &Path, extra: &[&str]) -> String {
    let mut args = vec!["--batch-size", "10", "--data", s(data)];
    if !extra.contains(&"--backend") {
        args.extend(["--backend", "naive"]);
    }
    args.extend(extra);
    let out = lenet(&args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{extra:?} was not refused:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("epoch 1  loss"), "{extra:?} trained before failing:\n{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Issue 12 items 6, 7 and 12: --epochs 0 and absurd epoch or thread counts
/// are refused with a message naming the flag, before anything runs.
#[test]
fn counts_are_bounded_with_clear_messages() {
    let dir = scratch_dir("cli-counts");
    write_dataset(&dir, 20, 10, false);
    let max = u64::MAX.to_string();
    for epochs in ["0", "100001", "1000000000000", &max] {
        let stderr = refused_before_training(&dir, &["--epochs", epochs]);
        assert!(stderr.contains("--epochs"), "--epochs {epochs}: {stderr}");
    }
    let cores = std::thread::available_parallelism().unwrap().get();
    let too_many = (4 * cores + 1).to_string();
    let stderr = refused_before_training(&dir, &["--backend", "im2col", "--threads", &too_many]);
    assert!(stderr.contains("--threads") && stderr.contains("--force-threads"), "{stderr}");
    let stderr = refused_before_training(&dir, &["--backend", "im2col", "--threads", "1000000", "--force-threads"]);
    assert!(stderr.contains("--threads"), "{stderr}");
    // Forced, a count above the default bound runs.
    let args = ["--backend", "im2col", "--threads", &too_many, "--force-threads", "--epochs", "1"];
    let mut all = vec!["--batch-size", "10", "--data", s(&dir)];
    all.extend(args);
    let out = lenet(&all);
    assert!(out.status.success(), "{:?}", text(&out));
}

/// Issue 12 item 11: a path that exists but is the wrong kind of thing is
/// reported as what it is, not as "not found".
#[test]
fn wrong_kinds_of_data_paths_say_what_is_wrong() {
    let dir = scratch_dir("cli-paths");
    write_dataset(&dir, 20, 10, false);
    let file = dir.join("train-images-idx3-ubyte");
    let stderr = refused_before_training(&file, &[]);
    assert!(stderr.contains(s(&file)) && stderr.contains("not a directory"), "{stderr}");
    assert!(!stderr.contains("not found"), "{stderr}");

    // A data file replaced by a directory.
    let labels = dir.join("t10k-labels-idx1-ubyte");
    std::fs::remove_file(&labels).unwrap();
    std::fs::create_dir(&labels).unwrap();
    let stderr = refused_before_training(&dir, &[]);
    assert!(stderr.contains(s(&labels)) && stderr.contains("is a directory"), "{stderr}");
    assert!(!stderr.contains("not found"), "{stderr}");
    std::fs::remove_dir(&labels).unwrap();

    #[cfg(unix)]
    {
        // A data file that is a symlink loop, and a data directory that is one.
        std::os::unix::fs::symlink(&labels, &labels).unwrap();
        let stderr = refused_before_training(&dir, &[]);
        assert!(stderr.contains(s(&labels)) && stderr.contains("symbolic links"), "{stderr}");
        let (a, b) = (dir.join("loop-a"), dir.join("loop-b"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let stderr = refused_before_training(&a, &[]);
        assert!(stderr.contains(s(&a)) && stderr.contains("symbolic links"), "{stderr}");
    }
}

/// Issue 12 item 3: outputs that name the same file as each other, a data
/// file or the loaded checkpoint are refused before training.
#[test]
fn colliding_outputs_are_refused_before_training() {
    let dir = scratch_dir("cli-collide");
    write_dataset(&dir, 20, 10, false);
    let ckpt = dir.join("c.safetensors");
    // The same file spelled two ways.
    let same = dir.join(".").join("c.safetensors");
    let stderr = refused_before_training(&dir, &["--save", s(&ckpt), "--metrics", s(&same)]);
    assert!(stderr.contains("--save") && stderr.contains("--metrics"), "{stderr}");
    assert!(!ckpt.exists());
    let svg = dir.join("x.svg");
    let stderr = refused_before_training(&dir, &["--plot", s(&svg), "--filters", s(&svg)]);
    assert!(stderr.contains("--plot") && stderr.contains("--filters"), "{stderr}");

    let data = dir.join("train-labels-idx1-ubyte");
    let before = std::fs::read(&data).unwrap();
    let stderr = refused_before_training(&dir, &["--save", s(&data)]);
    assert!(stderr.contains("--save") && stderr.contains(s(&data)), "{stderr}");
    assert_eq!(std::fs::read(&data).unwrap(), before);

    // The loaded checkpoint may be saved over (resuming in place), but no
    // other output may replace it.
    let mut args = vec!["--backend", "naive", "--batch-size", "10", "--data", s(&dir)];
    args.extend(["--epochs", "1", "--save", s(&ckpt)]);
    assert!(lenet(&args).status.success());
    let stderr = refused_before_training(&dir, &["--load", s(&ckpt), "--plot", s(&ckpt)]);
    assert!(stderr.contains("--load") && stderr.contains("--plot"), "{stderr}");
}

/// Issue 12 item 5: an output that cannot be written and an empty test set
/// are found before the first step, not after the work is done.
#[test]
fn bad_outputs_and_empty_test_sets_are_refused_before_training() {
    let dir = scratch_dir("cli-preflight");
    write_dataset(&dir, 20, 10, false);
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let stderr = refused_before_training(&dir, &["--save", s(&out_dir)]);
    assert!(stderr.contains(s(&out_dir)) && stderr.contains("is a directory"), "{stderr}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0, "a stray file was left in {}", out_dir.display());

    let missing = dir.join("no-such-dir").join("p.svg");
    let stderr = refused_before_training(&dir, &["--plot", s(&missing)]);
    assert!(stderr.contains(s(&missing)), "{stderr}");
    let under_file = dir.join("train-labels-idx1-ubyte").join("m.json");
    let stderr = refused_before_training(&dir, &["--metrics", s(&under_file)]);
    assert!(stderr.contains(s(&under_file)) && stderr.contains("not a directory"), "{stderr}");

    let stderr = refused_before_training(&dir, &["--test-limit", "0"]);
    assert!(stderr.contains("--test-limit"), "{stderr}");
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    write_dataset(&empty, 20, 0, false);
    let stderr = refused_before_training(&empty, &[]);
    assert!(stderr.contains("test set") && stderr.contains("empty"), "{stderr}");
}

/// Issue 12 item 4: a closed stdout (`lenet ... | head`) does not panic;
/// training stops quietly after saving the epoch it could not report.
#[test]
fn a_closed_stdout_stops_quietly_after_saving() {
    use std::process::Stdio;
    let dir = scratch_dir("cli-epipe");
    write_dataset(&dir, 20, 10, false);
    let ckpt = dir.join("c.safetensors");
    let metrics = dir.join("m.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(["--backend", "naive", "--batch-size", "10", "--epochs", "3", "--data", s(&dir)])
        .args(["--save", s(&ckpt), "--metrics", s(&metrics)])
        .env_remove("FASHION_MNIST_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before lenet writes its first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    // The first epoch's line could not be written: it was saved, then the
    // run stopped rather than train on unseen.
    let saved = lenet::checkpoint::load::<f32>(&ckpt).unwrap();
    assert_eq!(saved.epoch, 1, "{stderr}");
    assert!(stderr.contains("stdout") && stderr.contains(s(&ckpt)), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert_eq!(json["epochs"].as_array().unwrap().len(), 1);
}

/// Issue 12 item 5: an output that still fails after training (here
/// /dev/full, which takes the open and fails the write) loses nothing else:
/// the other outputs are written, and the error says where the checkpoint is.
#[cfg(target_os = "linux")]
#[test]
fn a_late_write_failure_keeps_the_rest_and_says_where_the_checkpoint_is() {
    let dir = scratch_dir("cli-late");
    write_dataset(&dir, 20, 10, false);
    let (ckpt, plot) = (dir.join("c.safetensors"), dir.join("p.svg"));
    let args = ["--backend", "naive", "--batch-size", "10", "--epochs", "1", "--data", s(&dir)];
    let mut all = args.to_vec();
    all.extend(["--save", s(&ckpt), "--metrics", "/dev/full", "--plot", s(&plot)]);
    let out = lenet(&all);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("/dev/full"), "{stderr}");
    assert!(stderr.contains(&format!("the checkpoint of epoch 1 is in {}", s(&ckpt))), "{stderr}");
    assert!(std::fs::read_to_string(&plot).unwrap().contains("</svg>"), "the plot was lost");
    assert_eq!(lenet::checkpoint::load::<f32>(&ckpt).unwrap().epoch, 1);

    // A checkpoint is saved by a rename, which would replace a device.
    let mut all = args.to_vec();
    all.extend(["--save", "/dev/null"]);
    let out = lenet(&all);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("not a regular file"), "{:?}", text(&out));
}

/// Issue 14: `--list-devices` prints each OpenCL device with its limits and
/// the index `--device` takes; with no OpenCL platform it says so plainly
/// and exits 1.
#[test]
fn list_devices_prints_the_devices_or_why_there_are_none() {
    let out = lenet(&["--list-devices"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("0:0 ") && stdout.contains("compute units") && stdout.contains("local memory"),
        "{stdout}"
    );

    let empty = scratch_dir("no-icd");
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .arg("--list-devices")
        .env("OCL_ICD_VENDORS", &*empty)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("no OpenCL platform"), "{stderr}");
}
