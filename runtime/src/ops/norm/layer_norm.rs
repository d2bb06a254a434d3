//! `F.layer_norm`: each row of the last `dims` dimensions normalised to
//! mean 0 and variance 1 (biased variance, `eps` added), then scaled and
//! shifted elementwise by the optional weight and bias. The CPU kernels
//! work row by row (statistics accumulated in f64) and recompute a row's
//! mean and 1/std in backward instead of saving them, so the step keeps no
//! buffer beyond its output; on the GPU the op is composed of the GPU's
//! elementwise ops and reductions.

use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::backend::Host;
use crate::error::{Error, Result};
use crate::tensor::{DType, Float, Tensor};

/// Layer normalisation over the last `dims` dimensions, inputs
/// `[x, weight, bias]` (weight and bias optional, of those dimensions'
/// shape; a bias needs a weight, as in `nn.LayerNorm`).
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    /// How many trailing dimensions are normalised together.
    pub dims: usize,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// The normalised element count per row, and the row count, of `x`.
    fn split(&self, x: &Tensor) -> (usize, usize) {
        let nd = x.ndim();
        let n: usize = x.shape()[nd - self.dims..].iter().product();
        (x.numel().checked_div(n).unwrap_or(0), n)
    }
}

impl Op for LayerNorm {
    const NAME: &'static str = "NativeLayerNormBackward";
    const OP: &'static str = "layer_norm";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    /// The input, and the weight when the input needs a gradient.
    type Saved = (Tensor, Option<Tensor>);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let input = x[0];
        let nd = input.ndim();
        if self.dims == 0 || self.dims > nd {
            return Err(Error::shape(
                "layer_norm",
                format!(
                    "normalising the last {} dims of an input of shape {:?}: the input needs \
                     at least that many dims",
                    self.dims,
                    input.shape()
                ),
            ));
        }
        if !input.dtype().is_float() {
            return Err(Error::dtype(
                "layer_norm",
                format!(
                    "expected a float input, got {}; convert it with .to_dtype(DType::F32)",
                    input.dtype()
                ),
            ));
        }
        let tail = &input.shape()[nd - self.dims..];
        for (what, t) in ["weight", "bias"].iter().zip(&x[1..]) {
            if t.shape() != tail || t.dtype() != input.dtype() {
                return Err(Error::shape(
                    "layer_norm",
                    format!(
                        "the {what} must be a {} tensor of the normalised shape {tail:?}, got \
                         a {} tensor of shape {:?}",
                        input.dtype(),
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
            crate::ops::same_device("layer_norm", input, t)?;
        }
        Ok(Spec::like(input))
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (input, w, b) = (x[0], x.get(1).copied(), x.get(2).copied());
        if input.device().is_cuda() {
            return out.set(self.forward_composed(input, w, b));
        }
        let (x, w, b) = (
            input.contiguous(),
            w.map(Tensor::contiguous),
            b.map(Tensor::contiguous),
        );
        match input.dtype() {
            DType::F32 => forward_cpu::<f32>(self, &x, w.as_ref(), b.as_ref(), out),
            _ => forward_cpu::<f64>(self, &x, w.as_ref(), b.as_ref(), out),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, need: &[bool]) -> Self::Saved {
        (
            x[0].clone(),
            x.get(1).filter(|_| need[0]).map(|&w| w.clone()),
        )
    }

    fn backward(&self, (x, w): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let need_w = grads.get(1).is_some_and(|s| s.needed());
        let need_b = grads.get(2).is_some_and(|s| s.needed());
        if x.device().is_cuda() {
            return self.backward_composed(x, w.as_ref(), g, grads);
        }
        let (x, g) = (x.contiguous(), g.contiguous());
        let w = w.as_ref().map(Tensor::contiguous);
        let tail = crate::autograd::Shape::from_slice(&x.shape()[x.ndim() - self.dims..]);
        let spec = |shape: &[usize]| Spec {
            shape: crate::autograd::Shape::from_slice(shape),
            dtype: g.dtype(),
            device: g.device(),
        };
        macro_rules! run {
            ($t:ty) => {{
                if grads[0].needed() {
                    grads[0].add_into(spec(x.shape()), |out| {
                        input_grad::<$t>(self, &x, w.as_ref(), &g, out)
                    });
                }
                if need_w {
                    grads[1].add_into(spec(&tail), |out| {
                        param_grads::<$t>(self, &x, &g, true, out)
                    });
                }
                if need_b {
                    grads[2].add_into(spec(&tail), |out| {
                        param_grads::<$t>(self, &x, &g, false, out)
                    });
                }
            }};
        }
        match g.dtype() {
            DType::F32 => run!(f32),
            _ => run!(f64),
        }
    }
}

impl LayerNorm {
    /// The forward with ops (the GPU's path).
    fn forward_composed(&self, x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>) -> Tensor {
        let (xhat, _) = self.normalized(x);
        let y = match w {
            Some(w) => &xhat * w,
            None => xhat,
        };
        match b {
            Some(b) => &y + b,
            None => y,
        }
    }

    /// `(x - mean) / sqrt(var + eps)` with ops (the GPU's path), and 1/std.
    fn normalized(&self, x: &Tensor) -> (Tensor, Tensor) {
        let dims: Vec<isize> = (1..=self.dims as isize).map(|d| -d).collect();
        let centered = x - &x.mean_dim(dims.as_slice(), true);
        let var = centered.square().mean_dim(dims.as_slice(), true);
        let rstd = 1.0 / &(var + self.eps).sqrt();
        (&centered * &rstd, rstd)
    }

    /// The gradients with ops (the GPU's path):
    /// `dx = rstd·(gw - mean(gw) - x̂·mean(gw·x̂))`, `dw = Σ g·x̂`, `db = Σ g`.
    fn backward_composed(
        &self,
        x: &Tensor,
        w: Option<&Tensor>,
        g: &Tensor,
        grads: &mut [GradSlot<'_>],
    ) {
        let dims: Vec<isize> = (1..=self.dims as isize).map(|d| -d).collect();
        let rows: Vec<isize> = (0..(x.ndim() - self.dims) as isize).collect();
        let (xhat, rstd) = self.normalized(x);
        if grads[0].needed() {
            let gw = match w {
                Some(w) => g * w,
                None => g.clone(),
            };
            let a = gw.mean_dim(dims.as_slice(), true);
            let b = (&gw * &xhat).mean_dim(dims.as_slice(), true);
            grads[0].add(&(&(&gw - &a) - &(&xhat * &b)) * &rstd);
        }
        if grads.get(1).is_some_and(|s| s.needed()) {
            grads[1].add((g * &xhat).sum_dim(rows.as_slice(), false));
        }
        if grads.get(2).is_some_and(|s| s.needed()) {
            grads[2].add(g.sum_dim(rows.as_slice(), false));
        }
    }
}

/// A row's mean and 1/sqrt(biased variance + eps), accumulated in f64.
#[inline]
fn row_stats<T: Float>(row: &[T], eps: f64) -> (f64, f64) {
    let n = row.len().max(1) as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|v| {
            let d = v.to_f64() - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The elements a contiguous tensor views, from its buffer.
fn elems<'b, T: Host>(b: &'b crate::backend::Buffer, t: &Tensor) -> &'b [T] {
    &T::of(b)[t.layout().offset..][..t.numel()]
}

fn forward_cpu<T: Float + Host>(
    op: &LayerNorm,
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    out: &mut Out<'_>,
) {
    let (_, n) = op.split(x);
    // Absent parameters stand in as `x` (locked once, never read as them).
    let inputs = [x, w.unwrap_or(x), b.unwrap_or(x)];
    out.host_slice::<T, 3>(inputs, |[xb, wb, bb], o, acc| {
        let xs = elems::<T>(xb, x);
        let ws = w.map(|w| elems::<T>(wb, w));
        let bs = b.map(|b| elems::<T>(bb, b));
        for (row, orow) in xs.chunks_exact(n.max(1)).zip(o.chunks_exact_mut(n.max(1))) {
            let (mean, rstd) = row_stats(row, op.eps);
            for (j, (&v, o)) in row.iter().zip(orow.iter_mut()).enumerate() {
                let mut y = T::from_f64((v.to_f64() - mean) * rstd);
                if let Some(ws) = ws {
                    y = y * ws[j];
                }
                if let Some(bs) = bs {
                    y += bs[j];
                }
                *o = if acc { *o + y } else { y };
            }
        }
    });
}

/// `dx (+)= rstd·(gw - mean(gw) - x̂·mean(gw·x̂))` with `gw = g·w`.
fn input_grad<T: Float + Host>(
    op: &LayerNorm,
    x: &Tensor,
    w: Option<&Tensor>,
    g: &Tensor,
    out: &mut Out<'_>,
) {
    let (_, n) = op.split(x);
    let inputs = [x, g, w.unwrap_or(x)];
    out.host_slice::<T, 3>(inputs, |[xb, gb, wb], o, acc| {
        let (xs, gs) = (elems::<T>(xb, x), elems::<T>(gb, g));
        let ws = w.map(|w| elems::<T>(wb, w));
        let gw = |j: usize, gv: T| ws.map_or(gv.to_f64(), |ws| (gv * ws[j]).to_f64());
        let rows = xs.chunks_exact(n.max(1)).zip(gs.chunks_exact(n.max(1)));
        for ((row, grow), orow) in rows.zip(o.chunks_exact_mut(n.max(1))) {
            let (mean, rstd) = row_stats(row, op.eps);
            let (mut sum_gw, mut sum_gw_xhat) = (0.0, 0.0);
            for (j, (&v, &gv)) in row.iter().zip(grow).enumerate() {
                let d = gw(j, gv);
                sum_gw += d;
                sum_gw_xhat += d * (v.to_f64() - mean) * rstd;
            }
            let (a, b) = (sum_gw / n as f64, sum_gw_xhat / n as f64);
            for (j, ((&v, &gv), o)) in row.iter().zip(grow).zip(orow.iter_mut()).enumerate() {
                let xhat = (v.to_f64() - mean) * rstd;
                let dx = T::from_f64(rstd * (gw(j, gv) - a - xhat * b));
                *o = if acc { *o + dx } else { dx };
            }
        }
    });
}

/// `dw (+)= Σ_rows g·x̂` (`weight`), or `db (+)= Σ_rows g`.
fn param_grads<T: Float + Host>(
    op: &LayerNorm,
    x: &Tensor,
    g: &Tensor,
    weight: bool,
    out: &mut Out<'_>,
) {
    let (_, n) = op.split(x);
    out.host_slice::<T, 2>([x, g], |[xb, gb], o, acc| {
        let (xs, gs) = (elems::<T>(xb, x), elems::<T>(gb, g));
        if !acc {
            o.iter_mut().for_each(|v| *v = T::ZERO);
        }
        for (row, grow) in xs.chunks_exact(n.max(1)).zip(gs.chunks_exact(n.max(1))) {
            if weight {
                let (mean, rstd) = row_stats(row, op.eps);
                for ((&v, &gv), o) in row.iter().zip(grow).zip(o.iter_mut()) {
                    *o += gv * T::from_f64((v.to_f64() - mean) * rstd);
                }
            } else {
                for (&gv, o) in grow.iter().zip(o.iter_mut()) {
                    *o += gv;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{apply, no_grad};

    /// The GPU's composed forward and backward against the CPU kernels
    /// (both run here on the CPU).
    #[test]
    fn composed_path_matches_the_kernels() {
        let mut rng = crate::Generator::new(3);
        let x = Tensor::randn_with([4, 2, 5], &mut rng).to_dtype(DType::F64);
        let w = Tensor::randn_with([2, 5], &mut rng).to_dtype(DType::F64);
        let b = Tensor::randn_with([2, 5], &mut rng).to_dtype(DType::F64);
        let g = Tensor::randn_with([4, 2, 5], &mut rng).to_dtype(DType::F64);
        let op = LayerNorm { dims: 2, eps: 1e-5 };
        let y = apply(op, &[&x, &w, &b]);
        let yc = no_grad(|| op.forward_composed(&x, Some(&w), Some(&b)));
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            crate::test_util::assert_close(&a.to_vec::<f64>(), &b.to_vec::<f64>(), 1e-12, what)
        };
        close(&yc, &y, "forward");
        let saved = (x.clone(), Some(w.clone()));
        let grads = |composed: bool| {
            let mut sums = [None, None, None];
            {
                let [s0, s1, s2] = &mut sums;
                let mut slots = [
                    GradSlot::new(s0, true),
                    GradSlot::new(s1, true),
                    GradSlot::new(s2, true),
                ];
                no_grad(|| {
                    if composed {
                        op.backward_composed(&x, Some(&w), &g, &mut slots)
                    } else {
                        op.backward(&saved, &g, &mut slots)
                    }
                });
            }
            sums.map(|s| s.expect("every gradient is needed"))
        };
        for ((kernel, composed), what) in
            grads(false).iter().zip(grads(true)).zip(["dx", "dw", "db"])
        {
            close(&composed, kernel, what);
        }
    }
}
