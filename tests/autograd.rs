//! PyTorch's autograd semantics, with asserted values: accumulation and
//! zeroing, retain_graph, vector-Jacobian products, no_grad, detach, in-place
//! rules, the version counter, grad_fn names, leaves, fan-out, dtypes, and the
//! gradient-descent example.

use deriv::{
    is_grad_enabled, no_grad, set_grad_enabled, tensor, DType, Error, Generator, NoGradGuard,
    Tensor,
};

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ: {got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "element {i}: got {g}, want {w} (all: {got:?} vs {want:?})"
        );
    }
}

fn grad_of(t: &Tensor) -> Vec<f64> {
    t.grad()
        .expect("the leaf should have a gradient")
        .to_vec::<f64>()
}

// ---------------------------------------------------------------- accumulation

#[test]
fn gradients_accumulate_over_backward_calls() {
    let x = tensor![1., 2., 3.].requires_grad_(true);
    (&x * &x).sum().backward();
    assert_eq!(grad_of(&x), vec![2., 4., 6.]);
    (&x * &x).sum().backward();
    assert_eq!(grad_of(&x), vec![4., 8., 12.]);
    // A different function adds on top as well.
    (&x * 10.0).sum().backward();
    assert_eq!(grad_of(&x), vec![14., 18., 22.]);
}

#[test]
fn zeroing_through_grad_handle_and_zero_grad() {
    let x = tensor![1., -2.].requires_grad_(true);
    (&x * &x).sum().backward();
    let g = x.grad().unwrap();
    assert_eq!(g.to_vec::<f64>(), vec![2., -4.]);

    // `x.grad().unwrap().zero_()` zeroes the stored gradient itself.
    x.grad().unwrap().zero_();
    assert_eq!(grad_of(&x), vec![0., 0.]);
    assert_eq!(g.to_vec::<f64>(), vec![0., 0.]);

    // The next backward accumulates into the same buffer.
    (&x * 3.0).sum().backward();
    assert_eq!(grad_of(&x), vec![3., 3.]);
    assert!(x.grad().unwrap().shares_storage(&g));

    x.zero_grad();
    assert_eq!(grad_of(&x), vec![0., 0.]);
    (&x * &x).sum().backward();
    assert_eq!(grad_of(&x), vec![2., -4.]);

    // set_grad(None) drops it, like `x.grad = None`; zero_grad is then a no-op.
    x.set_grad(None);
    assert!(x.grad().is_none());
    x.zero_grad();
    assert!(x.grad().is_none());
    (&x * 5.0).sum().backward();
    assert_eq!(grad_of(&x), vec![5., 5.]);
}

#[test]
fn first_gradient_does_not_alias_other_tensors() {
    // y = x + 0 passes the seed straight through; zeroing x.grad must not
    // reach any tensor the user can still see.
    let x = tensor![1., 2.].requires_grad_(true);
    let v = tensor![7., 8.];
    (&x + 0.0).backward_with(&v);
    assert_eq!(grad_of(&x), vec![7., 8.]);
    x.grad().unwrap().zero_();
    assert_eq!(v.to_vec::<f64>(), vec![7., 8.]);

    let w = tensor![3.].requires_grad_(true);
    let seed = tensor![2.];
    w.backward_with(&seed);
    assert_eq!(grad_of(&w), vec![2.]);
    w.zero_grad();
    assert_eq!(seed.to_vec::<f64>(), vec![2.]);
}

// ---------------------------------------------------------------- retain_graph

#[test]
fn backward_retain_allows_a_second_backward() {
    let x = tensor![1., 2., 3.].requires_grad_(true);
    let y = (x.exp() * &x).sum(); // dy/dx = e^x (1 + x)
    y.backward_retain();
    let once: Vec<f64> = [1f64, 2., 3.]
        .iter()
        .map(|&v| v.exp() * (1.0 + v))
        .collect();
    assert_close(&grad_of(&x), &once, 1e-4);
    y.backward();
    let twice: Vec<f64> = once.iter().map(|g| 2.0 * g).collect();
    assert_close(&grad_of(&x), &twice, 1e-4);
    // The second (plain) backward freed the graph.
    let err = y.try_backward_opts(None, false).unwrap_err();
    assert!(err.to_string().contains("retain"), "{err}");
}

#[test]
fn second_backward_through_freed_graph_is_an_error() {
    let x = tensor![1., 2.].requires_grad_(true);
    let y = (&x * &x).sum();
    y.try_backward_opts(None, false)
        .expect("the first backward works");
    assert_eq!(grad_of(&x), vec![2., 4.]);
    let err = y.try_backward_opts(None, false).unwrap_err();
    assert!(matches!(err, Error::Autograd(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("second time"), "{msg}");
    assert!(msg.contains("backward_retain"), "{msg}");
    // A refused backward leaves the gradient untouched.
    assert_eq!(grad_of(&x), vec![2., 4.]);
}

#[test]
fn backward_through_a_partly_freed_graph_is_refused_without_side_effects() {
    let x = tensor![1., 2.].requires_grad_(true);
    let a = &x * &x;
    a.sum().backward(); // frees a's node
    assert_eq!(grad_of(&x), vec![2., 4.]);
    // A new graph that reaches the freed node through `a`.
    let z = (&a * &x).sum();
    let err = z.try_backward_opts(None, false).unwrap_err();
    assert!(err.to_string().contains("retain"), "{err}");
    assert_eq!(grad_of(&x), vec![2., 4.]);
}

#[test]
#[should_panic(expected = "Trying to backward through the graph a second time")]
fn second_plain_backward_panics() {
    let x = tensor![1., 2.].requires_grad_(true);
    let y = (&x * 2.0).exp().sum();
    y.backward();
    y.backward();
}

// ---------------------------------------------------------------- vector-Jacobian products

#[test]
fn backward_with_computes_vector_jacobian_product() {
    // y = W (x ⊙ x): J[i][j] = 2 W[i][j] x[j], so (vᵀJ)[j] = 2 x[j] Σ_i v[i] W[i][j].
    let w_vals = [[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]];
    let x_vals = [0.5, -1.5, 2.0];
    let v_vals = [2.0, -0.5];
    let w = tensor![[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]].to_dtype(DType::F64);
    let x = tensor![0.5, -1.5, 2.0]
        .to_dtype(DType::F64)
        .requires_grad_(true);
    let y = w.matmul(&(&x * &x));
    assert_eq!(y.shape(), &[2]);
    y.backward_with(&tensor![2.0, -0.5]);
    let want: Vec<f64> = (0..3)
        .map(|j| 2.0 * x_vals[j] * (0..2).map(|i| v_vals[i] * w_vals[i][j]).sum::<f64>())
        .collect();
    assert_close(&grad_of(&x), &want, 1e-12);
    assert_eq!(x.grad().unwrap().dtype(), DType::F64);
}

#[test]
fn backward_with_on_a_matrix_output() {
    // y = exp(x) elementwise: J is diagonal, vᵀJ = v ⊙ e^x.
    let x = tensor![[0.0, 1.0], [-1.0, 0.5]]
        .to_dtype(DType::F64)
        .requires_grad_(true);
    let v = tensor![[1.0, 2.0], [3.0, -4.0]].to_dtype(DType::F64);
    x.exp().backward_with(&v);
    let want: Vec<f64> = [(0.0f64, 1.0), (1.0, 2.0), (-1.0, 3.0), (0.5, -4.0)]
        .iter()
        .map(|&(xv, vv)| vv * xv.exp())
        .collect();
    assert_close(&grad_of(&x), &want, 1e-12);
}

#[test]
fn backward_with_wrong_shape_names_both_shapes() {
    let x = tensor![1., 2., 3.].requires_grad_(true);
    let y = &x * 2.0;
    let err = y
        .try_backward_opts(Some(&tensor![1., 1.]), false)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("[2]"), "{msg}");
    assert!(msg.contains("[3]"), "{msg}");
    assert!(x.grad().is_none());
    // The graph was not consumed by the refused call.
    y.backward_with(&tensor![1., 1., 1.]);
    assert_eq!(grad_of(&x), vec![2., 2., 2.]);
}

#[test]
fn backward_on_non_scalar_is_an_error() {
    let x = tensor![1., 2., 3.].requires_grad_(true);
    let y = &x * 2.0;
    let err = y.try_backward_opts(None, false).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("one-element"), "{msg}");
    assert!(msg.contains("[3]"), "{msg}");
    assert!(x.grad().is_none());
    // A one-element non-0-d output is fine.
    let z = (&x * 2.0).sum_dim(0, true);
    assert_eq!(z.shape(), &[1]);
    z.backward();
    assert_eq!(grad_of(&x), vec![2., 2., 2.]);
}

#[test]
#[should_panic(expected = "grad can be implicitly created only for one-element outputs")]
fn backward_on_non_scalar_panics() {
    let x = tensor![1., 2., 3.].requires_grad_(true);
    x.exp().backward();
}

#[test]
fn backward_without_requires_grad_is_an_error() {
    let x = tensor![1., 2.];
    let y = (&x * 2.0).sum();
    let err = y.try_backward_opts(None, false).unwrap_err();
    assert!(err.to_string().contains("does not require grad"), "{err}");
    // Computed inside no_grad from a leaf that does require grad: same error.
    let w = tensor![1., 2.].requires_grad_(true);
    let z = no_grad(|| (&w * 2.0).sum());
    assert!(z.try_backward_opts(None, false).is_err());
    assert!(w.grad().is_none());
}

#[test]
#[should_panic(expected = "does not require grad")]
fn backward_without_requires_grad_panics() {
    tensor![1., 2.].sum().backward();
}

#[test]
fn backward_on_a_leaf_seeds_its_gradient() {
    let x = Tensor::scalar(3.0f32).requires_grad_(true);
    x.backward();
    assert_eq!(grad_of(&x), vec![1.0]);
    x.backward();
    assert_eq!(grad_of(&x), vec![2.0]);
}

// ---------------------------------------------------------------- no_grad and detach

#[test]
fn no_grad_closure_records_nothing() {
    let x = tensor![1., 2.].requires_grad_(true);
    let y = no_grad(|| (&x * 2.0).exp().sum());
    assert!(y.grad_fn().is_none());
    assert!(!y.requires_grad());
    assert!(y.is_leaf());
    assert!(is_grad_enabled());
    // Values are still computed.
    assert!((y.item() - (2f64.exp() + 4f64.exp())).abs() < 1e-3);
    // Recording resumes afterwards.
    let z = &x * 2.0;
    assert_eq!(z.grad_fn(), Some("MulBackward"));
    assert!(z.requires_grad());
}

#[test]
fn no_grad_guard_scopes_and_nests() {
    let x = tensor![1., 2.].requires_grad_(true);
    {
        let _guard = NoGradGuard::new();
        assert!(!is_grad_enabled());
        let y = &x + 1.0;
        assert!(y.grad_fn().is_none());
        assert!(!y.requires_grad());
        {
            let _inner = NoGradGuard::new();
            assert!(!is_grad_enabled());
        }
        // Dropping the inner guard restores "disabled", not "enabled".
        assert!(!is_grad_enabled());
        assert!(!x.matmul(&x).requires_grad());
    }
    assert!(is_grad_enabled());
    assert_eq!((&x + 1.0).grad_fn(), Some("AddBackward"));

    let before = set_grad_enabled(false);
    assert!(before);
    assert!(!(&x * 3.0).requires_grad());
    set_grad_enabled(true);
    assert!((&x * 3.0).requires_grad());
}

#[test]
fn detach_shares_storage_but_cuts_the_graph() {
    let x = tensor![1., 2., 3.].requires_grad_(true);
    let y = &x * 2.0;
    let d = y.detach();
    assert!(d.shares_storage(&y));
    assert!(d.is_leaf());
    assert!(!d.requires_grad());
    assert!(d.grad_fn().is_none());
    assert_eq!(d.to_vec::<f64>(), vec![2., 4., 6.]);

    // Gradient does not flow through d: d(sum(d * x))/dx = d = 2x, not 4x.
    (&d * &x).sum().backward();
    assert_eq!(grad_of(&x), vec![2., 4., 6.]);

    // Writing through the detached handle is visible in y (shared data).
    d.add_(1.0);
    assert_eq!(y.to_vec::<f64>(), vec![3., 5., 7.]);

    // detach of a leaf shares the leaf's data too.
    let xd = x.detach();
    assert!(xd.shares_storage(&x));
    assert!(!xd.requires_grad());
}

// ---------------------------------------------------------------- in-place rules

#[test]
#[should_panic(
    expected = "a leaf tensor that requires grad is being used in an in-place operation"
)]
fn inplace_on_leaf_requiring_grad_panics() {
    let w = tensor![1., 2.].requires_grad_(true);
    w.add_(1.0);
}

#[test]
fn inplace_on_leaf_panic_names_the_fix() {
    let w = tensor![1., 2.].requires_grad_(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.mul_(2.0);
    }));
    let payload = result.expect_err("mul_ on a leaf requiring grad must panic");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("no_grad"), "{msg}");
    assert!(msg.contains("mul_"), "{msg}");
    // Nothing was written.
    assert_eq!(w.to_vec::<f64>(), vec![1., 2.]);
}

#[test]
fn inplace_on_leaf_works_inside_no_grad() {
    let w = tensor![1., 2.].requires_grad_(true);
    no_grad(|| {
        w.add_(1.0);
        w.mul_(tensor![2., 3.]);
        w.sub_(0.5);
        w.div_(2.0);
    });
    assert_eq!(w.to_vec::<f64>(), vec![1.75, 4.25]);
    assert!(w.is_leaf());
    assert!(w.requires_grad());
    // It still works as a parameter afterwards.
    (&w * &w).sum().backward();
    assert_eq!(grad_of(&w), vec![3.5, 8.5]);
}

#[test]
#[should_panic(expected = "in-place operations on a tensor that is part of the autograd graph")]
fn inplace_on_non_leaf_panics() {
    let x = tensor![1., 2.].requires_grad_(true);
    let y = &x * 2.0;
    y.add_(1.0);
}

#[test]
#[should_panic(expected = "modified by an in-place operation")]
fn modifying_a_saved_tensor_then_backward_panics() {
    let x = tensor![1., 2.].requires_grad_(true);
    let a = tensor![3., 4.];
    let y = (&x * &a).sum(); // saves a for dy/dx
    a.mul_(2.0);
    y.backward();
}

#[test]
#[should_panic(expected = "modified by an in-place operation")]
fn modifying_a_saved_leaf_through_detach_then_backward_panics() {
    let x = tensor![1., 2.].requires_grad_(true);
    let y = x.exp().sum(); // saves exp(x)
    let z = (&x * &x).sum(); // saves x
    y.backward();
    x.detach().add_(1.0);
    z.backward();
}

#[test]
#[should_panic(expected = "modified by an in-place operation")]
fn modifying_a_where_mask_then_backward_panics() {
    let x = tensor![1., 2., 3.].requires_grad_(true);
    let mask = tensor![true, false, true];
    let y = Tensor::where_cond(&mask, &x, &x.zeros_like()).sum();
    mask.copy_(&tensor![false, false, false]);
    y.backward();
}

#[test]
#[should_panic(expected = "modified by an in-place operation")]
fn modifying_a_gather_index_then_backward_panics() {
    let x = tensor![[1., 2.], [3., 4.]].requires_grad_(true);
    let index = tensor![[0], [1]];
    let y = x.gather(1, &index).sum();
    index.add_(tensor![[1], [-1]]);
    y.backward();
}

#[test]
#[should_panic(expected = "modified by an in-place operation")]
fn modifying_a_scatter_add_index_then_backward_panics() {
    let x = tensor![[1., 2.], [3., 4.]].requires_grad_(true);
    let src = tensor![[5.], [6.]].requires_grad_(true);
    let index = tensor![[0], [1]];
    let y = (x.scatter_add(1, &index, &src) * &x).sum();
    index.fill_(1.0);
    y.backward();
}

#[test]
#[should_panic(expected = "modified by an in-place operation")]
fn modifying_max_dim_indices_then_backward_panics() {
    let x = tensor![[1., 5.], [7., 2.]].requires_grad_(true);
    let (values, indices) = x.max_dim(1, false);
    indices.fill_(0.0);
    values.sum().backward();
}

#[test]
fn index_tensors_left_alone_give_the_right_gradients() {
    let x = tensor![[1., 2.], [3., 4.]].requires_grad_(true);
    let index = tensor![[1, 1], [0, 1]];
    (x.gather(1, &index) * &tensor![[1., 2.], [3., 4.]])
        .sum()
        .backward();
    assert_eq!(grad_of(&x), vec![0., 3., 3., 4.]);

    let x = tensor![[1., 5.], [7., 2.]].requires_grad_(true);
    let (values, indices) = x.max_dim(1, false);
    assert_eq!(indices.to_vec::<i64>(), vec![1, 0]);
    (values * &tensor![10., 100.]).sum().backward();
    assert_eq!(grad_of(&x), vec![0., 10., 100., 0.]);

    // scatter_add with a source larger than the index: unused source entries get 0.
    let dst = tensor![[0., 0., 0.], [0., 0., 0.]].requires_grad_(true);
    let src = tensor![[1., 2., 3.], [4., 5., 6.]].requires_grad_(true);
    let index = tensor![[2, 0], [1, 1]];
    let out = dst.scatter_add(1, &index, &src);
    assert_eq!(out.to_vec::<f64>(), vec![2., 0., 1., 0., 9., 0.]);
    (out * &tensor![[1., 2., 3.], [4., 5., 6.]])
        .sum()
        .backward();
    assert_eq!(grad_of(&dst), vec![1., 2., 3., 4., 5., 6.]);
    assert_eq!(src.grad().unwrap().shape(), &[2, 3]);
    assert_eq!(grad_of(&src), vec![3., 1., 0., 5., 5., 0.]);
}

#[test]
#[should_panic(expected = "the source requires grad")]
fn inplace_from_a_source_requiring_grad_panics_outside_no_grad() {
    let buf = tensor![0., 0.];
    let x = tensor![1., 2.].requires_grad_(true);
    buf.add_(&x);
}

#[test]
#[should_panic(expected = "set_grad: assigned grad has shape [3] but the tensor has shape [2]")]
fn set_grad_with_the_wrong_shape_panics() {
    let x = tensor![1., 2.].requires_grad_(true);
    x.set_grad(Some(tensor![1., 2., 3.]));
}

#[test]
fn modifying_a_tensor_not_saved_is_fine() {
    let x = tensor![1., 2.].requires_grad_(true);
    let a = tensor![3., 4.];
    let y = (&x + &a).sum(); // addition saves nothing
    a.mul_(2.0);
    y.backward();
    assert_eq!(grad_of(&x), vec![1., 1.]);
}

#[test]
fn panicking_backward_restores_grad_mode() {
    // The version check fires inside backward (a panic) even with try_backward_opts;
    // make sure it does not leave grad mode disabled.
    let x = tensor![1., 2.].requires_grad_(true);
    let a = tensor![3., 4.];
    let y = (&x * &a).sum();
    a.add_(1.0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = y.try_backward_opts(None, false);
    }));
    assert!(r.is_err());
    assert!(
        is_grad_enabled(),
        "grad mode must be restored after a panicking backward"
    );
}

// ---------------------------------------------------------------- graph metadata

#[test]
fn grad_fn_names() {
    let x = tensor![[1., 2.], [3., 4.]].requires_grad_(true);
    let v = tensor![1., -1.].requires_grad_(true);
    let cases: Vec<(Tensor, &str)> = vec![
        (&x + &x, "AddBackward"),
        (&x - 1.0, "SubBackward"),
        (&x * &x, "MulBackward"),
        (&x / 2.0, "DivBackward"),
        (x.mean(), "MeanBackward"),
        (x.mean_dim(0, false), "MeanBackward"),
        (x.sum(), "SumBackward"),
        (x.sum_dim(1, true), "SumBackward"),
        (x.mm(&x), "MmBackward"),
        (x.matmul(&v), "MvBackward"),
        (v.dot(&v), "DotBackward"),
        (x.unsqueeze(0).matmul(&x), "BmmBackward"),
        (x.relu(), "ReluBackward"),
        (x.sigmoid(), "SigmoidBackward"),
        (x.tanh(), "TanhBackward"),
        (x.exp(), "ExpBackward"),
        (x.log(), "LogBackward"),
        (x.sqrt(), "SqrtBackward"),
        (x.abs(), "AbsBackward"),
        (-&x, "NegBackward"),
        (x.pow(2.0), "PowBackward"),
        (x.pow(&x), "PowBackward"),
        (x.clamp(Some(0.0), None), "ClampBackward"),
        (x.maximum(x.t()), "MaximumBackward"),
        (x.minimum(x.t()), "MinimumBackward"),
        (x.max(), "MaxBackward"),
        (x.min(), "MinBackward"),
        (x.max_dim(1, false).0, "MaxBackward"),
        (x.min_dim(0, false).0, "MinBackward"),
        (x.var(), "VarBackward"),
        (x.std_dim(0, 1, false), "StdBackward"),
        (x.reshape([4]), "ViewBackward"),
        (x.t(), "TBackward"),
        (x.expand([3, 2, 2]), "ExpandBackward"),
        (x.narrow(0, 0, 1), "SliceBackward"),
        (x.index_select(0, &tensor![1, 0]), "IndexSelectBackward"),
        (x.gather(1, &tensor![[0], [1]]), "GatherBackward"),
        (x.scatter_add(0, &tensor![[1, 0]], &x), "ScatterAddBackward"),
        (Tensor::cat(&[x.clone(), x.clone()], 0), "CatBackward"),
        (Tensor::stack(&[x.clone(), x.clone()], 0), "StackBackward"),
        (
            Tensor::where_cond(&tensor![true, false], &x, &x),
            "WhereBackward",
        ),
        (x.to_dtype(DType::F64), "ToCopyBackward"),
        (x.clone_data(), "CloneBackward"),
        (x.t().contiguous(), "CloneBackward"),
    ];
    for (t, name) in &cases {
        assert_eq!(t.grad_fn(), Some(*name), "expected {name}");
        assert!(!t.is_leaf(), "{name} output should not be a leaf");
        assert!(t.requires_grad(), "{name} output should require grad");
    }
    // Leaves have none.
    assert_eq!(x.grad_fn(), None);
}

#[test]
fn leaves_and_non_leaves() {
    let x = tensor![1., 2.].requires_grad_(true);
    assert!(x.is_leaf());
    assert!(x.requires_grad());
    let plain = tensor![1., 2.];
    assert!(plain.is_leaf());
    assert!(!plain.requires_grad());
    // Ops on tensors that don't require grad give leaves that don't either.
    let p2 = &plain * 2.0;
    assert!(p2.is_leaf());
    assert!(!p2.requires_grad());
    // Ops on one that does give non-leaves.
    let y = &x * &plain;
    assert!(!y.is_leaf());
    assert!(y.requires_grad());
    // A non-leaf keeps no .grad() after backward (only leaves do).
    y.sum().backward();
    assert!(y.grad().is_none());
    assert_eq!(grad_of(&x), vec![1., 2.]);
    assert!(plain.grad().is_none());
    // Views of a leaf requiring grad are not leaves; detach() is.
    assert!(!x.reshape([2, 1]).is_leaf());
    assert!(y.detach().is_leaf());
    // requires_grad_(false) on a leaf switches recording off for it.
    let z = tensor![1.].requires_grad_(true).requires_grad_(false);
    assert!(!(&z * 2.0).requires_grad());
}

#[test]
#[should_panic(expected = "only change requires_grad flags of leaf tensors")]
fn requires_grad_on_non_leaf_panics() {
    let x = tensor![1., 2.].requires_grad_(true);
    let _ = (&x * 2.0).requires_grad_(false);
}

#[test]
#[should_panic(expected = "only floating point tensors can require gradients")]
fn requires_grad_on_integer_tensor_panics() {
    let _ = tensor![1, 2].requires_grad_(true);
}

// ---------------------------------------------------------------- fan-out

#[test]
fn fan_out_gradients_add() {
    // x used twice in one op.
    let x = tensor![1., -2., 3.].requires_grad_(true);
    (&x * &x).sum().backward();
    assert_eq!(grad_of(&x), vec![2., -4., 6.]);

    // x used by two branches: y = 3x + x² → dy/dx = 3 + 2x.
    let x = tensor![1., -2., 3.].requires_grad_(true);
    (&x * 3.0 + x.pow(2.0)).sum().backward();
    assert_eq!(grad_of(&x), vec![5., -1., 9.]);

    // A diamond: a = 2x; z = e^a + a²  → dz/dx = 2 e^{2x} + 8x.
    let xs = [0.5f64, -1.0, 0.25];
    let x = Tensor::from_vec(xs.to_vec(), [3]).requires_grad_(true);
    let a = &x * 2.0;
    (a.exp() + &a * &a).sum().backward();
    let want: Vec<f64> = xs.iter().map(|v| 2.0 * (2.0 * v).exp() + 8.0 * v).collect();
    assert_close(&grad_of(&x), &want, 1e-12);

    // Two leaves sharing a path.
    let u = tensor![2.].requires_grad_(true);
    let w = tensor![5.].requires_grad_(true);
    let s = &u * &w; // 10
    let out = (&s * &s + &s * &u).sum(); // s² + s u
    out.backward();
    // d/du = 2 s w + (w u + s) = 2*10*5 + (5*2 + 10) = 120; d/dw = 2 s u + u*u = 40 + 4 = 44.
    assert_eq!(grad_of(&u), vec![120.]);
    assert_eq!(grad_of(&w), vec![44.]);
}

#[test]
fn broadcast_gradients_sum_back_to_input_shape() {
    let a = tensor![[1., 2., 3.], [4., 5., 6.]].requires_grad_(true);
    let b = tensor![10., 20., 30.].requires_grad_(true);
    let c = Tensor::scalar(2.0f32).requires_grad_(true);
    ((&a * &b) * &c).sum().backward();
    assert_eq!(grad_of(&a), vec![20., 40., 60., 20., 40., 60.]);
    assert_eq!(grad_of(&b), vec![10., 14., 18.]);
    assert_eq!(c.grad().unwrap().shape(), &[] as &[usize]);
    assert_eq!(grad_of(&c), vec![10. + 40. + 90. + 40. + 100. + 180.]);
}

#[test]
fn std_of_constant_input_has_zero_gradient() {
    // PyTorch masks the 0/0 where the std is zero: the gradient is 0, not NaN.
    let x = tensor![2., 2., 2.].requires_grad_(true);
    let s = x.std();
    assert_eq!(s.item(), 0.0);
    s.backward();
    assert_eq!(grad_of(&x), vec![0., 0., 0.]);

    // Per row: a constant row gets 0, the other row its usual gradient.
    let x = tensor![[1., 1.], [0., 2.]].requires_grad_(true);
    x.std_dim(1, 0, false).sum().backward();
    // Row 2: std = 1 (population), d std / dx = (x - mean) / (n std) = [-0.5, 0.5].
    assert_eq!(grad_of(&x), vec![0., 0., -0.5, 0.5]);
}

// ---------------------------------------------------------------- dtypes

#[test]
fn mixed_dtypes_accumulate_in_the_leaf_dtype() {
    let x = tensor![1., 2.].requires_grad_(true);
    assert_eq!(x.dtype(), DType::F32);
    let w = Tensor::from_vec(vec![0.5f64, -3.0], [2]);
    let y = (&x * &w).sum();
    assert_eq!(y.dtype(), DType::F64);
    y.backward();
    let g = x.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_vec::<f64>(), vec![0.5, -3.0]);

    // Through an explicit cast, accumulating onto the existing f32 gradient.
    let z = (x.to_dtype(DType::F64) * 4.0).sum();
    assert_eq!(z.dtype(), DType::F64);
    z.backward();
    let g = x.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_vec::<f64>(), vec![4.5, 1.0]);

    // An f64 leaf used in an f32 computation keeps an f64 gradient.
    let p = Tensor::from_vec(vec![1.5f64], [1]).requires_grad_(true);
    let q = (p.to_dtype(DType::F32) * 2.0).sum();
    assert_eq!(q.dtype(), DType::F32);
    q.backward();
    assert_eq!(p.grad().unwrap().dtype(), DType::F64);
    assert_eq!(grad_of(&p), vec![2.0]);

    // An integer or bool copy carries no gradient, as in PyTorch.
    for d in [DType::I64, DType::Bool] {
        let t = p.to_dtype(d);
        assert!(t.grad_fn().is_none() && !t.requires_grad(), "{d}");
    }
    // A copy in the same dtype is exact, also for integers past 2^53.
    let big = Tensor::from_vec(vec![(1i64 << 53) + 1, -7], [2]);
    assert_eq!(big.clone_data().to_vec::<i64>(), vec![(1i64 << 53) + 1, -7]);
    assert_eq!(big.t().contiguous().to_vec::<i64>(), big.to_vec::<i64>());
}

#[test]
fn seeded_inputs_are_deterministic() {
    let a = Tensor::randn_with([4], &mut Generator::new(7));
    let b = Tensor::randn_with([4], &mut Generator::new(7));
    assert_eq!(a.to_vec::<f32>(), b.to_vec::<f32>());
    let c = Tensor::randn_with([4], &mut Generator::new(8));
    assert_ne!(a.to_vec::<f32>(), c.to_vec::<f32>());
}

// ---------------------------------------------------------------- Example 0

#[test]
fn example_0_gradient_descent_reaches_the_minimum() {
    // Minimise f(x1, x2) = (x1 - 3)² + (x2 + 2)² from (0, 0), lr 0.1.
    let x1 = Tensor::scalar(0.0f32).requires_grad_(true);
    let x2 = Tensor::scalar(0.0f32).requires_grad_(true);
    let mut first_grad = None;
    let mut last_f = f64::INFINITY;
    for step in 0..100 {
        let f = (&x1 - 3.0).pow(2.0) + (&x2 + 2.0).pow(2.0);
        assert!(f.item() <= last_f, "f must not increase (step {step})");
        last_f = f.item();
        f.backward();
        if step == 0 {
            first_grad = Some((x1.grad().unwrap().item(), x2.grad().unwrap().item()));
        }
        no_grad(|| {
            x1.sub_(&(x1.grad().unwrap() * 0.1));
            x2.sub_(&(x2.grad().unwrap() * 0.1));
        });
        x1.grad().unwrap().zero_();
        x2.grad().unwrap().zero_();
        assert!(x1.is_leaf() && x1.requires_grad());
    }
    // At (0, 0) the gradient is (2(0 - 3), 2(0 + 2)) = (-6, 4).
    assert_eq!(first_grad, Some((-6.0, 4.0)));
    assert!((x1.item() - 3.0).abs() < 1e-3, "x1 = {}", x1.item());
    assert!((x2.item() + 2.0).abs() < 1e-3, "x2 = {}", x2.item());
    assert!(last_f < 1e-6, "f = {last_f}");
}

#[test]
fn deep_graphs_backward_and_drop_without_overflowing_the_stack() {
    // A 100k-op chain (an RNN over many steps, or `total = &total + &loss` in a
    // loop): both the backward walk and dropping the graph must be iterative.
    let x = tensor![1.].requires_grad_(true);
    let mut y = x.clone();
    for _ in 0..100_000 {
        y = &y * 1.0 + 1.0;
    }
    assert_eq!(y.item(), 100_001.0);
    y.sum().backward();
    assert_eq!(grad_of(&x), vec![1.0]);
    drop(y);

    // Dropped without ever running backward, too.
    let mut z = x.clone();
    for _ in 0..100_000 {
        z = &z + 1.0;
    }
    assert!(z.requires_grad());
    drop(z);
}

#[test]
fn max_dim_of_a_0d_tensor() {
    let x = Tensor::scalar(3.0f32).requires_grad_(true);
    let (v, i) = x.max_dim(0, false);
    assert_eq!(v.item(), 3.0);
    assert_eq!(i.to_vec::<i64>(), vec![0]);
    (v * 5.0).backward();
    assert_eq!(grad_of(&x), vec![5.0]);
    let (m, _) = x.min_dim(-1, true);
    m.backward();
    assert_eq!(grad_of(&x), vec![6.0]);
}

#[test]
fn large_tensors_through_the_parallel_kernels() {
    // Sizes above the parallel thresholds (2^15 elements, 96³ flops), checked
    // against gradients written out by hand.
    let mut gen = Generator::new(42);
    let (m, k, n) = (120, 130, 110);
    let a = Tensor::randn_with([m, k], &mut gen)
        .to_dtype(DType::F64)
        .requires_grad_(true);
    let b = Tensor::randn_with([k, n], &mut gen)
        .to_dtype(DType::F64)
        .requires_grad_(true);
    a.matmul(&b).sum().backward();
    let (av, bv) = (a.to_vec::<f64>(), b.to_vec::<f64>());
    // d/dA[i][p] = Σ_j B[p][j]; d/dB[p][j] = Σ_i A[i][p].
    let b_row_sums: Vec<f64> = (0..k)
        .map(|p| bv[p * n..(p + 1) * n].iter().sum())
        .collect();
    let a_col_sums: Vec<f64> = (0..k)
        .map(|p| (0..m).map(|i| av[i * k + p]).sum())
        .collect();
    let want_a: Vec<f64> = (0..m * k).map(|idx| b_row_sums[idx % k]).collect();
    let want_b: Vec<f64> = (0..k * n).map(|idx| a_col_sums[idx / n]).collect();
    assert_close(&grad_of(&a), &want_a, 1e-9);
    assert_close(&grad_of(&b), &want_b, 1e-9);

    let (r, c) = (256, 200);
    let x = Tensor::randn_with([r, c], &mut gen)
        .to_dtype(DType::F64)
        .requires_grad_(true);
    let xv = x.to_vec::<f64>();
    // var over rows: d/dx = 2 (x - row mean) / (c - 1).
    x.var_dim(1, 1, false).sum().backward();
    let want: Vec<f64> = (0..r * c)
        .map(|idx| {
            let row = &xv[(idx / c) * c..(idx / c + 1) * c];
            let mean = row.iter().sum::<f64>() / c as f64;
            2.0 * (xv[idx] - mean) / (c - 1) as f64
        })
        .collect();
    assert_close(&grad_of(&x), &want, 1e-9);

    // Column maxima: the gradient lands on each column's argmax.
    x.zero_grad();
    x.max_dim(0, false).0.sum().backward();
    let mut want = vec![0.0; r * c];
    for j in 0..c {
        let best = (0..r)
            .max_by(|&p, &q| xv[p * c + j].total_cmp(&xv[q * c + j]))
            .unwrap();
        want[best * c + j] = 1.0;
    }
    assert_eq!(grad_of(&x), want);

    // Leading-dim sum (the rows-added-together fast path) and a broadcast add.
    x.zero_grad();
    let bias = Tensor::randn_with([c], &mut gen)
        .to_dtype(DType::F64)
        .requires_grad_(true);
    ((&x + &bias) * 3.0).sum_dim(0, false).mean().backward();
    assert_close(&grad_of(&x), &vec![3.0 / c as f64; r * c], 1e-12);
    assert_close(&grad_of(&bias), &vec![3.0 * r as f64 / c as f64; c], 1e-9);
}

/// d(a^b)/db = a^b ln a is taken as 0 at a = 0 only where b >= 0, as in
/// PyTorch; with b < 0 it is -inf there.
#[test]
fn pow_exponent_gradient_at_zero_base_follows_pytorch() {
    let a = Tensor::from_vec(vec![0.0f64, 0.0, 2.0], [3]);
    let b = Tensor::from_vec(vec![2.0f64, -1.0, 3.0], [3]).requires_grad_(true);
    a.pow(&b).sum().backward();
    let g = b.grad().unwrap().to_vec::<f64>();
    assert_eq!(g[0], 0.0);
    assert_eq!(g[1], f64::NEG_INFINITY);
    assert!((g[2] - 8.0 * 2f64.ln()).abs() < 1e-12);
}

// ---------------------------------------------------------------- post-accumulate-grad hooks

/// The hooks' calls: the name each was given and the leaf's gradient then.
type HookLog = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, Vec<f64>)>>>;

/// A hook, boxed.
type BoxedHook = Box<dyn Fn(&Tensor) + Send + Sync>;

/// A log, and a maker of hooks that append to it.
fn recorder() -> (HookLog, impl Fn(&'static str) -> BoxedHook) {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = log.clone();
    let make = move |name: &'static str| {
        let l = l.clone();
        Box::new(move |p: &Tensor| {
            l.lock()
                .unwrap()
                .push((name, p.grad().unwrap().to_vec::<f64>()))
        }) as BoxedHook
    };
    (log, make)
}

#[test]
fn a_post_accumulate_hook_sees_the_complete_gradient_once_per_backward() {
    let (log, hook) = recorder();
    let w = tensor![1., 2.].requires_grad_(true);
    let h = w.register_post_accumulate_grad_hook(hook("w"));
    // w reaches the loss through three ops: d/dw (w·w + 3w + w.sum()) = 2w + 4.
    let y = (&w * &w + &w * 3.0).sum() + w.sum();
    y.backward();
    assert_eq!(*log.lock().unwrap(), vec![("w", vec![6., 8.])]);
    // A second backward accumulates; the hook sees the running total.
    (&w * 2.0).sum().backward();
    assert_eq!(log.lock().unwrap()[1], ("w", vec![8., 10.]));
    // A leaf that is the root itself.
    let s = Tensor::scalar(2.0f64).requires_grad_(true);
    let hs = s.register_post_accumulate_grad_hook(hook("s"));
    s.backward();
    assert_eq!(log.lock().unwrap()[2], ("s", vec![1.]));
    // Removed: no more calls (removing twice is harmless).
    h.remove();
    h.remove();
    hs.remove();
    w.sum().backward();
    s.backward();
    assert_eq!(log.lock().unwrap().len(), 3);
}

#[test]
fn post_accumulate_hooks_run_in_reverse_layer_order_on_both_paths() {
    use deriv::nn::{Linear, Module, ReLU, TrainStep};
    deriv::network! {
        pub struct Two = Linear(3, 4) -> ReLU -> Linear(4, 2);
    }
    let net = Two::default();
    let (log, hook) = recorder();
    let names = ["0.weight", "0.bias", "2.weight", "2.bias"];
    let handles: Vec<_> = net
        .parameters()
        .iter()
        .zip(names)
        .map(|(p, n)| p.register_post_accumulate_grad_hook(hook(n)))
        .collect();
    let x = Tensor::randn([5, 3]);
    let order = |log: &[(&'static str, Vec<f64>)]| log.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    // The tape: the last layer's gradients are complete first.
    net.forward(&x).sum().backward();
    let tape = order(&log.lock().unwrap());
    assert_eq!(tape.len(), 4, "{tape:?}");
    assert!(
        tape.iter().position(|n| *n == "2.weight") < tape.iter().position(|n| *n == "0.weight")
    );
    // Each call saw that parameter's finished gradient.
    for (name, g) in log.lock().unwrap().iter() {
        let idx = names.iter().position(|n| n == name).unwrap();
        assert_eq!(g, &net.parameters()[idx].grad().unwrap().to_vec::<f64>());
    }
    // The compile-time path: layers last to first, weight then bias.
    log.lock().unwrap().clear();
    net.zero_grad();
    let (y, saved) = net.forward_train(&x);
    net.backward(saved, &y.ones_like(), false);
    assert_eq!(
        order(&log.lock().unwrap()),
        ["2.weight", "2.bias", "0.weight", "0.bias"]
    );
    // The buffer-reusing path too.
    log.lock().unwrap().clear();
    let mut ws = net.workspace();
    let y = net.forward_train_ws(&x, &mut ws).clone_data();
    net.backward_ws(&mut ws, &y.ones_like(), false);
    assert_eq!(
        order(&log.lock().unwrap()),
        ["2.weight", "2.bias", "0.weight", "0.bias"]
    );
    for h in handles {
        h.remove();
    }
}

#[test]
#[should_panic(
    expected = "only leaf tensors accumulate gradients; this one was produced by MulBackward"
)]
fn a_hook_on_a_non_leaf_is_refused() {
    let x = tensor![1., 2.].requires_grad_(true);
    let y = &x * 2.0;
    let _ = y.register_post_accumulate_grad_hook(|_| {});
}
