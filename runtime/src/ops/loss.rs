//! Loss functions: forward kernels, backward rules and tape nodes.
