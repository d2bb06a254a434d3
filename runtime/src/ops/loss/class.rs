use super::*;
use crate::autograd::{apply, GradSlot, Op, Out, Spec};

// ---------------------------------------------------------------- class targets: nll_loss, cross_entropy

/// Class-index targets checked and prepared against an input of shape
/// `[N, C, d1..]` (a `[C]` input is handled as `[1, C]`).
pub(crate) struct ClassTargets {
    /// Whether the input had a batch dim (`[C]` inputs get one of size 1).
    batched: bool,
    /// The input's shape and dtype as given.
    input_shape: Vec<usize>,
    dtype: DType,
    n_classes: usize,
    /// `[N, 1, d1..]` i64: the targets, ignored entries replaced by class 0.
    idx: Tensor,
    /// `[N, d1..]` bool: the entries not equal to `ignore_index`.
    valid: Tensor,
    /// `[N, d1..]` float: the class weight of each target, 0 where ignored
    /// (without class weights: `valid` as a float mask).
    wt: Tensor,
    /// `[1, C, 1..]` class weights in the input's dtype.
    wb: Option<Tensor>,
    /// 0-d: Σ of the class weights, for label smoothing (`None` without
    /// weights: C).
    wsum: Option<Tensor>,
}

impl ClassTargets {
    /// The unreduced loss's shape: the target's.
    pub(super) fn elem_shape(&self) -> Vec<usize> {
        if self.batched {
            self.valid.shape().to_vec()
        } else {
            vec![]
        }
    }

    /// The per-element loss in the target's shape: masked, then reduced.
    pub(super) fn finish(&self, terms: Tensor, reduction: Reduction) -> Tensor {
        // where, not a product: an ignored entry's -inf log-prob must not give NaN.
        let l = Tensor::where_cond(&self.valid, &-&terms, &terms.zeros_like());
        match reduction {
            Reduction::None => {
                if self.batched {
                    l
                } else {
                    l.reshape(Vec::<usize>::new())
                }
            }
            Reduction::Sum => l.sum(),
            Reduction::Mean => l.sum() / &self.wt.sum(),
        }
    }

    /// `t · Σ_c w_c`.
    pub(super) fn times_wsum(&self, t: &Tensor) -> Tensor {
        match &self.wsum {
            Some(s) => t * s,
            None => t * self.n_classes as f64,
        }
    }

    /// `seed / denominator` per element, 0 where ignored: `[N, d1..]`.
    pub(super) fn coef(&self, seed: Seed, reduction: Reduction) -> Tensor {
        let valid = self.valid.to_dtype(self.wt.dtype());
        match (reduction, seed) {
            (Reduction::Mean, Seed::One) => valid / &self.wt.sum(),
            (Reduction::Mean, Seed::Times(g)) => valid * &(g / &self.wt.sum()),
            (_, Seed::One) => valid,
            (Reduction::Sum, Seed::Times(g)) => valid * g,
            (Reduction::None, Seed::Times(g)) => {
                let g = if self.batched {
                    g.clone()
                } else {
                    g.reshape([1usize])
                };
                valid * &g
            }
        }
    }
}

/// Checks the input and class-index target of `op` and prepares them.
pub(super) fn class_targets(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
) -> Result<ClassTargets> {
    check_float(op, "input", input)?;
    if input.ndim() == 0 {
        return Err(Error::shape(
            op,
            "expected an input of shape [C], [N, C] or [N, C, d1, ...], got a 0-d tensor",
        ));
    }
    crate::ops::same_device(op, input, target)?;
    if target.dtype() != DType::I64 {
        return Err(Error::dtype(
            op,
            format!(
                "expected an i64 target of class indices, got {} of shape {:?}; convert with \
                 .to_dtype(DType::I64){}",
                target.dtype(),
                target.shape(),
                if op == "cross_entropy" {
                    format!(
                        ", or pass class probabilities as a float target of the input's shape {:?}",
                        input.shape()
                    )
                } else {
                    String::new()
                }
            ),
        ));
    }
    let batched = input.ndim() > 1;
    let want: Vec<usize> = input
        .shape()
        .iter()
        .enumerate()
        .filter(|&(d, _)| d != if batched { 1 } else { 0 })
        .map(|(_, &s)| s)
        .collect();
    if target.shape() != want.as_slice() {
        return Err(Error::shape(
            op,
            format!(
                "expected a target of shape {want:?} for an input of shape {:?} (the input \
                 without its class dim {}), got {:?}",
                input.shape(),
                if batched { 1 } else { 0 },
                target.shape()
            ),
        ));
    }
    let n_classes = input.shape()[if batched { 1 } else { 0 }];
    let dt = input.dtype();
    let wb = match weight {
        None => None,
        Some(w) => {
            if w.ndim() != 1 || w.numel() != n_classes {
                return Err(Error::shape(
                    op,
                    format!(
                        "weight tensor should be defined either for all {n_classes} classes \
                         or no classes but got weight tensor of shape: {:?}",
                        w.shape()
                    ),
                ));
            }
            crate::ops::same_device(op, input, w)?;
            Some(w.detach().to_dtype(dt))
        }
    };
    no_grad(|| {
        let t = if batched {
            target.clone()
        } else {
            target.reshape([1usize])
        };
        let valid = t.ne_scalar(ignore_index as f64);
        let safe = &t * &valid;
        if safe.numel() > 0 {
            let (lo, hi) = (safe.min().item(), safe.max().item());
            if lo < 0.0 || hi >= n_classes as f64 {
                let bad = if lo < 0.0 { lo } else { hi };
                return Err(Error::Invalid(format!(
                    "{op}: target {bad} is out of bounds: class indices must be in [0, {}) \
                     for {n_classes} classes (or equal ignore_index {ignore_index})",
                    n_classes
                )));
            }
        }
        let (wt, wsum, wb) = match wb {
            None => (valid.to_dtype(dt), None, None),
            Some(w) => {
                let wt = w
                    .index_select(0, &safe.reshape([-1i64]))
                    .reshape(safe.shape());
                wt.mul_(&valid);
                let mut shape = vec![1; t.ndim() + 1];
                shape[1] = n_classes;
                (wt, Some(w.sum()), Some(w.reshape(shape)))
            }
        };
        Ok(ClassTargets {
            batched,
            input_shape: input.shape().to_vec(),
            dtype: dt,
            n_classes,
            idx: safe.unsqueeze(1),
            valid,
            wt,
            wb,
            wsum,
        })
    })
}

/// Fails unless `0 <= label_smoothing <= 1`.
pub(super) fn check_smoothing(op: &'static str, eps: f64) -> Result<()> {
    if (0.0..=1.0).contains(&eps) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{op}: label_smoothing must be between 0.0 and 1.0, got {eps}"
        )))
    }
}

/// The input viewed as `[N, C, d1..]`.
pub(super) fn batched_view(x: &Tensor, batched: bool) -> Tensor {
    if batched {
        x.clone()
    } else {
        x.unsqueeze(0)
    }
}

/// A gradient back in the input's shape (and dtype).
pub(super) fn unbatched(g: Tensor, ct: &ClassTargets) -> Tensor {
    let g = in_dtype(g, ct.dtype);
    if ct.batched {
        g
    } else {
        g.reshape(ct.input_shape.clone())
    }
}

/// The loss of log-probabilities `lp` against class indices, with label smoothing `eps`.
pub(super) fn class_lp_loss(
    lp: &Tensor,
    ct: &ClassTargets,
    eps: f64,
    reduction: Reduction,
) -> Tensor {
    no_grad(|| {
        let lp = batched_view(lp, ct.batched);
        let picked = lp.gather(1, &ct.idx).squeeze_dim(1);
        // Σ over the targets' weights: w_t·lp_t (wt is 0 where ignored; `finish` masks anyway).
        let mut terms = match &ct.wb {
            Some(_) => picked * &ct.wt,
            None => picked,
        };
        if eps > 0.0 {
            let smooth = match &ct.wb {
                Some(wb) => (&lp * wb).sum_dim(1, false),
                None => lp.sum_dim(1, false),
            };
            terms = terms * (1.0 - eps) + smooth * (eps / ct.n_classes as f64);
        }
        ct.finish(terms, reduction)
    })
}

/// dL/d(log-probs) of the class-index loss: the rule of the tape's
/// `NllLossBackward` node (shared by `nll_loss` and `cross_entropy`).
pub(super) fn class_lp_grad(
    ct: &ClassTargets,
    eps: f64,
    reduction: Reduction,
    seed: Seed,
    dtype: DType,
) -> Tensor {
    no_grad(|| {
        let coef = ct.coef(seed, reduction);
        let mut shape = ct.idx.shape().to_vec();
        shape[1] = ct.n_classes;
        let base = if eps > 0.0 {
            // -(ε/C)·w_c·coef at every class.
            let c = (&coef * (-eps / ct.n_classes as f64)).unsqueeze(1);
            let b = match &ct.wb {
                Some(wb) => &c * wb,
                None => c.expand(&shape).contiguous(),
            };
            b.to_dtype(dtype)
        } else {
            Tensor::zeros_opts(&shape, &ct.wt.options().dtype(dtype))
        };
        // -(1 - ε)·w_t·coef at each target.
        let onehot = (&coef * &ct.wt) * (eps - 1.0);
        let g = base.scatter_add(1, &ct.idx, &onehot.unsqueeze(1));
        unbatched(g, ct)
    })
}

/// The loss and/or dL/d(logits) of cross-entropy with class indices, from one
/// softmax: the gradient is `softmax·S - coef·((1-ε)·w_t·onehot + (ε/C)·w)`,
/// `S` the row's total, written into the exponentials' buffer.
pub(super) fn class_logits_core(
    x: &Tensor,
    ct: &ClassTargets,
    eps: f64,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> (Option<Tensor>, Option<Tensor>) {
    no_grad(|| {
        let x = batched_view(x, ct.batched);
        let shifted = &x - &x.max_dim(1, true).0;
        let e = shifted.exp();
        let sumexp = e.sum_dim(1, true);
        let loss = want_loss.then(|| {
            let lse = sumexp.log().squeeze_dim(1);
            let picked = &shifted.gather(1, &ct.idx).squeeze_dim(1) - &lse;
            let mut terms = match &ct.wb {
                Some(_) => picked * &ct.wt,
                None => picked,
            };
            if eps > 0.0 {
                // Σ_c w_c·lp_c = Σ_c w_c·shifted_c - lse·Σ_c w_c.
                let ws = match &ct.wb {
                    Some(wb) => (&shifted * wb).sum_dim(1, false),
                    None => shifted.sum_dim(1, false),
                };
                let smooth = ws - ct.times_wsum(&lse);
                terms = terms * (1.0 - eps) + smooth * (eps / ct.n_classes as f64);
            }
            ct.finish(terms, reduction)
        });
        let grad = seed.map(|s| {
            let coef = ct.coef(s, reduction);
            let onehot = &coef * &ct.wt;
            if eps != 0.0 {
                onehot.mul_(1.0 - eps);
            }
            // S = coef·((1-ε)·w_t + (ε/C)·Σw): the row total of -dL/dlp.
            let smooth_coef = &coef * (eps / ct.n_classes as f64);
            let total = if eps > 0.0 {
                &onehot + &ct.times_wsum(&smooth_coef)
            } else {
                onehot.clone()
            };
            e.mul_(&(total.unsqueeze(1) / &sumexp));
            if eps > 0.0 {
                match &ct.wb {
                    Some(wb) => e.sub_(&(&smooth_coef.unsqueeze(1) * wb)),
                    None => e.sub_(smooth_coef.unsqueeze(1)),
                };
            }
            onehot.mul_(-1.0);
            unbatched(e.scatter_add(1, &ct.idx, &onehot.unsqueeze(1)), ct)
        });
        (loss, grad)
    })
}

/// dL/d(log_probs) of `nll_loss`: `-weight[t]·grad_out` at each target class
/// (divided by the targets' total weight for the mean), 0 elsewhere and at
/// ignored targets.
#[track_caller]
pub fn nll_loss_backward(
    log_probs: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &NllLossOptions,
) -> Tensor {
    let op = "nll_loss_backward";
    let (weight, ignore) = (opts.weight.as_ref(), opts.ignore_index);
    class_backward(
        op,
        log_probs,
        target,
        grad_out,
        weight,
        ignore,
        opts.reduction,
        0.0,
    )
}

/// dL/d(log_softmax(logits)) of `cross_entropy` with class-index targets: the
/// rule of the `NllLossBackward` node that `cross_entropy` records after
/// `log_softmax` (label smoothing included).
#[track_caller]
pub fn cross_entropy_log_probs_backward(
    log_probs: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &CrossEntropyOptions,
) -> Tensor {
    let op = "cross_entropy_backward";
    check_smoothing(op, opts.label_smoothing).or_panic();
    let (weight, ignore) = (opts.weight.as_ref(), opts.ignore_index);
    let smoothing = opts.label_smoothing;
    class_backward(
        op,
        log_probs,
        target,
        grad_out,
        weight,
        ignore,
        opts.reduction,
        smoothing,
    )
}

/// dL/d(log_probs) for class-index targets, shared by `nll_loss` and
/// `cross_entropy` (which adds label smoothing): checks the targets and
/// `grad_out`'s shape, then `class_lp_grad`.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub(super) fn class_backward(
    op: &'static str,
    log_probs: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
    reduction: Reduction,
    smoothing: f64,
) -> Tensor {
    let ct = class_targets(op, log_probs, target, weight, ignore_index).or_panic();
    check_grad_out(op, grad_out, reduction, &ct.elem_shape()).or_panic();
    class_lp_grad(
        &ct,
        smoothing,
        reduction,
        Seed::Times(grad_out),
        log_probs.dtype(),
    )
}

/// `nll_loss` on the tape (ending a `cross_entropy` too, with its label
/// smoothing `eps`): input `[log_probs]`; the checked targets, which take
/// no gradient, are held by the op.
pub struct NllLoss {
    ct: ClassTargets,
    eps: f64,
    reduction: Reduction,
}

impl Op for NllLoss {
    const NAME: &'static str = "NllLossBackward";
    const OP: &'static str = "nll_loss";
    type Saved = ();

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        Ok(Spec {
            shape: loss_shape(self.reduction, &self.ct.elem_shape()).into(),
            dtype: x[0].dtype(),
            device: x[0].device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        out.set(class_lp_loss(x[0], &self.ct, self.eps, self.reduction))
    }

    fn save(&self, _: &[&Tensor], _: &Tensor, _: &[bool]) {}

    fn backward(&self, _: &(), g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let seed = Seed::Times(g);
        grads[0].add(class_lp_grad(
            &self.ct,
            self.eps,
            self.reduction,
            seed,
            self.ct.dtype,
        ))
    }
}

/// `nll_loss` on the tape (with label smoothing `eps` when it ends a cross-entropy).
pub(super) fn nll_on_tape(lp: &Tensor, ct: ClassTargets, eps: f64, reduction: Reduction) -> Tensor {
    apply(NllLoss { ct, eps, reduction }, &[lp])
}

/// `nll_loss` on the tape.
pub(crate) fn nll_loss(
    log_probs: &Tensor,
    target: &Tensor,
    opts: &NllLossOptions,
) -> Result<Tensor> {
    let op = "nll_loss";
    check_weight_no_grad(op, "weight", opts.weight.as_ref())?;
    let ct = class_targets(
        op,
        log_probs,
        target,
        opts.weight.as_ref(),
        opts.ignore_index,
    )?;
    Ok(nll_on_tape(log_probs, ct, 0.0, opts.reduction))
}

/// The loss and/or input gradient of `nll_loss` (validated).
pub(crate) fn nll_loss_core(
    log_probs: &Tensor,
    target: &Tensor,
    opts: &NllLossOptions,
    want_loss: bool,
    seed: Option<Seed>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let ct = class_targets(
        "nll_loss",
        log_probs,
        target,
        opts.weight.as_ref(),
        opts.ignore_index,
    )?;
    let loss = want_loss.then(|| class_lp_loss(log_probs, &ct, 0.0, opts.reduction));
    let grad = seed.map(|s| class_lp_grad(&ct, 0.0, opts.reduction, s, log_probs.dtype()));
    Ok((loss, grad))
}
