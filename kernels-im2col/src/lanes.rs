//! Lane masks for the 16-lane AVX-512 loads and stores of the Winograd
//! transforms (winograd/input.rs, winograd/output.rs, winograd/dm.rs,
//! winograd/dx.rs): which lanes of a vector lie inside a row, the rest
//! neither read nor written.

/// A mask of lanes l in [lo, hi) of 16 (empty when hi ≤ lo); lo and hi may
/// lie outside 0..16 (a row that starts before the vector or ends past it).
pub(crate) fn lane_range(lo: isize, hi: isize) -> u16 {
    let (lo, hi) = (lo.clamp(0, 16) as u32, hi.clamp(0, 16) as u32);
    if hi <= lo { 0 } else { (((1u32 << (hi - lo)) - 1) << lo) as u16 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cover_the_range_clipped_to_16_lanes() {
        assert_eq!(lane_range(0, 16), 0xFFFF);
        assert_eq!(lane_range(-3, 2), 0b11);
        assert_eq!(lane_range(14, 40), 0xC000);
        assert_eq!(lane_range(5, 5), 0);
        assert_eq!(lane_range(9, 3), 0);
        assert_eq!(lane_range(-20, -1), 0);
    }
}
