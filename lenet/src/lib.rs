//! lenet: under construction in this session.
