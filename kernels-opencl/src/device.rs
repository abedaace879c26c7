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
    /// CL_DEVICE_MAX_WORK_ITEM_SIZES: the largest work-group extent per
    /// dimension.
    pub max_work_items: [usize; 3],
    pub local_mem_bytes: u64,
    pub compute_units: u32,
    pub max_alloc_bytes: u64,
    /// CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT.
    pub preferred_vector_width: u32,
    /// CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT: the SIMD width in floats
    /// (Intel's CPU runtime prefers 1, vectorising across work-items, but
    /// reports its native width here).
    pub native_vector_width: u32,
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

/// Why no device could be chosen. The backend's constructors report it as
/// `kernels_core::Error::Device` with this text; [`select_device`] returns
/// it as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no OpenCL platform found; {INSTALL_HINT}")]
    NoPlatform,
    #[error("OpenCL platforms exist but expose no device; {INSTALL_HINT}")]
    NoDevice,
    #[error("no OpenCL device {index}; available: {available}")]
    NoSuchIndex { index: String, available: String },
    #[error("no OpenCL device matches {selector:?}; available: {available}")]
    NoMatch { selector: String, available: String },
    #[error(
        "OpenCL device {label} supports OpenCL {version} only; this backend needs OpenCL 1.2 \
         (CL_PROGRAM_KERNEL_NAMES, the kernel table); other devices: {available}"
    )]
    TooOld { label: String, version: String, available: String },
    #[error("{0}")]
    Query(String),
}

impl From<SelectError> for Error {
    fn from(e: SelectError) -> Self {
        Error::Device(e.to_string())
    }
}

/// The oldest OpenCL version the backend runs on.
pub const MIN_OPENCL: (u16, u16) = (1, 2);

/// What selection looks at for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// "P:D", as `clinfo -l` numbers them.
    pub index: (usize, usize),
    /// "platform / device".
    pub label: String,
    /// The device's OpenCL version (CL_DEVICE_VERSION), None if unreadable.
    pub version: Option<(u16, u16)>,
    pub is_gpu: bool,
}

impl Candidate {
    fn supported(&self) -> bool {
        self.version.is_some_and(|v| v >= MIN_OPENCL)
    }
    fn version_text(&self) -> String {
        self.version.map_or_else(|| "(unknown)".to_owned(), |(a, b)| format!("{a}.{b}"))
    }
}

fn listing(candidates: &[Candidate]) -> String {
    candidates
        .iter()
        .map(|c| format!("{}:{} {} (OpenCL {})", c.index.0, c.index.1, c.label, c.version_text()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The position in `candidates` that `selector` picks: "P:D" indices, a
/// case-insensitive substring of "platform / device" (the first match
/// that supports OpenCL 1.2, else the first match, which is refused), or
/// with no selector the first OpenCL 1.2 GPU, else the first OpenCL 1.2
/// device.
pub(crate) fn pick(candidates: &[Candidate], selector: Option<&str>) -> std::result::Result<usize, SelectError> {
    if candidates.is_empty() {
        return Err(SelectError::NoDevice);
    }
    let too_old = |i: usize| {
        let c: &Candidate = &candidates[i];
        SelectError::TooOld { label: c.label.clone(), version: c.version_text(), available: listing(candidates) }
    };
    let checked = |i: usize| if candidates[i].supported() { Ok(i) } else { Err(too_old(i)) };
    let Some(selector) = selector.map(str::trim).filter(|s| !s.is_empty()) else {
        let supported = |c: &&Candidate| c.supported();
        let pos = |f: &dyn Fn(&Candidate) -> bool| candidates.iter().position(f);
        return match pos(&|c| supported(&c) && c.is_gpu).or_else(|| pos(&|c| supported(&c))) {
            Some(i) => Ok(i),
            None => Err(too_old(0)),
        };
    };
    if let Some((p, d)) = selector.split_once(':')
        && let (Ok(p), Ok(d)) = (p.trim().parse::<usize>(), d.trim().parse::<usize>())
    {
        return match candidates.iter().position(|c| c.index == (p, d)) {
            Some(i) => checked(i),
            None => Err(SelectError::NoSuchIndex { index: format!("{p}:{d}"), available: listing(candidates) }),
        };
    }
    let needle = selector.to_lowercase();
    let matches = |c: &Candidate| c.label.to_lowercase().contains(&needle);
    match candidates.iter().position(|c| matches(c) && c.supported()) {
        Some(i) => Ok(i),
        None => match candidates.iter().position(matches) {
            Some(i) => checked(i),
            None => Err(SelectError::NoMatch { selector: selector.to_owned(), available: listing(candidates) }),
        },
    }
}

fn all_devices() -> std::result::Result<Vec<(usize, usize, Platform, Device)>, SelectError> {
    if no_platform() {
        return Err(SelectError::NoPlatform);
    }
    // ocl's Platform::list panics when the loader finds no platform; the
    // core call returns the error instead.
    let ids = ocl::core::get_platform_ids().map_err(|_| SelectError::NoPlatform)?;
    let mut out = Vec::new();
    for (pi, id) in ids.into_iter().enumerate() {
        let platform = Platform::new(id);
        // The core call reports errors; ocl's Device::list turns them into
        // an empty list. A platform without devices answers
        // CL_DEVICE_NOT_FOUND: it contributes none.
        let ids = match ocl::core::get_device_ids(platform, None, None) {
            Ok(ids) => ids,
            Err(e) if e.api_status() == Some(ocl::core::Status::CL_DEVICE_NOT_FOUND) => Vec::new(),
            Err(e) => return Err(SelectError::Query(format!("listing devices: {e}"))),
        };
        for (di, id) in ids.into_iter().enumerate() {
            out.push((pi, di, platform, Device::from(id)));
        }
    }
    if out.is_empty() {
        return Err(SelectError::NoDevice);
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

fn version(device: &Device) -> Option<(u16, u16)> {
    match device.info(DeviceInfo::Version) {
        Ok(DeviceInfoResult::Version(v)) => Some(v.to_raw()),
        _ => None,
    }
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
    let mut max_work_items = [max_work_group; 3];
    if let DeviceInfoResult::MaxWorkItemSizes(sizes) = info(DeviceInfo::MaxWorkItemSizes)? {
        for (limit, size) in max_work_items.iter_mut().zip(sizes) {
            *limit = size.max(1);
        }
    }
    let preferred_vector_width = match device.info(DeviceInfo::PreferredVectorWidthFloat) {
        Ok(DeviceInfoResult::PreferredVectorWidthFloat(v)) => v.max(1),
        _ => 1,
    };
    let native_vector_width = match device.info(DeviceInfo::NativeVectorWidthFloat) {
        Ok(DeviceInfoResult::NativeVectorWidthFloat(v)) => v.max(1),
        _ => 1,
    };
    Ok(Limits {
        native_vector_width,
        max_work_group: max_work_group.max(1),
        max_work_items,
        local_mem_bytes,
        compute_units: compute_units.max(1),
        max_alloc_bytes,
        preferred_vector_width,
        is_gpu: is_gpu(device),
    })
}

fn chosen(platform: Platform, device: Device) -> Result<Chosen> {
    let limits = limits(&device)?;
    Ok(Chosen { label: describe(&platform, &device), platform, device, limits })
}

fn candidates(devices: &[(usize, usize, Platform, Device)]) -> Vec<Candidate> {
    devices
        .iter()
        .map(|(p, d, platform, device)| Candidate {
            index: (*p, *d),
            label: describe(platform, device),
            version: version(device),
            is_gpu: is_gpu(device),
        })
        .collect()
}

/// Picks a device from a selector: "P:D" indices, or a name substring
/// matched case-insensitively against "platform / device".
pub(crate) fn select(selector: &str) -> Result<Chosen> {
    let devices = all_devices()?;
    let i = pick(&candidates(&devices), Some(selector))?;
    chosen(devices[i].2, devices[i].3)
}

/// The default: the selector in KERNELS_OPENCL_DEVICE if set, else the first
/// GPU, else the first device of any kind (OpenCL 1.2 or later).
pub(crate) fn default_device() -> Result<Chosen> {
    if let Ok(selector) = std::env::var(DEVICE_ENV)
        && !selector.trim().is_empty()
    {
        return select(&selector);
    }
    let devices = all_devices()?;
    let i = pick(&candidates(&devices), None)?;
    chosen(devices[i].2, devices[i].3)
}

/// The label ("platform / device") of the device `selector` picks (None:
/// the default choice, KERNELS_OPENCL_DEVICE included), or why none fits,
/// without building anything.
pub fn select_device(selector: Option<&str>) -> std::result::Result<String, SelectError> {
    let devices = all_devices()?;
    let selector = selector.map(str::to_owned).or_else(|| std::env::var(DEVICE_ENV).ok());
    let cands = candidates(&devices);
    let i = pick(&cands, selector.as_deref())?;
    Ok(cands[i].label.clone())
}

/// One OpenCL device and the limits that shape its launches, as
/// [`list_devices`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// "P:D", usable as a selector.
    pub index: String,
    pub platform: String,
    pub name: String,
    /// "GPU", "CPU", "ACCELERATOR", ...
    pub kind: String,
    /// The OpenCL version from CL_DEVICE_VERSION, e.g. "3.0".
    pub version: String,
    pub driver_version: String,
    /// Whether the backend can run on it (OpenCL 1.2 or later).
    pub supported: bool,
    pub compute_units: u32,
    pub max_work_group: usize,
    pub max_work_items: [usize; 3],
    pub local_mem_bytes: u64,
    pub global_mem_bytes: u64,
    pub max_alloc_bytes: u64,
    pub preferred_vector_width_float: u32,
    pub native_vector_width_float: u32,
}

impl std::fmt::Display for DeviceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "{} {} / {} [{}] {} (driver {}){}\n    compute units {}, work-group <= {}, work-items <= {:?}, \
             local memory {} KiB, global memory {:.0} MiB, largest buffer {:.0} MiB, float vector {} preferred / {} native",
            self.index,
            self.platform,
            self.name,
            self.kind,
            self.version,
            self.driver_version,
            if self.supported { "" } else { " -- unsupported: needs OpenCL 1.2" },
            self.compute_units,
            self.max_work_group,
            self.max_work_items,
            self.local_mem_bytes / 1024,
            mib(self.global_mem_bytes),
            mib(self.max_alloc_bytes),
            self.preferred_vector_width_float,
            self.native_vector_width_float,
        )
    }
}

/// Every platform's devices with their key limits, in "P:D" order (the
/// numbering `KERNELS_OPENCL_DEVICE` and `--device` accept).
pub fn list_devices() -> std::result::Result<Vec<DeviceSummary>, SelectError> {
    let devices = all_devices()?;
    let mut out = Vec::with_capacity(devices.len());
    for (p, d, platform, device) in &devices {
        let text = |kind| device.info(kind).map(|i| i.to_string().trim().to_owned()).unwrap_or_else(|_| "?".into());
        let limits = limits(device).map_err(|e| SelectError::Query(e.to_string()))?;
        let global_mem_bytes = match device.info(DeviceInfo::GlobalMemSize) {
            Ok(DeviceInfoResult::GlobalMemSize(v)) => v,
            _ => 0,
        };
        let pname = platform.info(PlatformInfo::Name).map(|i| i.to_string()).unwrap_or_else(|_| "?".into());
        out.push(DeviceSummary {
            index: format!("{p}:{d}"),
            platform: pname.trim().to_owned(),
            name: text(DeviceInfo::Name),
            kind: text(DeviceInfo::Type),
            version: text(DeviceInfo::Version),
            driver_version: text(DeviceInfo::DriverVersion),
            supported: version(device).is_some_and(|v| v >= MIN_OPENCL),
            compute_units: limits.compute_units,
            max_work_group: limits.max_work_group,
            max_work_items: limits.max_work_items,
            local_mem_bytes: limits.local_mem_bytes,
            global_mem_bytes,
            max_alloc_bytes: limits.max_alloc_bytes,
            preferred_vector_width_float: limits.preferred_vector_width,
            native_vector_width_float: limits.native_vector_width,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(p: usize, d: usize, label: &str, version: (u16, u16), is_gpu: bool) -> Candidate {
        Candidate { index: (p, d), label: label.to_owned(), version: Some(version), is_gpu }
    }

    #[test]
    fn the_default_prefers_an_opencl_1_2_gpu_then_any_opencl_1_2_device() {
        let old_gpu = cand(0, 0, "Old / gpu", (1, 1), true);
        let cpu = cand(1, 0, "Portable Computing Language / cpu", (3, 0), false);
        let gpu = cand(1, 1, "Vendor / gpu", (1, 2), true);
        assert_eq!(pick(&[old_gpu.clone(), cpu.clone(), gpu], None), Ok(2));
        assert_eq!(pick(&[old_gpu, cpu], None), Ok(1));
    }

    #[test]
    fn no_device_is_a_typed_error() {
        assert_eq!(pick(&[], None), Err(SelectError::NoDevice));
        assert_eq!(pick(&[], Some("pocl")), Err(SelectError::NoDevice));
    }

    #[test]
    fn a_device_older_than_opencl_1_2_is_refused_by_name_by_index_and_by_default() {
        let old = [cand(0, 0, "Old / gpu", (1, 1), true), cand(0, 1, "Old / cpu", (1, 0), false)];
        for selector in [None, Some("old / gpu"), Some("0:1")] {
            match pick(&old, selector) {
                Err(e @ SelectError::TooOld { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains("needs OpenCL 1.2") && text.contains("Old /"), "{text}");
                }
                other => panic!("{selector:?}: {other:?}"),
            }
        }
        // A name matching an old and a new device takes the new one.
        let mixed = [cand(0, 0, "Shared / old", (1, 1), false), cand(0, 1, "Shared / new", (2, 0), false)];
        assert_eq!(pick(&mixed, Some("shared")), Ok(1));
    }

    #[test]
    fn a_selector_that_matches_nothing_lists_what_exists() {
        let devices = [cand(0, 0, "Portable Computing Language / cpu-x86-64", (3, 0), false)];
        match pick(&devices, Some("nvidia")) {
            Err(e @ SelectError::NoMatch { .. }) => {
                let text = e.to_string();
                assert!(text.contains("\"nvidia\"") && text.contains("0:0 Portable Computing Language"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(pick(&devices, Some("3:1")), Err(SelectError::NoSuchIndex { .. })));
        assert_eq!(pick(&devices, Some(" PORTABLE ")), Ok(0));
        assert_eq!(pick(&devices, Some("0:0")), Ok(0));
    }

    #[test]
    fn the_listing_names_this_machines_devices_with_their_limits() {
        let devices = crate::OpenCl::serialised(|| list_devices().map_err(Error::from)).expect("an OpenCL device");
        assert!(!devices.is_empty());
        for d in &devices {
            let line = d.to_string();
            assert!(line.starts_with(&d.index) && line.contains(&d.name) && line.contains("local memory"), "{line}");
            assert!(d.max_work_group >= 1 && d.compute_units >= 1, "{line}");
        }
        let chosen = crate::OpenCl::serialised(default_device).expect("an OpenCL device");
        assert!(devices.iter().any(|d| chosen.label == format!("{} / {}", d.platform, d.name)));
    }
}
