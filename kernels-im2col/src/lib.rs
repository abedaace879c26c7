//! kernels-im2col: under construction in this session.
