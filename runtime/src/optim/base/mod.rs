//! What every optimizer shares: groups and their options, per-parameter state
//! allocated on the first step and reused after, the step loop (storage locks,
//! non-contiguous tensors, parallel split of large parameters), and state
//! save / load under PyTorch's names.

use std::collections::HashSet;

use super::{opt, OptimizerState, ParamGroup};
use crate::autograd::NoGradGuard;
use crate::backend::{cpu, lock_storages, Buffer};
use crate::error::{Error, Result};
use crate::tensor::{DType, Float, Layout, Tensor, TensorImpl};

mod options;
use options::*;

/// State buffers per parameter, at most (Adam: exp_avg, exp_avg_sq, max_exp_avg_sq).
pub(crate) const SLOTS: usize = 3;

/// One optimizer's rule: its options, state buffers and per-element update.
pub(crate) trait Algorithm: Send + Sync {
    /// PyTorch's class name, for messages.
    fn name(&self) -> &'static str;
    /// The `opt::*` bits of the options this optimizer reads.
    fn options(&self) -> u16;
    /// State buffer names by slot (`""` for an unused slot).
    fn slot_names(&self) -> [&'static str; SLOTS];
    /// Whether the state holds a step count (`state.{i}.step`).
    fn has_step(&self) -> bool {
        true
    }
    /// Checks across options (the per-option ranges are checked by `check_group`).
    fn check(&self, _g: &ParamGroup) -> std::result::Result<(), String> {
        Ok(())
    }
    /// Which slots a group with these options uses.
    fn slots(&self, g: &ParamGroup) -> [bool; SLOTS];
    /// The value a new buffer in `slot` starts from.
    fn init_value(&self, _slot: usize, _g: &ParamGroup) -> f64 {
        0.0
    }
    /// The update of one contiguous run of a parameter: `step` counts this
    /// step (1 on the first), `fresh` says the state buffers were just created,
    /// and unused slots are empty.
    #[allow(clippy::too_many_arguments)]
    fn update<F: Float>(
        &self,
        g: &ParamGroup,
        step: u64,
        fresh: bool,
        p: &mut [F],
        grad: &[F],
        s: [&mut [F]; SLOTS],
    );
    /// The same update on a CUDA parameter, through the backend's fused
    /// kernel (`bufs` holds the used slots' state tensors, on the device).
    #[cfg(feature = "cuda")]
    #[allow(clippy::too_many_arguments)]
    fn update_cuda(
        &self,
        g: &ParamGroup,
        step: u64,
        fresh: bool,
        p: &crate::backend::Array,
        grad: &crate::backend::Array,
        bufs: [Option<&crate::backend::Array>; SLOTS],
    );
}

/// A parameter's state: its step count and its buffers by slot.
#[derive(Clone, Default)]
struct ParamState {
    step: u64,
    bufs: [Option<Tensor>; SLOTS],
}

/// Reused gathering space for non-contiguous parameters and gradients.
#[derive(Default)]
pub(crate) struct Scratch {
    p32: Vec<f32>,
    g32: Vec<f32>,
    p64: Vec<f64>,
    g64: Vec<f64>,
}

/// The float types optimizers update, with access to their storage buffers.
trait OptFloat: Float {
    fn slice(b: &Buffer) -> &[Self];
    fn slice_mut(b: &mut Buffer) -> &mut [Self];
    fn scratch(s: &mut Scratch) -> (&mut Vec<Self>, &mut Vec<Self>);
}

macro_rules! impl_opt_float {
    ($t:ty, $v:ident, $p:ident, $g:ident) => {
        impl OptFloat for $t {
            fn slice(b: &Buffer) -> &[Self] {
                match b {
                    Buffer::$v(v) => v,
                    _ => panic!(
                        "optimizer step: expected a host {} buffer; a device backend needs \
                         its kernel beside optim/fused.rs",
                        stringify!($t)
                    ),
                }
            }
            fn slice_mut(b: &mut Buffer) -> &mut [Self] {
                match b {
                    Buffer::$v(v) => v,
                    _ => panic!(
                        "optimizer step: expected a host {} buffer; a device backend needs \
                         its kernel beside optim/fused.rs",
                        stringify!($t)
                    ),
                }
            }
            fn scratch(s: &mut Scratch) -> (&mut Vec<Self>, &mut Vec<Self>) {
                (&mut s.$p, &mut s.$g)
            }
        }
    };
}
impl_opt_float!(f32, F32, p32, g32);
impl_opt_float!(f64, F64, p64, g64);

/// The shared optimizer: groups, defaults, per-parameter state and scratch.
pub(crate) struct Core<A: Algorithm> {
    pub(crate) algo: A,
    /// The options groups inherit (its `params` is empty).
    pub(crate) defaults: ParamGroup,
    pub(crate) groups: Vec<ParamGroup>,
    /// One entry per parameter, counting across groups in order.
    state: Vec<ParamState>,
    scratch: Scratch,
}

impl<A: Algorithm> Core<A> {
    /// An optimizer over `groups`; `defaults` holds the constructor's options.
    #[track_caller]
    pub(crate) fn new(algo: A, defaults: ParamGroup, groups: Vec<ParamGroup>) -> Self {
        let name = algo.name();
        if groups.iter().all(|g| g.params.is_empty()) {
            panic!(
                "{name}: optimizer got an empty parameter list; pass the model's parameters, \
                 e.g. `{name}::new(model.parameters(), lr)`"
            );
        }
        for s in &OPTIONS {
            if algo.options() & s.bit != 0
                && let Err(e) = check_field(s.bit, &defaults)
            {
                panic!("{name}: {e}");
            }
        }
        let mut core = Core {
            algo,
            defaults,
            groups: Vec::new(),
            state: Vec::new(),
            scratch: Scratch::default(),
        };
        for g in groups {
            core.add_param_group(g);
        }
        core
    }

    /// Sets a default option (a builder method of the optimizer) and every
    /// group's value of it, except in groups that set it themselves.
    #[track_caller]
    pub(crate) fn set_default(&mut self, bit: u16, f: impl Fn(&mut ParamGroup)) {
        f(&mut self.defaults);
        if let Err(e) = check_field(bit, &self.defaults) {
            panic!("{}: {e}", self.algo.name());
        }
        for g in &mut self.groups {
            if g.set & bit == 0 {
                f(g);
            }
        }
    }

    #[track_caller]
    pub(crate) fn add_param_group(&mut self, mut group: ParamGroup) {
        let name = self.algo.name();
        let extra = group.set & !self.algo.options();
        if extra != 0 {
            panic!(
                "{name}: the parameter group sets {}, which {name} does not have; \
                 {name}'s options are {}",
                option_names(extra),
                option_names(self.algo.options())
            );
        }
        for s in &OPTIONS {
            if group.set & s.bit == 0 {
                (s.set)(&mut group, (s.get)(&self.defaults));
            }
        }
        let gi = self.groups.len();
        let mut seen: HashSet<*const TensorImpl> = self
            .groups
            .iter()
            .flat_map(|g| g.params.iter().map(|p| std::sync::Arc::as_ptr(&p.0)))
            .collect();
        for (j, p) in group.params.iter().enumerate() {
            if !p.is_leaf() {
                panic!(
                    "{name}: can't optimize a non-leaf tensor (parameter {j} of group {gi} was \
                     made by {}); pass the leaf itself, or `t.detach().requires_grad_(true)`",
                    p.grad_fn().unwrap_or("an op")
                );
            }
            if !p.dtype().is_float() {
                panic!(
                    "{name}: parameter {j} of group {gi} is a {} tensor; only f32 and f64 \
                     parameters can be optimized",
                    p.dtype()
                );
            }
            if !seen.insert(std::sync::Arc::as_ptr(&p.0)) {
                panic!(
                    "{name}: parameter {j} of group {gi} appears more than once in the \
                     optimizer's parameter groups; pass each parameter once"
                );
            }
        }
        if let Err(e) = check_group(&self.algo, &group) {
            panic!("{name}, parameter group {gi}: {e}");
        }
        self.state
            .resize_with(self.state.len() + group.params.len(), ParamState::default);
        self.groups.push(group);
    }

    pub(crate) fn zero_grad(&mut self) {
        for p in self.groups.iter().flat_map(|g| &g.params) {
            p.set_grad_none_recycling();
        }
    }

    pub(crate) fn zero_grad_in_place(&mut self) {
        for p in self.groups.iter().flat_map(|g| &g.params) {
            p.zero_grad();
        }
    }

    #[track_caller]
    pub(crate) fn step(&mut self) {
        let _no_grad = NoGradGuard::new();
        let Core {
            algo,
            groups,
            state,
            scratch,
            ..
        } = self;
        let name = algo.name();
        let total: usize = groups.iter().map(|g| g.params.len()).sum();
        if total != state.len() {
            panic!(
                "{name}: the parameter groups hold {total} parameters but the optimizer has \
                 state for {}; add parameters with add_param_group, not by editing \
                 param_groups_mut()[..].params",
                state.len()
            );
        }
        let mut i = 0;
        for (gi, group) in groups.iter().enumerate() {
            if let Err(e) = check_group(&*algo, group) {
                panic!("{name}, parameter group {gi}: {e}");
            }
            let slots = algo.slots(group);
            for p in &group.params {
                let st = &mut state[i];
                i += 1;
                let Some(g) = p.grad() else { continue };
                if g.dtype() != p.dtype() || g.device() != p.device() {
                    panic!(
                        "{name}: parameter {} is {} on {} but its grad is {} on {}; a grad must \
                         match its parameter's dtype and device",
                        i - 1,
                        p.dtype(),
                        p.device(),
                        g.dtype(),
                        g.device()
                    );
                }
                let mut fresh = false;
                for (k, &used) in slots.iter().enumerate() {
                    if used && st.bufs[k].is_none() {
                        let v = algo.init_value(k, group);
                        st.bufs[k] = Some(Tensor::full_opts(p.shape(), v, &p.options()));
                        fresh = true;
                    }
                }
                if algo.has_step() {
                    st.step += 1;
                }
                let bufs: [Option<&Tensor>; SLOTS] =
                    std::array::from_fn(|k| st.bufs[k].as_ref().filter(|_| slots[k]));
                if p.device().is_cuda() {
                    #[cfg(feature = "cuda")]
                    {
                        let grad = if g.is_contiguous() { g } else { g.contiguous() };
                        let bufs = bufs.map(|b| b.map(Tensor::array));
                        algo.update_cuda(group, st.step, fresh, p.array(), grad.array(), bufs);
                        continue;
                    }
                    #[cfg(not(feature = "cuda"))]
                    unreachable!("a CUDA tensor exists only with the cuda feature");
                }
                match p.dtype() {
                    DType::F32 => {
                        apply::<f32, A>(algo, group, st.step, fresh, p, &g, bufs, scratch)
                    }
                    DType::F64 => {
                        apply::<f64, A>(algo, group, st.step, fresh, p, &g, bufs, scratch)
                    }
                    d => unreachable!("{d} parameters are refused when added"),
                }
            }
        }
    }

    pub(crate) fn state_dict(&self) -> OptimizerState {
        let _no_grad = NoGradGuard::new();
        let mut out = OptimizerState::default();
        for (gi, g) in self.groups.iter().enumerate() {
            out.scalars.push((
                format!("param_groups.{gi}.num_params"),
                g.params.len() as f64,
            ));
            for s in &OPTIONS {
                if self.algo.options() & s.bit != 0 {
                    out.scalars
                        .push((format!("param_groups.{gi}.{}", s.key), (s.get)(g)));
                }
            }
            if let Some(lr) = g.initial_lr {
                out.scalars
                    .push((format!("param_groups.{gi}.initial_lr"), lr));
            }
        }
        let names = self.algo.slot_names();
        for (i, st) in self.state.iter().enumerate() {
            let has_bufs = st.bufs.iter().any(Option::is_some);
            if !has_bufs && st.step == 0 {
                continue;
            }
            if self.algo.has_step() {
                out.scalars
                    .push((format!("state.{i}.step"), st.step as f64));
            }
            for (k, b) in st.bufs.iter().enumerate() {
                if let Some(t) = b {
                    out.tensors
                        .push((format!("state.{i}.{}", names[k]), t.clone_data()));
                }
            }
        }
        out
    }

    pub(crate) fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        let _no_grad = NoGradGuard::new();
        let name = self.algo.name();
        let err = |msg: String| Error::Invalid(format!("{name}.load_state_dict: {msg}"));
        let scalar = |key: &str| state.scalar(key);
        let ngroups = self.groups.len();
        let total = self.state.len();
        let names = self.algo.slot_names();

        // Nothing under state.* or param_groups.* that this optimizer would not write.
        for (key, _) in &state.scalars {
            if let Some(rest) = key.strip_prefix("param_groups.") {
                let (g, opt_key) = rest.split_once('.').unwrap_or((rest, ""));
                let known = OPTIONS
                    .iter()
                    .any(|s| self.algo.options() & s.bit != 0 && s.key == opt_key)
                    || opt_key == "num_params"
                    || opt_key == "initial_lr";
                match g.parse::<usize>() {
                    Ok(g) if g >= ngroups => {
                        return Err(err(format!(
                            "the saved state has more parameter groups than this optimizer's \
                             {ngroups} (found `{key}`); build the optimizer with the same \
                             groups as the one that was saved"
                        )));
                    }
                    Ok(_) if known => {}
                    _ => {
                        return Err(err(format!(
                            "unexpected entry `{key}`: not an option of {name} (was the state \
                             saved by another kind of optimizer?)"
                        )));
                    }
                }
            } else if let Some(rest) = key.strip_prefix("state.") {
                let ok = match rest.split_once('.') {
                    Some((i, "step")) => {
                        self.algo.has_step() && i.parse::<usize>().is_ok_and(|i| i < total)
                    }
                    _ => false,
                };
                if !ok {
                    return Err(err(format!(
                        "unexpected entry `{key}`: {name} keeps no such state for its {total} \
                         parameters (was the state saved by another optimizer?)"
                    )));
                }
            }
        }
        for (key, _) in &state.tensors {
            if let Some(rest) = key.strip_prefix("state.") {
                let ok = match rest.split_once('.') {
                    Some((i, slot)) => {
                        !slot.is_empty()
                            && names.contains(&slot)
                            && i.parse::<usize>().is_ok_and(|i| i < total)
                    }
                    None => false,
                };
                if !ok {
                    return Err(err(format!(
                        "unexpected tensor `{key}`: {name} keeps no such state for its \
                         {total} parameters (was the state saved by another optimizer?)"
                    )));
                }
            }
        }

        // Group options.
        let mut groups = self.groups.clone();
        for (gi, g) in groups.iter_mut().enumerate() {
            let key = format!("param_groups.{gi}.num_params");
            let n = scalar(&key).ok_or_else(|| err(format!("missing `{key}`")))?;
            if n != g.params.len() as f64 {
                return Err(err(format!(
                    "parameter group {gi} has {} parameters but the saved group had {n}; build \
                     the optimizer with the same parameter groups as the one that was saved",
                    g.params.len()
                )));
            }
            for s in &OPTIONS {
                if self.algo.options() & s.bit != 0 {
                    let key = format!("param_groups.{gi}.{}", s.key);
                    let v = scalar(&key).ok_or_else(|| err(format!("missing `{key}`")))?;
                    (s.set)(g, v);
                }
            }
            if let Some(lr) = scalar(&format!("param_groups.{gi}.initial_lr")) {
                g.initial_lr = Some(lr);
            }
            check_group(&self.algo, g)
                .map_err(|e| err(format!("saved parameter group {gi}: {e}")))?;
        }

        // Per-parameter state.
        let mut new_state = Vec::with_capacity(total);
        let params = groups
            .iter()
            .flat_map(|g| g.params.iter().map(move |p| (g, p)));
        for (i, (g, p)) in params.enumerate() {
            let mut st = ParamState::default();
            for (k, slot) in names.iter().enumerate() {
                if slot.is_empty() {
                    continue;
                }
                let key = format!("state.{i}.{slot}");
                let Some(t) = state.tensor(&key) else {
                    continue;
                };
                if !crate::tensor::same_shape(t.shape(), p.shape()) {
                    return Err(err(format!(
                        "`{key}` has shape {:?} but parameter {i} has shape {:?}; load a state \
                         saved from an optimizer over the same parameters",
                        t.shape(),
                        p.shape()
                    )));
                }
                if !t.dtype().is_float() {
                    return Err(err(format!(
                        "`{key}` is a {} tensor; optimizer state is floating point",
                        t.dtype()
                    )));
                }
                // A private contiguous copy in the parameter's dtype and device.
                st.bufs[k] = Some(t.to(&p.device()).to_dtype(p.dtype()).detach().clone_data());
            }
            let step_key = format!("state.{i}.step");
            let step = scalar(&step_key);
            let has_bufs = st.bufs.iter().any(Option::is_some);
            if self.algo.has_step() {
                match step {
                    None if has_bufs => {
                        return Err(err(format!(
                            "missing `{step_key}` (parameter {i} has saved buffers)"
                        )));
                    }
                    None => {}
                    Some(s) if s >= 0.0 && s.fract() == 0.0 && s < 9.0e15 => st.step = s as u64,
                    Some(s) => {
                        return Err(err(format!(
                            "`{step_key}` is {s}; a step count is a whole number >= 0"
                        )));
                    }
                }
            }
            if has_bufs || st.step > 0 {
                for (k, &used) in self.algo.slots(g).iter().enumerate() {
                    if used && st.bufs[k].is_none() {
                        return Err(err(format!(
                            "missing `state.{i}.{}` (parameter {i} has saved state, and its \
                             group's options use this buffer)",
                            names[k]
                        )));
                    }
                }
            }
            new_state.push(st);
        }

        for (g, new) in self.groups.iter_mut().zip(groups) {
            let params = std::mem::take(&mut g.params);
            *g = ParamGroup { params, ..new };
        }
        self.state = new_state;
        Ok(())
    }
}

/// Gathers `t`'s elements in row-major order into `out[..numel]`.
fn gather<F: OptFloat>(t: &Tensor, out: &mut Vec<F>) {
    let n = t.numel();
    if out.len() < n {
        out.resize(n, F::ZERO);
    }
    let src = t.storage().read();
    cpu::update(
        "optimizer step",
        &mut out[..n],
        &Layout::contiguous(t.shape()),
        F::slice(&src),
        t.layout(),
        |_, y| y,
    );
}

/// Locks one parameter, its gradient and its state, and runs the update over
/// contiguous slices (gathering a non-contiguous gradient or parameter into
/// scratch space first, and scattering the parameter back after).
#[allow(clippy::too_many_arguments)]
fn apply<F: OptFloat, A: Algorithm>(
    algo: &A,
    group: &ParamGroup,
    step: u64,
    fresh: bool,
    p: &Tensor,
    g: &Tensor,
    bufs: [Option<&Tensor>; SLOTS],
    scratch: &mut Scratch,
) {
    let n = p.numel();
    let (sp, sg) = F::scratch(scratch);
    // The gradient is read in place unless it is strided or shares the
    // parameter's storage (which is about to be locked for writing).
    let in_place = g.is_contiguous() && !g.shares_storage(p);
    if !in_place {
        gather(g, sg);
    }
    // The gradient (when read in place), the parameter and the state buffers,
    // locked together in the global lock order: another thread may be
    // copying between a parameter and a gradient the other way round.
    let (g_guard, w_guards) = lock_storages(
        [in_place.then(|| &**g.storage())],
        [
            Some(&**p.storage()),
            bufs[0].map(|t| &**t.storage()),
            bufs[1].map(|t| &**t.storage()),
            bufs[2].map(|t| &**t.storage()),
        ],
    );
    let [g_guard] = g_guard;
    let [p_guard, s0, s1, s2] = w_guards;
    let mut guards = [s0, s1, s2];
    let gs: &[F] = match &g_guard {
        Some(gd) => {
            let off = g.layout().offset;
            &F::slice(gd)[off..off + n]
        }
        None => &sg[..n],
    };
    let mut p_guard = p_guard.expect("a named storage is locked");
    let pl = p.layout();
    let contiguous = p.is_contiguous();
    {
        let ps: &mut [F] = if contiguous {
            &mut F::slice_mut(&mut p_guard)[pl.offset..pl.offset + n]
        } else {
            if sp.len() < n {
                sp.resize(n, F::ZERO);
            }
            cpu::update(
                "optimizer step",
                &mut sp[..n],
                &Layout::contiguous(p.shape()),
                F::slice(&p_guard),
                pl,
                |_, y| y,
            );
            &mut sp[..n]
        };
        let ss: [&mut [F]; SLOTS] = guards.each_mut().map(|o| match o {
            Some(gd) => &mut F::slice_mut(gd)[..n],
            None => &mut [][..],
        });
        run(algo, group, step, fresh, ps, gs, ss);
    }
    if !contiguous {
        cpu::update(
            "optimizer step",
            F::slice_mut(&mut p_guard),
            pl,
            &sp[..n],
            &Layout::contiguous(p.shape()),
            |_, y| y,
        );
    }
}

/// Runs the update on one thread below the backend's parallel threshold,
/// else on disjoint ranges in parallel (the kernels are elementwise, so the
/// split changes no result).
fn run<F: Float, A: Algorithm>(
    algo: &A,
    group: &ParamGroup,
    step: u64,
    fresh: bool,
    p: &mut [F],
    g: &[F],
    s: [&mut [F]; SLOTS],
) {
    let n = p.len();
    let parts = if n < cpu::PAR_THRESHOLD {
        1
    } else {
        rayon::current_num_threads()
            .min(n / (cpu::PAR_THRESHOLD / 2))
            .max(1)
    };
    if parts == 1 {
        algo.update(group, step, fresh, p, g, s);
        return;
    }
    let pp = cpu::SharedPtr::new(p.as_mut_ptr());
    let sp = s.map(|x| (cpu::SharedPtr::new(x.as_mut_ptr()), x.len()));
    // Range ends on 16-element boundaries, so no two parts write one cache line.
    let bound = |i: usize| if i == parts { n } else { (n * i / parts) & !15 };
    cpu::par_parts(parts, |i| {
        let (a, b) = (bound(i), bound(i + 1));
        // SAFETY: the ranges [a, b) are disjoint across parts and inside the
        // n elements of p and of every non-empty state slice (all have length n).
        let p = unsafe { std::slice::from_raw_parts_mut(pp.get().add(a), b - a) };
        let s = sp.map(|(ptr, len)| {
            if len == 0 {
                &mut [][..]
            } else {
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts_mut(ptr.get().add(a), b - a) }
            }
        });
        algo.update(group, step, fresh, p, &g[a..b], s);
    });
}
