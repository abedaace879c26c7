//! `KERNELS_ISA` read at backend construction: an unknown value is a typed
//! error there (or, for the infallible `Im2col::new`, at the first conv
//! op), a valid one caps the plan's ISA. Its own test binary with a single
//! test, because it sets the process environment.

use kernels_core::{Backend, Conv2d, ConvGeometry, Error, Tensor};
use kernels_im2col::{ISA_ENV, Im2col, Isa};

fn set_isa(value: &str) {
    // SAFETY: this binary holds one test, which sets the variable before
    // it builds any backend or thread pool; no other thread reads the
    // environment meanwhile.
    unsafe { std::env::set_var(ISA_ENV, value) };
}

#[test]
fn the_environment_caps_the_isa_or_is_refused() {
    set_isa("avx3");
    let err = Im2col::with_threads(1).unwrap_err();
    assert!(matches!(err, Error::Param { .. }) && err.to_string().contains("avx3"), "{err}");
    let g = ConvGeometry::from_dims([1, 1, 20, 20], [2, 3, 3], &Conv2d::default()).unwrap();
    let (x, w) = (Tensor::zeros(&g.x_shape()), Tensor::zeros(&g.w_shape()));
    let err = Im2col::new().exec_conv2d_forward(&g, &x, &w, None).unwrap_err();
    assert!(matches!(err, Error::Param { .. }), "{err}");

    set_isa("portable");
    let backend = Im2col::with_threads(1).unwrap();
    assert_eq!(backend.isa(), Isa::Portable);
    assert_eq!(backend.conv_plan(&g).unwrap().isa, Isa::Portable);
    // The options cannot raise the environment's cap.
    assert_eq!(backend.with_isa(Isa::Avx512).isa(), Isa::Portable);
    assert_eq!(Im2col::new().isa(), Isa::Portable);
}
