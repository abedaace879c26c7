//! How a conv call is cut into tiles, and what scratch that costs.
//!
//! - [`ConvPath::Pointwise`]: a 1x1, stride-1, unpadded conv needs no
//!   unfolding at all (col would be the image itself), so it goes straight
//!   to GEMM. Everything else takes [`ConvPath::Unfold`].
//! - The unfold path never builds the whole col matrix [C·R·S, OH·OW] of an
//!   image: it walks tiles of `channels_per_tile` input channels by
//!   `pixels_per_tile` output pixels, so a col tile stays near
//!   [`TILE_FLOATS`] (L2-sized on this machine kind) whatever the problem.
//! - Scratch per worker is one col tile (forward and backward share it) and,
//!   in backward, one partial dW; the total over workers is checked against
//!   [`SCRATCH_LIMIT_BYTES`] before any op runs.
//! - Checked by the scratch test below (every suite shape, also at batch
//!   4096); the tile size is timed in examples/bench.rs.

use kernels_core::{ConvGeometry, Error, Result};

use crate::unfold::Tile;

/// No call may plan more scratch than this (64 MiB), whatever the batch.
pub const SCRATCH_LIMIT_BYTES: usize = 64 << 20;

/// Target col tile size in floats: 512 KiB, half of this machine's 1 MiB L2,
/// so the tile survives until sgemm packs it.
pub const TILE_FLOATS: usize = 1 << 17;

/// Fewest output pixels a tile holds (when the image has that many), so the
/// GEMM's n dimension never gets too thin to run at speed.
const MIN_TILE_PIXELS: usize = 64;

/// The register tile width of the sgemm kernel: pixel blocks are rounded to
/// a multiple of it.
const PIXEL_ALIGN: usize = 16;

/// Which algorithm a conv takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvPath {
    /// 1x1, stride 1, no padding: y = W·x per image, no im2col.
    Pointwise,
    /// im2col tile by tile, then GEMM.
    Unfold,
}

/// The tiling of one conv geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPlan {
    pub path: ConvPath,
    pub channels_per_tile: usize,
    pub pixels_per_tile: usize,
}

impl ConvPlan {
    pub fn new(g: &ConvGeometry) -> Self {
        let pixels = g.oh * g.ow;
        let pointwise = g.r == 1 && g.s == 1 && g.params.stride == [1, 1] && g.params.padding == [0, 0];
        if pointwise {
            return Self { path: ConvPath::Pointwise, channels_per_tile: g.c, pixels_per_tile: pixels };
        }
        let taps = g.r * g.s;
        let min_pixels = pixels.min(MIN_TILE_PIXELS);
        let channels = (TILE_FLOATS / (taps * min_pixels)).clamp(1, g.c);
        let mut pixels_per_tile = (TILE_FLOATS / (channels * taps)).clamp(min_pixels, pixels);
        if pixels_per_tile < pixels {
            pixels_per_tile = (pixels_per_tile / PIXEL_ALIGN * PIXEL_ALIGN).max(min_pixels);
        }
        Self { path: ConvPath::Unfold, channels_per_tile: channels, pixels_per_tile }
    }

    /// Floats of one col tile (0 on the pointwise path, which needs none).
    pub fn col_floats(&self, g: &ConvGeometry) -> usize {
        match self.path {
            ConvPath::Pointwise => 0,
            ConvPath::Unfold => self.channels_per_tile * g.r * g.s * self.pixels_per_tile,
        }
    }

    /// Scratch bytes a call plans with `workers` concurrent workers: a col
    /// tile each, plus a partial dW each in backward.
    pub fn scratch_bytes(&self, g: &ConvGeometry, workers: usize, backward: bool) -> usize {
        let dw = if backward { g.k * g.c * g.r * g.s } else { 0 };
        workers.saturating_mul(self.col_floats(g) + dw).saturating_mul(size_of::<f32>())
    }

    /// Refuses a call whose planned scratch would pass the limit.
    pub fn check_scratch(&self, g: &ConvGeometry, workers: usize, backward: bool) -> Result<()> {
        let bytes = self.scratch_bytes(g, workers, backward);
        if bytes > SCRATCH_LIMIT_BYTES {
            return Err(Error::Scratch { op: "conv2d", bytes, limit: SCRATCH_LIMIT_BYTES });
        }
        Ok(())
    }

    /// The tiles of one image: pixel blocks outside, channel blocks inside
    /// (so the output tile a pixel block accumulates into stays in cache).
    pub(crate) fn tiles(&self, g: &ConvGeometry) -> impl Iterator<Item = Tile> + use<> {
        let (pixels, channels) = (g.oh * g.ow, g.c);
        let (pb, cb) = (self.pixels_per_tile, self.channels_per_tile);
        (0..pixels).step_by(pb).flat_map(move |p0| {
            (0..channels).step_by(cb).map(move |c0| Tile {
                c0,
                c1: (c0 + cb).min(channels),
                p0,
                p1: (p0 + pb).min(pixels),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels_core::{CONV_SUITE, Conv2d};

    #[test]
    fn suite_scratch_stays_bounded_whatever_the_batch() {
        for case in &CONV_SUITE {
            for batch in [case.input[0], 4096] {
                let [_, c, h, w] = case.input;
                let g = ConvGeometry::from_dims([batch, c, h, w], case.filters, &case.params()).unwrap();
                let plan = ConvPlan::new(&g);
                for workers in [1, 2, 16] {
                    let bytes = plan.scratch_bytes(&g, workers, true);
                    assert!(bytes <= SCRATCH_LIMIT_BYTES, "{} batch {batch}: {bytes} bytes", case.name);
                    plan.check_scratch(&g, workers, true).unwrap();
                }
                assert!(plan.col_floats(&g) <= TILE_FLOATS.max(g.r * g.s * MIN_TILE_PIXELS), "{}", case.name);
            }
        }
    }

    #[test]
    fn tiles_cover_every_channel_and_pixel_once() {
        let g = ConvGeometry::from_dims([1, 300, 40, 40], [4, 7, 7], &Conv2d::new(1, 3)).unwrap();
        let plan = ConvPlan::new(&g);
        assert!(plan.channels_per_tile < g.c && plan.pixels_per_tile < g.oh * g.ow, "{plan:?}");
        let mut seen = vec![0u8; g.c * g.oh * g.ow];
        for t in plan.tiles(&g) {
            for c in t.c0..t.c1 {
                for p in t.p0..t.p1 {
                    seen[c * g.oh * g.ow + p] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
    }

    #[test]
    fn pointwise_only_for_1x1_stride_1_unpadded() {
        let plan = |r, stride, pad| {
            ConvPlan::new(&ConvGeometry::from_dims([2, 3, 8, 8], [4, r, r], &Conv2d::new(stride, pad)).unwrap()).path
        };
        assert_eq!(plan(1, 1, 0), ConvPath::Pointwise);
        assert_eq!(plan(1, 2, 0), ConvPath::Unfold);
        assert_eq!(plan(1, 1, 1), ConvPath::Unfold);
        assert_eq!(plan(3, 1, 0), ConvPath::Unfold);
    }

    #[test]
    fn oversized_problems_are_refused_not_run() {
        // A 600x600 kernel cannot tile below 64 MiB with 64 pixels per tile.
        let g = ConvGeometry::from_dims([1, 1, 700, 700], [1, 600, 600], &Conv2d::default()).unwrap();
        let err = ConvPlan::new(&g).check_scratch(&g, 2, false).unwrap_err();
        assert!(matches!(err, Error::Scratch { .. }), "{err}");
    }
}
