//! Dropout: inverted (kept values scaled by 1/(1 − p), identity in
//! evaluation), with a mask every backend draws bit for bit the same.
//!
//! The mask is not stored: element `i` of the call keyed by (seed, step) is
//! kept when [`DropoutMask::bits`]`(i) >= threshold`, where the bits are the
//! high 32 bits of output `i` of the SplitMix64 stream seeded by
//! `key = mix(seed + mix(step + γ))` (γ the golden-ratio increment), i.e.
//! `mix(key + (i + 1)·γ)`. A counter-based draw like this needs no state
//! between elements, so a GPU work-item computes its own bit, the backward
//! re-derives the forward's mask from the same (seed, step), and
//! cross-backend tests compare outputs exactly.
//!
//! `threshold = round(p · 2³²)` (at most 2³² − 1), so an element is kept with
//! probability (2³² − threshold) / 2³² ≈ 1 − p; `scale = 1 / (1 − p)` is
//! formed in f64 and rounded once to the backend's element type. Forward:
//! y = kept ? x·scale : 0; backward: dx = kept ? dy·scale : 0.

use crate::error::{Error, Result};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
#[inline(always)]
pub fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Dropout parameters: the drop probability and the draw's key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing an element, in [0, 1).
    pub p: f64,
    /// The run's seed.
    pub seed: u64,
    /// Which draw of the run (a training step, a layer): each (seed, step)
    /// gives an independent mask.
    pub step: u64,
}

/// Validated dropout call: the mask's key, threshold and scale, for `len`
/// elements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutMask {
    pub len: usize,
    /// The SplitMix64 seed of this (seed, step).
    pub key: u64,
    /// Elements whose bits are below this are dropped.
    pub threshold: u32,
    /// 1 / (1 − p), in f64; backends round it once to their element type.
    pub scale: f64,
    pub p: f64,
}

impl DropoutMask {
    const OP: &'static str = "dropout";

    /// Validates p ∈ [0, 1) and a non-empty shape.
    pub fn new(shape: &[usize], params: &Dropout) -> Result<Self> {
        let op = Self::OP;
        let p = params.p;
        if !(0.0..1.0).contains(&p) {
            return Err(Error::param(op, format!("p = {p} must be in [0, 1)")));
        }
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::shape(op, format!("input {shape:?} is empty")));
        }
        let len = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::shape(op, format!("{shape:?} overflows usize")))?;
        let threshold = (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
        let key = splitmix64_mix(params.seed.wrapping_add(splitmix64_mix(params.step.wrapping_add(GOLDEN))));
        Ok(Self { len, key, threshold, scale: 1.0 / (1.0 - p), p })
    }

    /// The 32 random bits of element `index`.
    #[inline(always)]
    pub fn bits(&self, index: usize) -> u32 {
        let i = index as u64;
        (splitmix64_mix(self.key.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN))) >> 32) as u32
    }

    /// Whether element `index` is kept.
    #[inline(always)]
    pub fn keeps(&self, index: usize) -> bool {
        self.bits(index) >= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn bits_are_the_splitmix_stream_of_the_key() {
        let m = DropoutMask::new(&[100], &Dropout { p: 0.5, seed: 42, step: 7 }).unwrap();
        let mut stream = SplitMix64::new(m.key);
        for i in 0..100 {
            assert_eq!(m.bits(i), (stream.next_u64() >> 32) as u32, "element {i}");
        }
    }

    #[test]
    fn keep_rate_follows_p_and_draws_differ_by_seed_and_step() {
        for p in [0.0, 0.1, 0.5, 0.9] {
            let m = DropoutMask::new(&[100_000], &Dropout { p, seed: 1, step: 0 }).unwrap();
            let kept = (0..m.len).filter(|&i| m.keeps(i)).count() as f64 / m.len as f64;
            // Binomial sd at n = 1e5 is at most 0.0016; 5 sd.
            assert!((kept - (1.0 - p)).abs() < 0.008, "p {p}: kept {kept}");
        }
        let a = DropoutMask::new(&[64], &Dropout { p: 0.5, seed: 1, step: 0 }).unwrap();
        let b = DropoutMask::new(&[64], &Dropout { p: 0.5, seed: 1, step: 1 }).unwrap();
        let c = DropoutMask::new(&[64], &Dropout { p: 0.5, seed: 2, step: 0 }).unwrap();
        let mask = |m: &DropoutMask| (0..64).map(|i| m.keeps(i)).collect::<Vec<_>>();
        assert_ne!(mask(&a), mask(&b));
        assert_ne!(mask(&a), mask(&c));
        assert_eq!(mask(&a), mask(&DropoutMask::new(&[8, 8], &Dropout { p: 0.5, seed: 1, step: 0 }).unwrap()));
    }

    #[test]
    fn invalid_p_and_shapes_are_refused() {
        for p in [-0.1, 1.0, 1.5, f64::NAN] {
            let err = DropoutMask::new(&[4], &Dropout { p, seed: 0, step: 0 }).unwrap_err();
            assert!(matches!(err, Error::Param { .. }), "p {p}: {err}");
        }
        assert!(DropoutMask::new(&[0, 4], &Dropout { p: 0.5, seed: 0, step: 0 }).is_err());
        assert!(DropoutMask::new(&[], &Dropout { p: 0.5, seed: 0, step: 0 }).is_err());
        let m = DropoutMask::new(&[4], &Dropout { p: 0.999_999_999_99, seed: 0, step: 0 }).unwrap();
        assert_eq!(m.threshold, u32::MAX);
    }
}
