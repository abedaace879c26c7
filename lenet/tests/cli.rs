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
