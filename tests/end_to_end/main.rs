//! The two slow end-to-end suites, in one test binary so that they share
//! the cores: the examples' training runs (each mostly on one thread) and
//! trybuild's second check of the crate (a cargo process of its own, most
//! of a clean `cargo test`'s running time) go side by side instead of one
//! binary after the other.
//!
//! Its own harness (`harness = false` in Cargo.toml), because libtest runs
//! as many tests at once as there are cores: on 2 cores the trybuild case
//! held one test thread while waiting on its cargo process, and the
//! examples queued one by one on the other (147 s). Here the trybuild case
//! waits on a thread of its own and the examples, longest first, share one
//! worker per core. Arguments as libtest's: name filters (substrings, or
//! whole names with `--exact`), `--skip NAME`, `--list`, `--test-threads N`;
//! `--ignored` runs nothing (no case here is ignored); other flags are
//! accepted and ignored.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

mod compile_errors;
mod examples;

/// One test: its name and its body (which panics on failure).
struct Case {
    name: &'static str,
    run: fn(),
}

macro_rules! cases {
    ($($module:ident :: $test:ident),* $(,)?) => {
        [$(Case {
            name: concat!(stringify!($module), "::", stringify!($test)),
            run: $module::$test,
        }),*]
    };
}

/// The examples, longest first so that the short ones fill in beside them.
const EXAMPLES: [Case; 11] = cases![
    examples::lstm_classifies_the_digits_as_row_sequences,
    examples::transformer_learns_to_sort,
    examples::cnn_classifies_the_digits_as_images,
    examples::trainer_fits_an_mlp_to_the_digits,
    examples::class_network_learns_the_spirals_and_its_two_backward_paths_agree,
    examples::sequential_network_learns_the_circle,
    examples::linear_sgd_and_a_data_loader_classify_breast_tumours,
    examples::perceptron_by_hand_classifies_breast_tumours,
    examples::linear_regression_recovers_the_true_parameters,
    examples::gradient_descent_reaches_the_minimum,
    examples::vector_jacobian_products_match_the_analytic_jacobian,
];

/// Cases whose work is a child process: each waits on a thread of its own.
const OWN_THREAD: [Case; 1] = cases![compile_errors::ui];

/// What the command line selects.
struct Selection {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    ignored_only: bool,
    list: bool,
    threads: Option<usize>,
}

impl Selection {
    fn from_args() -> Self {
        let mut sel = Selection {
            filters: Vec::new(),
            skips: Vec::new(),
            exact: false,
            ignored_only: false,
            list: false,
            threads: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--list" => sel.list = true,
                "--exact" => sel.exact = true,
                "--ignored" => sel.ignored_only = true,
                "--skip" => sel.skips.extend(args.next()),
                "--test-threads" => sel.threads = args.next().and_then(|n| n.parse().ok()),
                // Flags that take a value in the next argument.
                "--format" | "--color" | "--logfile" | "-Z" => {
                    args.next();
                }
                _ => {
                    if let Some(n) = arg.strip_prefix("--test-threads=") {
                        sel.threads = n.parse().ok();
                    } else if let Some(name) = arg.strip_prefix("--skip=") {
                        sel.skips.push(name.to_owned());
                    } else if !arg.starts_with('-') {
                        sel.filters.push(arg);
                    }
                }
            }
        }
        sel
    }

    fn selects(&self, name: &str) -> bool {
        let hit = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        !self.ignored_only
            && (self.filters.is_empty() || self.filters.iter().any(hit))
            && !self.skips.iter().any(|s| name.contains(s.as_str()))
    }
}

/// Runs `case`, prints its outcome and records a failure.
fn run(case: &Case, failed: &Mutex<Vec<&'static str>>) {
    let ok = catch_unwind(AssertUnwindSafe(case.run)).is_ok();
    println!(
        "test {} ... {}",
        case.name,
        if ok { "ok" } else { "FAILED" }
    );
    if !ok {
        failed.lock().unwrap().push(case.name);
    }
}

fn main() {
    let sel = Selection::from_args();
    let own: Vec<&Case> = OWN_THREAD.iter().filter(|c| sel.selects(c.name)).collect();
    let pooled: Vec<&Case> = EXAMPLES.iter().filter(|c| sel.selects(c.name)).collect();
    if sel.list {
        for case in own.iter().chain(&pooled) {
            println!("{}: test", case.name);
        }
        return;
    }
    let total = own.len() + pooled.len();
    println!("\nrunning {total} tests");
    let workers = sel
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, pooled.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for case in &own {
            s.spawn(|| run(case, &failed));
        }
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(case) = pooled.get(next.fetch_add(1, Ordering::Relaxed)) {
                    run(case, &failed);
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        total - failed.len(),
        failed.len(),
        start.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}
