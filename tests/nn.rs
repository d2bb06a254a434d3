//! nn layers: PyTorch's initialisation, names, modes, and both backward paths
//! (compile-time `Differentiable` and the tape) against finite differences.

use deriv::nn::{
    functional as F, Differentiable, Dropout, Embedding, EmbeddingOptions, Flatten, Forward,
    Identity, Linear, LogSoftmax, Module, ReLU, Sequential, Sigmoid, Softmax, Tanh, TrainStep,
};
use deriv::{gradcheck, manual_seed, no_grad, DType, Device, Generator, Tensor};

const CPU: Device = Device::Cpu;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec::<f64>()
        .iter()
        .zip(b.to_vec::<f64>())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Runs `layer` both ways on `x` with output seed `v` and checks that the
/// compile-time backward equals the tape for the input and every parameter.
fn assert_paths_agree<L: Differentiable>(layer: &L, x: &Tensor, v: &Tensor) {
    // Tape.
    let xt = x.detach().requires_grad_(true);
    layer.zero_grad();
    for p in layer.parameters() {
        p.set_grad(None);
    }
    layer.forward(&xt).backward_with(v);
    let tape_dx = xt.grad().expect("tape reached the input");
    let tape_dp: Vec<Tensor> = layer
        .parameters()
        .iter()
        .map(|p| p.grad().expect("tape reached the parameter").clone_data())
        .collect();
    // Compile-time path.
    for p in layer.parameters() {
        p.set_grad(None);
    }
    let (y, saved) = layer.forward_train(x);
    assert!(y.grad_fn().is_none(), "forward_train must not record");
    assert!(max_abs_diff(&y, &no_grad(|| layer.forward(x))) < 1e-12);
    let dx = layer
        .backward(saved, v, true)
        .expect("input grad requested");
    assert!(max_abs_diff(&dx, &tape_dx) < 1e-10, "dx differs");
    for (p, t) in layer.parameters().iter().zip(&tape_dp) {
        assert!(
            max_abs_diff(&p.grad().unwrap(), t) < 1e-10,
            "parameter grad differs"
        );
    }
}

#[test]
fn linear_init_matches_pytorch_bounds_and_shapes() {
    manual_seed(1);
    let fc = Linear::new(400, 30, &CPU);
    assert_eq!(fc.weight.shape(), &[30, 400]);
    assert_eq!(fc.bias.as_ref().unwrap().shape(), &[30]);
    let bound = 1.0 / 400f64.sqrt();
    let w = fc.weight.to_vec::<f64>();
    assert!(w.iter().all(|x| x.abs() <= bound));
    // U(-b, b) has variance b²/3: 12,000 samples land close to it.
    let var = fc.weight.to_dtype(DType::F64).var().item();
    assert!(
        (var - bound * bound / 3.0).abs() < 0.05 * bound * bound,
        "var {var}"
    );
    let b = fc.bias.as_ref().unwrap().to_vec::<f64>();
    assert!(b.iter().all(|x| x.abs() <= bound));
    assert!(fc.weight.requires_grad() && fc.weight.is_leaf());
    assert_eq!(fc.num_parameters(), 400 * 30 + 30);
    assert!(Linear::with_bias(3, 2, false, &CPU).bias.is_none());
}

#[test]
fn linear_forward_is_x_wt_plus_b() {
    let mut fc = Linear::new(2, 3, &CPU);
    fc.weight = Tensor::from_vec(vec![1.0f32, 2., 3., 4., 5., 6.], [3, 2]).requires_grad_(true);
    fc.bias = Some(Tensor::from_vec(vec![0.5f32, -1., 0.], [3]).requires_grad_(true));
    let y = fc.forward(&Tensor::from_vec(vec![1.0f32, -1., 2., 0.5], [2, 2]));
    assert_eq!(y.to_vec::<f32>(), vec![-0.5, -2., -1., 3.5, 7., 13.]);
    // PyTorch's name for a 2-D `F.linear` with a bias.
    assert_eq!(y.grad_fn(), Some("AddmmBackward"));
    // 3-D input: batch dims fold.
    let y3 = fc.forward(&Tensor::ones([4, 5, 2]));
    assert_eq!(y3.shape(), &[4, 5, 3]);
}

#[test]
fn linear_compile_time_backward_equals_tape_and_finite_differences() {
    let mut gen = Generator::new(7);
    let mut fc = Linear::new(4, 3, &CPU);
    fc.to_dtype(DType::F64);
    let x = Tensor::randn_with([5, 4], &mut gen).to_dtype(DType::F64);
    let v = Tensor::randn_with([5, 3], &mut gen).to_dtype(DType::F64);
    assert_paths_agree(&fc, &x, &v);
    // 3-D inputs too.
    let x3 = Tensor::randn_with([2, 5, 4], &mut gen).to_dtype(DType::F64);
    let v3 = Tensor::randn_with([2, 5, 3], &mut gen).to_dtype(DType::F64);
    assert_paths_agree(&fc, &x3, &v3);
    // And the tape against finite differences, through F::linear.
    let (w, b) = (fc.weight.detach(), fc.bias.clone().unwrap().detach());
    let r = gradcheck(|t| F::linear(&t[0], &t[1], Some(&t[2])), &[x, w, b]);
    assert!(r.passed, "{r}");
}

#[test]
fn input_grad_is_skipped_when_not_asked() {
    let fc = Linear::new(3, 2, &CPU);
    let (_, saved) = fc.forward_train(&Tensor::ones([1, 3]));
    assert!(fc.backward(saved, &Tensor::ones([1, 2]), false).is_none());
    // ...but parameter gradients still arrive.
    assert_eq!(fc.weight.grad().unwrap().to_vec::<f32>(), vec![1.; 6]);
}

#[test]
fn activation_layers_agree_on_both_paths() {
    let mut gen = Generator::new(3);
    let x = Tensor::randn_with([4, 6], &mut gen).to_dtype(DType::F64);
    let v = Tensor::randn_with([4, 6], &mut gen).to_dtype(DType::F64);
    assert_paths_agree(&ReLU, &x, &v);
    assert_paths_agree(&Sigmoid, &x, &v);
    assert_paths_agree(&Tanh, &x, &v);
    assert_paths_agree(&Identity, &x, &v);
    assert_paths_agree(&Softmax::new(1, &CPU), &x, &v);
    assert_paths_agree(&LogSoftmax::new(0, &CPU), &x, &v);
    let x4 = Tensor::randn_with([2, 3, 2, 2], &mut gen).to_dtype(DType::F64);
    assert_paths_agree(
        &Flatten::default(),
        &x4,
        &Tensor::randn_with([2, 12], &mut gen).to_dtype(DType::F64),
    );
}

#[test]
fn softmax_values_and_gradients() {
    let x = Tensor::from_vec(vec![1.0f64, 2., 3., 1000., 1000., 1000.], [2, 3]);
    let p = F::softmax(&x, 1).to_vec::<f64>();
    let e: Vec<f64> = [1.0f64, 2., 3.].iter().map(|v| v.exp()).collect();
    let s: f64 = e.iter().sum();
    for i in 0..3 {
        assert!((p[i] - e[i] / s).abs() < 1e-15);
        // Large inputs stay finite (shifted by the max).
        assert!((p[3 + i] - 1.0 / 3.0).abs() < 1e-15);
    }
    let lp = F::log_softmax(&x, 1).to_vec::<f64>();
    assert!((lp[0] - (e[0] / s).ln()).abs() < 1e-14);
    let mut gen = Generator::new(5);
    let z = Tensor::randn_with([3, 4, 2], &mut gen);
    for dim in [0isize, 1, -1] {
        let r = gradcheck(|t| t[0].softmax(dim), std::slice::from_ref(&z));
        assert!(r.passed, "softmax dim {dim}: {r}");
        let r = gradcheck(|t| t[0].log_softmax(dim), std::slice::from_ref(&z));
        assert!(r.passed, "log_softmax dim {dim}: {r}");
    }
    assert_eq!(
        x.requires_grad_(true).softmax(1).grad_fn(),
        Some("SoftmaxBackward")
    );
}

#[test]
fn dropout_scales_in_training_and_is_identity_in_eval() {
    manual_seed(11);
    let mut d = Dropout::new(0.25, &CPU);
    let x = Tensor::ones([100_000]);
    let y = d.forward(&x).to_vec::<f32>();
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
    assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    // The compile-time backward uses the mask forward_train applied.
    let (y2, mask) = d.forward_train(&x);
    let g = d.backward(mask, &Tensor::ones([100_000]), true).unwrap();
    assert_eq!(g.to_vec::<f32>(), y2.to_vec::<f32>());
    d.eval();
    assert!(!d.is_training());
    assert_eq!(d.forward(&x).to_vec::<f32>(), x.to_vec::<f32>());
    d.train();
    assert!(d.is_training());
}

#[test]
fn sequential_names_parameters_like_pytorch_and_propagates_modes() {
    let mut model = Sequential::new()
        .add(Linear::new(2, 16, &CPU))
        .add(ReLU)
        .add(Dropout::new(0.5, &CPU))
        .add(Linear::new(16, 1, &CPU));
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["0.weight", "0.bias", "3.weight", "3.bias"]);
    assert_eq!(model.num_parameters(), 2 * 16 + 16 + 16 + 1);
    let x = Tensor::randn([8, 2]);
    model.eval();
    let a = model.forward(&x);
    let b = model.forward(&x);
    assert_eq!(
        a.to_vec::<f32>(),
        b.to_vec::<f32>(),
        "eval mode is deterministic"
    );
    // The tape reaches every parameter through the container.
    a.sum().backward();
    assert!(model.parameters().iter().all(|p| p.grad().is_some()));
    model.zero_grad();
    assert!(model.parameters().iter().all(|p| p
        .grad()
        .unwrap()
        .to_vec::<f32>()
        .iter()
        .all(|&g| g == 0.0)));
}

#[test]
fn module_dtype_and_device_moves_keep_leaves() {
    let mut fc = Linear::new(3, 2, &CPU);
    fc.to_dtype(DType::F64);
    assert!(fc
        .parameters()
        .iter()
        .all(|p| p.dtype() == DType::F64 && p.requires_grad() && p.is_leaf()));
    fc.to(&Device::Cpu);
    assert_eq!(fc.weight.device(), Device::Cpu);
}

// ----- Embedding (PyTorch's values: tests/data/make_embedding_reference.py)

const EMB_OUT: &[f64] = &[
    -0.75, 1.0, 0.0, -1.25, 0.5, -0.5, -1.25, 0.5, -0.5, -0.5, 1.25, 0.25, 1.25, 0.25, -0.75,
    -0.75, 1.0, 0.0,
];
const EMB_GRAD_PAD1: &[f64] = &[
    0.09999999999999998,
    0.19999999999999996,
    0.30000000000000004,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    -0.7000000000000001,
    -0.5000000000000001,
    -0.30000000000000004,
    0.3999999999999999,
    0.5,
    0.5999999999999999,
];
const EMB_RENORMED_WEIGHT: &[f64] = &[
    -0.5,
    1.25,
    0.25,
    -0.5999999520000038,
    0.7999999360000051,
    0.0,
    -1.0,
    0.75,
    -0.25,
    -0.8703882191724328,
    0.34815528766897313,
    -0.34815528766897313,
    1.25,
    0.25,
    -0.75,
];
const EMB_RENORMED_OUT: &[f64] = &[
    -0.5999999520000038,
    0.7999999360000051,
    0.0,
    -0.8703882191724328,
    0.34815528766897313,
    -0.34815528766897313,
];

/// The reference script's 5 x 3 weight, indices and output weights.
fn emb_case(dtype: DType) -> (Tensor, Tensor, Tensor) {
    let w: Vec<f64> = (0..5)
        .flat_map(|i| (0..3).map(move |j| ((i * 3 + j) * 7 + 3) % 11))
        .map(|v| v as f64 / 4.0 - 1.25)
        .collect();
    let coef: Vec<f64> = (0..18).map(|k| k as f64 / 10.0 - 0.8).collect();
    (
        Tensor::from_vec(w, [5, 3]).to_dtype(dtype),
        Tensor::from_vec(vec![1i64, 3, 3, 0, 4, 1], [2, 3]),
        Tensor::from_vec(coef, [2, 3, 3]).to_dtype(dtype),
    )
}

#[track_caller]
fn assert_values(what: &str, t: &Tensor, want: &[f64], tol: f64) {
    let got = t.to_vec::<f64>();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{k}]: {g} vs PyTorch's {w}");
    }
}

#[test]
fn embedding_matches_pytorch_values_and_padding_gradient() {
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-6)] {
        let (w, idx, coef) = emb_case(dtype);
        let w = w.requires_grad_(true);
        let opts = EmbeddingOptions::new().padding_idx(1);
        let y = F::embedding_with(&idx, &w, &opts);
        assert_eq!(y.shape(), &[2, 3, 3]);
        assert_eq!(y.grad_fn(), Some("EmbeddingBackward"));
        assert_values("output", &y, EMB_OUT, tol);
        (&y * &coef).sum().backward();
        assert_values("weight grad", &w.grad().unwrap(), EMB_GRAD_PAD1, tol);
        // padding_idx = -4 is the same row 1 of 5.
        w.set_grad(None);
        let y = F::embedding_with(&idx, &w, &EmbeddingOptions::new().padding_idx(-4));
        (&y * &coef).sum().backward();
        assert_values("weight grad (-4)", &w.grad().unwrap(), EMB_GRAD_PAD1, tol);
    }
}

#[test]
fn embedding_max_norm_rescales_the_rows_looked_up_like_pytorch() {
    let (w, _, _) = emb_case(DType::F64);
    let idx = Tensor::from_vec(vec![1i64, 3], [2]);
    let y = F::embedding_with(&idx, &w, &EmbeddingOptions::new().max_norm(1.0));
    assert_values("renormed weight", &w, EMB_RENORMED_WEIGHT, 1e-12);
    assert_values("output", &y, EMB_RENORMED_OUT, 1e-12);
    // The layer does it on every path.
    let emb = Embedding::from_pretrained(
        &emb_case(DType::F64).0,
        false,
        &EmbeddingOptions::new().max_norm(1.0),
    )
    .unwrap();
    let (y, _) = emb.forward_train(&idx);
    assert_values(
        "layer, renormed weight",
        &emb.weight,
        EMB_RENORMED_WEIGHT,
        1e-12,
    );
    assert_values("layer, output", &y, EMB_RENORMED_OUT, 1e-12);
}

#[test]
fn embedding_weight_gradient_passes_gradcheck() {
    let (w, idx, coef) = emb_case(DType::F64);
    // Repeated indices (3 twice, 1 twice) add up; an unused row gets zeros.
    let report = gradcheck(|t| &F::embedding(&idx, &t[0]) * &coef, &[w]);
    assert!(report.passed, "{report}");
}

/// The table's gradient on the tape, the compile-time path and TrainStep.
#[test]
fn embedding_layer_paths_agree_and_padding_row_stays_zero() {
    manual_seed(3);
    let emb = Embedding::with_options(6, 4, &EmbeddingOptions::new().padding_idx(2), &CPU);
    let w0 = emb.weight.clone_data();
    assert_eq!(w0.select(0, 2).to_vec::<f32>(), vec![0.0; 4]);
    let idx = Tensor::from_vec(vec![2i64, 5, 5, 0, 1, 2, 3, 5], [2, 4]);
    let v = Tensor::randn_with([2, 4, 4], &mut Generator::new(4));

    emb.forward(&idx).backward_with(&v);
    let tape = emb.weight.grad().unwrap().clone_data();
    assert_eq!(
        tape.select(0, 2).to_vec::<f32>(),
        vec![0.0; 4],
        "padding row"
    );
    assert_eq!(
        tape.select(0, 4).to_vec::<f32>(),
        vec![0.0; 4],
        "unused row"
    );

    emb.weight.set_grad(None);
    let (y, saved) = emb.forward_train(&idx);
    assert!(max_abs_diff(&y, &emb.forward(&idx)) == 0.0);
    assert!(
        emb.backward(saved, &v, true).is_none(),
        "indices have no gradient"
    );
    assert!(max_abs_diff(&emb.weight.grad().unwrap(), &tape) < 1e-6);

    emb.weight.set_grad(None);
    let mut ws = emb.workspace();
    for _ in 0..2 {
        let y = emb.forward_train_ws(&idx, &mut ws).clone_data();
        assert!(max_abs_diff(&y, &emb.forward(&idx)) == 0.0);
        assert!(emb.backward_ws(&mut ws, &v, false).is_none());
    }
    // Two steps accumulated into the same buffer.
    assert!(max_abs_diff(&emb.weight.grad().unwrap(), &(&tape * 2.0)) < 1e-6);

    // N(0, 1) initialisation, as PyTorch's.
    let big = Embedding::new(1000, 16, &CPU);
    let (mean, std) = (big.weight.mean().item(), big.weight.std().item());
    assert!(
        mean.abs() < 0.03 && (std - 1.0).abs() < 0.03,
        "mean {mean}, std {std}"
    );
    let names: Vec<String> = big.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight"]);
}

#[test]
fn embedding_errors_name_the_problem_and_the_fix() {
    let emb = Embedding::new(5, 3, &CPU);
    let err = emb
        .try_forward(&Tensor::from_vec(vec![0i64, 5], [2]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("index 5 is out of range for an embedding of 5 rows"),
        "{err}"
    );
    let err = emb
        .try_forward(&Tensor::zeros([2]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("indices must be an i64 tensor") && err.contains(".to_dtype(DType::I64)"),
        "{err}"
    );
    let err = F::try_embedding_with(
        &Tensor::from_vec(vec![0i64], [1]),
        &emb.weight,
        &EmbeddingOptions::new().padding_idx(5),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("padding_idx 5 must be within num_embeddings (5)"),
        "{err}"
    );
    // The buffer-reusing path refuses the index too, on a reused buffer.
    let mut ws = emb.workspace();
    let _ = emb.forward_train_ws(&Tensor::from_vec(vec![0i64, 1], [2]), &mut ws);
    let bad = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = emb.forward_train_ws(&Tensor::from_vec(vec![0i64, 7], [2]), &mut ws);
    }));
    let msg = bad.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("index 7 is out of range"), "{msg}");
}

#[test]
fn embedding_from_pretrained_freezes_by_default() {
    let (w, idx, _) = emb_case(DType::F32);
    let frozen = Embedding::from_pretrained(&w, true, &EmbeddingOptions::new()).unwrap();
    assert!(!frozen.weight.requires_grad());
    assert_values("lookup", &frozen.forward(&idx), EMB_OUT, 1e-6);
    let err = Embedding::from_pretrained(&Tensor::zeros([3]), true, &EmbeddingOptions::new());
    assert!(err.is_err());
}
