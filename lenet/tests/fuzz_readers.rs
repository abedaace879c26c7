//! Fuzzing the two readers of untrusted files, the IDX reader and the
//! checkpoint reader, within `cargo test`: arbitrary bytes and corrupted
//! valid files (raw and gzipped IDX, a real checkpoint) must give `Ok` or a
//! typed error, never a panic. Cases per property: `PROPTEST_CASES`, else
//! the count below (bounded so `make test` stays quick).

mod common;

use std::path::Path;

use common::{gzip, idx_bytes, scratch_dir};
use kernels_core::Optimizer;
use kernels_naive::Naive;
use lenet::checkpoint;
use lenet::data::{read_images, read_labels};
use lenet::model::{Activation, Architecture, Pooling};
use lenet::train::Trainer;
use proptest::prelude::*;
use proptest::test_runner::Config;

const CASES: u32 = 256;

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES),
        ..Config::default()
    }
}

/// Every reader on one file: whatever it returns, it returns.
fn read_all(path: &Path) {
    let _ = read_images(path);
    let _ = read_labels(path);
    let _ = checkpoint::load::<f32>(path);
}

/// Corruptions of a valid file: overwritten bytes, a truncation, and bytes
/// appended.
fn corrupt(valid: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>, tail: &[u8]) -> Vec<u8> {
    let mut bytes = valid;
    for &(at, value) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = value;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes.extend_from_slice(tail);
    bytes
}

fn valid_idx() -> Vec<u8> {
    let pixels: Vec<u8> = (0..3 * 28 * 28).map(|i| (i * 31 % 256) as u8).collect();
    idx_bytes(0x803, &[3, 28, 28], &pixels)
}

fn valid_checkpoint(dir: &Path) -> Vec<u8> {
    let path = dir.join("valid.safetensors");
    let be = Naive::<f32>::new();
    let arch = Architecture::lenet5(Activation::Relu, Pooling::Max);
    let trainer = Trainer::new(&be, arch, Optimizer::adam(1e-3), 1).expect("trainer");
    checkpoint::save(&be, &trainer, &path).expect("save");
    checkpoint::load::<f32>(&path).expect("the uncorrupted checkpoint loads");
    std::fs::read(&path).expect("read back")
}

#[test]
fn arbitrary_bytes_never_panic_a_reader() {
    let dir = scratch_dir("fuzz-arbitrary");
    let path = dir.join("input");
    proptest!(config(), |(bytes in proptest::collection::vec(any::<u8>(), 0..4096), gz in any::<bool>())| {
        let bytes = if gz { gzip(&bytes) } else { bytes };
        std::fs::write(&path, &bytes).unwrap();
        read_all(&path);
    });
}

#[test]
fn corrupted_idx_files_never_panic_the_reader() {
    let dir = scratch_dir("fuzz-idx");
    let path = dir.join("images");
    let valid = valid_idx();
    proptest!(config(), |(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
        gz in any::<bool>(),
        gz_after in any::<bool>(),
    )| {
        // Corrupt the raw bytes before compressing, or the compressed ones.
        let source = if gz && !gz_after { gzip(&valid) } else { valid.clone() };
        let bytes = corrupt(source, &edits, cut, &tail);
        let bytes = if gz && gz_after { gzip(&bytes) } else { bytes };
        std::fs::write(&path, &bytes).unwrap();
        read_all(&path);
    });
}

#[test]
fn corrupted_checkpoints_never_panic_the_reader() {
    let dir = scratch_dir("fuzz-checkpoint");
    let valid = valid_checkpoint(&dir);
    let path = dir.join("corrupted.safetensors");
    proptest!(config(), |(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        header_edits in proptest::collection::vec((0usize..512, any::<u8>()), 0..4),
        cut in proptest::option::of(any::<usize>()),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    )| {
        // Edits anywhere, plus edits aimed at the JSON header at the front,
        // where a flipped byte changes a name, shape, dtype or number.
        let mut bytes = corrupt(valid.clone(), &edits, cut, &tail);
        for &(at, value) in &header_edits {
            if at < bytes.len() {
                bytes[at] = value;
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        read_all(&path);
    });
}
