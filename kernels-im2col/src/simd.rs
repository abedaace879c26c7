//! The CPU-feature layer: which instruction set the kernels may use, and
//! the proof that the CPU has it.
//!
//! - [`Isa`] names the three kernel families this crate compiles:
//!   `Portable` (plain Rust, any CPU), `Avx2` (AVX2 + FMA) and `Avx512`
//!   (AVX-512F + AVX2 + FMA). They are ordered, so a cap is a `min`.
//! - The CPU is asked once per process ([`Isa::detected`], a `OnceLock`);
//!   this file holds the crate's only `is_x86_feature_detected!` calls.
//! - [`Simd`] is the ISA a call runs at, capped by the environment variable
//!   `KERNELS_ISA` and the backend's options. Its `Avx2` and `Avx512`
//!   variants carry an [`Avx2Token`] / [`Avx512Token`], zero-sized values
//!   that only [`Simd::new`] can make, and only after detection found the
//!   features: holding one is the proof a `#[target_feature]` call needs.
//!   A kernel dispatch matches on `Simd` and calls the variant of the token
//!   it holds in one `unsafe` block whose SAFETY comment names that token.
//!   A cap above what the CPU has is lowered to what it has, never trusted.
//! - Why tokens written here rather than `pulp` or `multiversion`: the
//!   kernels are written in `core::arch` intrinsics (masked AVX-512 loads,
//!   permutes, prefetches) inside `#[target_feature]` functions, and their
//!   variants differ in more than the features the compiler may assume
//!   (direct_wide's AVX-512 kernel is a different loop from its AVX2 one).
//!   pulp's `Simd` trait abstracts over its own vector types and would mean
//!   rewriting every kernel against it; multiversion generates the
//!   dispatch but selects from the CPU alone, with no run-time cap, which
//!   the tests and the AVX2 measurements need. Both would add a dependency
//!   for the ~20 lines of detection below. The tokens cost nothing at run
//!   time: one `match` per kernel call on a value chosen once per op.
//! - matrixmultiply (gemm/mod.rs) picks its own micro-kernel (AVX-512 when the
//!   CPU has AVX-512F, built with the `avx512` feature); it offers no
//!   run-time cap, so under `KERNELS_ISA=avx2` its GEMMs still run its
//!   AVX-512 kernel. Only this crate's own kernels follow the cap; since
//!   step 56 every conv GEMM at AVX2 and AVX-512 is ours (gemm/packed.rs,
//!   gemm/unpacked.rs), and matrixmultiply runs linear.rs's GEMMs and the
//!   portable level.
//! - Checked by the tests below and by every kernel test, which loop over
//!   [`Isa::supported`]; in unit tests (and with the `dispatch-counts`
//!   feature) [`dispatch_counts`] counts the kernel calls made at each ISA,
//!   so lib.rs's tests show a capped backend really runs the lower variants.

use std::sync::OnceLock;

/// An instruction-set level for this crate's kernels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, no target features assumed.
    Portable,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512F, with AVX2 and FMA.
    Avx512,
}

/// The environment variable that caps the ISA of every backend built after
/// it is set (`portable`, `avx2` or `avx512`).
pub const ISA_ENV: &str = "KERNELS_ISA";

/// An ISA name that is none of `portable`, `avx2`, `avx512`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownIsa(pub String);

impl std::fmt::Display for UnknownIsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown ISA {:?}: expected portable, avx2 or avx512", self.0)
    }
}

impl std::error::Error for UnknownIsa {}

impl std::str::FromStr for Isa {
    type Err = UnknownIsa;

    fn from_str(s: &str) -> Result<Self, UnknownIsa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" => Ok(Self::Portable),
            "avx2" => Ok(Self::Avx2),
            "avx512" => Ok(Self::Avx512),
            _ => Err(UnknownIsa(s.to_string())),
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        })
    }
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The highest level this CPU runs (asked once per process).
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// Every level this CPU runs, lowest first: what the tests loop over.
    pub fn supported() -> Vec<Isa> {
        Self::ALL.into_iter().filter(|&isa| isa <= Self::detected()).collect()
    }

    /// The levels a backend built in this process can run at: the supported
    /// ones at or below the `KERNELS_ISA` cap (all of them when it is unset
    /// or names no level). Tests loop over these, so a run under the cap
    /// checks what the cap lets run instead of failing on what it forbids.
    pub fn reachable() -> Vec<Isa> {
        let cap = Self::from_env().ok().flatten();
        Self::supported().into_iter().filter(|&isa| cap.is_none_or(|cap| isa <= cap)).collect()
    }

    /// The cap `KERNELS_ISA` sets: None when unset or empty, an error when
    /// it names no level.
    pub fn from_env() -> Result<Option<Isa>, UnknownIsa> {
        match std::env::var(ISA_ENV) {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => value.parse().map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(raw)) => Err(UnknownIsa(raw.to_string_lossy().into_owned())),
        }
    }

    /// The lower of two optional caps (None: no cap).
    pub fn min_cap(a: Option<Isa>, b: Option<Isa>) -> Option<Isa> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        if avx2 && has!("avx512f") {
            return Isa::Avx512;
        }
        if avx2 {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Proof that the CPU runs AVX2 and FMA: only [`Simd::new`] makes one, after
/// detection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2Token {
    _proof: (),
}

/// Proof that the CPU runs AVX-512F, AVX2 and FMA: only [`Simd::new`] makes
/// one, after detection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512Token {
    _proof: (),
}

/// The ISA one call runs at, with the proof of its features.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Simd {
    Portable,
    Avx2(Avx2Token),
    Avx512(Avx512Token),
}

impl Simd {
    /// The highest level at most `cap` that this CPU runs.
    pub fn new(cap: Isa) -> Simd {
        match cap.min(Isa::detected()) {
            Isa::Portable => Simd::Portable,
            Isa::Avx2 => Simd::Avx2(Avx2Token { _proof: () }),
            Isa::Avx512 => Simd::Avx512(Avx512Token { _proof: () }),
        }
    }

    /// The level this runs at.
    pub fn isa(self) -> Isa {
        match self {
            Simd::Portable => Isa::Portable,
            Simd::Avx2(_) => Isa::Avx2,
            Simd::Avx512(_) => Isa::Avx512,
        }
    }

    /// The AVX-512 proof, when running at that level.
    #[cfg(target_arch = "x86_64")]
    pub fn avx512(self) -> Option<Avx512Token> {
        match self {
            Simd::Avx512(token) => Some(token),
            Simd::Portable | Simd::Avx2(_) => None,
        }
    }
}

#[cfg(any(test, feature = "dispatch-counts"))]
static COUNTS: [std::sync::atomic::AtomicU64; 3] = [const { std::sync::atomic::AtomicU64::new(0) }; 3];

/// Counts one kernel call at `isa` (in unit tests and with the
/// `dispatch-counts` feature; otherwise nothing, so the hot paths carry no
/// shared counter).
#[inline(always)]
pub(crate) fn count(isa: Isa) {
    #[cfg(any(test, feature = "dispatch-counts"))]
    COUNTS[isa as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(any(test, feature = "dispatch-counts")))]
    let _ = isa;
}

/// Kernel calls made so far at each ISA, in [`Isa::ALL`] order, since the
/// process started; None without the `dispatch-counts` feature (the
/// crate's own unit tests always count).
pub fn dispatch_counts() -> Option<[u64; 3]> {
    #[cfg(any(test, feature = "dispatch-counts"))]
    {
        Some(std::array::from_fn(|i| COUNTS[i].load(std::sync::atomic::Ordering::Relaxed)))
    }
    #[cfg(not(any(test, feature = "dispatch-counts")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for isa in Isa::ALL {
            assert_eq!(isa.to_string().parse::<Isa>(), Ok(isa));
        }
        assert_eq!(" AVX2 ".parse::<Isa>(), Ok(Isa::Avx2));
        assert_eq!("sse".parse::<Isa>(), Err(UnknownIsa("sse".into())));
    }

    #[test]
    fn a_cap_never_raises_the_level() {
        for cap in Isa::ALL {
            let isa = Simd::new(cap).isa();
            assert_eq!(isa, cap.min(Isa::detected()));
            assert!(Isa::supported().contains(&isa));
        }
        assert_eq!(Isa::min_cap(Some(Isa::Avx2), None), Some(Isa::Avx2));
        assert_eq!(Isa::min_cap(Some(Isa::Avx512), Some(Isa::Portable)), Some(Isa::Portable));
        assert_eq!(Isa::min_cap(None, None), None);
    }
}
