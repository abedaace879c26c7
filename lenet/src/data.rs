//! Fashion-MNIST (or MNIST) from IDX files.
//!
//! IDX: a 4-byte magic (two zero bytes, a type byte, 0x08 for unsigned bytes,
//! and the number of dimensions), then each dimension as a big-endian u32,
//! then the payload. Images are `[count, rows, cols]` (magic 0x00000803),
//! labels `[count]` (magic 0x00000801). A file may be gzip-compressed; the
//! gzip magic (1f 8b) decides, not the name.
//!
//! Every violation (wrong magic, bad or mismatched dimensions, a truncated or
//! over-long payload, a label ≥ 10) is a [`LenetError::Data`] naming the file.
//! Pixels stay `u8` in memory and are scaled to [0, 1] as a batch is built.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use kernels_core::{Float, SplitMix64};

use crate::error::{LenetError, Result};

/// Classes in Fashion-MNIST and MNIST.
pub const CLASSES: usize = 10;
/// Image side the model expects.
pub const SIDE: usize = 28;
/// Where the Debian package `dataset-fashion-mnist` installs the files.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Environment variable naming the data directory when `--data` is absent.
pub const DIR_ENV: &str = "FASHION_MNIST_DIR";

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Unsigned-byte images `[count, rows, cols]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Bytes past the declared payload that are counted for the error message
/// before giving up (the count is then "at least").
const TRAILING_COUNT_LIMIT: u64 = 1 << 20;

/// Opens an IDX file, raw or gzipped (the gzip magic decides), and reads it
/// as a stream: the header first, then exactly the payload it declares, so
/// a file is never inflated or read past what its header promises (a small
/// gzip bomb or a device such as /dev/zero cannot exhaust memory).
fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| LenetError::io(path, e))?;
    let meta = file.metadata().map_err(|e| LenetError::io(path, e))?;
    if !meta.is_file() {
        return Err(LenetError::data(path, "not a regular file"));
    }
    let mut raw = std::io::BufReader::new(file);
    let gzipped = raw.fill_buf().map_err(|e| LenetError::io(path, e))?.starts_with(&[0x1f, 0x8b]);
    if gzipped {
        parse_idx_stream(path, flate2::bufread::MultiGzDecoder::new(raw), magic, true)
    } else {
        parse_idx_stream(path, raw, magic, false)
    }
}

/// Reads up to `limit` bytes (fewer only at the end of the stream).
fn read_up_to(path: &Path, reader: &mut impl Read, limit: u64, gzipped: bool) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit).read_to_end(&mut out).map_err(|e| stream_error(path, e, gzipped))?;
    Ok(out)
}

fn stream_error(path: &Path, e: std::io::Error, gzipped: bool) -> LenetError {
    if gzipped { LenetError::data(path, format!("corrupt gzip stream: {e}")) } else { LenetError::io(path, e) }
}

/// Parses an IDX stream with the expected magic; returns the dimensions and
/// the payload, which must hold exactly their product in bytes.
fn parse_idx_stream(path: &Path, mut reader: impl Read, magic: u32, gzipped: bool) -> Result<(Vec<usize>, Vec<u8>)> {
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    let header = read_up_to(path, &mut reader, header_len as u64, gzipped)?;
    if let Some(word) = header.first_chunk::<4>() {
        let found = u32::from_be_bytes(*word);
        if found != magic {
            return Err(LenetError::data(path, format!("wrong magic number 0x{found:08x}, expected 0x{magic:08x}")));
        }
    }
    if header.len() < header_len {
        return Err(LenetError::data(
            path,
            format!("truncated header: {} bytes, an IDX header of {ndims} dimensions needs {header_len}", header.len()),
        ));
    }
    let word = |i: usize| u32::from_be_bytes([header[4 * i], header[4 * i + 1], header[4 * i + 2], header[4 * i + 3]]);
    let dims: Vec<usize> = (1..=ndims).map(|i| word(i) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| LenetError::data(path, format!("dimensions {dims:?} overflow")))?;
    // Grows only as data arrives: a header declaring terabytes over a short
    // file allocates what the file holds, then fails as truncated.
    let payload = read_up_to(path, &mut reader, expected as u64, gzipped)?;
    if payload.len() < expected {
        return Err(LenetError::data(
            path,
            format!("truncated: dimensions {dims:?} need {expected} bytes of data, the file holds {}", payload.len()),
        ));
    }
    let trailing = std::io::copy(&mut (&mut reader).take(TRAILING_COUNT_LIMIT), &mut std::io::sink())
        .map_err(|e| stream_error(path, e, gzipped))?;
    if trailing > 0 {
        let at_least = if trailing == TRAILING_COUNT_LIMIT { "at least " } else { "" };
        return Err(LenetError::data(
            path,
            format!("{at_least}{trailing} bytes after the {expected} that dimensions {dims:?} describe"),
        ));
    }
    Ok((dims, payload))
}

/// Reads an IDX image file (magic 0x00000803), raw or gzipped.
pub fn read_images(path: &Path) -> Result<Images> {
    let (dims, payload) = read_idx(path, IMAGES_MAGIC)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(LenetError::data(path, format!("images of {rows}x{cols} pixels")));
    }
    Ok(Images { count, rows, cols, pixels: payload })
}

/// Reads an IDX label file (magic 0x00000801), raw or gzipped; every label
/// must be below [`CLASSES`].
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let (_, payload) = read_idx(path, LABELS_MAGIC)?;
    if let Some(i) = payload.iter().position(|&l| l as usize >= CLASSES) {
        return Err(LenetError::data(
            path,
            format!("label {} at position {i} is out of range for {CLASSES} classes", payload[i]),
        ));
    }
    Ok(payload)
}

/// Images and their labels, 28x28 each.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

impl Dataset {
    /// Pairs images with labels, checking the counts match and the images
    /// are 28x28 (what LeNet takes). `images_path` names the file in errors.
    pub fn new(images_path: &Path, images: Images, labels_path: &Path, labels: Vec<u8>) -> Result<Self> {
        if images.count != labels.len() {
            return Err(LenetError::data(
                images_path,
                format!("holds {} images but {} holds {} labels", images.count, labels_path.display(), labels.len()),
            ));
        }
        if (images.rows, images.cols) != (SIDE, SIDE) {
            return Err(LenetError::data(
                images_path,
                format!("images are {}x{}, LeNet needs {SIDE}x{SIDE}", images.rows, images.cols),
            ));
        }
        Ok(Self { pixels: images.pixels, labels })
    }

    /// Reads and pairs an image file and a label file.
    pub fn load(images_path: &Path, labels_path: &Path) -> Result<Self> {
        let images = read_images(images_path)?;
        let labels = read_labels(labels_path)?;
        Self::new(images_path, images, labels_path, labels)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` examples (all of them when `n` is larger).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * SIDE * SIDE);
    }

    pub fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }

    /// Pixels of example `i`, 784 bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * SIDE * SIDE..(i + 1) * SIDE * SIDE]
    }

    /// Fills `x` with the examples `indices` scaled to [0, 1] (NCHW with one
    /// channel) and `y` with their labels. Both are cleared first.
    pub fn gather<T: Float>(&self, indices: &[usize], x: &mut Vec<T>, y: &mut Vec<usize>) {
        let scale: [T; 256] = std::array::from_fn(|v| T::from_f64(v as f64 / 255.0));
        x.clear();
        y.clear();
        x.reserve(indices.len() * SIDE * SIDE);
        for &i in indices {
            x.extend(self.image(i).iter().map(|&p| scale[p as usize]));
            y.push(self.label(i));
        }
    }
}

/// The order of the training examples in epoch `epoch` (1-based): a
/// Fisher-Yates shuffle from a generator seeded by the seed and the epoch, so
/// a resumed run sees the same orders as an uninterrupted one.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0xA076_1D64_78BD_642F));
    // Discard one draw so nearby seeds do not start alike.
    rng.next_u64();
    rng.shuffle(&mut order);
    order
}

/// The four files of the data set, found in one directory.
#[derive(Debug, Clone)]
pub struct DataFiles {
    pub dir: PathBuf,
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    pub test_images: PathBuf,
    pub test_labels: PathBuf,
}

const STEMS: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

impl DataFiles {
    /// The directory from `--data`, else `$FASHION_MNIST_DIR`, else
    /// [`DEFAULT_DIR`]; each file may be raw or `.gz`, and named
    /// `train-images-idx3-ubyte` or `train-images.idx3-ubyte`. A missing file gives
    /// [`LenetError::DataMissing`] listing every path tried.
    pub fn locate(flag: Option<&Path>) -> Result<Self> {
        let env = std::env::var_os(DIR_ENV).filter(|v| !v.is_empty());
        let (dir, origin) = match (flag, env) {
            (Some(dir), _) => (dir.to_path_buf(), "from --data"),
            (None, Some(env)) => (PathBuf::from(env), "from FASHION_MNIST_DIR"),
            (None, None) => (PathBuf::from(DEFAULT_DIR), "the default"),
        };
        // What is wrong with a path that exists is said as it is (a file, a
        // symlink loop, no permission), never as "not found".
        match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(LenetError::bad_path(
                    &dir,
                    format!("is not a directory ({origin}); it must name the directory holding the four IDX files"),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LenetError::DataMissing {
                    tried: vec![format!("{} ({origin}): no such directory", dir.display())],
                });
            }
            Err(e) => {
                return Err(LenetError::bad_path(
                    &dir,
                    format!("cannot be used as the data directory ({origin}): {e}"),
                ));
            }
        }
        let mut found = Vec::with_capacity(4);
        let mut tried = Vec::new();
        for stem in STEMS {
            // Some MNIST copies write `train-images.idx3-ubyte`: accept that spelling too.
            let dotted = stem.replacen("s-idx", "s.idx", 1);
            let candidates =
                [dir.join(format!("{stem}.gz")), dir.join(stem), dir.join(format!("{dotted}.gz")), dir.join(&dotted)];
            // The first regular file wins; if there is none, a candidate that
            // exists but cannot be read as a file is the error.
            let mut unusable = None;
            let mut chosen = None;
            for p in &candidates {
                match std::fs::metadata(p) {
                    Ok(meta) if meta.is_file() => {
                        chosen = Some(p.clone());
                        break;
                    }
                    Ok(meta) => {
                        let kind = if meta.is_dir() { "is a directory" } else { "is not a regular file" };
                        unusable.get_or_insert_with(|| LenetError::bad_path(p, format!("{kind}, not an IDX file")));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        unusable.get_or_insert_with(|| LenetError::bad_path(p, e.to_string()));
                    }
                }
            }
            match (chosen, unusable) {
                (Some(p), _) => found.push(p),
                (None, Some(problem)) => return Err(problem),
                (None, None) => tried.push(format!("{}[.gz] and {dotted}[.gz] ({origin})", dir.join(stem).display())),
            }
        }
        if !tried.is_empty() {
            return Err(LenetError::DataMissing { tried });
        }
        let [train_images, train_labels, test_images, test_labels]: [PathBuf; 4] =
            found.try_into().map_err(|_| LenetError::DataMissing { tried: vec![dir.display().to_string()] })?;
        Ok(Self { dir, train_images, train_labels, test_images, test_labels })
    }

    /// Reads and validates both splits.
    pub fn load(&self) -> Result<(Dataset, Dataset)> {
        let train = Dataset::load(&self.train_images, &self.train_labels)?;
        let test = Dataset::load(&self.test_images, &self.test_labels)?;
        Ok((train, test))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(100, 5, 1);
        assert_eq!(a, epoch_order(100, 5, 1));
        assert_ne!(a, epoch_order(100, 5, 2), "epochs share an order");
        assert_ne!(a, epoch_order(100, 6, 1), "seeds share an order");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn idx_header_checks_every_length() {
        let path = Path::new("mem");
        let mut bytes = 0x0000_0801u32.to_be_bytes().to_vec();
        bytes.extend(3u32.to_be_bytes());
        bytes.extend([1, 2, 3]);
        let parse = |bytes: &[u8], magic| parse_idx_stream(path, bytes, magic, false);
        let (dims, payload) = parse(&bytes, LABELS_MAGIC).unwrap();
        assert_eq!((dims, payload), (vec![3], vec![1u8, 2, 3]));
        assert!(parse(&bytes[..6], LABELS_MAGIC).is_err());
        assert!(parse(&bytes[..bytes.len() - 1], LABELS_MAGIC).is_err());
        assert!(parse(&bytes, IMAGES_MAGIC).is_err());
        let mut long = bytes.clone();
        long.push(0);
        let msg = parse(&long, LABELS_MAGIC).unwrap_err().to_string();
        assert!(msg.contains("1 bytes after the 3"), "{msg}");
    }
}
