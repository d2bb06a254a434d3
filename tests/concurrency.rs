//! Threads sharing tensors, models and files: ops that lock two storages in
//! opposite orders on different threads finish (no deadlock), and saves to
//! one path from several threads each leave one whole file.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use deriv::io::{self, StateDict};
use deriv::nn::{Linear, Module};
use deriv::optim::{Optimizer, SGD};
use deriv::prelude::*;

/// Runs `f` on its own thread and fails when it has not finished within
/// `limit`: threads that deadlocked never finish (they are left blocked;
/// the test process ends them when it exits).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => panic!("{what}: not finished after {limit:?}: the threads deadlocked"),
    }
}

/// A job run over and over on its own thread.
type Job = Box<dyn FnMut() + Send>;

/// Runs each job on its own thread, `rounds` times, all starting together.
fn run_together(rounds: usize, jobs: Vec<Job>) {
    let start = Arc::new(Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|mut job| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..rounds {
                    job();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a worker panicked");
    }
}

// Enough that, without one lock order, each test deadlocks in practically every
// run (checked: 3 of 3); with it, the file takes seconds in a debug build.
const ROUNDS: usize = 40_000;
const LIMIT: Duration = Duration::from_secs(60);

/// `a.mul_(&b)` beside `b.mul_(&a)`, `c.add_(&d)` beside `d.sub_(&c)`,
/// `a.copy_(&b)` beside `b.copy_(&a)`, and reads of both (`a + b`, `cat`,
/// matmul, `where`) beside the writes: every pair locks the two storages in
/// opposite orders. With ones multiplied by ones and zeros added to zeros,
/// every op leaves the values as they were, so the results are known
/// whatever the interleaving.
#[test]
fn opposite_order_in_place_ops_finish() {
    within(LIMIT, "in-place ops in opposite orders", || {
        let (a, b) = (Tensor::ones([64]), Tensor::ones([64]));
        let (c, d) = (Tensor::zeros([64]), Tensor::zeros([64]));
        let ab = || (a.clone(), b.clone());
        let cd = || (c.clone(), d.clone());
        let ((a1, b1), (a2, b2), (a3, b3), (a4, b4)) = (ab(), ab(), ab(), ab());
        let ((a5, b5), (a6, b6), (c1, d1), (c2, d2)) = (ab(), ab(), cd(), cd());
        run_together(
            ROUNDS,
            vec![
                Box::new(move || {
                    a1.mul_(&b1);
                    a1.div_(&b1);
                }),
                Box::new(move || {
                    b2.mul_(&a2);
                }),
                Box::new(move || {
                    a3.copy_(&b3);
                }),
                Box::new(move || {
                    b4.copy_(&a4);
                }),
                Box::new(move || {
                    c1.add_(&d1);
                }),
                Box::new(move || {
                    d2.sub_(&c2);
                    d2.add_scaled_(&c2, 2.0);
                }),
                // Readers of both, beside the writers above (a queued writer
                // blocks new readers of std's RwLock).
                Box::new(move || {
                    assert_eq!((&a5 + &b5).sum().item(), 128.0);
                    assert_eq!(
                        Tensor::cat(&[b5.clone(), a5.clone()], 0).sum().item(),
                        128.0
                    );
                }),
                Box::new(move || {
                    assert_eq!(a6.matmul(&b6).item(), 64.0);
                    let w = Tensor::where_cond(&a6.gt_scalar(0.0), &b6, &a6);
                    assert_eq!(w.sum().item(), 64.0);
                }),
            ],
        );
        assert_eq!(a.to_vec::<f32>(), vec![1.0; 64]);
        assert_eq!(b.to_vec::<f32>(), vec![1.0; 64]);
        assert_eq!(c.to_vec::<f32>(), vec![0.0; 64]);
        assert_eq!(d.to_vec::<f32>(), vec![0.0; 64]);
    });
}

/// Two models loading each other's state dicts (handles that share the
/// parameters' storage, so each copy locks the other model's parameter), as
/// when syncing a target network on another thread; two threads each way.
#[test]
fn models_loading_each_others_state_dicts_finish() {
    within(LIMIT, "load_state_dict both ways", || {
        let m1 = Linear::new(8, 4, &Device::Cpu);
        let mut m2 = Linear::new(8, 4, &Device::Cpu);
        m2.load_state_dict(&m1.state_dict()).unwrap();
        let want = m1.weight.to_vec::<f32>();
        // A model per thread, viewing the parameters of m1 or m2.
        let view = |m: &Linear| {
            let mut v = Linear::new(8, 4, &Device::Cpu);
            v.weight = m.weight.clone();
            v.bias = m.bias.clone();
            v
        };
        let load = |mut m: Linear, sd: StateDict| -> Job {
            Box::new(move || m.load_state_dict(&sd).unwrap())
        };
        run_together(
            ROUNDS,
            vec![
                load(view(&m1), m2.state_dict()),
                load(view(&m1), m2.state_dict()),
                load(view(&m2), m1.state_dict()),
                load(view(&m2), m1.state_dict()),
            ],
        );
        // Equal weights copied back and forth stay those weights.
        assert_eq!(m1.weight.to_vec::<f32>(), want);
        assert_eq!(m2.weight.to_vec::<f32>(), want);
    });
}

/// Optimizer steps (each reads the gradient and writes the parameter)
/// beside threads writing the gradient from the parameter (the other way
/// round), and a backward pass adding a seed into `.grad()` beside a copy
/// from `.grad()` into the seed.
#[test]
fn optimizer_steps_and_backward_beside_opposite_copies_finish() {
    within(LIMIT, "optimizer step and backward beside copies", || {
        let w = Tensor::ones([32]).requires_grad_(true);
        (&w * 0.0).sum().backward();
        let g = w.grad().unwrap();
        let seed = Tensor::zeros([32]);
        let stepper = |w: &Tensor| {
            // lr 0: each step reads and writes but changes nothing.
            let mut opt = SGD::new(vec![w.clone()], 0.0);
            Box::new(move || opt.step()) as Job
        };
        let writer = |w: &Tensor, g: &Tensor| {
            let (w, g) = (w.clone(), g.clone());
            // g *= w (ones): reads w, writes g; the gradient stays 0.
            Box::new(move || {
                no_grad(|| g.mul_(&w));
            }) as Job
        };
        let (w3, seed3, seed4, g4) = (w.clone(), seed.clone(), seed.clone(), g.clone());
        run_together(
            ROUNDS,
            vec![
                stepper(&w),
                stepper(&w),
                writer(&w, &g),
                writer(&w, &g),
                // A leaf's backward adds the seed into w.grad (reads seed, writes g) ...
                Box::new(move || w3.backward_with(&seed3)),
                // ... while the seed is written from the gradient (reads g, writes seed).
                Box::new(move || {
                    seed4.copy_(&g4);
                }),
            ],
        );
        assert_eq!(w.to_vec::<f32>(), vec![1.0; 32]);
        assert_eq!(g.to_vec::<f32>(), vec![0.0; 32]);
        assert_eq!(seed.to_vec::<f32>(), vec![0.0; 32]);
    });
}

/// A fresh folder under the system temp dir for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deriv-conc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The temporary files of `target` left in its folder.
fn temps(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Eight threads saving different contents to one path, 50 times each:
/// every save succeeds, the file is always one whole state dict (one
/// thread's, never a mix), and no temporary file is left behind.
#[test]
fn concurrent_saves_to_one_path_each_leave_a_whole_file() {
    let dir = scratch("saves");
    let path = dir.join("model.safetensors");
    within(LIMIT, "concurrent saves", {
        let path = path.clone();
        move || {
            let threads: Vec<_> = (0..8)
                .map(|k| {
                    let path = path.clone();
                    std::thread::spawn(move || {
                        let mut sd = StateDict::new();
                        sd.insert("w", Tensor::full([1000], k as f64));
                        sd.insert("k", Tensor::scalar(k as i64));
                        for _ in 0..50 {
                            io::save_file(&sd, &path).unwrap();
                            // A reader sees a whole file from one writer.
                            let back = io::load_file(&path).unwrap();
                            let owner = back["k"].item();
                            assert_eq!(back["w"].to_vec::<f32>(), vec![owner as f32; 1000]);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
    });
    assert_eq!(temps(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A write killed mid-way leaves its temporary file; the next successful
/// save of the same target removes it, and leaves alone those of a writer
/// still running and of other targets.
#[test]
fn stale_temporary_files_are_removed_by_the_next_save() {
    let dir = scratch("stale");
    let path = dir.join("ckpt.safetensors");
    // A process that has exited: its pid names no running process.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = [
        format!(".ckpt.safetensors.tmp-{dead}-0"),
        // The older naming (process id only).
        format!(".ckpt.safetensors.tmp-{dead}"),
    ];
    #[cfg(unix)]
    let running = format!(
        ".ckpt.safetensors.tmp-{}-7",
        std::os::unix::process::parent_id()
    );
    #[cfg(not(unix))]
    let running = String::from(".ckpt.safetensors.tmp-x");
    let other_target = format!(".other.safetensors.tmp-{dead}-0");
    for name in stale.iter().chain([&running, &other_target]) {
        std::fs::write(dir.join(name), b"half a file").unwrap();
    }
    let mut sd = StateDict::new();
    sd.insert("w", tensor![1., 2.]);
    io::save_file(&sd, &path).unwrap();
    let mut left = temps(&dir);
    left.sort();
    let mut want = vec![running, other_target];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(
        io::load_file(&path).unwrap()["w"].to_vec::<f32>(),
        vec![1., 2.]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `Send` model and optimizer on another thread: trained there, the result
/// equals the same training here (nothing in them depends on the thread).
#[test]
fn a_model_trained_on_another_thread_matches_this_one() {
    fn train() -> Vec<f32> {
        // No global generator: other tests of this file run beside this one.
        let mut m = Linear::new(3, 2, &Device::Cpu);
        let mut init = StateDict::new();
        init.insert(
            "weight",
            Tensor::arange(-3.0, 3.0, 1.0).reshape([2, 3]) * 0.1,
        );
        init.insert("bias", tensor![0.5, -0.5]);
        m.load_state_dict(&init).unwrap();
        let mut opt = SGD::new(m.parameters(), 0.1);
        let x = Tensor::arange(0.0, 24.0, 1.0).reshape([8, 3]) * 0.1 - 1.0;
        for _ in 0..20 {
            opt.zero_grad();
            m.forward(&x).square().mean().backward();
            opt.step();
        }
        m.weight.to_vec::<f32>()
    }
    let here = train();
    let there = std::thread::spawn(train).join().unwrap();
    assert_eq!(here, there);
}

/// The buffer-reusing step (`TrainStep`) adds the weight's gradient straight
/// into `.grad()`, reading the saved input, while other threads copy that
/// gradient into the input (reads `.grad()`, writes the input): the two lock
/// the same storages in opposite roles. Four layers, inputs allocated
/// before and after the gradient, so both address orders occur. With a zero input the weight gradient stays zero, so the values
/// are known whatever the interleaving.
#[test]
fn buffer_reusing_backward_beside_opposite_copies_finishes() {
    use deriv::nn::TrainStep;
    within(LIMIT, "TrainStep backward beside copies", || {
        let mut jobs: Vec<Job> = Vec::new();
        let mut checks = Vec::new();
        for i in 0..4 {
            let fc = Linear::new(8, 4, &Device::Cpu);
            let g = Tensor::ones([4, 4]);
            let mut ws = fc.workspace();
            // The input allocated before the gradient, or after it.
            let early = Tensor::zeros([4, 8]);
            fc.forward_train_ws(&early, &mut ws);
            fc.backward_ws(&mut ws, &g, false);
            let grad = fc.weight.grad().expect("the first step made it");
            let x = if i % 2 == 0 {
                early
            } else {
                Tensor::zeros([4, 8])
            };
            let (x2, grad2) = (x.clone(), grad.clone());
            jobs.push(Box::new(move || {
                fc.forward_train_ws(&x, &mut ws);
                fc.backward_ws(&mut ws, &g, false);
            }));
            jobs.push(Box::new(move || {
                x2.copy_(&grad2);
            }));
            checks.push(grad);
        }
        run_together(ROUNDS / 4, jobs);
        for grad in checks {
            assert_eq!(grad.to_vec::<f32>(), vec![0.0; 32]);
        }
    });
}
