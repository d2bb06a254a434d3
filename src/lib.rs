pub use deriv_runtime::*;
