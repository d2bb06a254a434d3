//! Procedural macros of `deriv`.
//!
//! `#[derive(Module)]` and `network!` arrive here with the network DSL work:
//! they will write a model's forward and backward passes at compile time.
//! Until then this crate is intentionally empty.
