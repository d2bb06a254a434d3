//! `F.conv_transpose2d`: the adjoint of `conv2d` (the gradient of a
//! convolution with respect to its input, as a layer). Its forward is
//! conv2d's input-gradient kernel, its input's gradient conv2d's forward and
//! its weight's gradient conv2d's weight-gradient kernel with the two
//! tensors' roles swapped: the same kernels (conv2d.rs) and, on the GPU, the
//! same composed forms.

use super::composed;
use super::conv2d::{bias_grad, forward_cpu, geo_dims, input_grad, weight_grad, Conv2d, Geometry};
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// A transposed 2-D convolution, inputs `[x, weight, bias]` (bias
/// optional): `x` `[N, C_in, H, W]`, `weight` `[C_in, C_out/groups, kh, kw]`,
/// `bias` `[C_out]`; the output is `[N, C_out, H_out, W_out]` with
/// `H_out = (H − 1)·stride − 2·padding + dilation·(kh − 1) + output_padding + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2d {
    /// The convolution this one is the adjoint of: stride, padding (the
    /// same on both sides), dilation, groups.
    pub conv: Conv2d,
    /// Rows and columns added after the output (`output_padding`).
    pub output_padding: [usize; 2],
}

impl ConvTranspose2d {
    /// The output's shape and the geometry of the convolution that maps it
    /// back to the input's.
    fn geometry(&self, x: &Tensor, w: &Tensor) -> Result<([usize; 4], Geometry)> {
        let err = |msg: String| Err(Error::shape("conv_transpose2d", msg));
        let (xs, ws) = (x.shape(), w.shape());
        if xs.len() != 4 || ws.len() != 4 {
            return err(format!(
                "expected an input [N, C_in, H, W] and a weight [C_in, C_out/groups, kh, kw], \
                 got shapes {xs:?} and {ws:?}"
            ));
        }
        let g = self.conv.groups;
        if ws[0] != xs[1] || g == 0 || !xs[1].is_multiple_of(g) {
            return err(format!(
                "Given transposed=1, weight of size {ws:?}, expected input {xs:?} to have {} \
                 channels, but got {} channels instead (and in_channels must be divisible by \
                 groups={g})",
                ws[0], xs[1]
            ));
        }
        let (s, d, p, op) = (
            self.conv.stride,
            self.conv.dilation,
            self.conv.padding,
            self.output_padding,
        );
        // PyTorch's rule: below the stride or below the dilation.
        if (0..2).any(|i| op[i] >= s[i] && op[i] >= d[i]) {
            return err(format!(
                "output padding must be smaller than either stride or dilation, but got \
                 output_padding {op:?}, stride {s:?} and dilation {d:?}; lower the output \
                 padding (it only adds rows and columns after the output)"
            ));
        }
        let size = |i: usize, n: usize, k: usize| -> Option<usize> {
            let full = (n.checked_sub(1)? * s[i] + d[i] * k.checked_sub(1)? + op[i] + 1) as i64;
            let out = full - (p[2 * i] + p[2 * i + 1]) as i64;
            (out > 0).then_some(out as usize)
        };
        let (Some(ho), Some(wo)) = (size(0, xs[2], ws[2]), size(1, xs[3], ws[3])) else {
            return err(format!(
                "the output would be empty: input {xs:?}, kernel {:?}, padding {:?}",
                &ws[2..],
                [p[0], p[2]]
            ));
        };
        let out = [xs[0], ws[1] * g, ho, wo];
        // The convolution maps `out` back to `x`: its first H × W outputs
        // (an output padding at or above the stride lets it reach past them,
        // to inputs `x` does not have).
        let geo = self.conv.geometry_of(&out, ws)?.first_outputs(xs[2], xs[3]);
        Ok((out, geo))
    }
}

impl ConvTranspose2d {
    /// The forward with the convolution's composed ops (the GPU's path):
    /// its input gradient, for an input of the output's shape.
    fn forward_composed(
        &self,
        geo: &Geometry,
        shape: [usize; 4],
        x: &Tensor,
        w: &Tensor,
    ) -> Tensor {
        let ghost = Tensor::zeros_opts(shape, &x.options());
        let (mut dy, mut unused) = (None, None);
        {
            let mut slots = [
                GradSlot::new(&mut dy, true),
                GradSlot::new(&mut unused, false),
            ];
            composed::conv2d_backward(&self.conv, &geo_dims(geo), &ghost, w, x, &mut slots);
        }
        dy.expect("asked for")
    }

    /// The input's and weight's gradients with the convolution's composed
    /// ops (the GPU's path).
    fn backward_composed(
        &self,
        geo: &Geometry,
        x: &Tensor,
        w: &Tensor,
        g: &Tensor,
        need: [bool; 2],
    ) -> [Option<Tensor>; 2] {
        let dims = geo_dims(geo);
        let dx = need[0].then(|| composed::conv2d_forward(&self.conv, &dims, g, w, None));
        let dw = need[1].then(|| {
            let (mut unused, mut dw) = (None, None);
            {
                let mut slots = [
                    GradSlot::new(&mut unused, false),
                    GradSlot::new(&mut dw, true),
                ];
                composed::conv2d_backward(&self.conv, &dims, g, w, x, &mut slots);
            }
            dw.expect("asked for")
        });
        [dx, dw]
    }
}

impl Op for ConvTranspose2d {
    const NAME: &'static str = "ConvolutionBackward";
    const OP: &'static str = "conv_transpose2d";
    /// The input and the weight.
    type Saved = (Tensor, Tensor);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (input, w) = (x[0], x[1]);
        let (out, _) = self.geometry(input, w)?;
        let dtype = w.dtype();
        if !dtype.is_float() || input.dtype() != dtype {
            return Err(Error::dtype(
                "conv_transpose2d",
                format!(
                    "expected a float input and weight of one dtype, got {} and {dtype}; \
                     convert the input with .to_dtype(DType::{dtype:?})",
                    input.dtype()
                ),
            ));
        }
        if let Some(b) = x.get(2)
            && (b.shape() != [out[1]] || b.dtype() != dtype)
        {
            return Err(Error::shape(
                "conv_transpose2d",
                format!(
                    "the bias must be a {dtype} tensor of shape [{}], got a {} tensor of shape \
                     {:?}",
                    out[1],
                    b.dtype(),
                    b.shape()
                ),
            ));
        }
        for t in &x[1..] {
            crate::ops::same_device("conv_transpose2d", input, t)?;
        }
        crate::tensor::checked_numel("conv_transpose2d", &out)?;
        Ok(Spec::shaped(&out, input))
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (input, w, b) = (x[0], x[1], x.get(2).copied());
        let (shape, geo) = self.geometry(input, w).expect("checked by spec");
        if input.device().is_cuda() {
            let y = self.forward_composed(&geo, shape, input, w);
            out.set(match b {
                Some(b) => &y + &b.reshape([shape[1], 1, 1]),
                None => y,
            });
            return;
        }
        // Straight into `out`, the bias first: no buffer of its own.
        let (xc, wc) = (input.contiguous(), w.contiguous());
        match w.dtype() {
            DType::F32 => input_grad::<f32>(&self.conv, &geo, &wc, &xc, b, out),
            _ => input_grad::<f64>(&self.conv, &geo, &wc, &xc, b, out),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), x[1].clone())
    }

    /// `dx` is the convolution of `dy`, `dW` the convolution's weight
    /// gradient with `dy` as its input and `x` as its output's gradient,
    /// `db = Σ dy`.
    fn backward(&self, (x, w): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let (_, geo) = self.geometry(x, w).expect("checked by spec");
        if x.device().is_cuda() {
            if grads.get(2).is_some_and(|s| s.needed()) {
                grads[2].add(g.sum_dim(&[0isize, 2, 3][..], false));
            }
            let need = [grads[0].needed(), grads[1].needed()];
            let [dx, dw] = self.backward_composed(&geo, x, w, g, need);
            for (slot, d) in grads.iter_mut().zip([dx, dw]) {
                if let Some(d) = d {
                    slot.add(d);
                }
            }
            return;
        }
        let (x, w, g) = (x.contiguous(), w.contiguous(), g.contiguous());
        macro_rules! run {
            ($t:ty) => {{
                if grads[0].needed() {
                    grads[0].add_into(Spec::shaped(x.shape(), &g), |out| {
                        forward_cpu::<$t>(&self.conv, &geo, &g, &w, None, out)
                    });
                }
                if grads[1].needed() {
                    grads[1].add_into(Spec::shaped(w.shape(), &g), |out| {
                        weight_grad::<$t>(&self.conv, &geo, &g, &x, out)
                    });
                }
                if grads.get(2).is_some_and(|s| s.needed()) {
                    // The output's channels and planes: the convolution's input's.
                    let (channels, plane) = (g.shape()[1], g.shape()[2] * g.shape()[3]);
                    grads[2].add_into(Spec::shaped(&[channels], &g), |out| {
                        bias_grad::<$t>(channels, plane, &g, out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{apply, no_grad};

    /// The GPU's composed forward and gradients against the CPU kernels
    /// (both run here on the CPU), with stride, padding, output padding,
    /// groups and dilation.
    #[test]
    fn composed_path_matches_the_kernels() {
        let mut rng = crate::Generator::new(9);
        let mut r = |shape: &[usize]| Tensor::randn_with(shape, &mut rng).to_dtype(DType::F64);
        // The second: output padding at or above the stride, below the dilation.
        let cases = [
            (
                [2, 4, 3, 5],
                [4, 3, 3, 2],
                [2, 3],
                [1, 0],
                [1, 2],
                2,
                [1, 2],
            ),
            (
                [1, 2, 3, 4],
                [2, 2, 2, 3],
                [1, 2],
                [0, 1],
                [2, 1],
                1,
                [3, 1],
            ),
        ];
        for (xs, ws, stride, padding, output_padding, groups, dilation) in cases {
            let (x, w) = (r(&xs), r(&ws));
            let op = crate::ops::ConvTranspose2dOptions::new()
                .stride(stride)
                .padding(padding)
                .output_padding(output_padding)
                .groups(groups)
                .dilation(dilation)
                .op();
            let y = apply(op, &[&x, &w]);
            let (shape, geo) = op.geometry(&x, &w).unwrap();
            assert_eq!(y.shape(), shape);
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                crate::test_util::assert_close(&a.to_vec::<f64>(), &b.to_vec::<f64>(), 1e-12, what)
            };
            close(
                &no_grad(|| op.forward_composed(&geo, shape, &x, &w)),
                &y,
                "forward",
            );
            let g = r(&shape);
            let (mut dx, mut dw) = (None, None);
            {
                let mut slots = [GradSlot::new(&mut dx, true), GradSlot::new(&mut dw, true)];
                no_grad(|| op.backward(&(x.clone(), w.clone()), &g, &mut slots));
            }
            let [cdx, cdw] = no_grad(|| op.backward_composed(&geo, &x, &w, &g, [true, true]));
            close(&cdx.unwrap(), &dx.unwrap(), "dx");
            close(&cdw.unwrap(), &dw.unwrap(), "dw");
        }
    }
}
