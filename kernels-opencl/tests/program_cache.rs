//! The on-disk program cache (KERNELS_OPENCL_CACHE): a second process
//! creates its programs from the cached binaries; corrupt files are
//! rebuilt and rewritten with the backend still working; concurrent
//! writers leave a cache every later process can use; `off` writes nothing.
//! Each backend is created in a child process (this test binary re-run
//! with CHILD set), since the cache directory comes from the environment;
//! the child computes a conv, checks it against the reference and prints
//! its cache statistics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use kernels_core::{Backend, Conv2d, GradRequest, SplitMix64, Tensor, Tolerance, compare};
use kernels_naive::Naive;
use kernels_opencl::{CACHE_ENV, OpenCl};

const CHILD: &str = "KERNELS_OPENCL_TEST_CACHE_CHILD";
const PROGRAMS: u32 = kernels_opencl::PROGRAM_COUNT as u32;

/// Child: one backend, one checked conv forward and backward, then the
/// statistics as "hits misses rejected written write_errors".
#[test]
fn cache_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let cl = OpenCl::new().expect("an OpenCL device");
    let mut rng = SplitMix64::new(7);
    let x = Tensor::from_fn(&[2, 3, 9, 9], |_| rng.uniform(-1.0, 1.0)).cast::<f32>();
    let w = Tensor::from_fn(&[4, 3, 3, 3], |_| rng.uniform(-1.0, 1.0)).cast::<f32>();
    let params = Conv2d::default();
    let (xd, wd) = (cl.upload(&x).unwrap(), cl.upload(&w).unwrap());
    let y = cl.download(&cl.conv2d_forward(&xd, &wd, None, &params).unwrap()).unwrap();
    let reference = Naive::<f64>::new();
    let y_ref = reference.conv2d_forward(&x.cast(), &w.cast(), None, &params).unwrap();
    let c = compare(y.data(), y_ref.data(), &Tolerance::f32_reduction(27, 3.0)).unwrap();
    assert!(c.passed(), "{c}");
    let g = cl.conv2d_backward(&xd, &wd, &cl.upload(&y).unwrap(), &params, GradRequest::ALL).unwrap();
    assert!(g.dx.is_some() && g.dw.is_some());
    let s = cl.program_cache_stats();
    println!("STATS {} {} {} {} {}", s.hits, s.misses, s.rejected, s.written, s.write_errors);
}

fn child(cache: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cache_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env(CACHE_ENV, cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// [hits, misses, rejected, written, write_errors] of a finished child.
fn stats(out: Output) -> [u32; 5] {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find_map(|l| l.split_once("STATS ").map(|(_, s)| s)).expect("a STATS line");
    let v: Vec<u32> = line.split_whitespace().map(|n| n.parse().unwrap()).collect();
    v.try_into().unwrap()
}

fn run(cache: &Path) -> [u32; 5] {
    stats(child(cache.to_str().unwrap()).wait_with_output().unwrap())
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kernels-opencl-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

#[test]
fn a_second_process_loads_the_cached_binaries_and_corrupt_files_are_rewritten() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = fresh_dir("cache");
    assert_eq!(run(&dir), [0, PROGRAMS, 0, PROGRAMS, 0], "cold");
    let files = cache_files(&dir);
    assert_eq!(files.len(), PROGRAMS as usize, "{files:?}");
    assert_eq!(run(&dir), [PROGRAMS, 0, 0, 0, 0], "warm");
    // Damage every file a different way: truncated, one byte flipped in
    // the binary, garbage, empty.
    for (i, file) in files.iter().enumerate() {
        let mut bytes = std::fs::read(file).unwrap();
        match i % 4 {
            0 => bytes.truncate(bytes.len() / 2),
            1 => {
                let at = bytes.len() - 100;
                bytes[at] ^= 0x55;
            }
            2 => bytes = b"not a program binary".to_vec(),
            _ => bytes.clear(),
        }
        std::fs::write(file, bytes).unwrap();
    }
    assert_eq!(run(&dir), [0, 0, PROGRAMS, PROGRAMS, 0], "corrupt");
    assert_eq!(run(&dir), [PROGRAMS, 0, 0, 0, 0], "rewritten");
    assert_eq!(cache_files(&dir), files, "same entries, no temporary files left");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn concurrent_writers_leave_a_usable_cache_and_off_writes_nothing() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = fresh_dir("cache-race");
    let children: Vec<Child> = (0..4).map(|_| child(dir.to_str().unwrap())).collect();
    for c in children {
        let [hits, misses, rejected, written, errors] = stats(c.wait_with_output().unwrap());
        assert_eq!((hits + misses + rejected, errors), (PROGRAMS, 0));
        assert_eq!(written, misses + rejected);
    }
    assert_eq!(cache_files(&dir).len(), PROGRAMS as usize);
    assert_eq!(run(&dir), [PROGRAMS, 0, 0, 0, 0]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(stats(child("off").wait_with_output().unwrap()), [0, PROGRAMS, 0, 0, 0]);
    assert!(!Path::new("off").exists());
}
