//! The two slow end-to-end suites, in one test binary so that they share
//! the cores: the examples' training runs (each mostly on one thread) and
//! trybuild's second check of the crate (a cargo process of its own, most
//! of a clean `cargo test`'s running time) go side by side instead of one
//! binary after the other.

mod compile_errors;
mod examples;
