//! With no OpenCL platform at all, `OpenCl::new` is an error that says so
//! and says how to install one. The test re-runs itself with the ICD
//! loader pointed at an empty vendor directory (OCL_ICD_VENDORS), so no
//! driver is found.

use std::process::Command;

use kernels_opencl::{DEVICE_ENV, OpenCl};

const CHILD: &str = "KERNELS_OPENCL_TEST_EXPECT_NO_PLATFORM";

#[test]
fn without_a_platform_the_error_says_how_to_install_one() {
    if std::env::var_os(CHILD).is_some() {
        let err = OpenCl::new().expect_err("no platform should be found").to_string();
        assert!(
            err.contains("no OpenCL platform") && err.contains("pocl-opencl-icd") && err.contains("make setup"),
            "{err}"
        );
        return;
    }
    let empty = std::env::temp_dir().join(format!("kernels-opencl-no-vendors-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "without_a_platform_the_error_says_how_to_install_one", "--nocapture"])
        .env("OCL_ICD_VENDORS", &empty)
        .env(CHILD, "1")
        .env_remove(DEVICE_ENV)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&empty).ok();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
