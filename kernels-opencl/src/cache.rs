//! On-disk cache of built program binaries, so a process does not
//! recompile the nine programs its predecessor already built (0.7-1.0 s on
//! PoCL, seconds on Intel's CPU runtime).
//!
//! - Where: `KERNELS_OPENCL_CACHE=DIR`, or `off` to disable it; unset,
//!   `$XDG_CACHE_HOME/kernels-opencl`, else `~/.cache/kernels-opencl`.
//! - Key: the crate version, the platform and device names, the device's
//!   OpenCL and driver versions, the build options and a hash of the
//!   source; the file name is a hash of all of it and the file repeats the
//!   key, so a collision reads as a miss.
//! - Files are written to a temporary file in the cache directory and
//!   renamed over the target (tempfile's `persist`): concurrent writers
//!   each rename a complete file, readers never see a partial one.
//! - A file that does not parse, whose checksum fails or whose binary the
//!   driver refuses counts as `rejected`; the program is built from source
//!   and the file rewritten. Cache failures never fail the backend.

use std::io::Write;
use std::path::{Path, PathBuf};

use ocl::enums::{DeviceInfo, PlatformInfo};

use crate::device::Chosen;

/// Environment variable: the cache directory, or `off`.
pub const CACHE_ENV: &str = "KERNELS_OPENCL_CACHE";

const MAGIC: &[u8] = b"kernels-opencl program binary 1\n";

/// What the program cache did while one backend was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Programs created from a cached binary.
    pub hits: u32,
    /// Programs with no cached binary (or the cache is off).
    pub misses: u32,
    /// Cached files that were corrupt or that the driver refused; rebuilt.
    pub rejected: u32,
    /// Binaries written to the cache.
    pub written: u32,
    /// Binaries that could not be written (read-only directory, full disk).
    pub write_errors: u32,
}

/// The cache directory from the environment; None when it is off or no
/// home directory is known.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(CACHE_ENV)
        && !v.is_empty()
    {
        return (v != "off").then(|| PathBuf::from(v));
    }
    let xdg = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    let base =
        xdg.or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("kernels-opencl"))
}

/// FNV-1a, 64 bits: a stable hash (std's hasher may change between
/// releases), for file names and checksums, not for security.
fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate the parts, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The device's part of every key.
pub(crate) fn device_key(chosen: &Chosen) -> String {
    let device = |what| chosen.device.info(what).map(|v| v.to_string()).unwrap_or_else(|_| "?".into());
    let platform = |what| chosen.platform.info(what).map(|v| v.to_string()).unwrap_or_else(|_| "?".into());
    format!(
        "kernels-opencl {}\nplatform {} {}\ndevice {}\nversion {}\ndriver {}",
        env!("CARGO_PKG_VERSION"),
        platform(PlatformInfo::Name).trim(),
        platform(PlatformInfo::Version).trim(),
        device(DeviceInfo::Name).trim(),
        device(DeviceInfo::Version).trim(),
        device(DeviceInfo::DriverVersion).trim(),
    )
}

/// One program's cache entry: its key and the file holding it.
pub(crate) struct Entry {
    key: String,
    path: PathBuf,
}

impl Entry {
    pub fn new(dir: &Path, device_key: &str, file: &str, src: &str, options: &str) -> Self {
        let key = format!("{device_key}\nprogram {file}\noptions {options}\nsource {:016x}", fnv64(&[src.as_bytes()]));
        let path = dir.join(format!("{:016x}.bin", fnv64(&[key.as_bytes()])));
        Self { key, path }
    }

    /// The cached binary: Ok(None) when there is no file (or it holds
    /// another key), Err(()) when the file is corrupt.
    pub fn load(&self) -> Result<Option<Vec<u8>>, ()> {
        match std::fs::read(&self.path) {
            Ok(bytes) => decode(&bytes, &self.key),
            Err(_) => Ok(None),
        }
    }

    /// Writes `binary` atomically: a temporary file in the same directory,
    /// renamed over the entry.
    pub fn store(&self, binary: &[u8]) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&encode(&self.key, binary))?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn encode(key: &str, binary: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + key.len() + binary.len() + 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(key.len() as u64).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(binary.len() as u64).to_le_bytes());
    out.extend_from_slice(binary);
    out.extend_from_slice(&fnv64(&[binary]).to_le_bytes());
    out
}

fn decode(bytes: &[u8], key: &str) -> Result<Option<Vec<u8>>, ()> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(())?;
    let (stored_key, rest) = take_sized(rest)?;
    if stored_key != key.as_bytes() {
        // Another key with the same file name: a miss (the build
        // overwrites it).
        return Ok(None);
    }
    let (binary, rest) = take_sized(rest)?;
    let sum: [u8; 8] = rest.try_into().map_err(|_| ())?;
    if binary.is_empty() || u64::from_le_bytes(sum) != fnv64(&[binary]) {
        return Err(());
    }
    Ok(Some(binary.to_vec()))
}

/// A u64-length-prefixed slice and what follows it.
fn take_sized(bytes: &[u8]) -> Result<(&[u8], &[u8]), ()> {
    let (len, rest) = bytes.split_first_chunk::<8>().ok_or(())?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| ())?;
    if len > rest.len() {
        return Err(());
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_any_damage_reads_as_corrupt() {
        let encoded = encode("key", b"binary bytes");
        assert_eq!(decode(&encoded, "key"), Ok(Some(b"binary bytes".to_vec())));
        assert_eq!(decode(&encoded, "other key"), Ok(None));
        for cut in 0..encoded.len() {
            assert_eq!(decode(&encoded[..cut], "key"), Err(()), "truncated at {cut}");
        }
        for i in 0..encoded.len() {
            let mut flipped = encoded.clone();
            flipped[i] ^= 0x10;
            assert_ne!(decode(&flipped, "key"), Ok(Some(b"binary bytes".to_vec())), "byte {i} flipped");
        }
        assert_eq!(decode(b"", "key"), Err(()));
    }

    #[test]
    fn keys_differ_by_every_part() {
        let dir = Path::new("/cache");
        let base = Entry::new(dir, "dev", "a.cl", "src", "-D X=1");
        for other in [
            Entry::new(dir, "dev2", "a.cl", "src", "-D X=1"),
            Entry::new(dir, "dev", "b.cl", "src", "-D X=1"),
            Entry::new(dir, "dev", "a.cl", "src2", "-D X=1"),
            Entry::new(dir, "dev", "a.cl", "src", "-D X=2"),
        ] {
            assert_ne!(base.path(), other.path());
        }
    }
}
