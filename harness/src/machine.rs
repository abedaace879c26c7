//! Where and when a run happened: CPU model and cores from /proc/cpuinfo,
//! the instruction set each backend ran at, the git revision (and whether
//! the tree was dirty), and the UTC date.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// "model name" of the first processor in /proc/cpuinfo, with its "cpu
    /// family" and "model" numbers when cpuinfo has them (a hypervisor may
    /// shorten the name to "AMD EPYC"; the numbers still tell Zen 3 (family
    /// 25 model 1) from Zen 4 (25, 17) and Zen 5 (26, ...)).
    pub cpu_model: String,
    /// Logical CPUs the process may use.
    pub cores: usize,
    /// The SIMD extensions the kernels care about, of those the CPU has
    /// (avx2, fma, avx512f).
    pub simd: Vec<String>,
    /// MemTotal from /proc/meminfo, in GiB.
    pub memory_gib: f64,
    pub os: String,
    /// The instruction set (or device) each backend of the run used.
    pub backend_isa: Vec<BackendIsa>,
}

/// What one backend ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendIsa {
    /// naive, im2col or opencl.
    pub backend: String,
    /// portable, avx2 or avx512 for the CPU backends (im2col's [`Isa`]
    /// names); "device" for OpenCL.
    ///
    /// [`Isa`]: kernels_im2col::Isa
    pub isa: String,
    /// In words: what picks it, the OpenCL device's name.
    pub detail: String,
}

/// The ISA of each backend in `backends`: naive's loops are plain Rust
/// (portable); im2col's kernels run at [`Im2col::isa`](kernels_im2col::Im2col::isa)
/// (the CPU's best, capped by --isa or KERNELS_ISA), its GEMMs at
/// matrixmultiply's own choice; OpenCL at whatever its device compiles.
pub fn backend_isas(backends: &crate::backends::Backends) -> Vec<BackendIsa> {
    let mut out = Vec::new();
    if backends.naive.is_some() {
        out.push(BackendIsa {
            backend: "naive".into(),
            isa: kernels_im2col::Isa::Portable.to_string(),
            detail: "plain Rust loops for baseline x86_64, one thread".into(),
        });
    }
    if let Some(im2col) = &backends.im2col {
        out.push(BackendIsa {
            backend: "im2col".into(),
            isa: im2col.isa().to_string(),
            detail: format!(
                "its own kernels at {} (the CPU's best is {}; --isa or KERNELS_ISA cap it); matrixmultiply's sgemm \
                 picks its own micro-kernel",
                im2col.isa(),
                kernels_im2col::Isa::detected()
            ),
        });
    }
    if let Some(cl) = &backends.opencl {
        out.push(BackendIsa {
            backend: "opencl".into(),
            isa: "device".into(),
            detail: format!("OpenCL device {} (its compiler picks the instructions)", cl.device_name()),
        });
    }
    out
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("unknown CPU")
            .to_string();
        let field = |key: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let cpu_model = match (field("cpu family"), field("model")) {
            (Some(family), Some(model)) => format!("{cpu_model} (family {family} model {model})"),
            _ => cpu_model,
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags").and_then(|rest| rest.split_once(':')).map(|(_, v)| v))
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default();
        let simd = ["avx2", "fma", "avx512f"].iter().filter(|f| flags.contains(f)).map(|f| f.to_string()).collect();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cores,
            simd,
            memory_gib: mem_kib / (1024.0 * 1024.0),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            backend_isa: Vec::new(),
        }
    }
}

/// The git revision of the working tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revision {
    /// `git rev-parse --short HEAD`, or "unknown" outside a repository.
    pub commit: String,
    /// True when tracked files differed from the commit.
    pub dirty: bool,
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Revision {
    pub fn detect() -> Revision {
        let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        Revision { commit, dirty }
    }
}

/// Now, as "YYYY-MM-DDTHH:MM:SSZ" (UTC).
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format_utc(secs)
}

/// Formats seconds since the Unix epoch as an ISO 8601 UTC timestamp.
pub fn format_utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn detects_something() {
        let m = Machine::detect();
        assert!(m.cores >= 1 && !m.cpu_model.is_empty());
    }
}
