//! Compile-time behaviour of `network!` and `#[derive(Module)]`: each
//! tests/ui/fail case must fail with exactly its committed .stderr (the error
//! at the user's tokens). Regenerate the .stderr files with
//! `TRYBUILD=overwrite cargo test --test end_to_end compile_errors` and read every one
//! before committing it.
//!
//! The tests/ui/pass cases are compiled and run by tests/network_macro.rs
//! instead (each `include!`d as a module): in the main build they cost
//! seconds, while one pass case here would make trybuild *build* (not just
//! check) every dependency again in its own target folder.

pub fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
}
