//! Compile-time behaviour of `network!` and `#[derive(Module)]`: each
//! tests/ui/fail case must fail with exactly its committed .stderr (the error
//! at the user's tokens), and each tests/ui/pass case must compile.
//! Regenerate the .stderr files with `TRYBUILD=overwrite cargo test --test ui`
//! and read every one before committing it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
