//! Replays the fuzz targets' checks (fuzz/src/checks.rs) on every saved
//! input: the seeds in fuzz/seeds/TARGET and the inputs fuzzing once found
//! a problem with, kept in tests/data/fuzz-regressions/TARGET. So a fixed
//! finding stays fixed in a plain `cargo test`, with no nightly or libFuzzer.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

/// The files of `dir` (none when it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Runs `check` on every saved input of `target`; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        root.join("fuzz/seeds").join(target),
        root.join("tests/data/fuzz-regressions").join(target),
    ] {
        for file in inputs(&dir) {
            if file.file_name().is_some_and(|n| n == "README.md") {
                continue;
            }
            let bytes = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{target}: {} panicked", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn safetensors_inputs() {
    assert!(replay("safetensors", checks::safetensors) >= 2);
}

#[test]
fn checkpoint_inputs() {
    assert!(replay("checkpoint", checks::checkpoint) >= 2);
}

#[test]
fn csv_inputs() {
    assert!(replay("csv", checks::csv) >= 3);
}
