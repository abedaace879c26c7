//! Inverted dropout with the counter-based mask of `kernels_core::dropout`:
//! y = x·scale where the element is kept, else 0; the backward re-derives
//! the same mask and scales dy alike.

use kernels_core::{DropoutMask, Float};

pub(crate) fn apply<T: Float>(mask: &DropoutMask, values: &[T]) -> Vec<T> {
    let scale = T::from_f64(mask.scale);
    values.iter().enumerate().map(|(i, &v)| if mask.keeps(i) { v * scale } else { T::ZERO }).collect()
}
