//! A small harness for the MPI test binaries (`harness = false`): every rank
//! runs the same tests in the same order, since each test's collectives must
//! match across ranks; libtest would run them on parallel threads.
//!
//! `cargo test --features mpi` runs them as one process (a group of one);
//! `.ci/run` runs them under `mpirun -np 2`. A test that fails panics, and
//! the panic aborts the whole job (deriv's abort-on-panic hook), so `mpirun`
//! exits with an error naming it.

#![allow(dead_code)]

use deriv::distributed;

/// Runs `tests` (filtered by the first command-line argument that is not a
/// flag, as libtest does) on every rank, in order.
pub fn run(tests: &[(&str, fn())]) {
    distributed::init().expect("distributed::init");
    let (rank, world) = (distributed::rank(), distributed::world_size());
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filter.as_ref().is_none_or(|f| name.contains(f.as_str())))
        .collect();
    if rank == 0 {
        println!("\nrunning {} tests on {world} ranks", selected.len());
    }
    for (name, test) in &selected {
        test();
        distributed::barrier().expect("barrier");
        if rank == 0 {
            println!("test {name} ... ok");
        }
    }
    if rank == 0 {
        println!(
            "\ntest result: ok. {} passed; 0 failed; {} filtered out\n",
            selected.len(),
            tests.len() - selected.len()
        );
    }
}

/// The largest absolute difference between two equally long vectors.
pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Runs `f`, which must panic, with the panic hooks silenced (and so
/// without aborting the job); returns the panic's message.
pub fn expect_panic<R>(f: impl FnOnce() -> R) -> String {
    let saved = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(saved);
    let payload = match r {
        Ok(_) => panic!("expected a panic"),
        Err(p) => p,
    };
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}
