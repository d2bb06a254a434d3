//! The training loop: epochs, progress, validation, early stopping,
//! checkpoints and resuming.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::strategy::{Replicas, ShardedBatches, Strategy};
use super::{History, StepOutput, TrainingModule};
use crate::autograd::no_grad;
use crate::data::{Batch, DataLoader, Dataset, DistributedSampler};
use crate::error::{Error, Result};
use crate::io::Checkpoint;
use crate::optim::lr_scheduler::LrScheduler;
use crate::optim::Optimizer;

/// The prefix of a scheduler's entries in a checkpoint's metadata.
const SCHEDULER: &str = "scheduler.";

/// Where the Trainer gets its batches: one pass per epoch, in an order that
/// depends only on the epoch number, so a resumed run sees the same batches
/// as an uninterrupted one.
///
/// Implemented by [`DataLoader`](crate::data::DataLoader) and, for fixed
/// lists of batches, by `Vec<B>`.
pub trait Batches {
    /// One batch, e.g. `(Tensor, Tensor)`.
    type Batch;
    /// The number of batches per epoch.
    fn num_batches(&self) -> usize;
    /// The batches of epoch `epoch` (0-based).
    fn epoch_batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Self::Batch> + '_>;

    /// Rank `rank`'s share of every epoch when `world` processes train
    /// data-parallel ([`Strategy::Ddp`]): every rank must get the same
    /// number of batches. By default, whole batches `rank, rank + world,
    /// ...`, padded by repeating the epoch's first ones; a `DataLoader`
    /// shares out samples instead (a [`DistributedSampler`] with its
    /// shuffling and seed), keeping its batch size.
    fn shard(&self, rank: usize, world: usize) -> Box<dyn Batches<Batch = Self::Batch> + '_>
    where
        Self: Sized,
    {
        if world == 1 {
            return Box::new(self);
        }
        Box::new(ShardedBatches {
            inner: self,
            rank,
            world,
        })
    }
}

impl<L: Batches + ?Sized> Batches for &L {
    type Batch = L::Batch;
    fn num_batches(&self) -> usize {
        (**self).num_batches()
    }
    fn epoch_batches(&self, epoch: usize) -> Box<dyn Iterator<Item = L::Batch> + '_> {
        (**self).epoch_batches(epoch)
    }
}

impl<B: Clone> Batches for Vec<B> {
    type Batch = B;
    fn num_batches(&self) -> usize {
        self.len()
    }
    fn epoch_batches(&self, _epoch: usize) -> Box<dyn Iterator<Item = B> + '_> {
        Box::new(self.iter().cloned())
    }
}

impl<D: Dataset + 'static> Batches for DataLoader<D> {
    type Batch = Batch<D>;
    fn num_batches(&self) -> usize {
        self.len()
    }
    fn epoch_batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Batch<D>> + '_> {
        self.set_epoch(epoch as u64);
        Box::new(self.iter())
    }

    /// A loader over the same dataset whose order comes from a
    /// [`DistributedSampler`] for this rank: the loader's shuffling, with
    /// rank 0's seed on every rank. A loader that already has a sampler is
    /// used as it is.
    fn shard(&self, rank: usize, world: usize) -> Box<dyn Batches<Batch = Batch<D>> + '_> {
        if world == 1 || self.has_sampler() {
            return Box::new(self);
        }
        let shuffle = self.is_shuffled();
        let seed = if shuffle {
            crate::distributed::broadcast_u64(self.resolved_seed())
        } else {
            0
        };
        let sampler = DistributedSampler::new(self.dataset().len(), world, rank)
            .shuffle(shuffle)
            .seed(seed);
        Box::new(self.with_sampler_of(sampler))
    }
}

/// Whether a monitored metric should go down or up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (accuracy).
    Max,
}

/// Stops training when a monitored metric has not improved for `patience`
/// epochs (Lightning's `EarlyStopping`: mode `Min`, patience 3, min_delta 0).
///
/// ```
/// use deriv_runtime::train::{EarlyStopping, Mode};
/// let es = EarlyStopping::new("val_acc").mode(Mode::Max).patience(5);
/// assert_eq!(es.monitor(), "val_acc");
/// ```
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    monitor: String,
    mode: Mode,
    patience: usize,
    min_delta: f64,
    best: Option<f64>,
    wait: usize,
}

impl EarlyStopping {
    /// Monitors the metric `monitor` (`val_loss`, `val_acc`, `train_loss`).
    pub fn new(monitor: impl Into<String>) -> Self {
        EarlyStopping {
            monitor: monitor.into(),
            mode: Mode::Min,
            patience: 3,
            min_delta: 0.0,
            best: None,
            wait: 0,
        }
    }
    /// Whether smaller or larger is better.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Epochs without improvement before stopping.
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }
    /// The smallest change that counts as an improvement.
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.min_delta = min_delta.abs();
        self
    }
    /// The monitored metric's name.
    pub fn monitor(&self) -> &str {
        &self.monitor
    }
    /// The best value seen.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// Takes one epoch's value; true when training should stop.
    fn update(&mut self, value: f64) -> bool {
        let improved = match self.best {
            None => true,
            Some(b) => match self.mode {
                Mode::Min => value < b - self.min_delta,
                Mode::Max => value > b + self.min_delta,
            },
        };
        if improved {
            self.best = Some(value);
            self.wait = 0;
        } else {
            self.wait += 1;
        }
        self.wait >= self.patience
    }

    fn reset(&mut self) {
        self.best = None;
        self.wait = 0;
    }
}

/// Trains a [`TrainingModule`] (PyTorch Lightning's `Trainer`).
///
/// `fit` runs `max_epochs` epochs of training then validation, with a
/// progress bar per epoch on a terminal (nothing when output is not one), a
/// summary line per epoch, and returns the per-epoch [`History`]. It uses
/// the model's compile-time backward when it has one.
///
/// ```no_run
/// # use deriv_runtime::train::*;
/// # fn demo<M: TrainingModule<Batch = (deriv_runtime::Tensor, deriv_runtime::Tensor)>>(
/// #     model: &mut M, train: &Vec<M::Batch>, val: &Vec<M::Batch>) -> deriv_runtime::Result<()> {
/// let history = Trainer::new()
///     .max_epochs(20)
///     .early_stopping(EarlyStopping::new("val_loss").patience(3))
///     .checkpoint("last.safetensors")
///     .fit(model, train, Some(val))?;
/// println!("val_acc: {:?}", history.last("val_acc"));
/// # Ok(()) }
/// ```
pub struct Trainer {
    max_epochs: usize,
    progress: bool,
    log_epochs: bool,
    compiled: bool,
    early_stopping: Option<EarlyStopping>,
    checkpoint: Option<PathBuf>,
    resume_from: Option<PathBuf>,
    plot: Option<PathBuf>,
    optimizer: Option<Box<dyn Optimizer>>,
    strategy: Strategy,
}

impl Default for Trainer {
    fn default() -> Self {
        Trainer::new()
    }
}

impl Trainer {
    /// 10 epochs, progress bars on a terminal, a summary line per epoch.
    pub fn new() -> Self {
        Trainer {
            max_epochs: 10,
            progress: true,
            log_epochs: true,
            compiled: true,
            early_stopping: None,
            checkpoint: None,
            resume_from: None,
            plot: None,
            optimizer: None,
            strategy: Strategy::Single,
        }
    }
    /// One process (default) or data-parallel over an MPI job
    /// ([`Strategy::Ddp`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
    /// The configured strategy.
    pub fn strategy_of(&self) -> Strategy {
        self.strategy
    }
    /// The number of epochs to train (counting those a resumed checkpoint completed).
    pub fn max_epochs(mut self, n: usize) -> Self {
        self.max_epochs = n;
        self
    }
    /// Shows (default) or hides the per-epoch progress bar (it is never drawn
    /// when stderr is not a terminal).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }
    /// Prints (default) or omits the one-line summary after each epoch.
    pub fn log_epochs(mut self, on: bool) -> Self {
        self.log_epochs = on;
        self
    }
    /// No progress bar and no summary lines.
    pub fn quiet(self) -> Self {
        self.progress(false).log_epochs(false)
    }
    /// Whether to use the model's compile-time backward when it has one
    /// (default true); false forces the tape.
    pub fn compiled(mut self, on: bool) -> Self {
        self.compiled = on;
        self
    }
    /// Stops when the monitored metric stops improving.
    pub fn early_stopping(mut self, es: EarlyStopping) -> Self {
        self.early_stopping = Some(es);
        self
    }
    /// Writes a [`Checkpoint`] (model, optimizer, epoch, history) to `path`
    /// after every epoch, atomically: a crash never destroys the last good one.
    pub fn checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoint = Some(path.into());
        self
    }
    /// Resumes from a checkpoint written by [`checkpoint`](Self::checkpoint):
    /// loads the model and optimizer, and continues at the next epoch.
    pub fn resume_from(mut self, path: impl Into<PathBuf>) -> Self {
        self.resume_from = Some(path.into());
        self
    }
    /// Writes the training curves (losses and metrics per epoch) as an SVG
    /// to `path` after every epoch.
    pub fn plot(mut self, path: impl Into<PathBuf>) -> Self {
        self.plot = Some(path.into());
        self
    }

    /// The optimizer of the last `fit` (its state, learning rate).
    pub fn optimizer(&self) -> Option<&dyn Optimizer> {
        self.optimizer.as_deref()
    }

    /// Trains `model` on `train` for the configured epochs, validating on
    /// `val` after each; returns the history (including resumed epochs).
    ///
    /// Errors come from files only (checkpoint, resume, plot) and, with
    /// [`Strategy::Ddp`], from starting the process group: the training
    /// itself panics on a programming mistake, as ops do.
    pub fn fit<M, L>(&mut self, model: &mut M, train: &L, val: Option<&L>) -> Result<History>
    where
        M: TrainingModule,
        L: Batches<Batch = M::Batch>,
    {
        let mut replicas = Replicas::start(self.strategy)?;
        let mut optimizer = model.configure_optimizers();
        let mut scheduler = model.configure_scheduler(optimizer.as_mut());
        let mut history = History::default();
        let mut start = 0;
        if let Some(es) = &mut self.early_stopping {
            es.reset();
        }
        if let Some(path) = &self.resume_from {
            // Every rank reads the checkpoint; if one cannot, all stop.
            let resumed = resume(path, model, optimizer.as_mut(), &mut scheduler);
            replicas.agree(
                resumed.as_ref().map(|_| ()).map_err(Clone::clone),
                "resume_from",
            )?;
            (start, history) = resumed?;
            // Replay the history so early stopping resumes with its state.
            if let Some(es) = &mut self.early_stopping {
                for v in history.get(&es.monitor.clone()) {
                    es.update(v);
                }
            }
        }
        replicas.attach(&*model)?;
        let (rank, world) = (replicas.rank, replicas.world);
        let train = train.shard(rank, world);
        let val = val.map(|v| v.shard(rank, world));
        let total = self.max_epochs;
        for epoch in start..total {
            model.train();
            let bar = self.bar(train.num_batches(), epoch, total, &replicas);
            let mut train_avg = Averager::default();
            for batch in train.epoch_batches(epoch) {
                optimizer.zero_grad_in_place();
                replicas.prepare();
                let compiled = if self.compiled {
                    model.compiled_training_step(&batch)
                } else {
                    None
                };
                let out = match compiled {
                    Some(out) => out,
                    None => {
                        let out = model.training_step(&batch);
                        out.loss.backward();
                        out
                    }
                };
                replicas.finish();
                optimizer.step();
                train_avg.add(&out);
                bar.inc(1);
                if !bar.is_hidden() {
                    bar.set_message(train_avg.summary("train_"));
                }
            }
            bar.finish_and_clear();
            let mut metrics = train_avg.finish("train_", &replicas);
            metrics.extend(train_avg.epoch_metrics(&*model, "train_", &replicas));
            metrics.push(("lr".into(), optimizer.lr()));
            if let Some(sched) = &mut scheduler {
                sched.step(optimizer.as_mut());
            }
            if let Some(val) = &val {
                metrics.extend(run_eval(model, &**val, epoch, "val_", &replicas, |m, b| {
                    m.validation_step(b)
                }));
            }
            history.push(metrics);
            let main = replicas.is_main();
            if self.log_epochs && main {
                let line = history
                    .epoch(history.len() - 1)
                    .iter()
                    .map(|(n, v)| format!("{n} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join("  ");
                println!("epoch {}/{total}  {line}", epoch + 1);
            }
            if let Some(path) = &self.checkpoint {
                let written = if main {
                    save_checkpoint(
                        path,
                        epoch + 1,
                        model,
                        optimizer.as_ref(),
                        scheduler.as_deref(),
                        &history,
                    )
                } else {
                    Ok(())
                };
                replicas.agree(written, "writing the checkpoint")?;
            }
            if let Some(path) = &self.plot {
                let written = if main {
                    history.write_svg(path)
                } else {
                    Ok(())
                };
                replicas.agree(written, "writing the plot")?;
            }
            if let Some(es) = &mut self.early_stopping {
                let value = history.last(&es.monitor).ok_or_else(|| {
                    Error::Invalid(format!(
                        "EarlyStopping monitors {:?}, which no step reported; available: {}",
                        es.monitor,
                        history.names().join(", ")
                    ))
                })?;
                if es.update(value) {
                    if self.log_epochs && main {
                        println!(
                            "early stopping: {} did not improve for {} epochs (best {:.4})",
                            es.monitor,
                            es.patience,
                            es.best.unwrap_or(value)
                        );
                    }
                    break;
                }
            }
        }
        self.optimizer = Some(optimizer);
        Ok(history)
    }

    /// Runs the validation steps over `loader` (evaluation mode, `no_grad`)
    /// and returns the averaged `val_` metrics (over every rank's share with
    /// [`Strategy::Ddp`]).
    ///
    /// Panics when the strategy's process group cannot start (`fit` returns
    /// that error instead).
    pub fn validate<M, L>(&mut self, model: &mut M, loader: &L) -> Vec<(String, f64)>
    where
        M: TrainingModule,
        L: Batches<Batch = M::Batch>,
    {
        self.evaluate(model, loader, "val_", |m, b| m.validation_step(b))
    }

    /// Runs the test steps over `loader` and returns the averaged `test_` metrics.
    pub fn test<M, L>(&mut self, model: &mut M, loader: &L) -> Vec<(String, f64)>
    where
        M: TrainingModule,
        L: Batches<Batch = M::Batch>,
    {
        self.evaluate(model, loader, "test_", |m, b| m.test_step(b))
    }

    fn evaluate<M, L>(
        &mut self,
        model: &mut M,
        loader: &L,
        prefix: &str,
        step: impl Fn(&mut M, &M::Batch) -> StepOutput,
    ) -> Vec<(String, f64)>
    where
        M: TrainingModule,
        L: Batches<Batch = M::Batch>,
    {
        let replicas = Replicas::start(self.strategy).unwrap_or_else(|e| panic!("{e}"));
        let loader = loader.shard(replicas.rank, replicas.world);
        run_eval(model, &*loader, 0, prefix, &replicas, step)
    }

    fn bar(&self, len: usize, epoch: usize, total: usize, replicas: &Replicas) -> ProgressBar {
        if !self.progress || !replicas.is_main() || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(format!("{}/{total}", epoch + 1));
        bar
    }
}

/// Loads the model, optimizer and scheduler state of a checkpoint; returns
/// the epochs it completed and its history.
/// Loads a checkpoint for `resume_from`. Everything that can fail goes
/// first, into this run's own optimizer, scheduler and history; the model
/// (the caller's) is loaded last, and its `load_state_dict` checks every
/// tensor before copying any: a refused resume leaves the model as it was.
fn resume<M: TrainingModule>(
    path: &Path,
    model: &mut M,
    optimizer: &mut dyn Optimizer,
    scheduler: &mut Option<Box<dyn LrScheduler>>,
) -> Result<(usize, History)> {
    let refused = |e: Error| {
        Error::format(
            path,
            format!("resume_from: {e}; nothing was changed (the model keeps its weights)"),
        )
    };
    if let Err(e) = std::fs::metadata(path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return Err(Error::Io {
            path: path.display().to_string(),
            msg: "resume_from: there is no checkpoint at this path (the file does not \
                      exist); check the path, or leave resume_from out to train from the start"
                .into(),
        });
    }
    let ckpt = Checkpoint::load(path)?;
    if let Some(state) = &ckpt.optimizer {
        optimizer.load_state_dict(state).map_err(refused)?;
    }
    if let Some(sched) = scheduler {
        let state: Vec<(String, f64)> = ckpt
            .metadata
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(SCHEDULER)?;
                Some((name.to_string(), v.parse().ok()?))
            })
            .collect();
        sched.load_state_dict(&state).map_err(refused)?;
    }
    let history = match ckpt.metadata.get("history") {
        Some(csv) => History::from_csv(csv).map_err(refused)?,
        None => History::default(),
    };
    model.load_state_dict(&ckpt.model).map_err(refused)?;
    Ok((ckpt.epoch, history))
}

fn run_eval<M, L>(
    model: &mut M,
    loader: &L,
    epoch: usize,
    prefix: &str,
    replicas: &Replicas,
    step: impl Fn(&mut M, &M::Batch) -> StepOutput,
) -> Vec<(String, f64)>
where
    M: TrainingModule,
    L: Batches<Batch = M::Batch> + ?Sized,
{
    model.eval();
    let mut avg = Averager::default();
    no_grad(|| {
        for batch in loader.epoch_batches(epoch) {
            avg.add(&step(model, &batch));
        }
    });
    model.train();
    let mut metrics = avg.finish(prefix, replicas);
    metrics.extend(avg.epoch_metrics(&*model, prefix, replicas));
    metrics
}

fn save_checkpoint<M: TrainingModule>(
    path: &Path,
    epoch: usize,
    model: &M,
    optimizer: &dyn Optimizer,
    scheduler: Option<&dyn LrScheduler>,
    history: &History,
) -> Result<()> {
    let mut ckpt = Checkpoint {
        epoch,
        model: model.state_dict(),
        optimizer: Some(optimizer.state_dict()),
        ..Default::default()
    };
    ckpt.metadata.insert("history".into(), history.to_csv());
    for (name, v) in scheduler.map(|s| s.state_dict()).unwrap_or_default() {
        ckpt.metadata
            .insert(format!("{SCHEDULER}{name}"), v.to_string());
    }
    ckpt.save(path)
}

/// Batch-size-weighted running means of the loss and metrics, and the
/// epoch's sums of the steps' totals.
#[derive(Default)]
struct Averager {
    /// Per name: the weighted sum and the weight of the batches that reported it.
    sums: Vec<(String, f64, f64)>,
    /// Per name: the sum of the totals reported under it.
    totals: Vec<(String, f64)>,
}

impl Averager {
    fn add(&mut self, out: &StepOutput) {
        for (name, v) in &out.totals {
            match self.totals.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 += v,
                None => self.totals.push((name.clone(), *v)),
            }
        }
        let w = out.batch_size as f64;
        let loss = out.loss.item();
        let items = std::iter::once(("loss", loss))
            .chain(out.metrics.iter().map(|(n, v)| (n.as_str(), *v)));
        for (name, v) in items {
            match self.sums.iter_mut().find(|(n, _, _)| n == name) {
                Some(slot) => {
                    slot.1 += w * v;
                    slot.2 += w;
                }
                None => self.sums.push((name.to_string(), w * v, w)),
            }
        }
    }

    /// The means, over every rank's batches when there are several (each
    /// rank must report the same names, as the same model code does).
    fn finish(&self, prefix: &str, replicas: &Replicas) -> Vec<(String, f64)> {
        let mut sums: Vec<f64> = self.sums.iter().flat_map(|(_, s, w)| [*s, *w]).collect();
        replicas.sum(&mut sums);
        self.sums
            .iter()
            .zip(sums.chunks(2))
            .map(|((n, _, _), sw)| (format!("{prefix}{n}"), sw[0] / sw[1].max(f64::MIN_POSITIVE)))
            .collect()
    }

    /// The model's metrics of the whole epoch, from the totals summed over
    /// this rank's steps and then over the ranks.
    fn epoch_metrics<M: TrainingModule>(
        &self,
        model: &M,
        prefix: &str,
        replicas: &Replicas,
    ) -> Vec<(String, f64)> {
        if self.totals.is_empty() {
            return Vec::new();
        }
        let mut sums: Vec<f64> = self.totals.iter().map(|(_, v)| *v).collect();
        replicas.sum(&mut sums);
        let totals: Vec<(String, f64)> = self
            .totals
            .iter()
            .zip(sums)
            .map(|((n, _), v)| (n.clone(), v))
            .collect();
        model
            .epoch_metrics(&totals)
            .into_iter()
            .map(|(n, v)| (format!("{prefix}{n}"), v))
            .collect()
    }

    /// This rank's running means, for the progress bar.
    fn summary(&self, prefix: &str) -> String {
        self.sums
            .iter()
            .map(|(n, s, w)| format!("{prefix}{n} {:.4}", s / w.max(f64::MIN_POSITIVE)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
