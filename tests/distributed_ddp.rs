//! DistributedDataParallel and the Trainer's DDP strategy: N ranks with
//! batch B train exactly as one process with batch N·B on the same data
//! order (SGD and Adam; tape, compile-time and TrainStep paths), gradient
//! accumulation with no_sync, unused parameters, the model check at
//! construction, and rank-0-only checkpoints that every rank resumes from.
//! Run under `mpirun -np 2` by `.ci/run`.

#[path = "common/mpi.rs"]
mod mpi_harness;

#[path = "../examples/ddp.rs"]
mod ddp_example;

use deriv::data::{DataLoader, TensorDataset};
use deriv::distributed::{self, DdpOptions, DistributedDataParallel, ReduceOp};
use deriv::nn::{
    BatchNorm1d, CrossEntropyLoss, Differentiable, Forward, Linear, Loss, Module, ReLU, Tanh,
    TrainStep,
};
use deriv::optim::{Adam, Optimizer, SGD};
use deriv::prelude::*;
use deriv::train::{Classifier, Strategy, Trainer};

deriv::network! {
    /// Three layers, so that small buckets split them.
    pub struct Net = Linear(8, 16) -> ReLU -> Linear(16, 16) -> Tanh -> Linear(16, 3);
}

fn main() {
    mpi_harness::run(&[
        ("sgd_on_the_tape_matches_one_process", || {
            equivalence(Path::Tape, Opt::Sgd)
        }),
        ("sgd_compile_time_matches_one_process", || {
            equivalence(Path::Compiled, Opt::Sgd)
        }),
        ("sgd_train_step_matches_one_process", || {
            equivalence(Path::Workspace, Opt::Sgd)
        }),
        ("adam_on_the_tape_matches_one_process", || {
            equivalence(Path::Tape, Opt::Adam)
        }),
        ("adam_compile_time_matches_one_process", || {
            equivalence(Path::Compiled, Opt::Adam)
        }),
        ("adam_train_step_matches_one_process", || {
            equivalence(Path::Workspace, Opt::Adam)
        }),
        (
            "f32_training_matches_one_process",
            f32_training_matches_one_process,
        ),
        (
            "buckets_follow_reverse_parameter_order",
            buckets_follow_reverse_parameter_order,
        ),
        (
            "no_sync_accumulates_then_averages_the_sums",
            no_sync_accumulates_then_averages_the_sums,
        ),
        (
            "unused_parameters_get_the_same_gradient_everywhere",
            unused_parameters_get_the_same_gradient_everywhere,
        ),
        (
            "different_models_are_refused_on_every_rank",
            different_models_are_refused_on_every_rank,
        ),
        (
            "replaced_parameters_are_refused",
            replaced_parameters_are_refused,
        ),
        (
            "trainer_ddp_matches_one_process",
            trainer_ddp_matches_one_process,
        ),
        (
            "trainer_checkpoints_on_rank_0_and_resumes_everywhere",
            trainer_checkpoints_on_rank_0_and_resumes_everywhere,
        ),
        (
            "trainer_stops_every_rank_when_one_cannot_resume",
            trainer_stops_every_rank_when_one_cannot_resume,
        ),
        (
            "the_ddp_example_learns_the_digits",
            the_ddp_example_learns_the_digits,
        ),
        ("buffers_follow_rank_0", buffers_follow_rank_0),
    ]);
}

deriv::network! {
    /// BatchNorm between two layers: running statistics the replicas share.
    pub struct Normed = Linear(8, 6) -> BatchNorm1d(6) -> ReLU -> Linear(6, 3);
}

/// How far apart the ranks' copies of `t` are (0 when all equal).
fn spread(t: &Tensor) -> f64 {
    let (hi, lo) = (t.to_dtype(DType::F64), t.to_dtype(DType::F64));
    distributed::all_reduce(&hi, ReduceOp::Max).unwrap();
    distributed::all_reduce(&lo, ReduceOp::Min).unwrap();
    mpi_harness::max_diff(&hi.to_vec::<f64>(), &lo.to_vec::<f64>())
}

/// Buffers start from rank 0's and are copied from it before each forward
/// (PyTorch's broadcast_buffers), though every rank's own batch moves them.
fn buffers_follow_rank_0() {
    let model = Normed::default();
    no_grad(|| model.1.running_mean.as_ref().unwrap().fill_(rank() as f64));
    let mut ddp = DistributedDataParallel::new(model).unwrap();
    let mean = || ddp.module().1.running_mean.as_ref().unwrap().clone();
    assert_eq!(
        mean().to_vec::<f32>(),
        vec![0.0; 6],
        "rank 0's at construction"
    );
    // Each rank's own rows move its statistics away from the others'.
    let x = Tensor::randn_with([4, 8], &mut Generator::new(rank() as u64 + 1));
    ddp.forward(&x);
    if world() > 1 {
        assert!(
            spread(&mean()) > 1e-6,
            "each rank's batch moved its own statistics"
        );
    }
    // The next forward starts from rank 0's (in eval mode nothing moves them).
    ddp.eval();
    ddp.forward(&x);
    for (name, b) in ddp.named_buffers() {
        assert_eq!(spread(&b), 0.0, "{name} differs between ranks");
    }
}

fn world() -> usize {
    distributed::world_size()
}

fn rank() -> usize {
    distributed::rank()
}

const STEPS: usize = 20;
const PER_RANK: usize = 16;

/// Step `s`'s global batch (`PER_RANK · world` samples), the same on every rank.
fn global_batch(s: usize, dtype: DType) -> (Tensor, Tensor) {
    let n = PER_RANK * world();
    let mut g = Generator::new(1000 + s as u64);
    let x = Tensor::randn_with([n, 8], &mut g).to_dtype(dtype);
    let y = Tensor::from_vec((0..n).map(|_| g.int_range(0, 3)).collect::<Vec<i64>>(), [n]);
    (x, y)
}

/// This rank's rows of a global batch.
fn my_rows(x: &Tensor) -> Tensor {
    x.narrow(0, rank() * PER_RANK, PER_RANK)
}

/// A model initialised from `seed` in `dtype`.
fn net(seed: u64, dtype: DType) -> Net {
    manual_seed(seed);
    let mut n = Net::default();
    n.to_dtype(dtype);
    n
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Tape,
    Compiled,
    Workspace,
}

#[derive(Clone, Copy, Debug)]
enum Opt {
    Sgd,
    Adam,
}

fn optimizer(opt: Opt, params: Vec<Tensor>) -> Box<dyn Optimizer> {
    match opt {
        Opt::Sgd => Box::new(SGD::new(params, 0.1).momentum(0.9)),
        Opt::Adam => Box::new(Adam::new(params, 0.01)),
    }
}

fn values(m: &impl Module) -> Vec<f64> {
    m.parameters()
        .iter()
        .flat_map(|p| p.to_vec::<f64>())
        .collect()
}

/// The reference: one process, the whole global batch, on the tape.
fn reference(opt: Opt, dtype: DType) -> Vec<f64> {
    let model = net(0, dtype);
    let mut o = optimizer(opt, model.parameters());
    let loss = CrossEntropyLoss::new();
    for s in 0..STEPS {
        let (x, y) = global_batch(s, dtype);
        o.zero_grad();
        loss.forward(&model.forward(&x), &y).backward();
        o.step();
    }
    values(&model)
}

/// `world` ranks with batch 16 each, wrapped in DDP, on `path`.
fn data_parallel(path: Path, opt: Opt, dtype: DType, options: DdpOptions) -> Vec<f64> {
    // Every rank starts from different weights: DDP copies rank 0's (seed 0).
    let model = DistributedDataParallel::with_options(net(rank() as u64, dtype), options).unwrap();
    let mut o = optimizer(opt, model.parameters());
    let loss = CrossEntropyLoss::new();
    let mut ws = model.workspace();
    for s in 0..STEPS {
        let (x, y) = global_batch(s, dtype);
        let (x, y) = (my_rows(&x), my_rows(&y));
        o.zero_grad();
        match path {
            Path::Tape => loss.forward(&model.forward(&x), &y).backward(),
            Path::Compiled => {
                let (out, saved) = model.forward_train(&x);
                let (_, g) = loss.forward_backward(&out, &y);
                model.backward(saved, &g, false);
            }
            Path::Workspace => {
                let out = model.forward_train_ws(&x, &mut ws).clone_data();
                let (_, g) = loss.forward_backward(&out, &y);
                model.backward_ws(&mut ws, &g, false);
            }
        }
        o.step();
    }
    values(&model)
}

fn equivalence(path: Path, opt: Opt) {
    let want = reference(opt, DType::F64);
    // Small buckets (several per step) and the default (one bucket).
    for options in [
        DdpOptions::new()
            .bucket_cap_mb(0.001)
            .first_bucket_mb(0.0005),
        DdpOptions::new(),
    ] {
        let got = data_parallel(path, opt, DType::F64, options.clone());
        let d = mpi_harness::max_diff(&got, &want);
        assert!(
            d < 1e-6,
            "{path:?} {opt:?} {options:?}: max difference {d} after {STEPS} steps"
        );
        if rank() == 0 {
            let buckets = options.bucket_cap_bytes();
            println!("  {buckets}-byte buckets: max |difference| {d:.1e}");
        }
        // Not trivially equal: the replicas moved from where they started.
        let start = values(&net(0, DType::F64));
        assert!(mpi_harness::max_diff(&got, &start) > 1e-2);
    }
}

fn f32_training_matches_one_process() {
    for opt in [Opt::Sgd, Opt::Adam] {
        let want = reference(opt, DType::F32);
        let got = data_parallel(Path::Compiled, opt, DType::F32, DdpOptions::new());
        let d = mpi_harness::max_diff(&got, &want);
        // f32 sums taken in another order: rounding, not a different step.
        assert!(d < 1e-6, "{opt:?} f32: max difference {d}");
        if rank() == 0 {
            println!("  {opt:?}, f32: max |difference| {d:.1e}");
        }
    }
}

fn buckets_follow_reverse_parameter_order() {
    // Net's parameters, in f32: 0.weight 128, 0.bias 16, 2.weight 256,
    // 2.bias 16, 4.weight 48, 4.bias 3 elements. A 0.0005 MiB (524-byte)
    // first bucket and 0.001 MiB (1048-byte) buckets after it.
    let model = DistributedDataParallel::with_options(
        net(0, DType::F32),
        DdpOptions::new()
            .bucket_cap_mb(0.001)
            .first_bucket_mb(0.0005),
    )
    .unwrap();
    assert_eq!(
        model.bucket_names(),
        vec![
            vec!["4.bias", "4.weight", "2.bias", "2.weight"],
            vec!["0.bias", "0.weight"],
        ]
    );
    let one = DistributedDataParallel::new(net(0, DType::F32)).unwrap();
    assert_eq!(one.bucket_names().len(), 1);
    assert_eq!(one.named_parameters()[0].0, "module.0.weight");
}

fn no_sync_accumulates_then_averages_the_sums() {
    let model = DistributedDataParallel::with_options(
        net(0, DType::F64),
        DdpOptions::new().bucket_cap_mb(0.001),
    )
    .unwrap();
    let reference = net(0, DType::F64);
    let loss = CrossEntropyLoss::new();
    for s in 0..3 {
        let (x, y) = global_batch(s, DType::F64);
        loss.forward(&reference.forward(&x), &y).backward();
        let (x, y) = (my_rows(&x), my_rows(&y));
        let step = || loss.forward(&model.forward(&x), &y).backward();
        if s < 2 {
            model.no_sync(step);
            // Only local: this rank's own gradient, not yet averaged.
        } else {
            step();
        }
    }
    let got: Vec<f64> = model
        .parameters()
        .iter()
        .flat_map(|p| p.grad().unwrap().to_vec::<f64>())
        .collect();
    let want: Vec<f64> = reference
        .parameters()
        .iter()
        .flat_map(|p| p.grad().unwrap().to_vec::<f64>())
        .collect();
    let d = mpi_harness::max_diff(&got, &want);
    assert!(d < 1e-12, "accumulated gradients: max difference {d}");
}

/// Two layers, of which the forward uses only the first.
#[derive(deriv::nn::Module)]
struct HalfUsed {
    used: Linear,
    unused: Linear,
}

impl Forward for HalfUsed {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.used.forward(x)
    }
}

fn unused_parameters_get_the_same_gradient_everywhere() {
    manual_seed(3);
    let m = HalfUsed {
        used: Linear::new(4, 2, &Device::Cpu),
        unused: Linear::new(4, 2, &Device::Cpu),
    };
    // A gradient left in the unused layer from before, different per rank.
    m.unused
        .weight
        .set_grad(Some(Tensor::full([2, 4], rank() as f64)));
    let model = DistributedDataParallel::new(m).unwrap();
    let x = Tensor::full([3, 4], rank() as f64 + 1.0);
    model.forward(&x).sum().backward();
    // The used layer: the average of the ranks' gradients (3 rows of x).
    let mean_x = (1..=world()).sum::<usize>() as f32 / world() as f32;
    assert_eq!(
        model.module().used.weight.grad().unwrap().to_vec::<f32>(),
        vec![3.0 * mean_x; 8]
    );
    // The unused one: its old gradient averaged (0 + 1 + ..) / world, and
    // zeros where there was none: the same on every rank.
    let mean_rank = (0..world()).sum::<usize>() as f32 / world() as f32;
    assert_eq!(
        model.module().unused.weight.grad().unwrap().to_vec::<f32>(),
        vec![mean_rank; 8]
    );
    assert_eq!(
        model
            .module()
            .unused
            .bias
            .as_ref()
            .unwrap()
            .grad()
            .unwrap()
            .to_vec::<f32>(),
        vec![0.0; 2]
    );
    // The next iteration starts cleanly.
    model.forward(&x).sum().backward();
}

fn different_models_are_refused_on_every_rank() {
    // Rank 1 (if any) builds a wider first layer.
    let width = if rank() == 1 { 5 } else { 4 };
    let m = Linear::new(width, 2, &Device::Cpu);
    let result = DistributedDataParallel::new(m);
    if world() == 1 {
        assert!(result.is_ok());
        return;
    }
    let e = result.err().expect("a mismatch is refused").to_string();
    assert!(e.contains("the model differs across ranks"), "{e}");
    assert!(
        e.contains("weight f32 [2, 4]") && e.contains("weight f32 [2, 5]"),
        "{e}"
    );
    assert!(e.contains("rank 1"), "{e}");
    // A missing parameter is named too.
    let m = Linear::with_bias(4, 2, rank() == 0, &Device::Cpu);
    let e = DistributedDataParallel::new(m)
        .err()
        .expect("a mismatch is refused")
        .to_string();
    assert!(e.contains("bias"), "{e}");
}

fn replaced_parameters_are_refused() {
    let mut model = DistributedDataParallel::new(net(0, DType::F32)).unwrap();
    model.module_mut().to_dtype(DType::F64);
    let msg =
        mpi_harness::expect_panic(|| model.forward(&Tensor::zeros([1, 8]).to_dtype(DType::F64)));
    assert!(
        msg.contains("parameters were replaced after it was wrapped"),
        "{msg}"
    );
}

// ----- the Trainer

/// 120 labelled points (three blobs); a loader with `batch` per rank.
fn blobs_loader(batch: usize) -> DataLoader<TensorDataset<(Tensor, Tensor)>> {
    let mut g = Generator::new(5);
    let n = 120;
    let x: Vec<f64> = (0..n * 4)
        .map(|i| g.normal() + if i % 4 == (i / 4) % 3 { 2.0 } else { 0.0 })
        .collect();
    let y: Vec<i64> = (0..n).map(|i| (i % 3) as i64).collect();
    let ds = TensorDataset::new((Tensor::from_vec(x, [n, 4]), Tensor::from_vec(y, [n])));
    DataLoader::new(ds, batch).shuffle(true).seed(7)
}

deriv::network! {
    pub struct Small = Linear(4, 16) -> ReLU -> Linear(16, 3);
}

fn classifier(seed: u64) -> Classifier<Small> {
    manual_seed(seed);
    let mut m = Small::default();
    m.to_dtype(DType::F64);
    Classifier::new(m).optimizer(|p| SGD::new(p, 0.05).momentum(0.9))
}

fn trainer_ddp_matches_one_process() {
    // One process, batch 8·world, every sample.
    let mut single = classifier(0);
    let h1 = Trainer::new()
        .max_epochs(3)
        .quiet()
        .fit(
            &mut single,
            &blobs_loader(8 * world()),
            Some(&blobs_loader(30)),
        )
        .unwrap();
    // Every rank with batch 8 on its share; ranks other than 0 start from
    // other weights (the Trainer copies rank 0's).
    let mut ddp = classifier(if rank() == 0 { 0 } else { 10 + rank() as u64 });
    let mut trainer = Trainer::new().max_epochs(3).quiet().strategy(Strategy::Ddp);
    let h2 = trainer
        .fit(&mut ddp, &blobs_loader(8), Some(&blobs_loader(30)))
        .unwrap();
    // validate() shares the loader out and averages over all ranks' samples.
    let v1 = Trainer::new().validate(&mut single, &blobs_loader(8 * world()));
    let v2 = trainer.validate(&mut ddp, &blobs_loader(8));
    for ((n1, a), (n2, b)) in v1.iter().zip(&v2) {
        assert_eq!(n1, n2);
        assert!((a - b).abs() < 1e-9, "{n1}: {a} vs {b}");
    }
    let d = mpi_harness::max_diff(&values(&ddp), &values(&single));
    assert!(d < 1e-6, "parameters: max difference {d}");
    for name in ["train_loss", "train_acc", "val_loss", "val_acc"] {
        let d = mpi_harness::max_diff(&h1.get(name), &h2.get(name));
        assert!(d < 1e-9, "{name}: {:?} vs {:?}", h1.get(name), h2.get(name));
    }
}

/// A folder every rank agrees on (rank 0's process id in its name).
fn shared_dir(tag: &str) -> std::path::PathBuf {
    let id = Tensor::from_vec(vec![std::process::id() as i64], [1]);
    distributed::broadcast(&id, 0).unwrap();
    let dir = std::env::temp_dir().join(format!("deriv-ddp-{tag}-{}", id.to_vec::<i64>()[0]));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn trainer_checkpoints_on_rank_0_and_resumes_everywhere() {
    let dir = shared_dir("ckpt");
    // Each rank is given its own path: only rank 0's may be written.
    let mine = dir.join(format!("rank{}.safetensors", rank()));
    let rank0 = dir.join("rank0.safetensors");
    let fit = |epochs: usize, resume: bool| {
        let mut m = classifier(0);
        let mut t = Trainer::new()
            .max_epochs(epochs)
            .quiet()
            .strategy(Strategy::Ddp)
            .checkpoint(&mine);
        if resume {
            t = t.resume_from(&rank0);
        }
        let h = t.fit(&mut m, &blobs_loader(8), None).unwrap();
        (values(&m), h)
    };
    let (full, h_full) = fit(4, false);
    assert!(rank0.exists());
    for r in 1..world() {
        assert!(
            !dir.join(format!("rank{r}.safetensors")).exists(),
            "rank {r} wrote a checkpoint"
        );
    }
    distributed::barrier().unwrap();
    // Two epochs, then every rank resumes from rank 0's file for two more.
    fit(2, false);
    let (resumed, h_resumed) = fit(4, true);
    assert_eq!(resumed, full, "resumed parameters differ");
    assert_eq!(h_resumed.get("train_loss"), h_full.get("train_loss"));
    distributed::barrier().unwrap();
    if rank() == 0 {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn trainer_stops_every_rank_when_one_cannot_resume() {
    let dir = shared_dir("missing");
    let good = dir.join("good.safetensors");
    // Rank 0 writes a checkpoint; the last rank is pointed at a missing file.
    let mut m = classifier(0);
    Trainer::new()
        .max_epochs(1)
        .quiet()
        .strategy(Strategy::Ddp)
        .checkpoint(&good)
        .fit(&mut m, &blobs_loader(8), None)
        .unwrap();
    let last = world() - 1;
    let path = if rank() == last {
        dir.join("missing.safetensors")
    } else {
        good.clone()
    };
    let e = Trainer::new()
        .max_epochs(2)
        .quiet()
        .strategy(Strategy::Ddp)
        .resume_from(&path)
        .fit(&mut classifier(0), &blobs_loader(8), None)
        .expect_err("every rank fails")
        .to_string();
    if rank() == last {
        assert!(e.contains("missing.safetensors"), "{e}");
    } else {
        assert!(
            e.contains(&format!("resume_from failed on rank {last}")),
            "{e}"
        );
    }
    // The job goes on: the ranks still agree on collectives.
    let t = Tensor::ones([1]);
    distributed::all_reduce(&t, ReduceOp::Sum).unwrap();
    assert_eq!(t.item(), world() as f64);
    distributed::barrier().unwrap();
    if rank() == 0 {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn the_ddp_example_learns_the_digits() {
    let acc = ddp_example::train(15, false).unwrap();
    assert!(acc >= 0.95, "held-out accuracy {acc}");
    // Every rank holds the same model, so the same accuracy.
    let a = Tensor::scalar(acc);
    let all = distributed::all_gather(&a).unwrap().to_vec::<f64>();
    assert!(all.iter().all(|&x| x == acc), "{all:?}");
}
