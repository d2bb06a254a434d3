//! Learning-rate schedulers, PyTorch's `torch.optim.lr_scheduler`.
//!
//! A scheduler is built on an optimizer, which (as in PyTorch) sets the
//! learning rates of epoch 0 right away and records each group's starting lr
//! as its `initial_lr`; `step(&mut opt)` once per epoch (or per iteration)
//! moves to the next epoch's rates.
//!
//! ```
//! use deriv_runtime::optim::lr_scheduler::{LrScheduler, StepLR};
//! use deriv_runtime::optim::{Optimizer, SGD};
//! use deriv_runtime::Tensor;
//!
//! let w = Tensor::zeros([3]).requires_grad_(true);
//! let mut opt = SGD::new(vec![w], 0.1);
//! let mut sched = StepLR::new(&mut opt, 2, 0.5);
//! let mut lrs = vec![];
//! for _epoch in 0..5 {
//!     lrs.push(opt.lr());
//!     // ... train one epoch: backward, opt.step() ...
//!     sched.step(&mut opt);
//! }
//! assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025]);
//! ```
//!
//! Every scheduler here computes PyTorch's closed form from the groups'
//! initial learning rates, so it *sets* each lr rather than scaling the
//! current one; to run schedules one after another use [`SequentialLR`].

use super::Optimizer;
use crate::error::{Error, Result};

/// A learning-rate schedule (PyTorch's `LRScheduler`).
pub trait LrScheduler: Send {
    /// Moves to the next epoch and sets its learning rate in every group of `opt`.
    ///
    /// Panics when `opt` has a different number of groups than the optimizer
    /// the scheduler was built on.
    fn step(&mut self, opt: &mut dyn Optimizer);

    /// The learning rates the scheduler last set, one per group.
    fn get_last_lr(&self) -> Vec<f64>;

    /// The current epoch: 0 after construction, one more after each `step`.
    fn last_epoch(&self) -> usize;

    /// The learning rates of `epoch`, one per group (the closed form; changes nothing).
    fn lr_at(&self, epoch: usize) -> Vec<f64>;

    /// The scheduler's state as named numbers (`last_epoch`, `base_lrs.{g}`,
    /// `last_lr.{g}` and its options), for a checkpoint's metadata.
    fn state_dict(&self) -> Vec<(String, f64)>;

    /// Restores a state saved by [`state_dict`](Self::state_dict) from the
    /// same kind of scheduler. Returns an error naming a missing entry, or
    /// when the number of groups differs, and then changes nothing.
    fn load_state_dict(&mut self, state: &[(String, f64)]) -> Result<()>;
}

/// What every scheduler keeps: the groups' starting lrs, the epoch and the
/// last rates set.
#[derive(Clone, Debug)]
struct Base {
    name: &'static str,
    base_lrs: Vec<f64>,
    last_epoch: usize,
    last_lr: Vec<f64>,
}

impl Base {
    /// Reads (and on first use records) each group's `initial_lr`.
    fn new(name: &'static str, opt: &mut dyn Optimizer) -> Base {
        let base_lrs: Vec<f64> = opt
            .param_groups_mut()
            .iter_mut()
            .map(|g| *g.initial_lr.get_or_insert(g.lr))
            .collect();
        Base {
            name,
            last_lr: base_lrs.clone(),
            base_lrs,
            last_epoch: 0,
        }
    }

    #[track_caller]
    fn apply(&mut self, opt: &mut dyn Optimizer, lrs: Vec<f64>) {
        let groups = opt.param_groups_mut();
        if groups.len() != lrs.len() {
            panic!(
                "{}: the optimizer has {} parameter groups but the scheduler was built on one \
                 with {}; build the scheduler after adding every group",
                self.name,
                groups.len(),
                lrs.len()
            );
        }
        for (g, &lr) in groups.iter_mut().zip(&lrs) {
            g.lr = lr;
        }
        self.last_lr = lrs;
    }

    fn save(&self, options: &[(&str, f64)]) -> Vec<(String, f64)> {
        let mut out = vec![("last_epoch".to_string(), self.last_epoch as f64)];
        for (g, lr) in self.base_lrs.iter().enumerate() {
            out.push((format!("base_lrs.{g}"), *lr));
        }
        for (g, lr) in self.last_lr.iter().enumerate() {
            out.push((format!("last_lr.{g}"), *lr));
        }
        out.extend(options.iter().map(|(k, v)| (k.to_string(), *v)));
        out
    }

    /// Reads the base state and the named options from `state`, changing
    /// nothing unless everything is there.
    fn load(&mut self, state: &[(String, f64)], options: &[&str]) -> Result<Vec<f64>> {
        let name = self.name;
        let get = |key: &str| {
            state
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| *v)
                .ok_or_else(|| Error::Invalid(format!("{name}.load_state_dict: missing `{key}`")))
        };
        let n = self.base_lrs.len();
        let saved_groups = state
            .iter()
            .filter(|(k, _)| k.starts_with("base_lrs."))
            .count();
        if saved_groups != n {
            return Err(Error::Invalid(format!(
                "{name}.load_state_dict: the saved scheduler had {saved_groups} parameter \
                 groups but this one has {n}"
            )));
        }
        let epoch = get("last_epoch")?;
        if !(epoch >= 0.0 && epoch.fract() == 0.0) {
            return Err(Error::Invalid(format!(
                "{name}.load_state_dict: `last_epoch` is {epoch}; it counts epochs (a whole \
                 number >= 0)"
            )));
        }
        let base_lrs = (0..n)
            .map(|g| get(&format!("base_lrs.{g}")))
            .collect::<Result<Vec<_>>>()?;
        let last_lr = (0..n)
            .map(|g| get(&format!("last_lr.{g}")))
            .collect::<Result<Vec<_>>>()?;
        let opts = options.iter().map(|k| get(k)).collect::<Result<Vec<_>>>()?;
        self.base_lrs = base_lrs;
        self.last_lr = last_lr;
        self.last_epoch = epoch as usize;
        Ok(opts)
    }
}

/// Whole-number options are saved as f64; reads one back.
fn as_count(name: &str, key: &str, v: f64) -> Result<usize> {
    if v >= 1.0 && v.fract() == 0.0 {
        Ok(v as usize)
    } else {
        Err(Error::Invalid(format!(
            "{name}.load_state_dict: `{key}` is {v}; it must be a whole number >= 1"
        )))
    }
}

/// The `LrScheduler` methods every closed-form scheduler shares.
macro_rules! closed_form_scheduler {
    () => {
        fn step(&mut self, opt: &mut dyn Optimizer) {
            self.base.last_epoch += 1;
            let lrs = self.lr_at(self.base.last_epoch);
            self.base.apply(opt, lrs);
        }
        fn get_last_lr(&self) -> Vec<f64> {
            self.base.last_lr.clone()
        }
        fn last_epoch(&self) -> usize {
            self.base.last_epoch
        }
    };
}

/// Multiplies each group's initial lr by `gamma` every `step_size` epochs:
/// `lr = initial_lr * gamma^(epoch / step_size)` (integer division), PyTorch's `StepLR`.
#[derive(Clone, Debug)]
pub struct StepLR {
    base: Base,
    step_size: usize,
    gamma: f64,
}

impl StepLR {
    /// Decays by `gamma` every `step_size` epochs, starting from `opt`'s
    /// current learning rates.
    ///
    /// Panics when `step_size` is 0.
    #[track_caller]
    pub fn new(opt: &mut dyn Optimizer, step_size: usize, gamma: f64) -> Self {
        assert!(
            step_size >= 1,
            "StepLR: step_size must be at least 1 (epochs between decays), got 0"
        );
        let mut s = StepLR {
            base: Base::new("StepLR", opt),
            step_size,
            gamma,
        };
        let lrs = s.lr_at(0);
        s.base.apply(opt, lrs);
        s
    }
}

impl LrScheduler for StepLR {
    closed_form_scheduler!();
    fn lr_at(&self, epoch: usize) -> Vec<f64> {
        let k = (epoch / self.step_size) as f64;
        self.base
            .base_lrs
            .iter()
            .map(|lr| lr * self.gamma.powf(k))
            .collect()
    }
    fn state_dict(&self) -> Vec<(String, f64)> {
        self.base
            .save(&[("step_size", self.step_size as f64), ("gamma", self.gamma)])
    }
    fn load_state_dict(&mut self, state: &[(String, f64)]) -> Result<()> {
        let mut base = self.base.clone();
        let o = base.load(state, &["step_size", "gamma"])?;
        self.step_size = as_count("StepLR", "step_size", o[0])?;
        self.gamma = o[1];
        self.base = base;
        Ok(())
    }
}

/// Multiplies each group's initial lr by `gamma` every epoch:
/// `lr = initial_lr * gamma^epoch`, PyTorch's `ExponentialLR`.
#[derive(Clone, Debug)]
pub struct ExponentialLR {
    base: Base,
    gamma: f64,
}

impl ExponentialLR {
    /// Decays by `gamma` every epoch, starting from `opt`'s current learning rates.
    pub fn new(opt: &mut dyn Optimizer, gamma: f64) -> Self {
        let mut s = ExponentialLR {
            base: Base::new("ExponentialLR", opt),
            gamma,
        };
        let lrs = s.lr_at(0);
        s.base.apply(opt, lrs);
        s
    }
}

impl LrScheduler for ExponentialLR {
    closed_form_scheduler!();
    fn lr_at(&self, epoch: usize) -> Vec<f64> {
        let k = epoch as f64;
        self.base
            .base_lrs
            .iter()
            .map(|lr| lr * self.gamma.powf(k))
            .collect()
    }
    fn state_dict(&self) -> Vec<(String, f64)> {
        self.base.save(&[("gamma", self.gamma)])
    }
    fn load_state_dict(&mut self, state: &[(String, f64)]) -> Result<()> {
        let mut base = self.base.clone();
        let o = base.load(state, &["gamma"])?;
        self.gamma = o[0];
        self.base = base;
        Ok(())
    }
}

/// Cosine annealing from each group's initial lr down to `eta_min` over
/// `t_max` epochs, PyTorch's `CosineAnnealingLR` (its closed form):
///
/// ```text
/// lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / t_max)) / 2
/// ```
///
/// Past `t_max` the cosine continues, rising again, as in PyTorch.
#[derive(Clone, Debug)]
pub struct CosineAnnealingLR {
    base: Base,
    t_max: usize,
    eta_min: f64,
}

impl CosineAnnealingLR {
    /// Anneals over `t_max` epochs down to `eta_min` (PyTorch's default is 0).
    ///
    /// Panics when `t_max` is 0.
    #[track_caller]
    pub fn new(opt: &mut dyn Optimizer, t_max: usize, eta_min: f64) -> Self {
        assert!(
            t_max >= 1,
            "CosineAnnealingLR: t_max must be at least 1 (the epochs of one half cosine), got 0"
        );
        let mut s = CosineAnnealingLR {
            base: Base::new("CosineAnnealingLR", opt),
            t_max,
            eta_min,
        };
        let lrs = s.lr_at(0);
        s.base.apply(opt, lrs);
        s
    }
}

impl LrScheduler for CosineAnnealingLR {
    closed_form_scheduler!();
    fn lr_at(&self, epoch: usize) -> Vec<f64> {
        let c = (std::f64::consts::PI * epoch as f64 / self.t_max as f64).cos();
        self.base
            .base_lrs
            .iter()
            .map(|lr| self.eta_min + (lr - self.eta_min) * (1.0 + c) / 2.0)
            .collect()
    }
    fn state_dict(&self) -> Vec<(String, f64)> {
        self.base
            .save(&[("T_max", self.t_max as f64), ("eta_min", self.eta_min)])
    }
    fn load_state_dict(&mut self, state: &[(String, f64)]) -> Result<()> {
        let mut base = self.base.clone();
        let o = base.load(state, &["T_max", "eta_min"])?;
        self.t_max = as_count("CosineAnnealingLR", "T_max", o[0])?;
        self.eta_min = o[1];
        self.base = base;
        Ok(())
    }
}

/// Scales each group's initial lr by a factor moving linearly from
/// `start_factor` to `end_factor` over `total_iters` epochs, then holding:
/// PyTorch's `LinearLR`, the usual linear warm-up.
///
/// ```text
/// lr = initial_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters)
/// ```
#[derive(Clone, Debug)]
pub struct LinearLR {
    base: Base,
    start_factor: f64,
    end_factor: f64,
    total_iters: usize,
}

impl LinearLR {
    /// Linear change of the factor over `total_iters` epochs (PyTorch's
    /// defaults: start 1/3, end 1, 5 iterations).
    ///
    /// Panics unless `0 < start_factor <= 1`, `0 <= end_factor <= 1` and
    /// `total_iters >= 1`.
    #[track_caller]
    pub fn new(
        opt: &mut dyn Optimizer,
        start_factor: f64,
        end_factor: f64,
        total_iters: usize,
    ) -> Self {
        assert!(
            start_factor > 0.0 && start_factor <= 1.0,
            "LinearLR: Starting multiplicative factor expected to be greater than 0 and less or \
             equal to 1, got {start_factor}"
        );
        assert!(
            (0.0..=1.0).contains(&end_factor),
            "LinearLR: Ending multiplicative factor expected to be between 0 and 1, got \
             {end_factor}"
        );
        assert!(
            total_iters >= 1,
            "LinearLR: total_iters must be at least 1 (the epochs the factor takes to change), \
             got 0"
        );
        let mut s = LinearLR {
            base: Base::new("LinearLR", opt),
            start_factor,
            end_factor,
            total_iters,
        };
        let lrs = s.lr_at(0);
        s.base.apply(opt, lrs);
        s
    }
}

impl LrScheduler for LinearLR {
    closed_form_scheduler!();
    fn lr_at(&self, epoch: usize) -> Vec<f64> {
        let t = epoch.min(self.total_iters) as f64 / self.total_iters as f64;
        let factor = self.start_factor + (self.end_factor - self.start_factor) * t;
        self.base.base_lrs.iter().map(|lr| lr * factor).collect()
    }
    fn state_dict(&self) -> Vec<(String, f64)> {
        self.base.save(&[
            ("start_factor", self.start_factor),
            ("end_factor", self.end_factor),
            ("total_iters", self.total_iters as f64),
        ])
    }
    fn load_state_dict(&mut self, state: &[(String, f64)]) -> Result<()> {
        let mut base = self.base.clone();
        let o = base.load(state, &["start_factor", "end_factor", "total_iters"])?;
        self.total_iters = as_count("LinearLR", "total_iters", o[2])?;
        self.start_factor = o[0];
        self.end_factor = o[1];
        self.base = base;
        Ok(())
    }
}

/// Runs schedulers one after another, switching at the milestone epochs:
/// PyTorch's `SequentialLR`. Scheduler `k` runs from `milestones[k - 1]`,
/// restarted at its own epoch 0 there.
///
/// ```
/// use deriv_runtime::optim::lr_scheduler::{CosineAnnealingLR, LinearLR, LrScheduler, SequentialLR};
/// use deriv_runtime::optim::{Optimizer, SGD};
/// use deriv_runtime::Tensor;
///
/// let mut opt = SGD::new(vec![Tensor::zeros([2]).requires_grad_(true)], 1.0);
/// let warmup = LinearLR::new(&mut opt, 0.25, 1.0, 3);
/// let cosine = CosineAnnealingLR::new(&mut opt, 4, 0.0);
/// let mut sched = SequentialLR::new(&mut opt, vec![Box::new(warmup), Box::new(cosine)], vec![3]);
/// let mut lrs = vec![];
/// for _ in 0..8 {
///     lrs.push(opt.lr());
///     sched.step(&mut opt);
/// }
/// let cos = |e: f64| (1.0 + (std::f64::consts::PI * e / 4.0).cos()) / 2.0;
/// let expected = [0.25, 0.5, 0.75, 1.0, cos(1.0), cos(2.0), cos(3.0), 0.0];
/// for (a, b) in lrs.iter().zip(expected) {
///     assert!((a - b).abs() < 1e-12);
/// }
/// ```
pub struct SequentialLR {
    base: Base,
    schedulers: Vec<Box<dyn LrScheduler>>,
    milestones: Vec<usize>,
}

impl SequentialLR {
    /// `schedulers` (built on `opt`, in order) switched at `milestones`
    /// (increasing epochs, one fewer than the schedulers). Sets the first
    /// scheduler's epoch-0 learning rates.
    ///
    /// Panics when the counts do not match or the milestones do not increase.
    #[track_caller]
    pub fn new(
        opt: &mut dyn Optimizer,
        schedulers: Vec<Box<dyn LrScheduler>>,
        milestones: Vec<usize>,
    ) -> Self {
        assert!(
            !schedulers.is_empty(),
            "SequentialLR expects at least one scheduler"
        );
        assert!(
            milestones.len() + 1 == schedulers.len(),
            "SequentialLR: Sequential Schedulers expects number of schedulers provided to be one \
             more than the number of milestone points, but got number of schedulers {} and the \
             number of milestones to be equal to {}",
            schedulers.len(),
            milestones.len()
        );
        assert!(
            milestones.windows(2).all(|w| w[0] < w[1]),
            "SequentialLR: milestones must increase, got {milestones:?}"
        );
        let mut s = SequentialLR {
            base: Base::new("SequentialLR", opt),
            schedulers,
            milestones,
        };
        let lrs = s.lr_at(0);
        s.base.apply(opt, lrs);
        s
    }

    /// Linear warm-up then cosine annealing: the factor goes from
    /// `start_factor` to 1 over `warmup_iters` epochs, then the lr anneals
    /// to `eta_min` over the remaining `total_iters - warmup_iters`. The same
    /// as PyTorch's
    /// `SequentialLR(opt, [LinearLR(opt, start_factor, 1.0, warmup_iters),
    /// CosineAnnealingLR(opt, total_iters - warmup_iters, eta_min)], [warmup_iters])`.
    ///
    /// Panics unless `1 <= warmup_iters < total_iters` and `0 < start_factor <= 1`.
    #[track_caller]
    pub fn warmup_cosine(
        opt: &mut dyn Optimizer,
        start_factor: f64,
        warmup_iters: usize,
        total_iters: usize,
        eta_min: f64,
    ) -> Self {
        assert!(
            warmup_iters < total_iters,
            "SequentialLR::warmup_cosine: warmup_iters ({warmup_iters}) must be less than \
             total_iters ({total_iters})"
        );
        let warmup = LinearLR::new(opt, start_factor, 1.0, warmup_iters);
        let cosine = CosineAnnealingLR::new(opt, total_iters - warmup_iters, eta_min);
        SequentialLR::new(
            opt,
            vec![Box::new(warmup), Box::new(cosine)],
            vec![warmup_iters],
        )
    }
}

impl LrScheduler for SequentialLR {
    closed_form_scheduler!();
    fn lr_at(&self, epoch: usize) -> Vec<f64> {
        let k = self.milestones.partition_point(|&m| m <= epoch);
        let start = if k == 0 { 0 } else { self.milestones[k - 1] };
        self.schedulers[k].lr_at(epoch - start)
    }
    fn state_dict(&self) -> Vec<(String, f64)> {
        let milestones: Vec<(String, f64)> = self
            .milestones
            .iter()
            .enumerate()
            .map(|(k, &m)| (format!("milestones.{k}"), m as f64))
            .collect();
        let mut out = self.base.save(&[]);
        out.extend(milestones);
        for (k, s) in self.schedulers.iter().enumerate() {
            out.extend(
                s.state_dict()
                    .into_iter()
                    .map(|(key, v)| (format!("schedulers.{k}.{key}"), v)),
            );
        }
        out
    }
    fn load_state_dict(&mut self, state: &[(String, f64)]) -> Result<()> {
        let mut base = self.base.clone();
        let keys: Vec<String> = (0..self.milestones.len())
            .map(|k| format!("milestones.{k}"))
            .collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        // Only this level's entries: the children's carry a prefix.
        let own: Vec<(String, f64)> = state
            .iter()
            .filter(|(k, _)| !k.starts_with("schedulers."))
            .cloned()
            .collect();
        let milestones = base.load(&own, &key_refs)?;
        let milestones: Vec<usize> = milestones.into_iter().map(|m| m as usize).collect();
        // Load children into copies first, so an error changes nothing.
        let mut children: Vec<(usize, Vec<(String, f64)>)> = Vec::new();
        for k in 0..self.schedulers.len() {
            let prefix = format!("schedulers.{k}.");
            let sub: Vec<(String, f64)> = state
                .iter()
                .filter_map(|(key, v)| key.strip_prefix(&prefix).map(|r| (r.to_string(), *v)))
                .collect();
            children.push((k, sub));
        }
        let saved: Vec<Vec<(String, f64)>> =
            self.schedulers.iter().map(|s| s.state_dict()).collect();
        for (k, sub) in &children {
            if let Err(e) = self.schedulers[*k].load_state_dict(sub) {
                for (j, old) in saved.iter().enumerate().take(*k) {
                    self.schedulers[j]
                        .load_state_dict(old)
                        .expect("restoring a state this scheduler saved");
                }
                return Err(e);
            }
        }
        self.milestones = milestones;
        self.base = base;
        Ok(())
    }
}
