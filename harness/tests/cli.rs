//! The harness binary as a user runs it: bad output paths found before
//! anything is measured, `--replot` messages that name the file and the
//! action.

use std::path::PathBuf;
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
    let out = harness(&["--quick", "--backends", "naive", "--out", out_dir.to_str().unwrap()]);
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
