//! The Trainer: both backward paths, resuming, early stopping, files.

use deriv::data::{DataLoader, TensorDataset};
use deriv::metrics;
use deriv::nn::{Linear, Module};
use deriv::optim::{Adam, Optimizer, SGD};
use deriv::prelude::*;
use deriv::train::{
    Classifier, EarlyStopping, History, Mode, Regressor, StepOutput, Trainer, TrainingModule,
};
use deriv::{io::Checkpoint, network};

network! {
    pub struct Mlp = Linear(4, 16) -> ReLU -> Linear(16, 3);
}
use deriv::nn::ReLU;

/// Three Gaussian blobs in 4-D, `n` points each, labels 0..3.
fn blobs(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut g = Generator::new(seed);
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for i in 0..3 * n {
        let c = (i % 3) as i64;
        for d in 0..4 {
            let center = if d as i64 == c { 3.0 } else { 0.0 };
            xs.push((center + g.normal()) as f32);
        }
        ys.push(c);
    }
    (
        Tensor::from_vec(xs, [3 * n, 4]),
        Tensor::from_vec(ys, [3 * n]),
    )
}

type Loader = DataLoader<TensorDataset<(Tensor, Tensor)>>;

fn loaders(dtype: DType) -> (Loader, Loader) {
    let (x, y) = blobs(40, 1);
    let (vx, vy) = blobs(20, 2);
    let train = DataLoader::new(TensorDataset::new((x.to_dtype(dtype), y)), 16)
        .shuffle(true)
        .seed(7);
    let val = DataLoader::new(TensorDataset::new((vx.to_dtype(dtype), vy)), 32);
    (train, val)
}

/// A copy of `m`'s parameters (not sharing storage with it).
fn snapshot(m: &impl Module) -> deriv::io::StateDict {
    let mut sd = deriv::io::StateDict::new();
    for (n, t) in m.state_dict() {
        sd.insert(n, t.clone_data());
    }
    sd
}

fn params(m: &impl Module) -> Vec<Vec<f64>> {
    m.parameters().iter().map(|p| p.to_vec::<f64>()).collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn compiled_and_tape_training_reach_the_same_parameters() {
    let (train, val) = loaders(DType::F64);
    // The same initial weights for both runs, whatever other tests do with
    // the (process-wide) global generator meanwhile.
    let init = snapshot(&Mlp::default());
    let run = |compiled: bool| {
        let mut net = Mlp::default();
        net.load_state_dict(&init).unwrap();
        net.to_dtype(DType::F64);
        let mut clf = Classifier::new(net).optimizer(|p| SGD::new(p, 0.1).momentum(0.9));
        let h = Trainer::new()
            .max_epochs(3)
            .quiet()
            .compiled(compiled)
            .fit(&mut clf, &train, Some(&val))
            .unwrap();
        (params(&clf), h)
    };
    let (pc, hc) = run(true);
    let (pt, ht) = run(false);
    assert!(
        max_diff(&pc, &pt) < 1e-10,
        "paths differ by {}",
        max_diff(&pc, &pt)
    );
    for name in ["train_loss", "train_acc", "val_loss", "val_acc"] {
        let (a, b) = (hc.get(name), ht.get(name));
        assert_eq!(a.len(), 3, "{name}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-10, "{name}: {a:?} vs {b:?}");
        }
    }
    // It learnt: the blobs are well separated.
    assert!(hc.last("val_acc").unwrap() > 0.9, "{hc:?}");
    assert!(hc.get("train_loss")[2] < hc.get("train_loss")[0]);
}

#[test]
fn resuming_from_a_checkpoint_continues_to_the_same_result() {
    let dir = std::env::temp_dir().join(format!("deriv-trainer-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (train, val) = loaders(DType::F32);

    let init = snapshot(&Mlp::default());
    let make = || {
        let mut net = Mlp::default();
        net.load_state_dict(&init).unwrap();
        Classifier::new(net).optimizer(|p| Adam::new(p, 1e-2))
    };
    let mut straight = make();
    let full = Trainer::new()
        .max_epochs(4)
        .quiet()
        .fit(&mut straight, &train, Some(&val))
        .unwrap();

    let mut first = make();
    let ckpt = dir.join("run.safetensors");
    Trainer::new()
        .max_epochs(2)
        .quiet()
        .checkpoint(&ckpt)
        .fit(&mut first, &train, Some(&val))
        .unwrap();
    assert_eq!(Checkpoint::load(&ckpt).unwrap().epoch, 2);

    // A fresh process would start from other weights: the checkpoint restores them.
    let mut resumed = Classifier::new(Mlp::default()).optimizer(|p| Adam::new(p, 1e-2));
    let history = Trainer::new()
        .max_epochs(4)
        .quiet()
        .resume_from(&ckpt)
        .fit(&mut resumed, &train, Some(&val))
        .unwrap();
    assert_eq!(params(&resumed), params(&straight));
    assert_eq!(history, full);

    // A corrupt checkpoint is an error naming the file, not a panic.
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() - 10]).unwrap();
    let e = Trainer::new()
        .max_epochs(4)
        .quiet()
        .resume_from(&ckpt)
        .fit(&mut make(), &train, Some(&val))
        .unwrap_err();
    assert!(e.to_string().contains("run.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn early_stopping_stops_when_the_metric_stops_improving() {
    let (train, val) = loaders(DType::F32);
    manual_seed(0);
    // lr 0: nothing changes, so val_loss never improves after the first epoch.
    let mut clf = Classifier::new(Mlp::default()).optimizer(|p| SGD::new(p, 0.0));
    let h = Trainer::new()
        .max_epochs(20)
        .quiet()
        .early_stopping(EarlyStopping::new("val_loss").patience(2))
        .fit(&mut clf, &train, Some(&val))
        .unwrap();
    assert_eq!(
        h.len(),
        3,
        "best at epoch 1, then 2 epochs without improvement"
    );

    // Monitoring a rising metric in Max mode keeps going while it improves.
    manual_seed(0);
    let mut clf = Classifier::new(Mlp::default()).optimizer(|p| SGD::new(p, 0.05));
    let h = Trainer::new()
        .max_epochs(4)
        .quiet()
        .early_stopping(EarlyStopping::new("train_acc").mode(Mode::Max).patience(10))
        .fit(&mut clf, &train, Some(&val))
        .unwrap();
    assert_eq!(h.len(), 4);

    // A metric no step reports is an error naming the ones available.
    let e = Trainer::new()
        .max_epochs(2)
        .quiet()
        .early_stopping(EarlyStopping::new("val_f1"))
        .fit(&mut clf, &train, Some(&val))
        .unwrap_err();
    assert!(
        e.to_string().contains("val_f1") && e.to_string().contains("val_acc"),
        "{e}"
    );
}

#[test]
fn training_curves_are_written_as_svg() {
    let path = std::env::temp_dir().join(format!("deriv-curves-{}.svg", std::process::id()));
    let (train, val) = loaders(DType::F32);
    manual_seed(0);
    let mut clf = Classifier::new(Mlp::default());
    let h = Trainer::new()
        .max_epochs(3)
        .quiet()
        .plot(&path)
        .fit(&mut clf, &train, Some(&val))
        .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"));
    assert_eq!(
        svg.matches("<polyline").count(),
        h.names().len() - 1,
        "every series but lr"
    );
    for name in ["train_loss", "val_loss", "train_acc", "val_acc"] {
        assert!(svg.contains(name), "{name}");
    }
    std::fs::remove_file(&path).unwrap();
}

/// Linear regression on the tape, written as a user would.
struct Regression {
    fc: Linear,
}

impl Module for Regression {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        self.fc
            .visit_parameters(&deriv::nn::join_name(prefix, "fc"), f)
    }
    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.fc
            .visit_parameters_mut(&deriv::nn::join_name(prefix, "fc"), f)
    }
}

impl TrainingModule for Regression {
    type Batch = (Tensor, Tensor);
    fn training_step(&mut self, (x, y): &(Tensor, Tensor)) -> StepOutput {
        use deriv::nn::Forward;
        let err = self.fc.forward(x) - y;
        let mse = (&err * &err).mean();
        let mae = err.abs().mean().item();
        StepOutput::new(mse)
            .metric("mae", mae)
            .batch_size(x.shape()[0])
    }
    fn validation_step(&mut self, batch: &(Tensor, Tensor)) -> StepOutput {
        self.training_step(batch)
    }
    fn configure_optimizers(&self) -> Box<dyn Optimizer> {
        Box::new(SGD::new(self.parameters(), 0.1))
    }
}

#[test]
fn a_custom_training_module_trains_on_the_tape() {
    manual_seed(0);
    let x = Tensor::randn([64, 2]);
    let y = x.matmul(&tensor![[2.0], [-1.0]]) + 0.5;
    let batches: Vec<(Tensor, Tensor)> = (0..4)
        .map(|i| (x.narrow(0, 16 * i, 16), y.narrow(0, 16 * i, 16)))
        .collect();
    let mut model = Regression {
        fc: Linear::new(2, 1, &Device::Cpu),
    };
    let mut trainer = Trainer::new().max_epochs(30).quiet();
    let h: History = trainer.fit(&mut model, &batches, Some(&batches)).unwrap();
    assert!(
        h.last("val_loss").unwrap() < 1e-4,
        "{:?}",
        h.get("val_loss")
    );
    let w = model.fc.weight.to_vec::<f32>();
    assert!(
        (w[0] - 2.0).abs() < 0.01 && (w[1] + 1.0).abs() < 0.01,
        "{w:?}"
    );
    // validate / test average over the batches with the given weights.
    let v = trainer.validate(&mut model, &batches);
    let t = trainer.test(&mut model, &batches);
    assert_eq!(
        v.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["val_loss", "val_mae"]
    );
    assert_eq!(t[0].0, "test_loss");
    assert!((v[0].1 - t[0].1).abs() < 1e-12);
    let direct = {
        let err = deriv::no_grad(|| {
            use deriv::nn::Forward;
            model.fc.forward(&x) - &y
        });
        (&err * &err).mean().item()
    };
    assert!((v[0].1 - direct).abs() < 1e-6, "{} vs {direct}", v[0].1);
}

// ---------------------------------------------------------------- Regressor

network! {
    pub struct RegMlp = Linear(3, 16) -> ReLU -> Linear(16, 2);
}

/// `n` samples of 3 features and 2 targets: y0 = 2 x0 - x1 + 0.5,
/// y1 = x2² - x0, plus a little noise.
fn regression_data(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut g = Generator::new(seed);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let x: Vec<f64> = (0..3).map(|_| g.normal()).collect();
        ys.push((2.0 * x[0] - x[1] + 0.5 + 0.05 * g.normal()) as f32);
        ys.push((x[2] * x[2] - x[0] + 0.05 * g.normal()) as f32);
        xs.extend(x.iter().map(|&v| v as f32));
    }
    (Tensor::from_vec(xs, [n, 3]), Tensor::from_vec(ys, [n, 2]))
}

/// The Regressor learns a two-output function, and its epoch metrics are
/// exact: the last epoch's validation MSE, MAE and R² equal
/// `deriv::metrics` over the whole validation set with the final weights.
#[test]
fn regressor_reports_exact_epoch_metrics() {
    manual_seed(3);
    let (x, y) = regression_data(256, 1);
    let (vx, vy) = regression_data(100, 2);
    let train = DataLoader::new(TensorDataset::new((x, y)), 32)
        .shuffle(true)
        .seed(0);
    let val = DataLoader::new(TensorDataset::new((vx.clone(), vy.clone())), 30);
    let mut reg = Regressor::new(RegMlp::default()).optimizer(|p| Adam::new(p, 0.01));
    let history = Trainer::new()
        .max_epochs(60)
        .quiet()
        .fit(&mut reg, &train, Some(&val))
        .unwrap();
    for name in [
        "train_loss",
        "train_mse",
        "train_mae",
        "train_r2",
        "val_mse",
        "val_r2",
    ] {
        assert_eq!(
            history.get(name).len(),
            60,
            "{name} in {:?}",
            history.names()
        );
    }
    // MSE is the loss: the same numbers (the loss in f32, the metric in f64).
    for (l, m) in history
        .get("train_loss")
        .iter()
        .zip(history.get("train_mse"))
    {
        assert!((l - m).abs() <= 1e-6 * m, "loss {l}, mse {m}");
    }
    let pred = reg.predict(&vx);
    let close = |a: f64, b: f64, what: &str| {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{what}: {a} vs {b}"
        )
    };
    close(
        history.last("val_mse").unwrap(),
        metrics::mean_squared_error(&vy, &pred),
        "mse",
    );
    close(
        history.last("val_mae").unwrap(),
        metrics::mean_absolute_error(&vy, &pred),
        "mae",
    );
    let r2 = metrics::r2_score(&vy, &pred);
    close(history.last("val_r2").unwrap(), r2, "r2");
    close(reg.r2_score(&vx, &vy), r2, "r2_score");
    assert!(r2 > 0.95, "held-out R² {r2}");
    // The batches' mean R² would differ from the epoch's: 4 batches of 30, 30, 30, 10.
    let batch_mean: f64 = (0..4)
        .map(|b| {
            let (s, e) = (30 * b, (30 * b + 30).min(100));
            let (t, p) = (vy.slice(0, s..e), pred.slice(0, s..e));
            metrics::r2_score(&t, &p) * (e - s) as f64 / 100.0
        })
        .sum();
    assert!(
        (batch_mean - r2).abs() > 1e-6,
        "the test cannot tell them apart"
    );
}

/// L1 and Huber losses train the same model; with L1 the loss is the MAE,
/// and the tape and the compile-time backward give the same run.
#[test]
fn regressor_with_l1_and_huber_losses_on_both_paths() {
    let (x, y) = regression_data(128, 5);
    let y0 = y.i((.., 0)); // one output, [N] targets for an [N, 1] model
    let batches: Vec<(Tensor, Tensor)> = (0..4)
        .map(|b| {
            (
                x.slice(0, 32 * b..32 * b + 32),
                y0.slice(0, 32 * b..32 * b + 32),
            )
        })
        .collect();
    let fit = |loss: &str, compiled: bool| {
        manual_seed(11);
        let model = Linear::new(3, 1, &Device::Cpu);
        let reg = Regressor::new(model).optimizer(|p| SGD::new(p, 0.05));
        let mut reg = match loss {
            "l1" => reg.loss(L1Loss::new()),
            _ => reg.loss(HuberLoss::new().delta(0.5)),
        };
        let h = Trainer::new()
            .max_epochs(80)
            .quiet()
            .compiled(compiled)
            .fit(&mut reg, &batches, None)
            .unwrap();
        (h, reg)
    };
    let (l1, reg) = fit("l1", true);
    for (l, m) in l1.get("train_loss").iter().zip(l1.get("train_mae")) {
        assert!((l - m).abs() <= 1e-6 * m, "loss {l}, mae {m}");
    }
    assert!(
        l1.last("train_r2").unwrap() > 0.99,
        "{:?}",
        l1.get("train_r2")
    );
    assert!(reg.r2_score(&x, &y0) > 0.99);
    let (l1_tape, _) = fit("l1", false);
    for (a, b) in l1.get("train_loss").iter().zip(l1_tape.get("train_loss")) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let (huber, reg) = fit("huber", true);
    assert!(huber.last("train_r2").unwrap() > 0.99);
    let (h_tape, _) = fit("huber", false);
    assert!((huber.last("train_loss").unwrap() - h_tape.last("train_loss").unwrap()).abs() < 1e-5);
    // The loss went down: the final model's Huber loss over all the data is a
    // fraction of the first epoch's.
    let pred = reg.predict(&x).reshape([-1]);
    let want = deriv::nn::functional::huber_loss_with(&pred, &y0, deriv::nn::Reduction::Mean, 0.5);
    assert!(
        want.item() < 0.1 * huber.get("train_loss")[0],
        "{}",
        want.item()
    );
}

// ----- data-parallel sharding (the MPI runs are in tests/distributed_ddp.rs)

use deriv::train::Batches;

#[test]
fn batches_are_shared_out_evenly_across_ranks() {
    // A list of batches: whole batches round-robin, padded from the start.
    let batches = vec![10, 11, 12, 13, 14];
    let shares: Vec<Vec<i32>> = (0..2)
        .map(|r| batches.shard(r, 2).epoch_batches(0).collect())
        .collect();
    assert_eq!(shares, [vec![10, 12, 14], vec![11, 13, 10]]);
    assert_eq!(batches.shard(1, 2).num_batches(), 3);
    let three: Vec<Vec<i32>> = (0..7)
        .map(|r| vec![1, 2].shard(r, 7).epoch_batches(0).collect())
        .collect();
    assert_eq!(three, [[1], [2], [1], [2], [1], [2], [1]]);
    // A DataLoader: samples, with its batch size and its shuffle seed.
    let (x, y) = blobs(10, 3); // 30 samples
    let loader = DataLoader::new(TensorDataset::new((x.clone(), y)), 4)
        .shuffle(true)
        .seed(11);
    let mut rows = Vec::new();
    for r in 0..2 {
        let share = loader.shard(r, 2);
        assert_eq!(share.num_batches(), 4); // 15 samples: 4 + 4 + 4 + 3
        for (xb, _) in share.epoch_batches(1) {
            assert!(xb.shape()[0] <= 4);
            rows.extend(xb.to_vec::<f32>().chunks(4).map(|c| c.to_vec()));
        }
    }
    let mut all: Vec<Vec<f32>> = x.to_vec::<f32>().chunks(4).map(|c| c.to_vec()).collect();
    let key = |v: &Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    all.sort_by_key(key);
    rows.sort_by_key(key);
    assert_eq!(rows, all, "the two ranks' shares are the data set, once");
    // One rank: the loader itself.
    assert_eq!(loader.shard(0, 1).num_batches(), loader.len());
}

#[cfg(not(feature = "mpi"))]
#[test]
fn the_ddp_strategy_needs_the_mpi_feature() {
    use deriv::train::Strategy;
    let (train, _) = loaders(DType::F32);
    let mut clf = Classifier::new(Mlp::default());
    let e = Trainer::new()
        .quiet()
        .strategy(Strategy::Ddp)
        .fit(&mut clf, &train, None)
        .unwrap_err();
    assert!(e.to_string().contains("needs the `mpi` feature"), "{e}");
    assert_eq!(Trainer::new().strategy_of(), Strategy::Single);
    assert!(!deriv::distributed::is_available() && !deriv::distributed::is_initialized());
    assert_eq!(
        (deriv::distributed::rank(), deriv::distributed::world_size()),
        (0, 1)
    );
}

/// A resume the optimizer refuses (an SGD checkpoint into Adam) changes
/// nothing: the model keeps its weights, and the error names the file and
/// says so. A missing checkpoint says the file does not exist.
#[test]
fn a_refused_resume_changes_nothing_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("deriv-trainer-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (train, val) = loaders(DType::F32);
    let ckpt = dir.join("sgd.safetensors");
    let mut sgd = Classifier::new(Mlp::default()).optimizer(|p| SGD::new(p, 0.1).momentum(0.9));
    Trainer::new()
        .max_epochs(1)
        .quiet()
        .checkpoint(&ckpt)
        .fit(&mut sgd, &train, Some(&val))
        .unwrap();

    let mut adam = Classifier::new(Mlp::default()).optimizer(|p| Adam::new(p, 1e-2));
    let before = params(&adam);
    assert_ne!(
        before,
        params(&sgd),
        "the two models start from other weights"
    );
    let e = Trainer::new()
        .max_epochs(2)
        .quiet()
        .resume_from(&ckpt)
        .fit(&mut adam, &train, Some(&val))
        .unwrap_err()
        .to_string();
    for part in ["sgd.safetensors", "resume_from", "nothing was changed"] {
        assert!(e.contains(part), "{e:?} lacks {part:?}");
    }
    assert_eq!(params(&adam), before, "a refused resume changed the model");

    let missing = dir.join("no-such-checkpoint.safetensors");
    let e = Trainer::new()
        .max_epochs(2)
        .quiet()
        .resume_from(&missing)
        .fit(&mut adam, &train, Some(&val))
        .unwrap_err();
    assert!(matches!(e, deriv::Error::Io { .. }), "{e:?}");
    let e = e.to_string();
    for part in ["no-such-checkpoint.safetensors", "does not exist"] {
        assert!(e.contains(part), "{e:?} lacks {part:?}");
    }
    assert_eq!(params(&adam), before);
    std::fs::remove_dir_all(&dir).unwrap();
}
