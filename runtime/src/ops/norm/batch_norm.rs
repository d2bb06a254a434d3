//! `F.batch_norm`: each channel of `[N, C, *]` normalised over the batch and
//! every spatial position, with the batch's statistics (training) or given
//! running ones (evaluation), then scaled and shifted by its weight and bias
//! element; and the in-place update of the running statistics.

use super::group_norm::{batch_channels_spatial, per_channel};
use super::{check_params, Dims, Groups, Norm, NormSaved};
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::backend::{lock_storages, Host};
use crate::error::{Error, Result};
use crate::tensor::{DType, Float, Tensor};

/// Batch normalisation of `[N, C, *]` per channel, inputs
/// `[x, weight, bias, running_mean, running_var]`: the weight and bias
/// (shape `[C]`) only when `affine`, the running statistics only when
/// `running` (normalising with them instead of the batch's).
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm {
    /// Added to the variance.
    pub eps: f64,
    /// Whether a weight and a bias follow the input.
    pub affine: bool,
    /// Whether the input is normalised with the given running statistics
    /// (evaluation) rather than its own (training).
    pub running: bool,
}

impl BatchNorm {
    /// The weight, bias and statistics among `x`'s inputs.
    #[allow(clippy::type_complexity)]
    fn parts<'a>(
        &self,
        x: &[&'a Tensor],
    ) -> (
        Option<&'a Tensor>,
        Option<&'a Tensor>,
        Option<(&'a Tensor, &'a Tensor)>,
    ) {
        let at = |i: usize| x.get(i).copied();
        let (w, b) = if self.affine {
            (at(1), at(2))
        } else {
            (None, None)
        };
        let s = if self.affine { 3 } else { 1 };
        let stats = match (self.running, at(s), at(s + 1)) {
            (true, Some(m), Some(v)) => Some((m, v)),
            _ => None,
        };
        (w, b, stats)
    }

    /// The call on `x`.
    pub(crate) fn norm<'a>(
        &self,
        x: &'a Tensor,
        weight: Option<&'a Tensor>,
        bias: Option<&'a Tensor>,
        stats: Option<(&'a Tensor, &'a Tensor)>,
    ) -> Norm<'a> {
        let (n, c, s) = batch_channels_spatial(x);
        let dims: Dims<isize> = std::iter::once(0).chain(2..x.ndim() as isize).collect();
        Norm {
            x,
            weight,
            bias,
            stats,
            groups: Groups::channels(n, c, s),
            eps: self.eps,
            view: x.shape().into(),
            dims: dims.clone(),
            param: Dims::from_slice(&[c]),
            param_shape: per_channel(x),
            param_reduce: dims,
        }
    }
}

impl Op for BatchNorm {
    const NAME: &'static str = "NativeBatchNormBackward";
    const OP: &'static str = "batch_norm";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    /// The input, the weight when the input needs a gradient, and the
    /// running statistics when they are used.
    type Saved = NormSaved;

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let input = x[0];
        let want = 1 + 2 * self.affine as usize + 2 * self.running as usize;
        if x.len() != want {
            return Err(Error::shape(
                "batch_norm",
                format!(
                    "expected {want} inputs (the input{}{}), got {}",
                    if self.affine { ", weight, bias" } else { "" },
                    if self.running {
                        ", running_mean, running_var"
                    } else {
                        ""
                    },
                    x.len()
                ),
            ));
        }
        if input.ndim() < 2 {
            return Err(Error::shape(
                "batch_norm",
                format!(
                    "expected an input of shape [N, C, *] (2 or more dims), got shape {:?}",
                    input.shape()
                ),
            ));
        }
        let (n, c, s) = batch_channels_spatial(input);
        // One value per channel has no variance; none (an empty batch)
        // gives an empty output, as in PyTorch.
        if !self.running && n * s == 1 {
            return Err(Error::shape(
                "batch_norm",
                format!(
                    "Expected more than 1 value per channel when training, got input size {:?}; \
                     use a batch of more than one sample, or evaluation mode (.eval())",
                    input.shape()
                ),
            ));
        }
        let (w, b, stats) = self.parts(x);
        let params = [
            ("weight", w),
            ("bias", b),
            ("running_mean", stats.map(|s| s.0)),
            ("running_var", stats.map(|s| s.1)),
        ];
        check_params("batch_norm", input, &params, &[c], "the channels' shape")?;
        Ok(Spec::like(input))
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (w, b, stats) = self.parts(x);
        self.norm(x[0], w, b, stats).forward(out)
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, need: &[bool]) -> Self::Saved {
        let (w, _, stats) = self.parts(x);
        self.norm(x[0], w, None, stats).save(need[0])
    }

    fn backward(&self, (x, w, stats): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let stats = stats.as_ref().map(|(m, v)| (m, v));
        // Only the input, weight and bias get gradients (never the statistics).
        let n = if self.affine { grads.len().min(3) } else { 1 };
        self.norm(x, w.as_ref(), None, stats)
            .backward(g, &mut grads[..n])
    }
}

/// PyTorch's update of a training-mode `batch_norm`'s running statistics,
/// in place and without recording: per channel of `x` (`[N, C, *]`),
/// `running_mean ← (1 − momentum)·running_mean + momentum·mean` and
/// `running_var` likewise with the batch's unbiased variance.
///
/// An empty batch leaves them as they were, as in PyTorch.
///
/// Running statistics that are not float tensors of shape `[C]` with the
/// input's dtype, on its device, are an `Err` (nothing is updated).
///
/// ```
/// use deriv_runtime::ops::update_running_stats_;
/// use deriv_runtime::{tensor, Tensor};
/// let (m, v) = (Tensor::zeros([1]), Tensor::ones([1]));
/// update_running_stats_(&tensor![[1.], [3.]], &m, &v, 0.5)?;
/// assert_eq!(m.to_vec::<f32>(), [1.0]); // 0.5·0 + 0.5·2
/// assert_eq!(v.to_vec::<f32>(), [1.5]); // 0.5·1 + 0.5·2
/// # Ok::<(), deriv_runtime::Error>(())
/// ```
pub fn update_running_stats_(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f64,
) -> Result<()> {
    if x.ndim() < 2 {
        return Err(Error::shape(
            "batch_norm",
            format!(
                "expected an input of shape [N, C, *], got shape {:?}",
                x.shape()
            ),
        ));
    }
    let (n, c, s) = batch_channels_spatial(x);
    let stats = [
        ("running_mean", Some(running_mean)),
        ("running_var", Some(running_var)),
    ];
    check_params("batch_norm", x, &stats, &[c], "the channels' shape")?;
    let count = (n * s) as f64;
    if count == 0.0 {
        // An empty batch leaves the statistics as they were (PyTorch's too).
        return Ok(());
    }
    let bessel = if count > 1.0 {
        count / (count - 1.0)
    } else {
        f64::NAN
    };
    let on_host = !x.device().is_cuda()
        && [running_mean, running_var]
            .iter()
            .all(|t| t.is_contiguous() && !t.shares_storage(x))
        && !running_mean.shares_storage(running_var);
    crate::autograd::no_grad(|| {
        if !on_host {
            // With ops (the GPU's path, and odd layouts).
            let dims: Vec<isize> = std::iter::once(0).chain(2..x.ndim() as isize).collect();
            let mean = x.mean_dim(dims.as_slice(), false);
            let var = x.var_dim(dims.as_slice(), 1, false);
            running_mean.copy_(&(running_mean * (1.0 - momentum) + mean * momentum));
            running_var.copy_(&(running_var * (1.0 - momentum) + var * momentum));
            return;
        }
        let x = x.contiguous();
        let grp = Groups::channels(n, c, s);
        let (reads, mut writes) = lock_storages(
            [Some(&**x.storage())],
            [
                Some(&**running_mean.storage()),
                Some(&**running_var.storage()),
            ],
        );
        let xb = reads[0].as_deref().expect("the input is locked");
        let [mb, vb] = &mut writes;
        let (mb, vb) = (mb.as_deref_mut(), vb.as_deref_mut());
        let (mb, vb) = (mb.expect("locked"), vb.expect("locked"));
        fn update<T: Float + Host>(
            grp: &Groups,
            xs: &[T],
            ms: &mut [T],
            vs: &mut [T],
            momentum: f64,
            bessel: f64,
        ) {
            for k in 0..grp.count() {
                let (mean, var) = grp.mean_var(xs, k);
                let blend = |old: T, new: f64| {
                    T::from_f64((1.0 - momentum) * old.to_f64() + momentum * new)
                };
                ms[k] = blend(ms[k], mean);
                vs[k] = blend(vs[k], var * bessel);
            }
        }
        let (mo, vo) = (running_mean.layout().offset, running_var.layout().offset);
        match x.dtype() {
            DType::F32 => update::<f32>(
                &grp,
                &f32::of(xb)[x.layout().offset..][..x.numel()],
                &mut f32::of_mut(mb)[mo..][..c],
                &mut f32::of_mut(vb)[vo..][..c],
                momentum,
                bessel,
            ),
            _ => update::<f64>(
                &grp,
                &f64::of(xb)[x.layout().offset..][..x.numel()],
                &mut f64::of_mut(mb)[mo..][..c],
                &mut f64::of_mut(vb)[vo..][..c],
                momentum,
                bessel,
            ),
        }
    });
    Ok(())
}

/// Adds one to an i64 scalar counter in place (BatchNorm's
/// `num_batches_tracked`), without recording, and returns the new count.
pub(crate) fn count_batch_(counter: &Tensor) -> i64 {
    crate::autograd::no_grad(|| {
        if counter.device().is_cuda() || counter.dtype() != DType::I64 || counter.numel() != 1 {
            let n = counter.reshape([-1]).select(0, 0).item() as i64 + 1;
            counter.fill_(n as f64);
            return n;
        }
        let mut b = counter.storage().write();
        let v = &mut i64::of_mut(&mut b)[counter.layout().offset];
        *v += 1;
        *v
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPU's composed forward and backward against the CPU kernels
    /// (both run here on the CPU), with batch and with running statistics,
    /// and the composed running-statistics update against the kernel.
    #[test]
    fn composed_path_matches_the_kernels() {
        let mut rng = crate::Generator::new(6);
        let mut r = |shape: &[usize]| Tensor::randn_with(shape, &mut rng).to_dtype(DType::F64);
        let (x, w, b) = (r(&[3, 4, 2, 3]), r(&[4]), r(&[4]));
        let (m, v) = (r(&[4]), &r(&[4]).abs() + 0.5);
        let op = BatchNorm {
            eps: 1e-5,
            affine: true,
            running: false,
        };
        super::super::assert_composed_matches_kernels(
            op,
            &[&x, &w, &b],
            &op.norm(&x, Some(&w), Some(&b), None),
        );
        let op = BatchNorm {
            eps: 1e-3,
            affine: true,
            running: true,
        };
        let norm = op.norm(&x, Some(&w), Some(&b), Some((&m, &v)));
        super::super::assert_composed_matches_kernels(op, &[&x, &w, &b, &m, &v], &norm);
        let x2 = r(&[5, 4]);
        let op = BatchNorm {
            eps: 1e-5,
            affine: false,
            running: false,
        };
        super::super::assert_composed_matches_kernels(op, &[&x2], &op.norm(&x2, None, None, None));
        // The running update: the kernel, and the ops on strided views.
        let (m1, v1) = (m.clone_data(), v.clone_data());
        update_running_stats_(&x, &m1, &v1, 0.1).unwrap();
        let m2 = Tensor::stack(&[m.clone(), m.clone()], 1);
        let v2 = Tensor::stack(&[v.clone(), v.clone()], 1);
        assert!(!m2.select(1, 0).is_contiguous());
        update_running_stats_(&x, &m2.select(1, 0), &v2.select(1, 0), 0.1).unwrap();
        for (a, b, what) in [(&m1, &m2, "running_mean"), (&v1, &v2, "running_var")] {
            let b = b.select(1, 0).to_vec::<f64>();
            crate::test_util::assert_close(&b, &a.to_vec::<f64>(), 1e-12, what);
        }
    }
}
