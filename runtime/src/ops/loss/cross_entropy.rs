use super::*;
use crate::autograd::{apply, GradSlot, Op, Out, Spec};

// ----- class probabilities

/// A float target of class probabilities, checked, smoothed and weighted:
/// `tw = ((1-ε)·t + ε/C)·w` in the input's `[N, C, d1..]` layout.
pub(super) struct ProbTargets {
    batched: bool,
    input_shape: Vec<usize>,
    /// The number of samples (N·d1·..): the mean's denominator.
    count: usize,
    /// `[1, C, 1..]` class weights, or `None`.
    wb: Option<Tensor>,
    /// `[N, C, d1..]`: the smoothed, weighted target.
    tw: Tensor,
}

pub(super) fn prob_targets(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<ProbTargets> {
    check_float(op, "input", input)?;
    if !target.dtype().is_float() {
        return Err(Error::dtype(
            op,
            format!(
                "expected a float target of class probabilities (its shape {:?} is the \
                 input's), got {}; convert with .to_dtype(DType::F32), or pass class indices \
                 of shape {:?}",
                target.shape(),
                target.dtype(),
                input
                    .shape()
                    .iter()
                    .enumerate()
                    .filter(|&(d, _)| d != if input.ndim() > 1 { 1 } else { 0 })
                    .map(|(_, &s)| s)
                    .collect::<Vec<_>>()
            ),
        ));
    }
    if opts.ignore_index >= 0 {
        return Err(Error::Invalid(format!(
            "{op}: ignore_index ({}) is not supported for floating point targets (class \
             probabilities); leave it at its default -100",
            opts.ignore_index
        )));
    }
    check_smoothing(op, opts.label_smoothing)?;
    crate::ops::same_device(op, input, target)?;
    let batched = input.ndim() > 1;
    let n_classes = input.shape()[if batched { 1 } else { 0 }];
    let dt = DType::promote(input.dtype(), target.dtype());
    let wb = match &opts.weight {
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
            let mut shape = vec![1; input.ndim().max(2)];
            shape[1] = n_classes;
            Some(w.detach().to_dtype(dt).reshape(shape))
        }
    };
    let tw = no_grad(|| {
        let t = batched_view(&target.to_dtype(dt), batched);
        let eps = opts.label_smoothing;
        let t = if eps > 0.0 {
            t * (1.0 - eps) + eps / n_classes as f64
        } else {
            t
        };
        match &wb {
            Some(wb) => t * wb,
            None => t,
        }
    });
    Ok(ProbTargets {
        batched,
        input_shape: input.shape().to_vec(),
        count: input.numel() / n_classes.max(1),
        wb,
        tw,
    })
}

/// A per-sample factor: a plain number (no 0-d tensor needed) or a tensor.
pub(super) enum Coef {
    Number(f64),
    Tensor(Tensor),
}

impl Coef {
    pub(super) fn times(&self, t: &Tensor) -> Tensor {
        match self {
            Coef::Number(s) => t * *s,
            Coef::Tensor(c) => t * c,
        }
    }
}

impl ProbTargets {
    /// `seed / count` (mean) or `seed`: a number, or `[N, 1, d1..]` / 0-d.
    pub(super) fn coef(&self, seed: Seed, reduction: Reduction) -> Coef {
        let scale = match reduction {
            Reduction::Mean => 1.0 / self.count as f64,
            _ => 1.0,
        };
        match seed {
            Seed::One => Coef::Number(scale),
            Seed::Times(g) => {
                let g = g * scale;
                Coef::Tensor(match reduction {
                    Reduction::None if self.batched => g.unsqueeze(1),
                    Reduction::None => g.reshape([1usize, 1]),
                    _ => g,
                })
            }
        }
    }

    pub(super) fn finish(&self, per_sample: Tensor, reduction: Reduction) -> Tensor {
        match reduction {
            Reduction::None if self.batched => per_sample,
            Reduction::None => per_sample.reshape(Vec::<usize>::new()),
            Reduction::Sum => per_sample.sum(),
            Reduction::Mean => per_sample.sum() / self.count as f64,
        }
    }

    pub(super) fn unbatched(&self, g: Tensor, dtype: DType) -> Tensor {
        let g = in_dtype(g, dtype);
        if self.batched {
            g
        } else {
            g.reshape(self.input_shape.clone())
        }
    }

    pub(super) fn elem_shape(&self) -> Vec<usize> {
        if self.batched {
            let mut s = self.input_shape.clone();
            s.remove(1);
            s
        } else {
            vec![]
        }
    }
}

/// The loss and/or dL/d(logits) of cross-entropy with class probabilities:
/// `-Σ_c tw_c·lp_c` per sample; gradient `coef·(softmax·Σ_c tw_c - tw)`.
pub(super) fn prob_logits_core(
    x: &Tensor,
    pt: &ProbTargets,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> (Option<Tensor>, Option<Tensor>) {
    no_grad(|| {
        let x = batched_view(x, pt.batched);
        let shifted = &x - &x.max_dim(1, true).0;
        let e = shifted.exp();
        let sumexp = e.sum_dim(1, true);
        let loss = want_loss.then(|| {
            let lp = &shifted - &sumexp.log();
            pt.finish(-(&lp * &pt.tw).sum_dim(1, false), reduction)
        });
        let grad = seed.map(|s| {
            let coef = pt.coef(s, reduction);
            let total = pt.tw.sum_dim(1, true);
            let e = if e.dtype() == pt.tw.dtype() {
                e
            } else {
                e.to_dtype(pt.tw.dtype())
            };
            e.mul_(&(&coef.times(&total) / &sumexp));
            e.sub_(coef.times(&pt.tw));
            pt.unbatched(e, x.dtype())
        });
        (loss, grad)
    })
}

/// dL/d(target) of cross-entropy with class probabilities:
/// `-(1 - ε)·w·log_softmax(logits)·grad_out` (divided by N·d1·.. for the mean).
pub(super) fn prob_target_grad(
    lp: &Tensor,
    target_dtype: DType,
    pt: &ProbTargets,
    eps: f64,
    reduction: Reduction,
    g: &Tensor,
) -> Tensor {
    no_grad(|| {
        let lp = batched_view(lp, pt.batched);
        let d = pt.coef(Seed::Times(g), reduction).times(&lp);
        d.mul_(eps - 1.0);
        if let Some(wb) = &pt.wb {
            d.mul_(wb);
        }
        pt.unbatched(d, target_dtype)
    })
}

/// The end of `cross_entropy` with class-probability targets, on the tape:
/// inputs `[log_probs, target]`; the smoothed, weighted target is held by
/// the op.
pub struct SoftCrossEntropy {
    pt: ProbTargets,
    eps: f64,
    reduction: Reduction,
}

impl Op for SoftCrossEntropy {
    const NAME: &'static str = "SoftCrossEntropyBackward";
    const OP: &'static str = "cross_entropy";
    /// The log-probabilities and the target's dtype.
    type Saved = (Tensor, DType);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        Ok(Spec {
            shape: loss_shape(self.reduction, &self.pt.elem_shape()).into(),
            dtype: DType::promote(x[0].dtype(), self.pt.tw.dtype()),
            device: x[0].device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let lpb = batched_view(x[0], self.pt.batched);
        out.set(
            self.pt
                .finish(-(&lpb * &self.pt.tw).sum_dim(1, false), self.reduction),
        )
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), x[1].dtype())
    }

    fn backward(&self, (lp, target_dtype): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let (pt, reduction) = (&self.pt, self.reduction);
        if grads[0].needed() {
            let d = no_grad(|| {
                let d = pt.coef(Seed::Times(g), reduction).times(&pt.tw);
                d.mul_(-1.0);
                pt.unbatched(d, lp.dtype())
            });
            grads[0].add(d);
        }
        if grads[1].needed() {
            grads[1].add(prob_target_grad(
                lp,
                *target_dtype,
                pt,
                self.eps,
                reduction,
                g,
            ));
        }
    }
}

/// How `cross_entropy` reads its target: class indices, or probabilities when
/// the target has the input's shape (PyTorch's rule).
pub(super) enum CeTargets {
    Classes(ClassTargets),
    Probs(ProbTargets),
}

pub(super) fn ce_targets(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<CeTargets> {
    if input.ndim() > 0 && input.shape() == target.shape() {
        Ok(CeTargets::Probs(prob_targets(op, input, target, opts)?))
    } else {
        check_smoothing(op, opts.label_smoothing)?;
        Ok(CeTargets::Classes(class_targets(
            op,
            input,
            target,
            opts.weight.as_ref(),
            opts.ignore_index,
        )?))
    }
}

/// The loss and/or dL/d(logits) of `cross_entropy` (validated); the gradient
/// is seeded by `seed`.
pub(crate) fn cross_entropy_core(
    logits: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOptions,
    want_loss: bool,
    seed: Option<Seed>,
    grad_out: Option<&Tensor>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let op = if want_loss {
        "cross_entropy"
    } else {
        "cross_entropy_backward"
    };
    if let Some(fused) = super::fused::cross_entropy(op, logits, target, opts, want_loss, seed)? {
        if let Some(g) = grad_out {
            check_grad_out(op, g, opts.reduction, &[logits.shape()[0]])?;
        }
        return Ok(fused);
    }
    let targets = ce_targets(op, logits, target, opts)?;
    if let Some(g) = grad_out {
        let shape = match &targets {
            CeTargets::Classes(ct) => ct.elem_shape(),
            CeTargets::Probs(pt) => pt.elem_shape(),
        };
        check_grad_out(op, g, opts.reduction, &shape)?;
    }
    Ok(match &targets {
        CeTargets::Classes(ct) => class_logits_core(
            logits,
            ct,
            opts.label_smoothing,
            opts.reduction,
            want_loss,
            seed,
        ),
        CeTargets::Probs(pt) => prob_logits_core(logits, pt, opts.reduction, want_loss, seed),
    })
}

/// dL/d(logits) of `cross_entropy`, fused: from one softmax,
/// `coef·(softmax·S - (1-ε)·w_t·onehot - (ε/C)·w)` for class indices
/// (`(softmax - onehot)/N` in the plain case), `coef·(softmax·Σ_c tw_c - tw)`
/// for class probabilities.
#[track_caller]
pub fn cross_entropy_backward(
    logits: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &CrossEntropyOptions,
) -> Tensor {
    cross_entropy_core(
        logits,
        target,
        opts,
        false,
        Some(Seed::Times(grad_out)),
        Some(grad_out),
    )
    .or_panic()
    .1
    .expect("asked for the gradient")
}

/// dL/d(target) of `cross_entropy` with a float target of class probabilities:
/// `-(1 - ε)·w·log_softmax(logits)·grad_out` (divided by N·d1·.. for the mean).
#[track_caller]
pub fn cross_entropy_target_backward(
    logits: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &CrossEntropyOptions,
) -> Tensor {
    let op = "cross_entropy_target_backward";
    let pt = prob_targets(op, logits, target, opts).or_panic();
    check_grad_out(op, grad_out, opts.reduction, &pt.elem_shape()).or_panic();
    let class_dim = if logits.ndim() > 1 { 1 } else { 0 };
    let lp = no_grad(|| logits.log_softmax(class_dim));
    prob_target_grad(
        &lp,
        target.dtype(),
        &pt,
        opts.label_smoothing,
        opts.reduction,
        grad_out,
    )
}

/// `cross_entropy` on the tape: `log_softmax` over the class dim, then
/// `NllLossBackward` (class indices) or `SoftCrossEntropyBackward` (class
/// probabilities).
pub(crate) fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<Tensor> {
    let op = "cross_entropy";
    check_weight_no_grad(op, "weight", opts.weight.as_ref())?;
    let targets = ce_targets(op, logits, target, opts)?;
    let class_dim = if logits.ndim() > 1 { 1 } else { 0 };
    let lp = logits.log_softmax(class_dim);
    Ok(match targets {
        CeTargets::Classes(ct) => nll_on_tape(&lp, ct, opts.label_smoothing, opts.reduction),
        CeTargets::Probs(pt) => {
            let op = SoftCrossEntropy {
                pt,
                eps: opts.label_smoothing,
                reduction: opts.reduction,
            };
            apply(op, &[&lp, target])
        }
    })
}
