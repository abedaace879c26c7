//! Tile sizes and work-group shapes, chosen from the device's limits and
//! passed to the compiler as build options (`-D NN_MR=...`), so no kernel
//! carries a size as a literal.
//!
//! `KERNELS_OPENCL_GEMM_TILE=MRxNRxVW` overrides the register tile of the
//! NN GEMM (rows x columns per work-item, vector width) for tuning runs.

use crate::device::Limits;

/// Environment variable overriding the NN GEMM register tile, "MRxNRxVW".
pub const GEMM_TILE_ENV: &str = "KERNELS_OPENCL_GEMM_TILE";

/// Environment variable forcing the conv path: "direct" or "im2col".
pub const CONV_PATH_ENV: &str = "KERNELS_OPENCL_CONV";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tiles {
    /// NN GEMM: rows and columns of C per work-item; columns are VW-wide vectors.
    pub nn_mr: usize,
    pub nn_nr: usize,
    /// Vector width of loads and accumulators (1, 2, 4, 8 or 16).
    pub vw: usize,
    /// NT GEMM (dot form): rows and columns of C per work-item.
    pub nt_mr: usize,
    pub nt_nr: usize,
    /// Work-group size of the reductions: a power of two within the device limit.
    pub reduce_wg: usize,
    /// Bias gradient as one streaming work-item per channel (CPUs) instead
    /// of a work-group tree per channel (GPUs, or whenever `use_local`).
    pub reduce_rows: bool,
    /// Whether the NN GEMM stages B tiles through local memory (GPUs), and
    /// the k-depth of that tile.
    pub use_local: bool,
    pub tile_k: usize,
    /// Work-group size along dimension 0 of the element-wise and layout
    /// kernels (im2col, pooling, activations, optimisers).
    pub line_wg: usize,
    /// im2col with one work-item per row (GPUs: many work-items) rather than
    /// per plane (CPUs: fewer, longer ones).
    pub im2col_rows: bool,
    /// Tiled pool backward by window rows (CPUs: fewer, longer work-items,
    /// one argmax per window) instead of by dx rows (GPUs, or whenever
    /// `use_local`, so the tests run both).
    pub pool_bands: bool,
    /// Direct conv: output pixels per work-item (one vector of this width)
    /// and filters per work-item.
    pub conv_dw: usize,
    pub conv_kb: usize,
    /// The second filter block (`conv_direct_alt`): 3/4 of conv_kb, for
    /// filter counts conv_kb does not divide (6 = 8·3/4).
    pub conv_kb_alt: usize,
    /// Direct conv forced on or off (None: by size, see conv_direct.rs).
    pub direct_conv: Option<bool>,
    /// Upper bound on a work-group (the device's).
    pub max_wg: usize,
    pub compute_units: usize,
}

fn parse_tile(s: &str) -> Option<(usize, usize, usize)> {
    let mut it = s.split('x').map(|v| v.trim().parse::<usize>().ok());
    let (mr, nr, vw) = (it.next()??, it.next()??, it.next()??);
    if it.next().is_some() {
        return None;
    }
    valid_tile((mr, nr, vw))
}

/// A register tile the kernel supports: rows 1..=16, a vector width of
/// 1, 2, 4, 8 or 16, columns a multiple of it and at most 8 vectors.
fn valid_tile((mr, nr, vw): (usize, usize, usize)) -> Option<(usize, usize, usize)> {
    let vw_ok = matches!(vw, 1 | 2 | 4 | 8 | 16);
    (vw_ok && (1..=16).contains(&mr) && nr > 0 && nr % vw == 0 && nr / vw <= 8).then_some((mr, nr, vw))
}

impl Tiles {
    pub fn for_device(limits: &Limits, config: &crate::Config) -> Self {
        let max_wg = limits.max_work_group;
        let reduce_wg = prev_pow2(max_wg.min(256));
        // A CPU device (PoCL) runs a work-item as a loop iteration: give each
        // one a register tile as wide as the SIMD unit (16 floats with
        // AVX-512) and enough rows to hide the load of each B vector: 8 x 32
        // keeps 16 accumulators, 2 B vectors and a broadcast in the 32
        // vector registers (see OPTIMISATION.md for the sweep). A GPU
        // gets small tiles and many work-items, with B staged in local memory.
        let (nn_mr, nn_nr, vw, use_local) = if limits.is_gpu { (4, 4, 4, true) } else { cpu_tile(limits) };
        let env_tile = std::env::var(GEMM_TILE_ENV).ok().and_then(|s| parse_tile(&s));
        let (nn_mr, nn_nr, vw) = config.gemm_tile.and_then(valid_tile).or(env_tile).unwrap_or((nn_mr, nn_nr, vw));
        let env_local = match std::env::var(crate::LOCAL_GEMM_ENV).as_deref().map(str::trim) {
            Ok("1") => Some(true),
            Ok("0") => Some(false),
            _ => None,
        };
        let use_local = config.local_gemm.or(env_local).unwrap_or(use_local);
        // The local tiles are tile_k x (nn_mr · group height) floats of A
        // and tile_k x (nn_nr · group width) of B, groups at most 16 x 16:
        // keep both within half of local memory. Launches check the actual
        // group against the device and fall back to the plain GEMM (gemm.rs).
        let mut tile_k = 16;
        while tile_k > 1 && (tile_k * (nn_mr + nn_nr) * 16 * 4) as u64 > limits.local_mem_bytes / 2 {
            tile_k /= 2;
        }
        let env_conv = match std::env::var(CONV_PATH_ENV).as_deref().map(str::trim) {
            Ok("direct") => Some(true),
            Ok("im2col") => Some(false),
            _ => None,
        };
        Self {
            // The direct conv's pixel vector is as wide as the GEMM's (the
            // SIMD width on a CPU); KB filters keep KB vector accumulators,
            // 8 on a CPU (of 32 AVX-512 registers), 4 on a GPU.
            conv_dw: vw.clamp(2, 16),
            conv_kb: if limits.is_gpu { 4 } else { 8 },
            conv_kb_alt: if limits.is_gpu { 3 } else { 6 },
            direct_conv: config.direct_conv.or(env_conv),
            nn_mr,
            nn_nr,
            vw,
            nt_mr: 4,
            nt_nr: 4,
            reduce_wg,
            // With the GPU's local-memory GEMM, so tests forcing that variant
            // on a CPU also run the tree.
            reduce_rows: !(use_local && max_wg >= 64),
            pool_bands: !(use_local && max_wg >= 64),
            line_wg: std::env::var("KERNELS_OPENCL_LINE_WG")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(prev_pow2(max_wg.min(256))),
            use_local: use_local && max_wg >= 64,
            im2col_rows: config.im2col_rows.unwrap_or(limits.is_gpu),
            tile_k,
            max_wg,
            compute_units: limits.compute_units as usize,
        }
    }

    pub fn build_options(&self) -> String {
        format!(
            "-D NN_MR={} -D NN_NR={} -D VW={} -D NT_MR={} -D NT_NR={} -D REDUCE_WG={} -D USE_LOCAL={} -D TILE_K={} \
             -D DW={} -D KB={} -D KB_ALT={} -D NV={} -D DW_MAX_S={} -D DW_KF={}",
            self.nn_mr,
            self.nn_nr,
            self.vw,
            self.nt_mr,
            self.nt_nr,
            self.reduce_wg,
            u8::from(self.use_local),
            self.tile_k,
            self.conv_dw,
            self.conv_kb,
            self.conv_kb_alt,
            crate::conv_direct::CONV_NV,
            crate::conv_direct::DW_MAX_S,
            crate::conv_direct::DW_KF
        )
    }

    /// Work-group shape for a 2-D grid of `gx` (column tiles) x `gy` (row
    /// tiles) work-items, for the local-memory GEMM (`local`) or the plain
    /// ones, within `max_wg` work-items (the kernel's limit) and `max_items`
    /// per dimension.
    ///
    /// CPU: a work-group runs on one core, work-item x fastest, so its B
    /// footprint is lx column panels of K x NN_NR floats; keep lx small and
    /// ly tall (up to 64 row tiles) so those panels stay in L2 while every
    /// row tile streams past them; then shrink until there are a few groups
    /// per compute unit. GPU: 16 x 16 work-items sharing local tiles.
    pub fn group_2d(&self, gx: usize, gy: usize, local: bool, max_wg: usize, max_items: [usize; 2]) -> [usize; 2] {
        let max_wg = max_wg.min(self.max_wg).max(1);
        let within = |mut l: [usize; 2]| {
            l = [l[0].min(max_items[0]).max(1), l[1].min(max_items[1]).max(1)];
            while l[0] * l[1] > max_wg {
                if l[0] >= l[1] { l[0] /= 2 } else { l[1] /= 2 }
            }
            l
        };
        if let Some((x, y)) = std::env::var("KERNELS_OPENCL_GROUP").ok().and_then(|v| {
            let (a, b) = v.split_once('x')?;
            Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
        }) {
            return within([x.min(gx.next_power_of_two()).max(1), y.min(gy.next_power_of_two()).max(1)]);
        }
        let mut l = within(if local {
            [gx.next_power_of_two().min(16), gy.next_power_of_two().min(16)]
        } else {
            let ly = gy.next_power_of_two().min(64);
            [gx.next_power_of_two().min((64 / ly).clamp(1, 8)), ly]
        });
        if !local {
            let want = 4 * self.compute_units;
            while gx.div_ceil(l[0]) * gy.div_ceil(l[1]) < want && l[0] * l[1] > 1 {
                if l[0] >= l[1] { l[0] /= 2 } else { l[1] /= 2 }
            }
        }
        l
    }
}

/// The NN register tile of a CPU device, from its SIMD width in floats
/// (the larger of the preferred and native vector widths: Intel's runtime
/// prefers 1 and vectorises across work-items, yet runs 16-wide tiles
/// fastest, OPTIMISATION.md step 21): 16 (AVX-512) 8 x 32 (16
/// accumulators of 32 registers, the sweep of step 3); 8 (AVX2, 16
/// registers) 6 x 16 (12 accumulators; about 1.25x faster than 8 x 32 x 16
/// on an AVX2 machine, issue 14, where 16-wide vectors are split in two);
/// 4 or less (SSE, NEON) 4 x 8 with 4-wide vectors.
fn cpu_tile(limits: &Limits) -> (usize, usize, usize, bool) {
    match limits.preferred_vector_width.max(limits.native_vector_width) {
        16.. => (8, 32, 16, false),
        8..=15 => (6, 16, 8, false),
        _ => (4, 8, 4, false),
    }
}

fn prev_pow2(v: usize) -> usize {
    if v <= 1 { 1 } else { 1 << (usize::BITS - 1 - v.leading_zeros()) }
}

/// `v` rounded up to a multiple of `m`.
pub(crate) fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(preferred: u32, native: u32) -> Limits {
        Limits {
            max_work_group: 4096,
            max_work_items: [4096; 3],
            local_mem_bytes: 1 << 20,
            compute_units: 2,
            max_alloc_bytes: 1 << 30,
            preferred_vector_width: preferred,
            native_vector_width: native,
            is_gpu: false,
        }
    }

    #[test]
    fn a_cpu_gets_the_tile_of_its_simd_width() {
        let tile = |l: &Limits| {
            let t = Tiles::for_device(l, &crate::Config { gemm_tile: None, ..crate::Config::default() });
            (t.nn_mr, t.nn_nr, t.vw)
        };
        // PoCL on AVX-512, Intel's runtime on AVX-512 (prefers 1), AVX2, SSE.
        assert_eq!(tile(&cpu(16, 16)), (8, 32, 16));
        assert_eq!(tile(&cpu(1, 16)), (8, 32, 16));
        assert_eq!(tile(&cpu(8, 8)), (6, 16, 8));
        assert_eq!(tile(&cpu(4, 4)), (4, 8, 4));
        assert!(valid_tile((6, 16, 8)).is_some() && valid_tile((4, 8, 4)).is_some());
    }

    #[test]
    fn tile_override_is_parsed_and_checked() {
        assert_eq!(parse_tile("8x32x16"), Some((8, 32, 16)));
        assert_eq!(parse_tile("8x30x16"), None);
        assert_eq!(parse_tile("8x32x3"), None);
        assert_eq!(parse_tile("8x32"), None);
        assert_eq!(prev_pow2(1000), 512);
        assert_eq!(round_up(10, 4), 12);
    }
}
