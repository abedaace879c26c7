//! The harness binary as a user runs it: bad output paths found before
//! anything is measured, `--replot` messages that name the file and the
//! action, and a whole quick run with a (fake) peer beside our backends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .env_remove("KERNELS_PYTHON")
        .output()
        .expect("the harness binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("harness-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unwritable_out_fails_before_measuring_anything() {
    let dir = scratch("unwritable-out");
    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out_dir = file.join("reports");
    let out = harness(&["--quick", "--backends", "naive", "--peers", "none", "--out", out_dir.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("creating the output directory") && err.contains("a-file"), "{err}");
    // The ceilings are the first thing a run measures: they never started.
    assert!(!err.contains("ceilings"), "measured before checking --out:\n{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn replot_names_the_action_and_the_file_given() {
    let dir = scratch("replot");
    let out_dir = dir.join("out");
    let missing = dir.join("missing-run.json");
    let out = harness(&["--replot", missing.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("reading") && err.contains("missing-run.json") && !err.contains("writing"), "{err}");
    let garbled = dir.join("garbled-run.json");
    std::fs::write(&garbled, "[1, 2").unwrap();
    let out = harness(&["--replot", garbled.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("garbled-run.json") && !err.contains("results.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn fake_peer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/fake_peer.py")
}

#[test]
fn a_quick_run_puts_the_peer_beside_our_backends_and_replots() {
    let dir = scratch("peer-run");
    let out_dir = dir.join("out");
    let peer = fake_peer();
    let out = harness(&[
        "--quick",
        "--backends",
        "naive",
        "--shapes",
        "lenet-fc3",
        "--ops",
        "linear",
        "--peers",
        "pytorch",
        "--python",
        "python3",
        "--peer-script",
        peer.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["schema"], 3);
    assert_eq!(json["peers"][0]["info"]["version"], "0.0-fake");
    let peer_records: Vec<&serde_json::Value> =
        json["records"].as_array().unwrap().iter().filter(|r| r["backend"] == "pytorch").collect();
    assert_eq!(peer_records.len(), 2, "linear-fwd and linear-bwd");
    assert!(peer_records.iter().all(|r| r["peer_version"] == "0.0-fake" && r["max_rel_err"].as_f64() < Some(1e-5)));
    let readme = std::fs::read_to_string(out_dir.join("README.md")).unwrap();
    assert!(readme.contains("| naive / pytorch time |"), "{readme}");
    assert!(readme.contains("Peer pytorch: fake peer, 2 threads"), "{readme}");

    // The same results re-render without measuring.
    let replotted = dir.join("replotted");
    let json_path = out_dir.join("results.json");
    let out = harness(&["--replot", json_path.to_str().unwrap(), "--out", replotted.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(replotted.join("README.md")).unwrap(), readme);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_torch_the_report_says_so_and_has_no_peer_column() {
    let dir = scratch("no-torch");
    let out_dir = dir.join("out");
    let no_torch = dir.join("fake_peer_no-torch.py");
    std::fs::copy(fake_peer(), &no_torch).unwrap();
    let out = harness(&[
        "--quick",
        "--backends",
        "naive",
        "--shapes",
        "lenet-fc3",
        "--ops",
        "linear-fwd",
        "--python",
        "python3",
        "--peer-script",
        no_torch.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let readme = std::fs::read_to_string(out_dir.join("README.md")).unwrap();
    assert!(readme.contains("Peer pytorch: **not measured**: torch is not importable"), "{readme}");
    assert!(readme.contains("PyTorch peer not measured"), "{readme}");
    assert!(!readme.contains("pytorch ms"), "{readme}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 13: `--isa` caps im2col's kernels and every im2col conv row of
/// results.json records the plan that ran (each pass's algorithm and the
/// ISA); other rows carry none.
#[test]
fn isa_cap_reaches_im2col_and_each_conv_row_records_its_plan() {
    let dir = scratch("isa-plan");
    let out = harness(&[
        "--quick",
        "--backends",
        "im2col",
        "--peers",
        "none",
        "--isa",
        "portable",
        "--shapes",
        "lenet-c2,lenet-p1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let records = json["records"].as_array().unwrap();
    let conv: Vec<_> = records.iter().filter(|r| r["shape"] == "lenet-c2").collect();
    assert!(!conv.is_empty());
    for r in conv {
        let plan = r["plan"].as_str().unwrap_or_default();
        assert!(plan.starts_with("forward ") && plan.ends_with("isa portable"), "{plan}");
    }
    assert!(records.iter().filter(|r| r["shape"] == "lenet-p1").all(|r| r["plan"].is_null()));
    let notes = json["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n.as_str().unwrap_or_default().contains("ran at ISA portable")), "{notes:?}");
    // The machine section records the ISA the cap left im2col.
    assert_eq!(json["machine"]["backend_isa"][0]["backend"], "im2col");
    assert_eq!(json["machine"]["backend_isa"][0]["isa"], "portable");
    let bad = harness(&["--quick", "--isa", "sse9", "--out", dir.to_str().unwrap()]);
    assert!(!bad.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 13: the harness can force im2col's algorithm per pass; the rows
/// record the forced plan, and a path that does not apply fails naming it.
#[test]
fn forced_im2col_paths_run_and_are_recorded() {
    let dir = scratch("forced-plan");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--quick",
            "--backends",
            "im2col",
            "--peers",
            "none",
            "--shapes",
            "lenet-c2",
            "--ops",
            "conv-fwd,conv-bwd",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", dir.to_str().unwrap()]);
        harness(&args)
    };
    let out = run(&["--im2col-forward", "unfold", "--im2col-dx", "col2im", "--im2col-dw", "unfold"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    for r in json["records"].as_array().unwrap() {
        let plan = r["plan"].as_str().unwrap_or_default();
        assert!(plan.starts_with("forward Unfold, dx Col2im, dw Unfold"), "{plan}");
    }
    let out = run(&["--im2col-forward", "winograd"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("forward by Winograd does not apply"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issues 16 and 17: per-model LeNet throughput and --lenet-epochs, cheaply
/// (--quick: one timed step, one epoch of the first 1024 examples), and
/// the machine section's ISA per backend and FMA peaks.
#[test]
fn lenet_models_and_epochs_run_per_backend_and_are_recorded() {
    let dir = scratch("lenet-models");
    let out = harness(&[
        "--quick",
        "--backends",
        "naive,im2col",
        "--peers",
        "none",
        "--shapes",
        "lenet-fc3",
        "--ops",
        "linear-fwd",
        "--lenet-models",
        "simplecnn,lenet5-bn",
        "--lenet-steps",
        "1",
        "--lenet-epochs",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("lenet5-bn im2col: epoch 1/1"), "progress on stderr:\n{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let lenet = json["lenet"].as_array().unwrap();
    let got: Vec<(&str, &str)> =
        lenet.iter().map(|l| (l["model"].as_str().unwrap(), l["backend"].as_str().unwrap())).collect();
    assert_eq!(got, [("lenet5-bn", "naive"), ("lenet5-bn", "im2col"), ("simplecnn", "naive"), ("simplecnn", "im2col")]);
    for l in lenet {
        assert_eq!((l["steps"].as_u64(), l["batch"].as_u64()), (Some(1), Some(256)), "{l}");
        assert!(l["examples_per_s"].as_f64().unwrap() > 0.0 && l["first_loss"].as_f64().unwrap() > 0.0, "{l}");
        if l["backend"] == "naive" {
            assert!(l["accuracy"].is_null(), "naive is not trained for --lenet-epochs: {l}");
            assert_eq!(l["warmup_steps"].as_u64(), Some(1));
        } else {
            let a = &l["accuracy"];
            assert_eq!((a["epochs"].as_u64(), a["train_examples"].as_u64()), (Some(1), Some(1024)), "{l}");
            assert_eq!((a["test_examples"].as_u64(), a["seed"].as_u64()), (Some(500), Some(7)), "{l}");
            let acc = a["test_accuracy"].as_f64().unwrap();
            // Four Adam steps from Xavier weights: better than guessing one of ten classes.
            assert!(acc > 0.15 && acc <= 1.0, "{l}");
        }
    }
    let fma = json["ceilings"]["fma"].as_array().unwrap();
    assert!(!fma.is_empty() && fma[0]["isa"] == "portable", "{fma:?}");
    assert!(fma.iter().all(|p| p["ceiling"]["rate"].as_f64().unwrap() > 0.0));
    let isas: Vec<&str> =
        json["machine"]["backend_isa"].as_array().unwrap().iter().map(|b| b["backend"].as_str().unwrap()).collect();
    assert_eq!(isas, ["naive", "im2col"]);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("### Test accuracy after 1 epochs"), "{readme}");
    assert!(readme.contains("| simplecnn | im2col | 1 | **"), "{readme}");
    assert!(readme.contains("| fma portable x1 |") && readme.contains("- Backend naive: ISA **portable**"), "{readme}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lenet_counts_out_of_range_are_refused_before_measuring() {
    for args in [
        ["--lenet-epochs", "0"],
        ["--lenet-epochs", "51"],
        ["--lenet-steps", "0"],
        ["--lenet-dropout", "1.0"],
        ["--lenet-models", "vgg16"],
    ] {
        let out = harness(&["--quick", "--peers", "none", args[0], args[1], "--out", "/nonexistent/never-written"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(args[0]) || err.contains("vgg16"), "{args:?}: {err}");
        assert!(!err.contains("ceilings"), "{args:?} measured before refusing:\n{err}");
    }
}
