//! kernels-opencl: under construction in this session.
