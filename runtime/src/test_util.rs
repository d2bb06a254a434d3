//! Helpers the runtime's unit tests share.

use crate::tensor::Tensor;

/// The tensor's values as f64.
pub(crate) fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_vec::<f64>()
}

/// Every element of `got` within `tol` of `want`, relative to `1 + |want|`;
/// `what` names the comparison in the message.
#[track_caller]
pub(crate) fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what} [{i}]: {g} vs {w}"
        );
    }
}

/// A layer's buffer-reusing step against its allocating compile-time path
/// (`Differentiable`, which the integration tests hold to the tape) on `x`
/// with a random output gradient: output, input gradient and every
/// parameter's gradient, twice on one workspace (the second step reuses
/// its buffers); `fused` says from the workspace whether the fused kernels
/// (not the fallback) ran, which must hold each time.
#[track_caller]
pub(crate) fn assert_step_matches_allocating<M: crate::nn::TrainStep>(
    m: &M,
    x: &Tensor,
    tol: f64,
    what: &str,
    fused: impl Fn(&M::Workspace) -> bool,
) {
    use crate::tensor::DType;
    let as_f64 = |t: &Tensor| t.to_dtype(DType::F64).to_vec::<f64>();
    let close =
        |a: &[f64], b: &[f64], part: &str| assert_close(a, b, tol, &format!("{what}: {part}"));
    let clear = || m.parameters().iter().for_each(|p| p.set_grad(None));
    let grads = || -> Vec<Vec<f64>> {
        m.parameters()
            .iter()
            .map(|p| as_f64(&p.grad().expect("reached")))
            .collect()
    };
    clear();
    let (y, saved) = m.forward_train(x);
    let g = Tensor::randn_with(y.shape(), &mut crate::Generator::new(5)).to_dtype(x.dtype());
    let dx = m.backward(saved, &g, true).expect("asked for");
    let want = grads();
    let mut ws = m.workspace();
    for _ in 0..2 {
        clear();
        let y_ws = as_f64(m.forward_train_ws(x, &mut ws));
        assert!(fused(&ws), "{what}: the fused kernels ran");
        close(&y_ws, &as_f64(&y), "output");
        let dx_ws = as_f64(m.backward_ws(&mut ws, &g, true).expect("asked for"));
        close(&dx_ws, &as_f64(&dx), "dx");
        for (got, want) in grads().iter().zip(&want) {
            close(got, want, "a parameter's gradient");
        }
    }
}
