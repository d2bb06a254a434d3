//! What the tests against PyTorch's values share: the reference scripts'
//! deterministic inputs and the comparisons.

use deriv::Tensor;

/// The reference scripts' deterministic tensor (`det` in
/// tests/data/reference_util.py): element `k` is `((k·a + b) mod m)/scale − shift`, f64.
pub fn det(shape: &[usize], a: usize, b: usize, m: usize, scale: f64, shift: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|k| ((k * a + b) % m) as f64 / scale - shift)
        .collect();
    Tensor::from_vec(v, shape)
}

/// `t`'s elements are PyTorch's `want`, each within `tol`.
#[track_caller]
pub fn assert_values(what: &str, t: &Tensor, want: &[f64], tol: f64) {
    let got = t.to_vec::<f64>();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{k}]: {g} vs PyTorch's {w}");
    }
}

/// The largest elementwise difference of two tensors of one shape.
#[track_caller]
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec::<f64>()
        .iter()
        .zip(b.to_vec::<f64>())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `layer`'s compile-time backward and its `TrainStep` against the tape on
/// input `x` with a random output gradient: the output, the input's
/// gradient and every parameter's gradient.
#[track_caller]
pub fn assert_paths_match_tape<L: deriv::nn::TrainStep>(layer: &L, x: &Tensor, what: &str) {
    use deriv::{no_grad, DType, Generator};
    let y0 = no_grad(|| layer.forward(x));
    let v = Tensor::randn_with(y0.shape(), &mut Generator::new(4)).to_dtype(DType::F64);
    let clear = || layer.parameters().iter().for_each(|p| p.set_grad(None));
    let grads = || -> Vec<Tensor> {
        layer
            .parameters()
            .iter()
            .map(|p| p.grad().expect("reached").clone_data())
            .collect()
    };
    let check = |path: &str,
                 y: &Tensor,
                 dx: &Tensor,
                 params: &[Tensor],
                 tape: &[Tensor],
                 dx_tape: &Tensor| {
        assert!(max_abs_diff(y, &y0) < 1e-12, "{what}, {path}: output");
        assert!(max_abs_diff(dx, dx_tape) < 1e-10, "{what}, {path}: dx");
        for ((name, _), (p, t)) in layer.named_parameters().iter().zip(params.iter().zip(tape)) {
            assert!(max_abs_diff(p, t) < 1e-10, "{what}, {path}: {name}");
        }
    };
    clear();
    let xt = x.detach().requires_grad_(true);
    layer.forward(&xt).backward_with(&v);
    let (tape, dx_tape) = (grads(), xt.grad().expect("reached"));
    clear();
    let (y, saved) = layer.forward_train(x);
    assert!(
        y.grad_fn().is_none(),
        "{what}: forward_train must not record"
    );
    let dx = layer.backward(saved, &v, true).expect("asked for");
    check("compile-time", &y, &dx, &grads(), &tape, &dx_tape);
    clear();
    let mut ws = layer.workspace();
    let y = layer.forward_train_ws(x, &mut ws).clone_data();
    let dx = layer
        .backward_ws(&mut ws, &v, true)
        .expect("asked for")
        .clone_data();
    check("TrainStep", &y, &dx, &grads(), &tape, &dx_tape);
}
