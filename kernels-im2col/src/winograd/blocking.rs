//! How a Winograd conv cuts an image into blocks of 2x2-pixel tiles, and
//! how V and M planes are laid out; shared by the driver (mod.rs) and its
//! transforms (transforms.rs and the register-kernel files), so none of them
//! imports another for it.

use kernels_core::ConvGeometry;

/// Transform positions per tile (4x4).
pub(crate) const POSITIONS: usize = 16;

/// The blocking of one geometry: tiles per image row and column, and tile
/// rows per block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking {
    pub(crate) tiles_h: usize,
    pub(crate) tiles_w: usize,
    pub(crate) rows_per_block: usize,
}

impl Blocking {
    pub(crate) fn new(g: &ConvGeometry, tile_floats: usize) -> Self {
        let (tiles_h, tiles_w) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
        // V [16, C, T] and M [16, K, T] each near `tile_floats`.
        let tiles = tile_floats / (POSITIONS * g.c.max(g.k));
        let rows_per_block = (tiles / tiles_w).clamp(1, tiles_h);
        Self { tiles_h, tiles_w, rows_per_block }
    }

    /// Most tiles a block holds (the row stride of V and M).
    pub(crate) fn block_tiles(&self) -> usize {
        self.rows_per_block * self.tiles_w
    }

    /// Tile-row ranges of the blocks of one image.
    pub(crate) fn blocks(&self) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        let (rows, per) = (self.tiles_h, self.rows_per_block);
        (0..rows).step_by(per).map(move |r0| r0..(r0 + per).min(rows))
    }
}

/// Floats of one transform position's plane in V or M ([rows, block
/// tiles]), plus one cache line: without it the 16 planes lie a multiple of
/// 4 KiB apart for resnet-3x3 (64 x 112 floats), and a transform's 16
/// stores (or loads) per tile all fall into one L1 set, more than its ways
/// (OPTIMISATION.md step 49).
pub(crate) fn plane_floats(rows: usize, tiles: usize) -> usize {
    rows * tiles + 16
}
