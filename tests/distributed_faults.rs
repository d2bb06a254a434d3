//! A rank that fails ends the job with an error instead of leaving the
//! others waiting: killed (SIGKILL), panicking, exiting early, or hanging
//! (the collective timeout). Each case starts `mpirun -np 2` on this test
//! binary in a child mode and checks, under a time limit, that mpirun exits
//! with an error and says why.
//!
//! Not run under mpirun itself: `cargo test --features mpi --test
//! distributed_faults` (it needs `mpirun` on PATH).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deriv::distributed::{self, InitOptions, ReduceOp};
use deriv::Tensor;

/// How long a case may take before the test calls it a hang.
const LIMIT: Duration = Duration::from_secs(60);

fn main() {
    if let Ok(mode) = std::env::var("DERIV_FAULT_MODE") {
        child(&mode);
        return;
    }
    let cases: &[Case] = &[
        ("a_killed_rank_ends_the_job", "kill", |o| {
            // mpirun passes the signal on in its status (128 + 9) and says so.
            assert!(
                o.code == Some(137) || o.text.contains("signal 9"),
                "{:?}\n{}",
                o.code,
                o.text
            );
        }),
        ("a_panicking_rank_aborts_the_job", "panic", |o| {
            assert!(
                o.text.contains("deliberate failure on rank 1"),
                "{}",
                o.text
            );
            assert!(
                o.text
                    .contains("[rank 1] deriv.distributed: this rank panicked"),
                "{}",
                o.text
            );
            // (Open MPI's own "MPI_ABORT was invoked on rank 1" report is
            // usually there too, but its help-text relay is not reliable.)
        }),
        ("a_rank_that_exits_early_ends_the_job", "exit", |o| {
            // As when main returns an error: the leaving rank aborts the job
            // at once (not after rank 0's 3 s collective timeout).
            assert!(
                o.text
                    .contains("[rank 1] deriv.distributed: this rank is exiting with status 3"),
                "{}",
                o.text
            );
            assert!(o.elapsed < Duration::from_secs(3), "{:?}", o.elapsed);
        }),
        ("a_hung_rank_times_out", "hang", |o| {
            assert!(
                o.text
                    .contains("[rank 0] deriv.distributed: all_reduce has waited"),
                "{}",
                o.text
            );
            assert!(
                o.text.contains("a rank has crashed, hung or skipped it"),
                "{}",
                o.text
            );
        }),
    ];
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut ran = 0;
    for (name, mode, check) in cases {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let outcome = run_job(mode);
        assert!(
            !outcome.success,
            "{name}: mpirun succeeded\n{}",
            outcome.text
        );
        assert!(
            outcome.elapsed < LIMIT,
            "{name}: took {:?}\n{}",
            outcome.elapsed,
            outcome.text
        );
        // The surviving rank never got past the collective.
        assert!(
            !outcome.text.contains("rank 0 finished"),
            "{name}\n{}",
            outcome.text
        );
        check(&outcome);
        println!(
            "test {name} ... ok ({:.1} s)",
            outcome.elapsed.as_secs_f64()
        );
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed; 0 failed\n");
}

/// A test's name, the failure rank 1 acts out, and the check of the output.
type Case = (&'static str, &'static str, fn(&Outcome));

struct Outcome {
    success: bool,
    code: Option<i32>,
    text: String,
    elapsed: Duration,
}

/// Runs this binary on 2 ranks in child mode `mode`; kills mpirun past `LIMIT`.
fn run_job(mode: &str) -> Outcome {
    let exe = std::env::current_exe().expect("the test binary's path");
    let start = Instant::now();
    let mut child = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(&exe)
        .env("DERIV_FAULT_MODE", mode)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("could not start mpirun: install Open MPI (apt-get install openmpi-bin)");
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for mpirun") {
            break Some(s);
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let mut text = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut text);
    let _ = child.stderr.take().unwrap().read_to_string(&mut text);
    Outcome {
        success: status.is_some_and(|s| s.success()),
        code: status.and_then(|s| s.code()),
        text,
        elapsed,
    }
}

/// One rank of a job: rank 1 fails as `mode` says while rank 0 waits for
/// it in an all-reduce.
fn child(mode: &str) {
    // A short collective timeout where only the timeout can end the job.
    let timeout = if mode == "hang" || mode == "exit" {
        3
    } else {
        600
    };
    distributed::init_with(InitOptions::new().timeout(Duration::from_secs(timeout))).unwrap();
    let rank = distributed::rank();
    if rank == 1 {
        match mode {
            "kill" => {
                let pid = std::process::id().to_string();
                let _ = Command::new("kill").args(["-9", &pid]).status();
                std::thread::sleep(Duration::from_secs(600));
            }
            "panic" => panic!("deliberate failure on rank 1"),
            // Leaves as main returning an error would (exit status 3).
            "exit" => std::process::exit(3),
            "hang" => std::thread::sleep(Duration::from_secs(600)),
            other => panic!("unknown mode {other}"),
        }
    }
    let t = Tensor::ones([1000]);
    distributed::all_reduce(&t, ReduceOp::Sum).unwrap();
    println!("rank {rank} finished");
}
