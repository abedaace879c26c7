//! Prints every OpenCL platform's devices with the limits that shape the
//! backend's launches, numbered as `KERNELS_OPENCL_DEVICE` / `--device`
//! accept them: `cargo run -p kernels-opencl --example list_devices`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match kernels_opencl::list_devices() {
        Ok(devices) => {
            for d in devices {
                println!("{d}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("list_devices: {e}");
            ExitCode::FAILURE
        }
    }
}
