//! Inverted dropout with the counter-based mask of `kernels_core::dropout`:
//! out = kept ? v·scale : 0, scale rounded once to f32. Forward and backward
//! are the same map (the backward re-derives the forward's mask), split in
//! blocks whose first element index keys each block's draws.

use kernels_core::DropoutMask;
use rayon::prelude::*;

const BLOCK: usize = 1 << 14;

pub(crate) fn apply(mask: &DropoutMask, values: &[f32]) -> Vec<f32> {
    let scale = mask.scale as f32;
    let mut out = vec![0.0f32; values.len()];
    out.par_chunks_mut(BLOCK).zip(values.par_chunks(BLOCK)).enumerate().for_each(|(block, (out, values))| {
        let start = block * BLOCK;
        for (i, (o, &v)) in out.iter_mut().zip(values).enumerate() {
            *o = if mask.keeps(start + i) { v * scale } else { 0.0 };
        }
    });
    out
}
