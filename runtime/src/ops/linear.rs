//! `F.linear(x, w, b)`: `y = x·wᵀ + b` as one op. On the CPU the bias is
//! written into the output and the product accumulated onto it (one pass
//! over the output, faer or the AVX2 kernel, split over the helper pool when
//! large); the gradients are `dx = g·w`, `dw += gᵀ·x` and `db += Σ_rows g`,
//! each straight into its gradient slot (on the buffer-reusing path, into
//! the parameters' `.grad()` buffers). Elsewhere (GPU, integer inputs,
//! strided N-D inputs) it is composed of `matmul` and `+`.

use crate::autograd::{try_apply, GradSlot, Op, Out, Spec};
use crate::backend::cpu::gemm::{gemm, Gemm, Mat};
use crate::backend::Host;
use crate::error::{Error, Result};
use crate::size::SizeRule;
use crate::tensor::{DType, Float, Tensor};

/// `x·wᵀ + b` for `x` of shape `[.., in]`, `w` `[out, in]` and an optional
/// bias `[out]` (the third input when given).
#[derive(Clone, Copy, Debug, Default)]
pub struct Linear;

/// `x` as rows of `cols` elements: (rows, row stride, column stride), when
/// it can be read as such a matrix without a copy.
pub(crate) fn as_mat(t: &Tensor, cols: usize) -> Option<(usize, usize, usize)> {
    let l = t.layout();
    match l.ndim() {
        0 => None,
        1 => (l.shape[0] == cols).then_some((1, cols.max(1), 1)),
        2 => (l.shape[1] == cols).then_some((l.shape[0], l.strides[0], l.strides[1])),
        _ => (l.shape[l.ndim() - 1] == cols && l.is_contiguous())
            .then(|| (l.numel() / cols.max(1), cols, 1)),
    }
}

/// Whether the fused CPU kernels take these operands.
fn fused(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    let dt = w.dtype();
    dt.is_float()
        && x.dtype() == dt
        && b.is_none_or(|b| b.dtype() == dt && b.is_contiguous() && b.device().is_cpu())
        && x.device().is_cpu()
        && w.device().is_cpu()
        && as_mat(x, w.shape()[1]).is_some()
}

fn mat<T>(data: &[T], t: &Tensor, (_, rs, cs): (usize, usize, usize)) -> Mat<T> {
    Mat::new(data, t.layout().offset, rs, cs)
}

impl Op for Linear {
    const NAME: &'static str = "AddmmBackward";
    const OP: &'static str = "linear";
    const SIZE: SizeRule = SizeRule::Unknown;
    /// The input (for dw) and the weight (for dx), as needed.
    type Saved = (Option<Tensor>, Option<Tensor>);

    fn name(&self, x: &[&Tensor]) -> &'static str {
        if x.len() > 2 {
            "AddmmBackward"
        } else {
            "MmBackward"
        }
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (input, w) = (x[0], x[1]);
        if w.ndim() != 2 {
            return Err(Error::shape(
                "linear",
                format!(
                    "the weight must be 2-D [out, in], got shape {:?}",
                    w.shape()
                ),
            ));
        }
        check_input(input, w, None)?;
        let nout = w.shape()[0];
        if let Some(b) = x.get(2)
            && b.shape() != [nout]
        {
            return Err(Error::shape(
                "linear",
                format!("the bias must have shape [{nout}], got {:?}", b.shape()),
            ));
        }
        for t in &x[1..] {
            crate::ops::same_device("linear", input, t)?;
        }
        let mut shape = crate::autograd::Shape::from_slice(input.shape());
        *shape.last_mut().expect("checked above: at least 1-D") = nout;
        // As in PyTorch: no promotion between the input and the parameters
        // (the input's dtype was checked above).
        let dtype = w.dtype();
        if let Some(b) = x.get(2).filter(|b| b.dtype() != dtype) {
            return Err(Error::dtype(
                "linear",
                format!(
                    "the bias is {} but the weight is {dtype}; convert the bias with \
                     .to_dtype(DType::{dtype:?})",
                    b.dtype()
                ),
            ));
        }
        Ok(Spec {
            shape,
            dtype,
            device: input.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (input, w, b) = (x[0], x[1], x.get(2).copied());
        if !(fused(input, w, b) && out.spec().dtype == w.dtype()) {
            let y = input.matmul(&w.t());
            return out.set(match b {
                Some(b) => y + b,
                None => y,
            });
        }
        match w.dtype() {
            DType::F32 => forward_cpu::<f32>(input, w, b, out),
            _ => forward_cpu::<f64>(input, w, b, out),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, need: &[bool]) -> Self::Saved {
        let params = need[1..].iter().any(|&n| n);
        (params.then(|| x[0].clone()), need[0].then(|| x[1].clone()))
    }

    fn backward(&self, (input, w): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let (need_x, need_w) = (grads[0].needed(), grads[1].needed());
        let need_b = grads.get(2).is_some_and(|s| s.needed());
        let fused_ok = |t: &Tensor, cols: usize| {
            t.device().is_cpu() && t.dtype() == g.dtype() && as_mat(t, cols).is_some()
        };
        if need_x {
            let w = w.as_ref().expect("saved when the input needs a gradient");
            let mut shape = crate::autograd::Shape::from_slice(g.shape());
            *shape.last_mut().expect("a gradient of the output's rank") = w.shape()[1];
            let spec = Spec {
                shape,
                dtype: g.dtype(),
                device: g.device(),
            };
            if fused_ok(g, w.shape()[0]) && w.dtype() == g.dtype() && g.dtype().is_float() {
                grads[0].add_into(spec, |out| match g.dtype() {
                    DType::F32 => input_grad::<f32>(g, w, out),
                    _ => input_grad::<f64>(g, w, out),
                });
            } else {
                grads[0].add(g.matmul(w));
            }
        }
        if need_w || need_b {
            let x = input
                .as_ref()
                .expect("saved when a parameter needs a gradient");
            let nout = g.shape()[g.ndim() - 1];
            let nin = x.shape()[x.ndim() - 1];
            let fused_p = fused_ok(g, nout) && fused_ok(x, nin) && g.dtype().is_float();
            if need_w {
                let spec = Spec {
                    shape: crate::autograd::Shape::from_slice(&[nout, nin]),
                    dtype: g.dtype(),
                    device: g.device(),
                };
                if fused_p {
                    grads[1].add_into(spec, |out| match g.dtype() {
                        DType::F32 => weight_grad::<f32>(g, x, out),
                        _ => weight_grad::<f64>(g, x, out),
                    });
                } else {
                    let g2 = g.reshape([-1, nout as i64]);
                    grads[1].add(g2.t().matmul(&x.reshape([-1, nin as i64])));
                }
            }
            if need_b {
                let spec = Spec {
                    shape: crate::autograd::Shape::from_slice(&[nout]),
                    dtype: g.dtype(),
                    device: g.device(),
                };
                if fused_p {
                    grads[2].add_into(spec, |out| match g.dtype() {
                        DType::F32 => bias_grad::<f32>(g, out),
                        _ => bias_grad::<f64>(g, out),
                    });
                } else {
                    grads[2].add(g.reshape([-1, nout as i64]).sum_dim(0, false));
                }
            }
        }
    }
}

/// `out = x·wᵀ + b`: the bias written, the product accumulated onto it.
fn forward_cpu<T: Float + Host + Gemm>(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out: &mut Out<'_>,
) {
    let (nout, nin) = (w.shape()[0], w.shape()[1]);
    let xm = as_mat(x, nin).expect("checked by fused");
    // Without a bias, `w` stands in for it (locked once, never read as one).
    let inputs = [x, w, b.unwrap_or(w)];
    out.host_slice::<T, 3>(inputs, |[gx, gw, gb], o, acc| {
        assert!(!acc, "linear: the forward writes its output");
        let (xs, ws) = (T::of(gx), T::of(gw));
        if let Some(b) = b {
            let off = b.layout().offset;
            let bv = &T::of(gb)[off..off + nout];
            for row in o.chunks_exact_mut(nout.max(1)) {
                row.copy_from_slice(bv);
            }
        }
        let wl = w.layout();
        let wt = Mat::new(ws, wl.offset, wl.strides[0], wl.strides[1]).t();
        // SAFETY: the views come from locked buffers (gemm checks their
        // bounds); `o` is rows x nout and exclusively ours.
        unsafe {
            gemm(
                "linear",
                xm.0,
                nout,
                nin,
                mat(xs, x, xm),
                wt,
                o,
                b.is_some(),
            )
        };
    });
}

/// `out (+)= g·w` (the input gradient).
fn input_grad<T: Float + Host + Gemm>(g: &Tensor, w: &Tensor, out: &mut Out<'_>) {
    let (nout, nin) = (w.shape()[0], w.shape()[1]);
    let gm = as_mat(g, nout).expect("checked by the caller");
    out.host_slice::<T, 2>([g, w], |[gb, wb], o, acc| {
        let (gs, ws) = (T::of(gb), T::of(wb));
        {
            let wl = w.layout();
            let wm = Mat::new(ws, wl.offset, wl.strides[0], wl.strides[1]);
            // SAFETY: views of locked buffers (bounds checked by gemm); `o` is rows x nin.
            unsafe {
                gemm(
                    "linear backward (input)",
                    gm.0,
                    nin,
                    nout,
                    mat(gs, g, gm),
                    wm,
                    o,
                    acc,
                )
            };
        }
    })
}

/// `out (+)= gᵀ·x` (the weight gradient).
fn weight_grad<T: Float + Host + Gemm>(g: &Tensor, x: &Tensor, out: &mut Out<'_>) {
    let (nout, nin) = (g.shape()[g.ndim() - 1], x.shape()[x.ndim() - 1]);
    let (gm, xm) = (
        as_mat(g, nout).expect("checked by the caller"),
        as_mat(x, nin).expect("checked by the caller"),
    );
    assert_eq!(
        gm.0, xm.0,
        "linear backward: grad_out and input rows differ"
    );
    out.host_slice::<T, 2>([g, x], |[gb, xb], o, acc| {
        let (gs, xs) = (T::of(gb), T::of(xb));
        {
            // SAFETY: views of locked buffers (bounds checked by gemm); `o` is nout x nin.
            unsafe {
                gemm(
                    "linear backward (weight)",
                    nout,
                    nin,
                    gm.0,
                    mat(gs, g, gm).t(),
                    mat(xs, x, xm),
                    o,
                    acc,
                )
            };
        }
    })
}

/// `out (+)= Σ_rows g` (the bias gradient).
fn bias_grad<T: Float + Host>(g: &Tensor, out: &mut Out<'_>) {
    let nout = g.shape()[g.ndim() - 1];
    let gm = as_mat(g, nout).expect("checked by the caller");
    let base = g.layout().offset;
    out.host_slice::<T, 1>([g], |[gb], o, acc| {
        let gs = T::of(gb);
        if !acc {
            o.iter_mut().for_each(|v| *v = T::ZERO);
        }
        for r in 0..gm.0 {
            let row = &gs[base + r * gm.1..];
            if gm.2 == 1 {
                // Contiguous rows: a plain zip, which vectorises.
                for (o, &v) in o.iter_mut().zip(&row[..nout]) {
                    *o += v;
                }
            } else {
                for (j, o) in o.iter_mut().enumerate() {
                    *o += row[j * gm.2];
                }
            }
        }
    })
}

/// Whether `x` fits a 2-D weight `[out, in]`: at least one dimension, the
/// last of size `in`, and the weight's dtype, with PyTorch's words. `layer`
/// describes the layer in messages (`Linear(in_features=13, ..)`, from
/// `nn::Linear`); `None` for the op itself (`F.linear`), whose spec calls
/// this.
pub(crate) fn check_input(x: &Tensor, weight: &Tensor, layer: Option<&str>) -> Result<()> {
    let (out_f, in_f) = (
        weight.shape()[0],
        weight.shape().get(1).copied().unwrap_or(1),
    );
    let last = x.shape().last().copied();
    if last != Some(in_f) {
        // Built only here: the check runs on every step, allocation-free.
        let who = match layer {
            Some(l) => l.to_string(),
            None => format!("the weight (shape {:?})", weight.shape()),
        };
        let rows: usize = x.shape().iter().rev().skip(1).product();
        let fix = match (layer, last) {
            (Some(_), Some(l)) => format!(
                "pass inputs of shape [.., {in_f}], or build the layer with in_features = {l}"
            ),
            _ => format!("pass inputs of shape [.., {in_f}]"),
        };
        return Err(Error::shape(
            "linear",
            format!(
                "mat1 and mat2 shapes cannot be multiplied ({rows}x{} and {in_f}x{out_f}): {who} \
                 takes inputs whose last dimension is in_features = {in_f}, but the input has \
                 shape {:?}; {fix}",
                last.unwrap_or(0),
                x.shape()
            ),
        ));
    }
    if x.dtype() != weight.dtype() {
        let (xd, wd) = (x.dtype(), weight.dtype());
        let (weight_of, model) = match layer {
            Some(l) => (format!("the weight of {l}"), "the model"),
            None => ("the weight".to_string(), "the weight"),
        };
        return Err(Error::dtype(
            "linear",
            format!(
                "expected both to have the same dtype, but the input is {xd} and {weight_of} \
                 is {wd} (mat1 and mat2 must have the same dtype); convert the input with \
                 x.to_dtype(DType::{wd:?}), or {model} with .to_dtype(DType::{xd:?})"
            ),
        ));
    }
    Ok(())
}

/// `x·wᵀ + b` on the tape (`F.linear`), or the op's shape, dtype or
/// device error.
pub(crate) fn try_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    match b {
        Some(b) => try_apply(Linear, &[x, w, b]),
        None => try_apply(Linear, &[x, w]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::apply;
    use crate::test_util::{assert_close, f64s};

    fn filled(shape: &[usize], seed: usize, dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1009) as f64 / 1009.0 - 0.5)
            .collect();
        Tensor::from_vec(v, shape).to_dtype(dtype)
    }

    use crate::ops::matmul::tests::naive;

    /// The Linear op's fused kernels against the definitions (forward, and
    /// the gradients added into existing buffers), at
    /// sizes that take every path: the small kernel, faer, the split across
    /// the helper pool (rows and columns), a strided input, and f64.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "hours under Miri; unsafe_paths::out_variant_products_and_sgd_match_the_definitions takes the same paths at small sizes"
    )]
    fn linear_kernels_match_the_definitions() {
        for &(rows, nin, nout, dtype) in &[
            (16, 2, 16, DType::F32),
            (64, 784, 256, DType::F32),
            (300, 40, 20, DType::F32),
            (20, 300, 500, DType::F32),
            (9, 5, 3, DType::F64),
            (70, 200, 130, DType::F64),
        ] {
            let what = format!("{rows}x{nin}->{nout} {dtype}");
            // A transposed (strided) input view.
            let x = filled(&[nin, rows], 1, dtype).t();
            let w = filled(&[nout, nin], 2, dtype);
            let b = filled(&[nout], 3, dtype);
            assert!(fused(&x, &w, Some(&b)));
            let y = apply(Linear, &[&x, &w, &b]);
            let mut want = naive(&x, &w.t());
            let bv = f64s(&b);
            for (i, v) in want.iter_mut().enumerate() {
                *v += bv[i % nout];
            }
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            assert_close(
                &f64s(&y),
                &want,
                tol * nin as f64,
                &format!("{what} forward"),
            );

            let g = filled(&[rows, nout], 4, dtype);
            let opts = crate::TensorOptions::new().dtype(dtype);
            // dw and db accumulate onto what is there (here: ones).
            let dw = Tensor::ones_opts([nout, nin], &opts);
            let db = Tensor::ones_opts([nout], &opts);
            let dx = Tensor::zeros_opts([rows, nin], &opts);
            let saved = Linear.save(&[&x, &w, &b], &y, &[true; 3]);
            // The slots own their buffers (dw, db): the kernels add into them.
            let (mut sw, mut sb, mut sx) = (Some(dw.clone()), Some(db.clone()), None);
            let (mut bw, mut bb, mut bx) = (Some(dw.clone()), Some(db.clone()), Some(dx.clone()));
            Linear.backward(
                &saved,
                &g,
                &mut [
                    GradSlot::with_buffer(&mut sx, &mut bx, true),
                    GradSlot::with_buffer(&mut sw, &mut bw, true),
                    GradSlot::with_buffer(&mut sb, &mut bb, true),
                ],
            );
            drop((bw, bb, bx));
            let dx = sx.expect("dx");
            let want_dw: Vec<f64> = naive(&g.t(), &x).iter().map(|v| v + 1.0).collect();
            assert_close(
                &f64s(&dw),
                &want_dw,
                tol * rows as f64,
                &format!("{what} dw"),
            );
            let gv = f64s(&g);
            let want_db: Vec<f64> = (0..nout)
                .map(|j| 1.0 + (0..rows).map(|r| gv[r * nout + j]).sum::<f64>())
                .collect();
            assert_close(
                &f64s(&db),
                &want_db,
                tol * rows as f64,
                &format!("{what} db"),
            );
            assert_close(
                &f64s(&dx),
                &naive(&g, &w),
                tol * nout as f64,
                &format!("{what} dx"),
            );
        }
    }
}
