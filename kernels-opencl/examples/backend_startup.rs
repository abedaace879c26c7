//! Times the creation of one OpenCL backend (device selection, context,
//! the nine programs from source or from the binary cache, the kernel
//! table) and prints it with the program cache's statistics. One backend
//! per process, so each run measures a process's first creation:
//! `KERNELS_OPENCL_CACHE=DIR cargo run --release -p kernels-opencl --example backend_startup`.

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let start = Instant::now();
    match kernels_opencl::OpenCl::new() {
        Ok(cl) => {
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let s = cl.program_cache_stats();
            println!(
                "{ms:.1} ms  {}  cache: {} hits, {} misses, {} rejected, {} written",
                cl.device_name(),
                s.hits,
                s.misses,
                s.rejected,
                s.written
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("backend_startup: {e}");
            ExitCode::FAILURE
        }
    }
}
