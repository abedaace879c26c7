//! The IDX reader on small files written here: valid (raw and gzip),
//! truncated, wrong magic, mismatched counts, labels out of range, wrong
//! image size; and the data directory lookup.

mod common;

use common::{gzip, idx_bytes, scratch_dir, write_dataset};
use lenet::LenetError;
use lenet::data::{DataFiles, Dataset, read_images, read_labels};

#[test]
fn valid_files_read_raw_and_gzipped() {
    let dir = scratch_dir("idx-valid");
    let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8 * 10).collect();
    let raw = idx_bytes(0x803, &[2, 3, 4], &pixels);
    std::fs::write(dir.join("raw"), &raw).unwrap();
    std::fs::write(dir.join("gz"), gzip(&raw)).unwrap();
    for name in ["raw", "gz"] {
        let images = read_images(&dir.join(name)).unwrap();
        assert_eq!((images.count, images.rows, images.cols), (2, 3, 4));
        assert_eq!(images.pixels, pixels);
    }
    std::fs::write(dir.join("labels"), gzip(&idx_bytes(0x801, &[3], &[0, 9, 4]))).unwrap();
    assert_eq!(read_labels(&dir.join("labels")).unwrap(), vec![0, 9, 4]);
}

#[test]
fn pixels_are_scaled_to_unit_interval() {
    let dir = scratch_dir("idx-scale");
    write_dataset(&dir, 3, 2, false);
    let files = DataFiles::locate(Some(&dir)).unwrap();
    let (train, test) = files.load().unwrap();
    assert_eq!((train.len(), test.len()), (3, 2));
    let (mut x, mut y) = (Vec::<f32>::new(), Vec::new());
    train.gather(&[2, 0], &mut x, &mut y);
    assert_eq!(x.len(), 2 * 784);
    assert_eq!(y, vec![2, 0]);
    assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(x[0], train.image(2)[0] as f32 / 255.0);
}

fn data_error(err: LenetError) -> String {
    match err {
        LenetError::Data { path, detail } => format!("{} | {detail}", path.display()),
        other => panic!("expected a data error, got {other}"),
    }
}

#[test]
fn truncated_files_are_refused_naming_the_file() {
    let dir = scratch_dir("idx-truncated");
    let full = idx_bytes(0x803, &[2, 28, 28], &vec![7; 2 * 784]);
    let cut = dir.join("cut-images");
    std::fs::write(&cut, &full[..full.len() - 5]).unwrap();
    let msg = data_error(read_images(&cut).unwrap_err());
    assert!(msg.contains("cut-images") && msg.contains("truncated"), "{msg}");

    let header = dir.join("short-header");
    std::fs::write(&header, &full[..10]).unwrap();
    let msg = data_error(read_images(&header).unwrap_err());
    assert!(msg.contains("short-header") && msg.contains("truncated header"), "{msg}");

    // A gzip stream cut short is corrupt, not silently shorter.
    let gz = gzip(&full);
    let cut_gz = dir.join("cut.gz");
    std::fs::write(&cut_gz, &gz[..gz.len() / 2]).unwrap();
    let msg = data_error(read_images(&cut_gz).unwrap_err());
    assert!(msg.contains("cut.gz") && msg.contains("gzip"), "{msg}");

    let long = dir.join("long-labels");
    std::fs::write(&long, idx_bytes(0x801, &[2], &[1, 2, 3])).unwrap();
    let msg = data_error(read_labels(&long).unwrap_err());
    assert!(msg.contains("long-labels") && msg.contains("1 bytes after"), "{msg}");
}

#[test]
fn wrong_magic_is_refused() {
    let dir = scratch_dir("idx-magic");
    let labels_as_images = dir.join("labels-as-images");
    std::fs::write(&labels_as_images, idx_bytes(0x801, &[2, 28, 28], &[0; 8])).unwrap();
    let msg = data_error(read_images(&labels_as_images).unwrap_err());
    assert!(msg.contains("labels-as-images") && msg.contains("wrong magic number 0x00000801"), "{msg}");

    let text = dir.join("text");
    std::fs::write(&text, b"this is not an idx file at all").unwrap();
    let msg = data_error(read_labels(&text).unwrap_err());
    assert!(msg.contains("wrong magic"), "{msg}");
}

#[test]
fn mismatched_counts_and_sizes_are_refused() {
    let dir = scratch_dir("idx-mismatch");
    let images = dir.join("images");
    let labels = dir.join("labels");
    std::fs::write(&images, idx_bytes(0x803, &[3, 28, 28], &vec![0; 3 * 784])).unwrap();
    std::fs::write(&labels, idx_bytes(0x801, &[2], &[0, 1])).unwrap();
    let msg = data_error(Dataset::load(&images, &labels).unwrap_err());
    assert!(msg.contains("3 images") && msg.contains("2 labels"), "{msg}");

    let small = dir.join("small-images");
    std::fs::write(&small, idx_bytes(0x803, &[2, 14, 14], &vec![0; 2 * 196])).unwrap();
    let msg = data_error(Dataset::load(&small, &labels).unwrap_err());
    assert!(msg.contains("small-images") && msg.contains("14x14"), "{msg}");
}

#[test]
fn labels_out_of_range_are_refused() {
    let dir = scratch_dir("idx-labels");
    let path = dir.join("labels");
    std::fs::write(&path, idx_bytes(0x801, &[4], &[0, 3, 10, 1])).unwrap();
    let msg = data_error(read_labels(&path).unwrap_err());
    assert!(msg.contains("label 10 at position 2"), "{msg}");
}

#[test]
fn a_missing_directory_names_the_paths_tried_and_how_to_get_the_data() {
    let dir = scratch_dir("idx-missing");
    let err = DataFiles::locate(Some(&dir.join("nowhere"))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LenetError::DataMissing { .. }), "{msg}");
    assert!(msg.contains("nowhere (from --data): no such directory"), "{msg}");
    assert!(msg.contains("make setup") && msg.contains("--data"), "{msg}");

    // A directory lacking one file names the paths tried for it.
    let partial = scratch_dir("idx-partial");
    write_dataset(&partial, 2, 2, true);
    std::fs::remove_file(partial.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let msg = DataFiles::locate(Some(&partial)).unwrap_err().to_string();
    assert!(msg.contains("idx-partial/t10k-labels-idx1-ubyte[.gz] and t10k-labels.idx1-ubyte[.gz]"), "{msg}");
    assert!(!msg.contains("train-images-idx3-ubyte[.gz]"), "{msg}");

    // Raw files are found as well as gzipped ones.
    write_dataset(&dir, 2, 2, false);
    let files = DataFiles::locate(Some(&dir)).unwrap();
    assert!(files.train_images.ends_with("train-images-idx3-ubyte"));

    // MNIST's other spelling, with a dot before idx.
    let dotted = scratch_dir("idx-dotted");
    write_dataset(&dotted, 2, 2, false);
    std::fs::rename(dotted.join("t10k-labels-idx1-ubyte"), dotted.join("t10k-labels.idx1-ubyte")).unwrap();
    let files = DataFiles::locate(Some(&dotted)).unwrap();
    assert!(files.test_labels.ends_with("t10k-labels.idx1-ubyte"));
    assert_eq!(files.load().unwrap().1.len(), 2);
}

#[test]
fn reading_stops_at_the_size_the_header_declares() {
    // A small gzip file that inflates to 64 MiB past a 3-label payload: the
    // reader stops counting after 1 MiB instead of inflating it whole.
    let dir = scratch_dir("idx-bomb");
    let mut bytes = idx_bytes(0x801, &[3], &[1, 2, 3]);
    bytes.resize(bytes.len() + (64 << 20), 0);
    let bomb = gzip(&bytes);
    assert!(bomb.len() < 1 << 20, "the test file is small: {} bytes", bomb.len());
    std::fs::write(dir.join("bomb.gz"), bomb).unwrap();
    let msg = read_labels(&dir.join("bomb.gz")).unwrap_err().to_string();
    assert!(msg.contains("at least 1048576 bytes after the 3"), "{msg}");
    // A device is refused before anything is read (/dev/zero never ends).
    let msg = read_images(std::path::Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(msg.contains("/dev/zero") && msg.contains("not a regular file"), "{msg}");
}
