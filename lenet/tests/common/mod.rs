//! Helpers shared by the lenet tests: scratch directories, IDX writers,
//! synthetic data sets and the real one.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kernels_core::SplitMix64;
use lenet::data::{DataFiles, Dataset, Images, SIDE};

/// A fresh, empty directory under the system temp dir, unique to this
/// process and `name`, removed when dropped.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn scratch_dir(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("lenet-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// IDX bytes: magic, big-endian dimensions, payload.
pub fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes a valid four-file data set of `train` and `test` 28x28 images
/// into `dir` (gzipped when `gz`); returns nothing, the files are named as
/// Fashion-MNIST's.
pub fn write_dataset(dir: &Path, train: usize, test: usize, gz: bool) {
    let mut rng = SplitMix64::new(3);
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let pixels: Vec<u8> = (0..n * SIDE * SIDE).map(|_| rng.below(256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let images = idx_bytes(0x803, &[n as u32, SIDE as u32, SIDE as u32], &pixels);
        let labels = idx_bytes(0x801, &[n as u32], &labels);
        let (images, labels, ext) = if gz { (gzip(&images), gzip(&labels), ".gz") } else { (images, labels, "") };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labels).unwrap();
    }
}

/// `n` images of class-dependent blobs with noise, labels cycling 0..10:
/// learnable, so a loss can fall, and deterministic.
pub fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = SplitMix64::new(seed);
    let mut pixels = Vec::with_capacity(n * SIDE * SIDE);
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for &label in &labels {
        let (cy, cx) = (4 + 2 * (label as usize % 5) * 2, if label < 5 { 8 } else { 19 });
        for y in 0..SIDE {
            for x in 0..SIDE {
                let d2 = (y as f64 - cy as f64).powi(2) + (x as f64 - cx as f64).powi(2);
                let blob = 255.0 * (-d2 / 18.0).exp();
                let noise = rng.uniform(0.0, 60.0);
                pixels.push((blob + noise).min(255.0) as u8);
            }
        }
    }
    let images = Images { count: n, rows: SIDE, cols: SIDE, pixels };
    Dataset::new(Path::new("synthetic"), images, Path::new("synthetic"), labels).unwrap()
}

/// The installed data set, (train, test). CI installs it with `make setup`;
/// a missing one fails the test with the loader's own message.
pub fn real_data() -> (Dataset, Dataset) {
    let files = DataFiles::locate(None).unwrap_or_else(|e| panic!("{e}"));
    files.load().unwrap_or_else(|e| panic!("{e}"))
}
