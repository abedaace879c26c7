//! kernels-naive: under construction in this session.
