//! Device choice: an explicit selector ("P:D" platform/device indices or a
//! case-insensitive name substring) or the default, which prefers a GPU and
//! falls back to any device. Also reads the limits the launchers size their
//! work-groups and tiles from.

use kernels_core::{Error, Result};
use ocl::core::{DeviceInfo, DeviceInfoResult};
use ocl::enums::PlatformInfo;
use ocl::flags::DeviceType;
use ocl::{Device, Platform};

/// Environment variable holding a device selector for [`crate::OpenCl::new`].
pub const DEVICE_ENV: &str = "KERNELS_OPENCL_DEVICE";

const INSTALL_HINT: &str = "install an OpenCL driver and ICD loader, for example the Debian packages \
    pocl-opencl-icd and ocl-icd-opencl-dev (`make setup` does it), and check with `clinfo -l`";

/// One platform/device pair with the facts used to pick and size work.
#[derive(Debug, Clone)]
pub(crate) struct Chosen {
    pub platform: Platform,
    pub device: Device,
    pub label: String,
    pub limits: Limits,
}

/// Device limits that shape launches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_work_group: usize,
    pub local_mem_bytes: u64,
    pub compute_units: u32,
    pub max_alloc_bytes: u64,
    pub is_gpu: bool,
}

fn device_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{what}: {e}"))
}

/// OpenCL's CL_PLATFORM_NOT_FOUND_KHR: the ICD loader found no driver.
const PLATFORM_NOT_FOUND_KHR: i32 = -1001;

/// Asks the loader how many platforms there are, once, without ocl-core's
/// 10-second retry loop for a loader that is still waking up (setup here
/// is serialised, which is what that loop guards against).
/// Other failures are left to ocl-core's call, which reports them.
fn no_platform() -> bool {
    let mut count: ocl::core::ffi::cl_uint = 0;
    // SAFETY: a count query: no output array (null, length 0) and a valid
    // pointer to a local for the count, as clGetPlatformIDs allows.
    let status = unsafe { ocl::core::ffi::clGetPlatformIDs(0, std::ptr::null_mut(), &mut count) };
    status == PLATFORM_NOT_FOUND_KHR || (status == 0 && count == 0)
}

fn platforms() -> Result<Vec<Platform>> {
    if no_platform() {
        return Err(Error::Device(format!("no OpenCL platform found; {INSTALL_HINT}")));
    }
    // ocl's Platform::list panics when the loader finds no platform; the
    // core call returns the error instead.
    let ids = ocl::core::get_platform_ids()
        .map_err(|e| Error::Device(format!("no OpenCL platform found ({e}); {INSTALL_HINT}")))?;
    if ids.is_empty() {
        return Err(Error::Device(format!("no OpenCL platform found; {INSTALL_HINT}")));
    }
    Ok(ids.into_iter().map(Platform::new).collect())
}

fn all_devices() -> Result<Vec<(usize, usize, Platform, Device)>> {
    let mut out = Vec::new();
    for (pi, platform) in platforms()?.into_iter().enumerate() {
        // The core call reports errors; ocl's Device::list turns them into
        // an empty list.
        let ids = ocl::core::get_device_ids(platform, None, None).map_err(|e| device_err("listing devices", e))?;
        for (di, id) in ids.into_iter().enumerate() {
            out.push((pi, di, platform, Device::from(id)));
        }
    }
    if out.is_empty() {
        return Err(Error::Device(format!("OpenCL platforms exist but expose no device; {INSTALL_HINT}")));
    }
    Ok(out)
}

fn describe(platform: &Platform, device: &Device) -> String {
    let pname = platform.info(PlatformInfo::Name).map(|i| i.to_string()).unwrap_or_else(|_| "?".into());
    let dname = device.name().unwrap_or_else(|_| "?".into());
    format!("{} / {}", pname.trim(), dname.trim())
}

fn is_gpu(device: &Device) -> bool {
    matches!(device.info(DeviceInfo::Type), Ok(DeviceInfoResult::Type(t)) if t.contains(DeviceType::GPU))
}

fn limits(device: &Device) -> Result<Limits> {
    let info = |kind| device.info(kind).map_err(|e| device_err("reading device limits", e));
    let max_work_group = device.max_wg_size().map_err(|e| device_err("reading max work-group size", e))?;
    let local_mem_bytes = match info(DeviceInfo::LocalMemSize)? {
        DeviceInfoResult::LocalMemSize(v) => v,
        _ => 16 * 1024,
    };
    let compute_units = match info(DeviceInfo::MaxComputeUnits)? {
        DeviceInfoResult::MaxComputeUnits(v) => v,
        _ => 1,
    };
    let max_alloc_bytes = match info(DeviceInfo::MaxMemAllocSize)? {
        DeviceInfoResult::MaxMemAllocSize(v) => v,
        _ => 128 << 20,
    };
    Ok(Limits {
        max_work_group: max_work_group.max(1),
        local_mem_bytes,
        compute_units: compute_units.max(1),
        max_alloc_bytes,
        is_gpu: is_gpu(device),
    })
}

fn chosen(platform: Platform, device: Device) -> Result<Chosen> {
    let limits = limits(&device)?;
    Ok(Chosen { label: describe(&platform, &device), platform, device, limits })
}

/// Picks a device from a selector: "P:D" indices, or a name substring
/// matched case-insensitively against "platform / device".
pub(crate) fn select(selector: &str) -> Result<Chosen> {
    let devices = all_devices()?;
    let listing = || {
        devices.iter().map(|(p, d, pl, dev)| format!("{p}:{d} {}", describe(pl, dev))).collect::<Vec<_>>().join("; ")
    };
    let trimmed = selector.trim();
    if let Some((p, d)) = trimmed.split_once(':')
        && let (Ok(p), Ok(d)) = (p.trim().parse::<usize>(), d.trim().parse::<usize>())
    {
        return match devices.iter().find(|(pi, di, _, _)| *pi == p && *di == d) {
            Some((_, _, platform, device)) => chosen(*platform, *device),
            None => Err(Error::Device(format!("no OpenCL device {p}:{d}; available: {}", listing()))),
        };
    }
    let needle = trimmed.to_lowercase();
    match devices.iter().find(|(_, _, pl, dev)| describe(pl, dev).to_lowercase().contains(&needle)) {
        Some((_, _, platform, device)) => chosen(*platform, *device),
        None => Err(Error::Device(format!("no OpenCL device matches {selector:?}; available: {}", listing()))),
    }
}

/// The default: the selector in KERNELS_OPENCL_DEVICE if set, else the first
/// GPU, else the first device of any kind.
pub(crate) fn default_device() -> Result<Chosen> {
    if let Ok(selector) = std::env::var(DEVICE_ENV)
        && !selector.trim().is_empty()
    {
        return select(&selector);
    }
    let devices = all_devices()?;
    let pick = devices.iter().find(|(_, _, _, d)| is_gpu(d)).or_else(|| devices.first());
    match pick {
        Some((_, _, platform, device)) => chosen(*platform, *device),
        None => Err(Error::Device(format!("no OpenCL device found; {INSTALL_HINT}"))),
    }
}
