//! The kernels the launchers enqueue, one constant per `__kernel` in
//! `cl/*.cl`. [`crate::runtime::Runtime::launch`] takes a [`Kernel`], which
//! only this module can make, so [`ALL`] holds every name a launch can ask
//! for; the runtime's name → program table must resolve each of them (a
//! test checks it on the device).

/// A kernel's name as its `__kernel` declaration spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Kernel(&'static str);

impl Kernel {
    pub fn name(self) -> &'static str {
        self.0
    }
}

macro_rules! kernels {
    ($($constant:ident = $name:literal),* $(,)?) => {
        $(pub(crate) const $constant: Kernel = Kernel($name);)*
        /// Every kernel a launcher can name.
        #[cfg_attr(not(test), allow(dead_code))]
        pub(crate) const ALL: &[Kernel] = &[$($constant),*];
    };
}

kernels! {
    ADAGRAD_STEP = "adagrad_step",
    ADAM_STEP = "adam_step",
    BIAS_GRAD = "bias_grad",
    BN_APPLY = "bn_apply",
    BN_APPLY_EVAL = "bn_apply_eval",
    BN_BACKWARD_DX = "bn_backward_dx",
    BN_BACKWARD_SUMS = "bn_backward_sums",
    BN_STATS = "bn_stats",
    BIAS_GRAD_ROWS = "bias_grad_rows",
    COL2IM = "col2im",
    CONV_DIRECT = "conv_direct",
    CONV_DIRECT_ALT = "conv_direct_alt",
    CONV_DW = "conv_dw",
    DROPOUT_APPLY = "dropout_apply",
    FILL_F32 = "fill_f32",
    GEMM_NN = "gemm_nn",
    GEMM_NN_LOCAL = "gemm_nn_local",
    GEMM_NT = "gemm_nt",
    IM2COL = "im2col",
    IM2COL_PLANE = "im2col_plane",
    MOMENTUM_STEP = "momentum_step",
    PAD_PLANES = "pad_planes",
    POOL_BACKWARD = "pool_backward",
    POOL_BACKWARD_BAND = "pool_backward_band",
    POOL_BACKWARD_TILED = "pool_backward_tiled",
    POOL_FORWARD = "pool_forward",
    RELU_BACKWARD = "relu_backward",
    RELU_FORWARD = "relu_forward",
    RMSPROP_STEP = "rmsprop_step",
    SGD_STEP = "sgd_step",
    SIGMOID_BACKWARD = "sigmoid_backward",
    SIGMOID_FORWARD = "sigmoid_forward",
    SOFTMAX_XENT = "softmax_xent",
}
