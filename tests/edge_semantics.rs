//! PyTorch's semantics at the edges: NaN through relu (forward and
//! backward, on the tape and the compile-time path), statistics of empty
//! tensors, softmax over a size-0 dim, the gradients of maximum/minimum,
//! clamp and abs at ties, bounds and NaN. The expected values are what
//! PyTorch 2.15 prints for the same calls (quoted beside each).

use deriv::nn::{Linear, Module, ReLU, TrainStep};
use deriv::prelude::*;

/// Bitwise equality, so NaN matches NaN and -0.0 differs from 0.0.
#[track_caller]
fn assert_bits(got: &[f32], want: &[f32]) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got), bits(want), "got {got:?}, want {want:?}");
}

const NAN: f32 = f32::NAN;

/// `torch.relu(torch.tensor([nan, 1., -1., -0., 0.]))` is
/// `tensor([nan, 1., 0., -0., 0.])`: NaN propagates and -0.0 stays -0.0.
#[test]
fn relu_keeps_nan_as_pytorch_does() {
    let x = tensor![NAN, 1., -1., -0.0, 0.];
    assert_bits(&x.relu().to_vec::<f32>(), &[NAN, 1., 0., -0.0, 0.]);
    // f64 and a strided view take other kernels.
    let x64 = tensor![[NAN, 2.0], [-3.0, NAN]].to_dtype(DType::F64).t();
    let y = x64.relu().to_vec::<f64>();
    assert!(
        y[0].is_nan() && y[3].is_nan() && y[1] == 0.0 && y[2] == 2.0,
        "{y:?}"
    );
}

/// `y = x.relu(); y.backward(torch.ones(5))` gives `x.grad ==
/// tensor([1., 1., 0., 0., 0.])`: ReLU's backward is
/// `threshold_backward(grad, result, 0)`, `result <= 0 ? 0 : grad`, so the
/// gradient at a NaN passes through (NaN <= 0 is false).
#[test]
fn relu_backward_at_nan_matches_pytorch() {
    let x = tensor![NAN, 1., -1., -0.0, 0.].requires_grad_(true);
    x.relu().backward_with(&Tensor::ones([5]));
    assert_bits(&x.grad().unwrap().to_vec::<f32>(), &[1., 1., 0., 0., 0.]);
    // The public kernel the compile-time path calls.
    let y = tensor![NAN, 1., 0., -0.0];
    let g = tensor![3., 4., 5., 6.];
    assert_bits(&deriv::vjp::relu(&y, &g).to_vec::<f32>(), &[3., 4., 0., 0.]);
}

deriv::network! {
    struct Net = Linear(2, 2) -> ReLU;
}

/// A NaN entering a ReLU network shows in its output on every path: the
/// tape, `forward_train`/`backward`, and the buffer-reusing `TrainStep`
/// (the out-variant kernels), with the same gradients.
#[test]
fn nan_through_a_relu_network_is_the_same_on_every_path() {
    let mut net = Net::default();
    let mut init = deriv::io::StateDict::new();
    init.insert("0.weight", tensor![[1., 0.], [0., 1.]]);
    init.insert("0.bias", tensor![0., 0.]);
    net.load_state_dict(&init).unwrap();
    // Row 0 is NaN after the matmul (NaN · 0 is NaN); relu keeps it.
    let x = tensor![[NAN, -2.], [3., 4.]];
    let g = tensor![[1., 1.], [1., 1.]];

    let tape = net.forward(&x);
    tape.backward_with(&g);
    let tape_grad = net.named_parameters()[0].1.grad().unwrap().to_vec::<f32>();
    assert_bits(&tape.to_vec::<f32>(), &[NAN, NAN, 3., 4.]);

    net.zero_grad();
    let (y, saved) = net.forward_train(&x);
    assert_bits(&y.to_vec::<f32>(), &[NAN, NAN, 3., 4.]);
    net.backward(saved, &g, false);
    let compiled_grad = net.named_parameters()[0].1.grad().unwrap().to_vec::<f32>();
    assert_bits(&compiled_grad, &tape_grad);

    net.zero_grad();
    let mut ws = net.workspace();
    let y = net.forward_train_ws(&x, &mut ws).clone();
    assert_bits(&y.to_vec::<f32>(), &[NAN, NAN, 3., 4.]);
    net.backward_ws(&mut ws, &g, false);
    let ws_grad = net.named_parameters()[0].1.grad().unwrap().to_vec::<f32>();
    assert_bits(&ws_grad, &tape_grad);
    // PyTorch (Linear with these weights, relu, backward of ones):
    // weight.grad = tensor([[nan, 2.], [nan, 2.]]), bias.grad = tensor([2., 2.]).
    assert_bits(&tape_grad, &[NAN, 2., NAN, 2.]);
    let bias_grad = net.named_parameters()[1].1.grad().unwrap().to_vec::<f32>();
    assert_bits(&bias_grad, &[2., 2.]);
}

/// `torch.tensor([]).std()` and `.var()` are `nan`;
/// `torch.zeros(3, 0).var(dim=1)` is `tensor([nan, nan, nan])`;
/// `torch.tensor([1., 2., 3.]).var(correction=5)` is `inf` (PyTorch divides
/// by `max(0, n - correction)`); `torch.tensor([1.]).std()` is `nan`.
#[test]
fn statistics_of_empty_and_tiny_tensors_match_pytorch() {
    let empty = Tensor::zeros([0]);
    assert!(empty.std().item().is_nan());
    assert!(empty.var().item().is_nan());
    let rows = Tensor::zeros([3, 0]);
    for v in rows.var_dim(1, 1, false).to_vec::<f32>() {
        assert!(v.is_nan());
    }
    for v in rows.std_dim(1, 0, false).to_vec::<f32>() {
        assert!(v.is_nan());
    }
    assert_eq!(
        tensor![1., 2., 3.].var_dim(0, 5, false).item(),
        f64::INFINITY
    );
    assert!(tensor![1.].std().item().is_nan());
    // Ordinary sizes are unchanged: torch.tensor([1., 2., 4.]).var() == 2.3333.
    assert!((tensor![1., 2., 4.].var().item() - 7.0 / 3.0).abs() < 1e-6);
}

/// `torch.softmax(torch.zeros(2, 0), 1)` is an empty `[2, 0]` tensor, as is
/// `log_softmax`, and `torch.softmax(torch.zeros(0, 3), 1)` is `[0, 3]`;
/// backward through them gives an empty gradient of the input's shape.
#[test]
fn softmax_over_a_size_zero_dim_is_empty() {
    for shape in [[2usize, 0], [0, 3]] {
        for dim in [0isize, 1, -1] {
            let x = Tensor::zeros(shape).requires_grad_(true);
            let s = x.softmax(dim);
            let l = x.log_softmax(dim);
            assert_eq!((s.shape(), l.shape()), (&shape[..], &shape[..]));
            (s.sum() + l.sum()).backward();
            assert_eq!(x.grad().unwrap().shape(), &shape[..]);
        }
    }
}

/// PyTorch 2.15, for `a = [1, 2, nan, 3]`, `b = [2, 2, 1, nan]`:
/// `torch.maximum(a, b).sum().backward()` gives `a.grad = [0, .5, 1, 1]`,
/// `b.grad = [1, .5, 1, 1]` (a tie splits the gradient; where either is NaN
/// both take all of it), and `minimum` the mirror image. `clamp(x, -0.5, 2)`
/// at `x = [-0.5, 0, 2, 2.5]` passes the gradient only strictly inside:
/// `[0, 1, 0, 0]`; `abs` at `[-0.5, 0, nan]` gives `[-1, 0, 0]`.
#[test]
fn extremum_clamp_and_abs_gradients_at_ties_bounds_and_nan_are_pytorchs() {
    let grads = |f: fn(&Tensor, &Tensor) -> Tensor| {
        let a = tensor![1., 2., NAN, 3.].requires_grad_(true);
        let b = tensor![2., 2., 1., NAN].requires_grad_(true);
        f(&a, &b).sum().backward();
        (
            a.grad().unwrap().to_vec::<f32>(),
            b.grad().unwrap().to_vec::<f32>(),
        )
    };
    let (ga, gb) = grads(|a, b| a.maximum(b));
    assert_bits(&ga, &[0., 0.5, 1., 1.]);
    assert_bits(&gb, &[1., 0.5, 1., 1.]);
    let (ga, gb) = grads(|a, b| a.minimum(b));
    assert_bits(&ga, &[1., 0.5, 1., 1.]);
    assert_bits(&gb, &[0., 0.5, 1., 1.]);
    let x = tensor![-0.5, 0., 2., 2.5].requires_grad_(true);
    x.clamp(Some(-0.5), Some(2.0)).sum().backward();
    assert_bits(&x.grad().unwrap().to_vec::<f32>(), &[0., 1., 0., 0.]);
    let x = tensor![-0.5, 0., NAN].requires_grad_(true);
    x.abs().sum().backward();
    assert_bits(&x.grad().unwrap().to_vec::<f32>(), &[-1., 0., 0.]);
}
