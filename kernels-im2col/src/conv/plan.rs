//! The planner: which algorithm runs each pass of a conv (forward, dX, dW,
//! db), at which ISA, how the call is cut into tiles, and what scratch
//! that costs. Nothing else decides a path: conv/mod.rs and
//! conv/backward.rs run what the plan names.
//!
//! - [`ConvPath`] is the forward's algorithm; [`DxPath`], [`DwPath`] and
//!   [`DbPath`] the backward's (chosen from the forward's, see
//!   `ConvPlan::backward_paths`). [`TileTargets::force`] can force any of
//!   them where it applies to the geometry; one that does not is refused
//!   with `Error::Param` rather than run.
//! - [`ConvPath::Pointwise`]: a 1x1, stride-1, unpadded conv needs no
//!   unfolding at all (col would be the image itself), so it goes straight
//!   to GEMM.
//! - The unfold path never builds the whole col matrix [C·R·S, OH·OW] of an
//!   image: it walks tiles of `channels_per_tile` input channels by
//!   `pixels_per_tile` output pixels, so a col tile stays near
//!   [`TILE_FLOATS`] (L2-sized on this machine kind) whatever the problem.
//! - Scratch per worker is one col tile (forward and backward share it) and,
//!   in backward, one partial dW; the total over workers is checked against
//!   [`SCRATCH_LIMIT_BYTES`] before any op runs.
//! - Checked by the scratch test below (every suite shape, also at batch
//!   4096); the tile size is timed in examples/im2col_bench.rs.

use kernels_core::{ConvGeometry, Error, Result};

use super::workers::{Scratch, TILE_FLOATS, dyt_stride};
use crate::simd::{Isa, Simd};
use crate::unfold::{Tile, phased_floats};

/// No call may plan more scratch than this (64 MiB), whatever the batch.
pub const SCRATCH_LIMIT_BYTES: usize = 64 << 20;

/// Default fewest GEMM columns (output pixels, over several images if
/// need be) a tile should have: below this, per-call overheads (packing,
/// loading and storing C) dominate a small GEMM.
pub const TILE_COLUMNS: usize = 512;

/// Fewest output pixels a tile holds (when the image has that many), so the
/// GEMM's n dimension never gets too thin to run at speed.
const MIN_TILE_PIXELS: usize = 64;

/// Most floats the phased copies of one tile's images may take (1 MiB).
const PHASED_MAX_FLOATS: usize = 1 << 18;

/// The register tile width of the sgemm kernel: pixel blocks are rounded to
/// a multiple of it.
const PIXEL_ALIGN: usize = 16;

/// The forward's algorithm (its name also says which tiling the backward's
/// unfolding passes get: see [`DxPath`], [`DwPath`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvPath {
    /// 1x1, stride 1, no padding: y = W·x per image, no im2col.
    Pointwise,
    /// im2col tile by tile, then GEMM.
    Unfold,
    /// Stride 1, dilation 1, C·R·S ≤ 64, OW ≥ 16, padded image within a
    /// tile: the direct register-blocked kernel of direct/tiny.rs.
    Direct,
    /// K ≤ 16 filters on images smaller than a GEMM tile, C·R·S ≥ 64,
    /// padded image within a tile: direct/filters.rs.
    DirectFilters,
    /// K > 16 filters, C·R·S ≥ 64, over C ≤ 4 channels (alexnet-c1) or
    /// onto at least 96 output pixels (mxnet-c2, resnet-s2): direct/wide.rs.
    DirectWide,
    /// 3x3, stride 1, undilated, C and K ≥ 32, at least one image per
    /// thread: Winograd F(2x2, 3x3) (winograd/), 16 GEMMs of 2.25x fewer
    /// FLOPs in all than im2col's one. Its backward is Winograd too.
    Winograd,
}

/// The algorithm of dX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DxPath {
    /// Pointwise forward: dX = Wᵀ·dY per image, one GEMM.
    Gemm,
    /// col = Wᵀ·dY per tile, then col2im (any unfold tiling).
    Col2im,
    /// Stride 2 with H = 2·OH, W = 2·OW on the unpacked-GEMM plan: by
    /// input phase, no col2im (subpixel.rs).
    Subpixel,
    /// Stride 1, undilated, W ≤ 16: direct/dx.rs.
    Direct,
    /// The Winograd forward's adjoint (winograd/).
    Winograd,
}

/// The algorithm of dW.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DwPath {
    /// Pointwise forward: dW += dY·Xᵀ per image, one GEMM.
    Gemm,
    /// dW += dY·colᵀ per tile (any unfold tiling).
    Unfold,
    /// The direct forward's geometries with scratch within a tile:
    /// direct/tiny_grad.rs, which sums db in the same pass.
    DirectTiny,
    /// The filter-vectorised forward's geometries: direct/filters_grad.rs.
    DirectFilters,
    /// The direct_wide forward's geometries: direct/filters_grad.rs's
    /// kernel over blocks of 16 filters, reading the padded images in
    /// place of im2col tiles.
    DirectWide,
    /// The Winograd forward's adjoint (winograd/).
    Winograd,
}

/// Where db = Σ dY is summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbPath {
    /// In the pass that already reads dY for dW (or dX): the unfold/GEMM
    /// pass, the Winograd pass, or direct/tiny_grad.rs's kernel. When that
    /// pass does not run (only db requested), one pass over dY alone.
    Fused,
    /// One pass over dY of its own (the dW kernel does not read dY whole).
    Separate,
}

/// Paths forced per pass (None: the planner's choice). A forced path must
/// apply to the geometry and to the forward's tiling (see each path's
/// docs; dX and dW by Winograd go with a Winograd forward, and a Winograd
/// forward with them); else the call fails with `Error::Param`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forced {
    pub forward: Option<ConvPath>,
    pub dx: Option<DxPath>,
    pub dw: Option<DwPath>,
}

/// Parses a path by its variant name, case-insensitively (`Unfold`,
/// `directwide`), for the bench's and the harness's forcing flags.
macro_rules! path_names {
    ($ty:ident: $($variant:ident),+) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(name: &str) -> std::result::Result<Self, String> {
                $(if name.eq_ignore_ascii_case(stringify!($variant)) {
                    return Ok($ty::$variant);
                })+
                Err(format!(
                    "unknown {} {name:?}: expected one of {}",
                    stringify!($ty),
                    [$(stringify!($variant)),+].join(", ")
                ))
            }
        }
    };
}

path_names!(ConvPath: Pointwise, Unfold, Direct, DirectFilters, DirectWide, Winograd);
path_names!(DxPath: Gemm, Col2im, Subpixel, Direct, Winograd);
path_names!(DwPath: Gemm, Unfold, DirectTiny, DirectFilters, DirectWide, Winograd);

/// The knobs of the tiling (the defaults are what the backend uses; the
/// bench sweeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileTargets {
    /// Target col tile size in floats.
    pub floats: usize,
    /// Fewest GEMM columns a tile aims for (images are grouped to reach it).
    pub columns: usize,
    /// Whether geometries that admit it take [`ConvPath::Winograd`] (off
    /// only to compare with, or to test, the unfold path).
    pub winograd: bool,
    /// Likewise for [`ConvPath::DirectWide`].
    pub direct_wide: bool,
    /// Whether the unfold path may run its GEMMs through gemm/unpacked.rs on
    /// operands laid out for it (see [`ConvPlan::unpacked_gemms`]); off to
    /// compare with gemm/packed.rs, which then runs them.
    pub unpacked_gemms: bool,
    /// Paths forced per pass, for tests and measurements.
    pub force: Forced,
    /// Highest ISA the kernels may use (None: the best this CPU has); a
    /// cap above the CPU's is lowered to it. [`crate::Im2col`] also applies
    /// the `KERNELS_ISA` environment variable's cap.
    pub isa: Option<Isa>,
}

impl Default for TileTargets {
    fn default() -> Self {
        Self {
            floats: TILE_FLOATS,
            columns: TILE_COLUMNS,
            winograd: true,
            direct_wide: true,
            unpacked_gemms: true,
            force: Forced::default(),
            isa: None,
        }
    }
}

/// The tiling of one conv geometry. A tile is `images_per_tile` images by
/// `channels_per_tile` input channels by `pixels_per_tile` output pixels;
/// images are grouped (with whole images per tile) only when one image has
/// fewer output pixels than the target column count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPlan {
    pub path: ConvPath,
    pub images_per_tile: usize,
    pub channels_per_tile: usize,
    pub pixels_per_tile: usize,
    /// Column stride > 1 and the images of a tile small enough: im2col reads
    /// a phased copy of them (unfold.rs) instead of gathering.
    pub phased: bool,
    /// Target floats of a tile (of a Winograd block's V and M each).
    pub tile_floats: usize,
    /// Unfold path (and direct_wide's backward, which unfolds): the GEMMs
    /// run through gemm/unpacked.rs (AVX-512, no packing) rather than
    /// gemm/packed.rs, the forward's on W and col as they are, the
    /// backward's on Wᵀ, dYᵀ and dWᵀ. Taken with AVX-512 and at least 32
    /// filters (a full 32-column register block for the backward's dW);
    /// otherwise (AVX2, fewer filters) gemm/packed.rs runs them at the
    /// plan's ISA, and matrixmultiply at the portable level (step 56).
    pub unpacked_gemms: bool,
    /// Backward on the unpacked-GEMM plan for stride-2 convs with H = 2·OH
    /// and W = 2·OW (resnet-s2): dX by input phase (subpixel.rs), GEMMs
    /// accumulating straight into the four phase planes, instead of
    /// col = Wᵀ·dY and col2im. Off where its scratch would pass the limit.
    pub subpixel_dx: bool,
    /// The ISA every kernel of the call runs at: the targets' cap, lowered
    /// to what this CPU has (simd.rs).
    pub isa: Isa,
    /// The backward's algorithms.
    pub dx: DxPath,
    pub dw: DwPath,
    pub db: DbPath,
}

/// Channels per tile, rounded down so a tile's C·R·S rows fill whole
/// 8-row GEMM blocks when the channels are split anyway (resnet-s2: 37 ->
/// 32 channels, 288 rows), so the unpacked GEMM needs no padded remainder block
/// for them; an unsplit channel range stays whole (one tile beats an
/// aligned one and a ragged rest).
fn row_block_channels(channels: usize, all: usize, taps: usize) -> usize {
    let step = 8 / gcd(taps, 8);
    if channels < all && channels >= step { channels / step * step } else { channels }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Whether `g` is a 1x1, stride-1, unpadded conv (col is the image itself).
fn pointwise_geometry(g: &ConvGeometry) -> bool {
    g.r == 1 && g.s == 1 && g.params.stride == [1, 1] && g.params.padding == [0, 0]
}

/// Whether, at `isa`, the unfold path's forward beats the direct kernel
/// `path` the geometry would take. At [`Isa::Portable`] the direct kernels
/// are plain loops whose register blocks (48-64 four-lane vectors of accumulators)
/// spill wherever the compiler vectorises them, while the unfold path's
/// GEMM is matrixmultiply's, which picks its own SIMD micro-kernel (NEON on
/// aarch64): under the portable cap on Zen 5 the unfold forward took
/// 0.13-0.20x (alexnet-c1), 0.28-0.34x (lenet-c2) and 0.25-0.33x
/// (simplecnn-c1) of the direct kernels' CPU time, and tied on lenet-c1
/// (1.02x), which moves with the rest (OPTIMISATION.md step 53).
/// At AVX2 and AVX-512 the direct kernels have intrinsics variants and win
/// on every suite shape, so nothing moves there.
fn unfold_beats_direct_forward(isa: Isa, path: ConvPath) -> bool {
    isa == Isa::Portable && matches!(path, ConvPath::Direct | ConvPath::DirectFilters | ConvPath::DirectWide)
}

/// Whether, at `isa`, the unfold path's GEMMs run through gemm/unpacked.rs
/// rather than gemm/packed.rs: at AVX-512 only (6-22% off resnet-s2,
/// mxnet-c2 and alexnet-c1's backward against matrixmultiply, step 38; on
/// resnet-s2's forward tile it also led gemm/packed.rs's AVX-512 kernel,
/// ~103 against ~87-93 GFLOP/s per core, step 56). Its AVX2 kernel (6x16
/// block, which the Winograd path uses at AVX2) lost 7-19% to
/// matrixmultiply there (step 54); at AVX2 the unfold path runs
/// gemm/packed.rs's AVX2 kernel, which follows the ISA cap where
/// matrixmultiply ran its AVX-512 kernel (step 56). The portable level
/// has neither kernel: gemm/packed.rs hands it to matrixmultiply.
fn unpacked_gemms_at(isa: Isa) -> bool {
    isa == Isa::Avx512
}

/// Floats of one zero-padded input image, the direct kernel's scratch.
fn padded_floats(g: &ConvGeometry) -> usize {
    g.c * (g.h + 2 * g.params.padding[0]) * (g.w + 2 * g.params.padding[1])
}

impl ConvPlan {
    /// The plan for `g` run by `threads` workers; `Error::Param` when a
    /// path forced by `targets.force` does not apply.
    pub fn new(g: &ConvGeometry, threads: usize, targets: TileTargets) -> Result<Self> {
        let mut plan = Self::layout(g, threads, targets)?;
        let subpixel_fits = plan.unpacked_gemms && crate::subpixel::applies(g) && {
            // Its phase planes and shifted dY are extra scratch: where they
            // would pass the limit, dX keeps col2im (whose scratch is bounded).
            plan.subpixel_dx = true;
            let workers = threads.min(g.n).max(1);
            plan.scratch_bytes(g, workers, true) <= SCRATCH_LIMIT_BYTES
        };
        plan.subpixel_dx = false;
        (plan.dx, plan.dw, plan.db) = plan.backward_paths(g, subpixel_fits);
        // The backward keeps the direct family's kernels (its dW and dX
        // were not measured at this ISA); only the forward moves.
        if targets.force.forward.is_none() && unfold_beats_direct_forward(plan.isa, plan.path) {
            plan.path = ConvPath::Unfold;
        }
        let unfold_tiling =
            matches!(plan.path, ConvPath::Unfold | ConvPath::Direct | ConvPath::DirectFilters | ConvPath::DirectWide);
        let winograd = plan.path == ConvPath::Winograd;
        if let Some(forced) = targets.force.dx {
            let applies = match forced {
                DxPath::Gemm => plan.path == ConvPath::Pointwise,
                DxPath::Col2im => unfold_tiling,
                DxPath::Subpixel => unfold_tiling && subpixel_fits,
                DxPath::Direct => crate::direct::dx::applies(g) && !winograd,
                DxPath::Winograd => winograd,
            };
            if !applies {
                let what = format!("dX by {forced:?} does not apply to {g:?} with a {:?} forward", plan.path);
                return Err(Error::param("conv2d plan", what));
            }
            plan.dx = forced;
        }
        if let Some(forced) = targets.force.dw {
            let fits = padded_floats(g) <= targets.floats.max(1);
            let applies = match forced {
                DwPath::Gemm => plan.path == ConvPath::Pointwise,
                DwPath::Unfold => unfold_tiling,
                DwPath::DirectTiny => crate::direct::tiny_grad::applies(g) && !winograd,
                DwPath::DirectFilters => crate::direct::filters::applies(g, targets.columns) && fits && !winograd,
                // Any geometry (its scratch is bounded per group of images).
                DwPath::DirectWide => !winograd,
                DwPath::Winograd => winograd,
            };
            if !applies {
                let what = format!("dW by {forced:?} does not apply to {g:?} with a {:?} forward", plan.path);
                return Err(Error::param("conv2d plan", what));
            }
            plan.dw = forced;
            plan.db = if matches!(forced, DwPath::DirectFilters | DwPath::DirectWide) {
                DbPath::Separate
            } else {
                DbPath::Fused
            };
        }
        plan.subpixel_dx = plan.dx == DxPath::Subpixel;
        // dW by filter blocks holds a group of padded images and dY once per
        // call; where that would pass the limit, dW keeps the unfold path.
        if targets.force.dw.is_none()
            && plan.dw == DwPath::DirectWide
            && plan.scratch_bytes(g, threads.min(g.n).max(1), true) > SCRATCH_LIMIT_BYTES
        {
            (plan.dw, plan.db) = (DwPath::Unfold, DbPath::Fused);
        }
        Ok(plan)
    }

    /// The backward's algorithms for this forward: the forward's own
    /// family where it has one, else the unfold path's (whose tiling is the
    /// forward's).
    fn backward_paths(&self, g: &ConvGeometry, subpixel_fits: bool) -> (DxPath, DwPath, DbPath) {
        let unfold_dx = if subpixel_fits { DxPath::Subpixel } else { DxPath::Col2im };
        // dX of the direct paths on narrow images (lenet-c2: 1.06 -> 0.78
        // ms, OPTIMISATION.md step 26), else col2im.
        let direct_dx = if crate::direct::dx::applies(g) { DxPath::Direct } else { DxPath::Col2im };
        match self.path {
            ConvPath::Winograd => (DxPath::Winograd, DwPath::Winograd, DbPath::Fused),
            ConvPath::Pointwise => (DxPath::Gemm, DwPath::Gemm, DbPath::Fused),
            // Tiny reductions: dW and db streamed from each image once.
            // Direct geometries whose scratch would pass a tile unfold.
            ConvPath::Direct if crate::direct::tiny_grad::applies(g) => (direct_dx, DwPath::DirectTiny, DbPath::Fused),
            // Few filters on small images: dW without im2col; dX directly
            // or by col2im (as the transposed conv's forward it measured
            // 1.3x slower: its 6 "filters" fill 6 of 16 lanes and half its
            // taps meet padding).
            ConvPath::DirectFilters => (direct_dx, DwPath::DirectFilters, DbPath::Separate),
            // dW by filter blocks where it measured faster (its rule's
            // docs); db then in a pass of its own.
            ConvPath::DirectWide if crate::direct::filters_grad::blocks_beat_unfold(self.isa, g) => {
                (unfold_dx, DwPath::DirectWide, DbPath::Separate)
            }
            ConvPath::Direct | ConvPath::DirectWide | ConvPath::Unfold => (unfold_dx, DwPath::Unfold, DbPath::Fused),
        }
    }

    /// The path and tiling of [`ConvPlan::new`], before the subpixel dX
    /// choice.
    fn layout(g: &ConvGeometry, threads: usize, targets: TileTargets) -> Result<Self> {
        let pixels = g.oh * g.ow;
        let taps = g.r * g.s;
        let floats = targets.floats.max(1);
        let isa = Simd::new(targets.isa.unwrap_or(Isa::Avx512)).isa();
        // Keep at least two groups per thread so rayon can balance them.
        let max_images = g.n.div_ceil(2 * threads.max(1)).max(1);
        let images = targets.columns.div_ceil(pixels).clamp(1, max_images).min((floats / (taps * pixels)).max(1));
        // The direct kernels pad one image per worker; beyond a tile's worth
        // of floats the unfold path, whose scratch is bounded, takes over.
        let fits = padded_floats(g) <= floats;
        let chosen = if pointwise_geometry(g) {
            ConvPath::Pointwise
        } else if targets.winograd && crate::winograd::applies(g, threads) {
            ConvPath::Winograd
        } else if crate::direct::tiny::applies(g) && fits {
            ConvPath::Direct
        } else if crate::direct::filters::applies(g, targets.columns) && fits {
            ConvPath::DirectFilters
        } else if targets.direct_wide && crate::direct::wide::applies(g) {
            ConvPath::DirectWide
        } else {
            ConvPath::Unfold
        };
        let path = match targets.force.forward {
            None => chosen,
            Some(forced) => {
                let applies = match forced {
                    ConvPath::Pointwise => pointwise_geometry(g),
                    ConvPath::Unfold => true,
                    // Its thread condition is about speed, not correctness.
                    ConvPath::Winograd => crate::winograd::applies(g, 1),
                    ConvPath::Direct => crate::direct::tiny::applies(g) && fits,
                    ConvPath::DirectFilters => crate::direct::filters::applies(g, targets.columns) && fits,
                    ConvPath::DirectWide => crate::direct::wide::applies(g),
                };
                if !applies {
                    let what = format!("forward by {forced:?} does not apply to {g:?}");
                    return Err(Error::param("conv2d plan", what));
                }
                forced
            }
        };
        // Placeholders until `new` plans the backward.
        let (dx, dw, db) = (DxPath::Col2im, DwPath::Unfold, DbPath::Fused);
        if path == ConvPath::Pointwise {
            return Ok(Self {
                path: ConvPath::Pointwise,
                images_per_tile: 1,
                channels_per_tile: g.c,
                pixels_per_tile: pixels,
                phased: false,
                tile_floats: floats,
                unpacked_gemms: false,
                subpixel_dx: false,
                isa,
                dx,
                dw,
                db,
            });
        }
        if path == ConvPath::Winograd {
            return Ok(Self {
                path: ConvPath::Winograd,
                images_per_tile: 1,
                channels_per_tile: g.c,
                pixels_per_tile: pixels,
                phased: false,
                tile_floats: floats,
                unpacked_gemms: false,
                subpixel_dx: false,
                isa,
                dx,
                dw,
                db,
            });
        }
        let phased = g.params.stride[1] > 1 && images * phased_floats(g) <= PHASED_MAX_FLOATS;
        let unpacked = matches!(path, ConvPath::Unfold | ConvPath::DirectWide)
            && targets.unpacked_gemms
            && g.k >= 32
            && unpacked_gemms_at(isa);
        if images > 1 {
            let channels = row_block_channels((floats / (taps * pixels * images)).clamp(1, g.c), g.c, taps);
            return Ok(Self {
                path,
                images_per_tile: images,
                channels_per_tile: channels,
                pixels_per_tile: pixels,
                phased,
                tile_floats: floats,
                unpacked_gemms: unpacked,
                subpixel_dx: false,
                isa,
                dx,
                dw,
                db,
            });
        }
        let min_pixels = pixels.min(MIN_TILE_PIXELS);
        let channels = row_block_channels((floats / (taps * min_pixels)).clamp(1, g.c), g.c, taps);
        let mut pixels_per_tile = (floats / (channels * taps)).clamp(min_pixels, pixels);
        if pixels_per_tile < pixels {
            // Whole output rows when a row fits (im2col / col2im then take
            // their per-row fast path), else a multiple of the kernel width.
            let align = if g.ow <= pixels_per_tile { g.ow } else { PIXEL_ALIGN };
            pixels_per_tile = (pixels_per_tile / align * align).max(min_pixels);
        }
        Ok(Self {
            path,
            images_per_tile: 1,
            channels_per_tile: channels,
            pixels_per_tile,
            phased,
            tile_floats: floats,
            unpacked_gemms: unpacked,
            subpixel_dx: false,
            isa,
            dx,
            dw,
            db,
        })
    }

    /// The ISA of this plan with the proof of its features.
    pub(crate) fn simd(&self) -> Simd {
        Simd::new(self.isa)
    }

    /// One worker's scratch for this plan (the backward-only buffers start
    /// empty).
    pub(crate) fn scratch(&self, g: &ConvGeometry) -> Scratch {
        Scratch::new(self.col_floats(g), self.gather_floats(g), self.phased_floats(g))
    }

    /// GEMM columns of a full tile: images x pixels.
    pub fn columns(&self) -> usize {
        self.images_per_tile * self.pixels_per_tile
    }

    /// Floats of one col tile (0 on the pointwise path, which needs none;
    /// the direct path needs one for its backward).
    pub fn col_floats(&self, g: &ConvGeometry) -> usize {
        match self.path {
            ConvPath::Pointwise | ConvPath::Winograd => 0,
            ConvPath::Unfold | ConvPath::Direct | ConvPath::DirectFilters | ConvPath::DirectWide => {
                self.channels_per_tile * g.r * g.s * self.columns()
            }
        }
    }

    /// Floats of the gathered output (forward) or output gradient (backward)
    /// of a multi-image tile, [k, images x pixels]; 0 with one image per
    /// tile, which reads and writes y and dy in place.
    pub fn gather_floats(&self, g: &ConvGeometry) -> usize {
        if self.images_per_tile > 1 { g.k * self.columns() } else { 0 }
    }

    /// Floats of the phased copies of a tile's images (0 when not phased).
    pub fn phased_floats(&self, g: &ConvGeometry) -> usize {
        if self.phased { self.images_per_tile * phased_floats(g) } else { 0 }
    }

    /// Scratch bytes a call plans with `workers` concurrent workers: a col
    /// tile and a gather buffer each (a padded image on the direct path's
    /// forward), plus a partial dW each in backward.
    pub fn scratch_bytes(&self, g: &ConvGeometry, workers: usize, backward: bool) -> usize {
        let per_worker = match (backward, self.path) {
            (_, ConvPath::Winograd) => crate::winograd::scratch_floats(g, self.tile_floats, backward),
            // Phased x for im2col and phased dx for col2im.
            (true, _) => {
                // A pixel block's dYᵀ for the unpacked GEMM.
                let unpacked = if self.unpacked_gemms { dyt_stride(g.k) * self.columns() } else { 0 };
                // The phased dx for col2im, or subpixel.rs's buffers.
                let dx = if self.subpixel_dx {
                    crate::subpixel::scratch_floats(g, self.images_per_tile)
                } else {
                    self.phased_floats(g)
                };
                self.col_floats(g)
                    + self.gather_floats(g)
                    + self.phased_floats(g)
                    + dx
                    + g.k * g.c * g.r * g.s
                    + unpacked
            }
            (false, ConvPath::Direct | ConvPath::DirectFilters) => padded_floats(g),
            (false, ConvPath::DirectWide) => crate::direct::wide::scratch_floats(g),
            (false, _) => self.col_floats(g) + self.gather_floats(g) + self.phased_floats(g),
        };
        // Once per call: the unpacked GEMM's Wᵀ and dWᵀ; dW by filter
        // blocks' group of images.
        let unpacked = if backward && self.unpacked_gemms { 2 * g.k * g.c * g.r * g.s } else { 0 };
        let blocks = if backward && self.dw == DwPath::DirectWide {
            crate::direct::filters_grad::blocks_scratch_floats(g)
        } else {
            0
        };
        let shared = unpacked + blocks;
        workers.saturating_mul(per_worker).saturating_add(shared).saturating_mul(size_of::<f32>())
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
    /// A multi-image tile is the same tile taken in each of its images.
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

    #[test]
    fn every_path_parses_from_its_name_in_any_case() {
        for &p in ConvPath::ALL {
            assert_eq!(format!("{p:?}").to_lowercase().parse::<ConvPath>(), Ok(p));
        }
        for &p in DxPath::ALL {
            assert_eq!(format!("{p:?}").parse::<DxPath>(), Ok(p));
        }
        for &p in DwPath::ALL {
            assert_eq!(format!("{p:?}").to_uppercase().parse::<DwPath>(), Ok(p));
        }
        assert!("im2col".parse::<ConvPath>().unwrap_err().contains("DirectWide"));
    }
    use crate::simd::Isa;
    use kernels_core::{CONV_SUITE, Conv2d};

    #[test]
    fn suite_scratch_stays_bounded_whatever_the_batch() {
        for case in &CONV_SUITE {
            for batch in [case.input[0], 4096] {
                let [_, c, h, w] = case.input;
                let g = ConvGeometry::from_dims([batch, c, h, w], case.filters, &case.params()).unwrap();
                for workers in [1, 2, 16] {
                    let plan = ConvPlan::new(&g, workers, TileTargets::default()).unwrap();
                    let bytes = plan.scratch_bytes(&g, workers, true);
                    assert!(bytes <= SCRATCH_LIMIT_BYTES, "{} batch {batch}: {bytes} bytes", case.name);
                    plan.check_scratch(&g, workers, true).unwrap();
                    assert!(plan.col_floats(&g) <= TILE_FLOATS.max(g.r * g.s * MIN_TILE_PIXELS), "{}", case.name);
                }
            }
        }
    }

    #[test]
    fn tiles_cover_every_channel_and_pixel_once() {
        let g = ConvGeometry::from_dims([1, 300, 40, 40], [4, 7, 7], &Conv2d::new(1, 3)).unwrap();
        let plan = ConvPlan::new(&g, 2, TileTargets::default()).unwrap();
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
    fn small_images_are_grouped_and_large_ones_split() {
        let lenet_c2 = ConvGeometry::from_dims([256, 6, 14, 14], [16, 5, 5], &Conv2d::default()).unwrap();
        let plan = ConvPlan::new(&lenet_c2, 2, TileTargets::default()).unwrap();
        assert!(plan.images_per_tile > 1 && plan.columns() >= TILE_COLUMNS, "{plan:?}");
        let resnet = ConvGeometry::from_dims([8, 64, 56, 56], [64, 3, 3], &Conv2d::new(1, 1)).unwrap();
        assert_eq!(ConvPlan::new(&resnet, 2, TileTargets::default()).unwrap().path, ConvPath::Winograd);
        let unfold = TileTargets { winograd: false, ..TileTargets::default() };
        let plan = ConvPlan::new(&resnet, 2, unfold).unwrap();
        assert!(plan.images_per_tile == 1 && plan.pixels_per_tile < 56 * 56, "{plan:?}");
    }

    #[test]
    fn direct_only_for_tiny_unit_stride_reductions() {
        // At AVX2 (what this checks on any CPU that has it; the portable
        // level's own choice is the next test's).
        let path = |input: [usize; 4], filters: [usize; 3], params: Conv2d| {
            let targets = TileTargets { isa: Some(Isa::Avx2), ..TileTargets::default() };
            let plan = ConvPlan::new(&ConvGeometry::from_dims(input, filters, &params).unwrap(), 2, targets).unwrap();
            if plan.isa == Isa::Portable && plan.path == ConvPath::Unfold {
                // A CPU without AVX2: the geometry's own family is what the
                // forced path accepts.
                return [ConvPath::Direct, ConvPath::DirectFilters, ConvPath::DirectWide]
                    .into_iter()
                    .find(|&p| {
                        let forced = TileTargets { force: Forced { forward: Some(p), ..Forced::default() }, ..targets };
                        ConvPlan::new(&ConvGeometry::from_dims(input, filters, &params).unwrap(), 2, forced).is_ok()
                    })
                    .unwrap_or(ConvPath::Unfold);
            }
            plan.path
        };
        assert_eq!(path([256, 1, 28, 28], [6, 5, 5], Conv2d::new(1, 2)), ConvPath::Direct);
        assert_eq!(path([100, 1, 28, 28], [30, 5, 5], Conv2d::new(1, 0)), ConvPath::Direct);
        assert_eq!(path([256, 6, 14, 14], [16, 5, 5], Conv2d::new(1, 0)), ConvPath::DirectFilters);
        // K > 16 over many channels: direct_wide from 96 output pixels.
        assert_eq!(path([256, 20, 12, 12], [50, 3, 3], Conv2d::new(1, 0)), ConvPath::DirectWide); // mxnet-c2
        assert_eq!(path([8, 128, 28, 28], [256, 3, 3], Conv2d::new(2, 1)), ConvPath::DirectWide); // resnet-s2
        assert_eq!(path([8, 256, 14, 14], [512, 3, 3], Conv2d::new(2, 1)), ConvPath::Unfold); // 7x7 outputs
        assert_eq!(path([256, 20, 11, 11], [50, 3, 3], Conv2d::new(1, 0)), ConvPath::Unfold); // 81 pixels
        assert_eq!(path([8, 1, 64, 64], [6, 5, 5], Conv2d::new(2, 2)), ConvPath::Unfold);
        assert_eq!(path([2, 1, 12, 12], [6, 5, 5], Conv2d::new(1, 0)), ConvPath::Unfold); // OW 8 < 16
        assert_eq!(path([1, 1, 4000, 4000], [2, 3, 3], Conv2d::new(1, 1)), ConvPath::Unfold); // padded image too big
        assert_eq!(path([8, 3, 224, 224], [64, 11, 11], Conv2d::new(4, 2)), ConvPath::DirectWide); // alexnet-c1
        assert_eq!(path([8, 5, 224, 224], [64, 11, 11], Conv2d::new(4, 2)), ConvPath::DirectWide); // C > 4, 3025 pixels
        assert_eq!(path([8, 5, 64, 64], [64, 11, 11], Conv2d::new(8, 2)), ConvPath::Unfold); // C > 4, 64 pixels
        assert_eq!(path([8, 3, 64, 64], [64, 11, 11], Conv2d::new(8, 2)), ConvPath::DirectWide); // C ≤ 4, 64 pixels
    }

    #[test]
    fn pointwise_only_for_1x1_stride_1_unpadded() {
        let plan = |r, stride, pad| {
            let g = ConvGeometry::from_dims([2, 3, 8, 8], [4, r, r], &Conv2d::new(stride, pad)).unwrap();
            ConvPlan::new(&g, 2, TileTargets::default()).unwrap().path
        };
        assert_eq!(plan(1, 1, 0), ConvPath::Pointwise);
        assert_eq!(plan(1, 2, 0), ConvPath::Unfold);
        assert_eq!(plan(1, 1, 1), ConvPath::Unfold);
        assert_eq!(plan(3, 1, 0), ConvPath::Unfold);
    }

    #[test]
    fn one_plan_names_every_pass_of_the_suite() {
        // What conv/backward.rs used to decide in its own chain of ifs.
        let expect = [
            ("lenet-c1", ConvPath::Direct, DxPath::Col2im, DwPath::DirectTiny, DbPath::Fused),
            ("lenet-c2", ConvPath::DirectFilters, DxPath::Direct, DwPath::DirectFilters, DbPath::Separate),
            ("resnet-3x3", ConvPath::Winograd, DxPath::Winograd, DwPath::Winograd, DbPath::Fused),
            ("alexnet-c1", ConvPath::DirectWide, DxPath::Col2im, DwPath::Unfold, DbPath::Fused),
        ];
        for (name, path, dx, dw, db) in expect {
            let case = CONV_SUITE.iter().find(|c| c.name == name).unwrap();
            let g = ConvGeometry::from_dims(case.input, case.filters, &case.params()).unwrap();
            let plan = ConvPlan::new(&g, 2, TileTargets::default()).unwrap();
            // alexnet-c1's dW goes by filter blocks at AVX2 only (step 65).
            let (dw, db) = if name == "alexnet-c1" && plan.isa == Isa::Avx2 {
                (DwPath::DirectWide, DbPath::Separate)
            } else {
                (dw, db)
            };
            // Without AVX2 the direct forwards unfold (the test above).
            let path = if unfold_beats_direct_forward(plan.isa, path) { ConvPath::Unfold } else { path };
            assert_eq!((plan.path, plan.dx, plan.dw, plan.db), (path, dx, dw, db), "{name}: {plan:?}");
        }
        let s2 = CONV_SUITE.iter().find(|c| c.name == "resnet-s2").unwrap();
        let g = ConvGeometry::from_dims(s2.input, s2.filters, &s2.params()).unwrap();
        let plan = ConvPlan::new(&g, 2, TileTargets::default()).unwrap();
        let dx = if unpacked_gemms_at(plan.isa) { DxPath::Subpixel } else { DxPath::Col2im };
        // Its forward is direct_wide's (step 63), its dX unfolds and its
        // dW goes by filter blocks (step 65), except at the portable level.
        let (path, dw, db) = if plan.isa == Isa::Portable {
            (ConvPath::Unfold, DwPath::Unfold, DbPath::Fused)
        } else {
            (ConvPath::DirectWide, DwPath::DirectWide, DbPath::Separate)
        };
        assert_eq!(
            (plan.path, plan.dx, plan.dw, plan.db, plan.subpixel_dx),
            (path, dx, dw, db, dx == DxPath::Subpixel)
        );
    }

    #[test]
    fn dw_by_filter_blocks_follows_its_rule_and_yields_to_the_scratch_limit() {
        let at = |isa, input, filters, params: Conv2d| {
            let g = ConvGeometry::from_dims(input, filters, &params).unwrap();
            let plan = ConvPlan::new(&g, 2, TileTargets { isa: Some(isa), ..TileTargets::default() }).unwrap();
            plan.check_scratch(&g, 2, true).unwrap();
            (plan.path, plan.dw, plan.db)
        };
        let blocks = (ConvPath::DirectWide, DwPath::DirectWide, DbPath::Separate);
        let unfold = (ConvPath::DirectWide, DwPath::Unfold, DbPath::Fused);
        for isa in Isa::supported().into_iter().filter(|&isa| isa != Isa::Portable) {
            // resnet-s2: many channels, K a multiple of 16.
            assert_eq!(at(isa, [8, 128, 28, 28], [256, 3, 3], Conv2d::new(2, 1)), blocks, "{isa}");
            // mxnet-c2: K = 50 leaves 14 of 64 lanes idle.
            assert_eq!(at(isa, [256, 20, 12, 12], [50, 3, 3], Conv2d::new(1, 0)), unfold, "{isa}");
            // alexnet-c1: 3 channels, by filter blocks at AVX2 only.
            let alexnet = if isa == Isa::Avx2 { blocks } else { unfold };
            assert_eq!(at(isa, [8, 3, 224, 224], [64, 11, 11], Conv2d::new(4, 2)), alexnet, "{isa}");
            // One image's transposed dY alone (2048 filters x 96x96 pixels,
            // 72 MiB) passes the limit: dW unfolds.
            let g = ConvGeometry::from_dims([2, 8, 96, 96], [2048, 3, 3], &Conv2d::new(1, 1)).unwrap();
            assert!(crate::direct::filters_grad::blocks_scratch_floats(&g) * 4 > SCRATCH_LIMIT_BYTES);
            let (path, dw, _) = at(isa, [2, 8, 96, 96], [2048, 3, 3], Conv2d::new(1, 1));
            assert_eq!(dw, DwPath::Unfold, "{isa}: {path:?}");
        }
    }

    #[test]
    fn forced_paths_are_taken_where_they_apply_and_refused_elsewhere() {
        let lenet_c2 = ConvGeometry::from_dims([8, 6, 14, 14], [16, 5, 5], &Conv2d::default()).unwrap();
        let force = |forward, dx, dw| TileTargets { force: Forced { forward, dx, dw }, ..TileTargets::default() };
        let plan = ConvPlan::new(&lenet_c2, 2, force(Some(ConvPath::Unfold), Some(DxPath::Col2im), None)).unwrap();
        assert_eq!((plan.path, plan.dx, plan.dw), (ConvPath::Unfold, DxPath::Col2im, DwPath::Unfold));
        let plan = ConvPlan::new(&lenet_c2, 2, force(None, None, Some(DwPath::Unfold))).unwrap();
        // Without AVX2 (aarch64, say) the forward unfolds: see the test below.
        let forward = if unfold_beats_direct_forward(plan.isa, ConvPath::DirectFilters) {
            ConvPath::Unfold
        } else {
            ConvPath::DirectFilters
        };
        assert_eq!((plan.path, plan.dw, plan.db), (forward, DwPath::Unfold, DbPath::Fused));
        // Not 3x3: no Winograd; a DirectFilters forward has no Winograd dW.
        for targets in [
            force(Some(ConvPath::Winograd), None, None),
            force(None, None, Some(DwPath::Winograd)),
            force(None, Some(DxPath::Gemm), None),
            force(Some(ConvPath::Pointwise), None, None),
        ] {
            let err = ConvPlan::new(&lenet_c2, 2, targets).unwrap_err();
            assert!(matches!(err, Error::Param { .. }), "{err}");
        }
    }

    #[test]
    fn portable_forwards_take_the_unfold_path_and_keep_the_direct_backward() {
        // Measured per ISA (OPTIMISATION.md step 53): at AVX2 and AVX-512 the
        // direct kernels' intrinsics win on every suite shape, at the
        // portable level matrixmultiply's GEMM does.
        for (name, direct, dx, dw) in [
            ("lenet-c1", ConvPath::Direct, DxPath::Col2im, DwPath::DirectTiny),
            ("lenet-c2", ConvPath::DirectFilters, DxPath::Direct, DwPath::DirectFilters),
            ("simplecnn-c1", ConvPath::Direct, DxPath::Col2im, DwPath::DirectTiny),
            ("alexnet-c1", ConvPath::DirectWide, DxPath::Col2im, DwPath::Unfold),
        ] {
            let case = CONV_SUITE.iter().find(|c| c.name == name).unwrap();
            let g = ConvGeometry::from_dims(case.input, case.filters, &case.params()).unwrap();
            for isa in Isa::supported() {
                let targets = TileTargets { isa: Some(isa), ..TileTargets::default() };
                let plan = ConvPlan::new(&g, 2, targets).unwrap();
                // alexnet-c1's dW by filter blocks won at AVX2 only (step 65).
                let dw = if name == "alexnet-c1" && isa == Isa::Avx2 { DwPath::DirectWide } else { dw };
                let forward = if isa == Isa::Portable { ConvPath::Unfold } else { direct };
                assert_eq!((plan.path, plan.dx, plan.dw, plan.isa), (forward, dx, dw, isa), "{name} at {isa}");
                // A forced direct forward still runs at any ISA (tests, benches).
                let forced = TileTargets { force: Forced { forward: Some(direct), ..Forced::default() }, ..targets };
                assert_eq!(ConvPlan::new(&g, 2, forced).unwrap().path, direct, "{name} at {isa}");
            }
        }
    }

    #[test]
    fn oversized_problems_are_refused_not_run() {
        // A 600x600 kernel cannot tile below 64 MiB with 64 pixels per tile.
        let g = ConvGeometry::from_dims([1, 1, 700, 700], [1, 600, 600], &Conv2d::default()).unwrap();
        let err = ConvPlan::new(&g, 2, TileTargets::default()).unwrap().check_scratch(&g, 2, false).unwrap_err();
        assert!(matches!(err, Error::Scratch { .. }), "{err}");
    }
}
