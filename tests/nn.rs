//! nn layers: PyTorch's initialisation, names, modes, and both backward paths
//! (compile-time `Differentiable` and the tape) against finite differences.

use deriv::nn::{
    functional as F, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, BatchNormOptions,
    Conv1d, Conv1dOptions, Conv2d, Conv2dOptions, ConvTranspose2d, ConvTranspose2dOptions,
    Differentiable, Dropout, Embedding, EmbeddingOptions, Flatten, Forward, GroupNorm, Identity,
    LayerNorm, LayerNormOptions, Linear, LogSoftmax, MaxPool2d, Module, ReLU, Sequential, Sigmoid,
    Softmax, Tanh, TrainStep,
};
use deriv::{gradcheck, manual_seed, no_grad, DType, Device, Generator, Tensor};

#[path = "common/reference.rs"]
mod reference;
use reference::{assert_paths_match_tape, assert_values, det, max_abs_diff};

const CPU: Device = Device::Cpu;

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

// ----- Embedding (PyTorch's values: tests/data/make_layer_reference.py)

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

// ----- LayerNorm (PyTorch's values: tests/data/make_layer_reference.py)

const LN1_OUT: &[f64] = &[
    -0.8141630254470505,
    0.14933727144186643,
    1.7765587747390779,
    -0.24668635720933157,
    0.048674542883732685,
    -1.1449190810543082,
    0.05088363807751167,
    1.910407563617626,
    -0.4214976772160328,
    1.0289860632961965,
    -1.1219814177282623,
    0.9287441930400819,
    0.048674542883732685,
    -1.1449190810543086,
    0.05088363807751167,
    1.910407563617626,
    -0.4214976772160328,
    1.0289860632961967,
    -1.1219814177282623,
    0.9287441930400819,
    0.3937247223142364,
    -0.4389032197597066,
    0.8352042930129421,
    -1.109311805785591,
];
const LN1_DX: &[f64] = &[
    0.09111394645350104,
    0.5300269726632658,
    -0.17597908218127778,
    -0.4451618369354892,
    0.068529430401254,
    0.3005360980116287,
    -0.6284887443146536,
    0.2594232159017709,
    -0.07518629816836536,
    0.05153763046891352,
    0.061007720204107885,
    -0.037359052504656154,
    -0.6189486925793962,
    0.3234529827760648,
    -0.3993293699877702,
    0.6948250797911015,
    -0.22272471102600608,
    0.014652899578356672,
    0.09789245109466482,
    0.11017936035298453,
    -0.2062238595661547,
    0.5645615719086647,
    0.07184809674290993,
    -0.4301858090854201,
];
const LN1_DW: &[f64] = &[
    -0.4327045681916193,
    -2.723610392981044,
    -1.4716486953711765,
    3.129585675474926,
];
const LN1_DB: &[f64] = &[-1.25, 0.625, 0.375, 0.125];
const LN2_OUT: &[f64] = &[
    -0.7449117747450629,
    0.0432959044372995,
    1.056463481231054,
    -0.33743984641708835,
    0.8331996587046407,
    -0.9881274744051469,
    0.3399839590445569,
    1.893055290105653,
    -0.42318361774919755,
    1.2873596416398727,
    -1.456303071676623,
    0.41171211604042224,
    0.2543553758456407,
    -0.7801201911881374,
    0.07405415983835599,
    1.1428478197353344,
    -0.3637902268135112,
    0.8552369492928072,
    -1.0591777841099608,
    0.31008290820569745,
    1.8939629093918406,
    -0.4926143035259948,
    1.2414992138694882,
    -1.5528546859022692,
];
const LN2_DX: &[f64] = &[
    -0.1210073347805136,
    0.42975776434699453,
    0.018819301185800875,
    -0.3241883023829562,
    0.4965286738782225,
    0.09446909718647502,
    -0.577985246947962,
    0.5126836064468875,
    -0.04965989729297712,
    -0.8823981684755311,
    0.647385375570552,
    -0.2444048687349925,
    -0.3126467458665095,
    0.07577096090887762,
    -0.18208052598069532,
    0.6948675827824231,
    0.10945017555798284,
    -0.30131756890181094,
    0.561945358749525,
    0.0948400457112289,
    -0.46884395631878556,
    0.6519621419771326,
    0.03194057136861571,
    -0.9558880399879846,
];
const LN2_DW: &[f64] = &[
    -0.5137989769462183,
    -0.07941912339356766,
    0.1251814378217474,
    1.8049969649946864,
    0.5407426247901234,
    -0.3755837905233494,
    -1.2130185303796333,
    0.8971568490846878,
    -0.7014247424153578,
    -1.1467203312635077,
    -0.7648636518787335,
    1.2200326955881857,
];
const LN2_DB: &[f64] = &[
    -1.5, 1.25, -0.25, 0.375, 1.0, -0.5, 0.125, 0.75, -0.75, -0.125, 0.5, -1.0,
];

/// The reference script's input and output weights, and its weight and
/// bias for a normalised shape of `n` elements.
fn ln_case(shape: &[usize], dtype: DType) -> [Tensor; 4] {
    let x: Vec<f64> = (0..24)
        .map(|k| ((k * 5 + 2) % 13) as f64 / 3.0 - 2.0)
        .collect();
    let c: Vec<f64> = (0..24)
        .map(|k| ((k * 11 + 4) % 17) as f64 / 8.0 - 1.0)
        .collect();
    let n: usize = shape.iter().product();
    let w: Vec<f64> = (0..n).map(|k| k as f64 / n as f64 + 0.5).collect();
    let b: Vec<f64> = (0..n).map(|k| k as f64 / n as f64 - 0.25).collect();
    [
        Tensor::from_vec(x, [2, 3, 4]).to_dtype(dtype),
        Tensor::from_vec(c, [2, 3, 4]).to_dtype(dtype),
        Tensor::from_vec(w, shape).to_dtype(dtype),
        Tensor::from_vec(b, shape).to_dtype(dtype),
    ]
}

#[test]
fn layer_norm_matches_pytorch_values_and_gradients() {
    let cases: [(&[usize], [&[f64]; 4]); 2] = [
        (&[4], [LN1_OUT, LN1_DX, LN1_DW, LN1_DB]),
        (&[3, 4], [LN2_OUT, LN2_DX, LN2_DW, LN2_DB]),
    ];
    for (shape, [out, dx, dw, db]) in cases {
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 2e-5)] {
            let [x, c, w, b] = ln_case(shape, dtype);
            let (x, w, b) = (
                x.requires_grad_(true),
                w.requires_grad_(true),
                b.requires_grad_(true),
            );
            let y = F::layer_norm(&x, shape, Some(&w), Some(&b), 1e-5);
            assert_eq!(y.grad_fn(), Some("NativeLayerNormBackward"));
            assert_values("output", &y, out, tol);
            (&y * &c).sum().backward();
            assert_values("dx", &x.grad().unwrap(), dx, tol);
            assert_values("dw", &w.grad().unwrap(), dw, tol);
            assert_values("db", &b.grad().unwrap(), db, tol);
        }
    }
}

#[test]
fn layer_norm_gradients_pass_gradcheck() {
    let [x, c, w, b] = ln_case(&[3, 4], DType::F64);
    let report = gradcheck(
        |t| &F::layer_norm(&t[0], &[3, 4], Some(&t[1]), Some(&t[2]), 1e-5) * &c,
        &[x.clone(), w, b],
    );
    assert!(report.passed, "{report}");
    // Without parameters, over one dim, on a transposed (strided) input.
    let xt = x.transpose(1, 2);
    let report = gradcheck(|t| F::layer_norm(&t[0], &[3], None, None, 1e-5), &[xt]);
    assert!(report.passed, "{report}");
}

/// The layer on the tape, the compile-time path and TrainStep, with and
/// without its parameters.
#[test]
fn layer_norm_layer_paths_agree() {
    let [x, _, _, _] = ln_case(&[4], DType::F64);
    for opts in [
        LayerNormOptions::default(),
        LayerNormOptions {
            bias: false,
            ..Default::default()
        },
        LayerNormOptions {
            elementwise_affine: false,
            eps: 1e-3,
            ..Default::default()
        },
    ] {
        let mut ln = LayerNorm::with_options(4, &opts, &CPU);
        ln.to_dtype(DType::F64);
        assert_norm_layer_paths_agree(&ln, &x, &format!("{opts:?}"));
    }
    let ln = LayerNorm::new([3, 4], &CPU);
    let names: Vec<String> = ln.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["weight", "bias"]);
    assert_eq!(ln.weight.as_ref().unwrap().to_vec::<f32>(), vec![1.0; 12]);
    assert_eq!(ln.bias.as_ref().unwrap().to_vec::<f32>(), vec![0.0; 12]);
}

#[test]
fn layer_norm_errors_give_pytorch_words_and_the_fix() {
    let ln = LayerNorm::new(4, &CPU);
    let err = ln
        .try_forward(&Tensor::zeros([2, 3]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Given normalized_shape=[4], expected input with shape [*, 4], but got input of size [2, 3]"),
        "{err}"
    );
    let err = F::try_layer_norm(
        &Tensor::zeros([2, 4]),
        &[4],
        Some(&Tensor::ones([3])),
        None,
        1e-5,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("the weight must be a f32 tensor of the normalised shape [4]"),
        "{err}"
    );
}

// ----- Conv2d (PyTorch's values: tests/data/make_layer_reference.py)

const CONVA_OUT: &[f64] = &[
    0.39583333333333337,
    -0.6666666666666667,
    0.16666666666666669,
    0.41666666666666674,
    -0.12499999999999983,
    1.3125,
    0.8125,
    -0.6458333333333334,
    -0.29166666666666674,
    -0.375,
    1.4166666666666665,
    0.18749999999999983,
    -0.6458333333333333,
    1.2916666666666667,
    -1.125,
    -1.0833333333333335,
    0.6875000000000001,
    0.6041666666666667,
    -3.4375,
    -0.7083333333333331,
    1.6250000000000002,
    -1.1874999999999998,
    -1.0208333333333335,
    0.6041666666666665,
    0.5625,
    -1.1249999999999998,
    0.02083333333333315,
    1.1666666666666667,
    -2.833333333333333,
    1.4791666666666667,
    0.7083333333333336,
    -0.02083333333333348,
    0.6666666666666665,
    1.1875,
    2.2291666666666665,
    -0.12500000000000022,
    1.875,
    0.7083333333333333,
    -0.3333333333333333,
    1.1458333333333333,
    1.4375,
    1.4791666666666665,
    -2.583333333333333,
    2.8541666666666665,
    -0.8124999999999999,
    -2.5,
    2.0,
    0.2708333333333335,
    -0.4375,
    -0.39583333333333326,
    3.291666666666667,
    -0.7708333333333337,
    -0.08333333333333381,
    2.583333333333333,
    0.24999999999999994,
    2.0833333333333335,
    0.41666666666666674,
    1.6666666666666667,
    -1.1875,
    2.583333333333334,
    2.3958333333333335,
    -0.9583333333333335,
    1.5833333333333335,
    0.5416666666666667,
    0.27083333333333326,
    -1.4166666666666667,
    -0.1666666666666665,
    1.3750000000000002,
    -3.0208333333333335,
    -0.29166666666666674,
    0.5624999999999999,
    -0.16666666666666663,
    -2.375,
    1.0416666666666665,
    0.6041666666666667,
    -4.625000000000001,
    2.4166666666666665,
    0.3541666666666671,
    -0.6875000000000001,
    0.9583333333333335,
    1.0208333333333333,
    -0.7083333333333334,
    -0.39583333333333326,
    2.2916666666666665,
    -0.5625000000000003,
    0.5416666666666666,
    0.8541666666666666,
    -2.25,
    -0.39583333333333326,
    0.5416666666666667,
    1.0,
    -2.895833333333333,
    0.7291666666666666,
    0.0,
    -1.4583333333333333,
    0.43749999999999994,
    0.3750000000000001,
    1.2291666666666665,
    -1.270833333333333,
    -1.4583333333333333,
    2.3125000000000004,
    -1.4375,
    1.2916666666666667,
    1.4375,
    1.8958333333333335,
    -1.604166666666667,
    0.45833333333333326,
    3.4791666666666665,
    -1.0208333333333333,
    2.0,
    1.2708333333333333,
    -2.1041666666666665,
    -1.7083333333333335,
    1.9166666666666667,
    3.4583333333333335,
    -2.625,
    1.9791666666666665,
    -0.5416666666666664,
    -2.0208333333333335,
    2.125,
    0.9375,
    -0.3333333333333335,
    -1.1666666666666665,
    2.3125,
    -0.14583333333333315,
    -0.625,
    2.125,
    -1.4375,
    -0.6875,
    -2.125,
    0.9583333333333334,
    -0.5624999999999998,
    0.6875,
    0.75,
    -1.4583333333333333,
    -0.3541666666666667,
    -0.4791666666666667,
    1.2916666666666665,
    -1.9583333333333335,
    -0.5833333333333334,
    0.39583333333333337,
    -3.3749999999999996,
    0.020833333333333426,
    0.020833333333333287,
    1.375,
    -3.1875,
    -0.4999999999999999,
    0.8749999999999998,
    -3.291666666666667,
    1.645833333333333,
    0.020833333333333287,
    -0.7708333333333333,
    -2.4375,
    1.125,
    0.49999999999999994,
    -3.7708333333333335,
    1.4583333333333333,
    -1.625,
    -1.5833333333333335,
    -0.3125,
    0.8125,
    0.3333333333333334,
    -1.2916666666666665,
    0.9999999999999998,
    -0.2708333333333333,
    -1.5416666666666665,
    1.875,
    0.6875,
    -0.020833333333333495,
    -0.02083333333333323,
    2.2500000000000004,
    0.0833333333333337,
    -0.49999999999999983,
    2.4791666666666665,
    -2.1875,
    1.1875,
    -0.020833333333333315,
    0.7708333333333333,
    -1.942890293094024e-16,
    1.7916666666666665,
    2.3958333333333335,
    -2.5416666666666665,
    1.1041666666666667,
    0.5208333333333334,
    0.8124999999999999,
    -1.0833333333333333,
    0.3958333333333336,
    1.916666666666667,
    -2.5,
    0.20833333333333326,
    1.0625,
    0.12500000000000006,
    0.8124999999999999,
    0.14583333333333337,
    0.20833333333333343,
    -1.125,
    -0.08333333333333345,
    0.16666666666666669,
    0.4375,
    0.9583333333333333,
    0.35416666666666685,
    -0.12500000000000006,
    -0.8333333333333336,
    0.31249999999999994,
    0.6666666666666667,
    1.4166666666666665,
    0.7291666666666665,
    -1.2083333333333333,
    -0.24999999999999997,
    0.06250000000000006,
    0.25000000000000033,
    1.7916666666666665,
    1.3541666666666665,
    -3.4375,
    -1.1458333333333333,
    1.2708333333333335,
    0.47916666666666663,
    0.375,
    0.14583333333333345,
    1.2916666666666667,
    -2.7083333333333335,
    0.02083333333333315,
    0.9166666666666667,
    -1.7916666666666667,
    0.29166666666666685,
    -0.7708333333333335,
    1.7708333333333335,
    1.0,
    1.416666666666667,
    2.2291666666666665,
    -0.41666666666666674,
    1.0625000000000002,
    -0.2708333333333337,
    1.3541666666666665,
    1.2916666666666665,
    2.770833333333333,
    1.4791666666666665,
    -2.583333333333333,
    2.0416666666666665,
    0.3125,
    1.416666666666667,
    1.8541666666666665,
    2.8125000000000004,
    -0.45833333333333337,
    -2.5416666666666665,
    3.291666666666667,
    0.29166666666666663,
    0.9374999999999999,
    0.625,
    1.4791666666666665,
    -1.020833333333333,
    -1.2083333333333333,
    2.5625000000000004,
    -1.1875,
    1.5416666666666667,
    1.6875,
    0.18750000000000006,
    0.0833333333333334,
    -0.041666666666666796,
    1.1041666666666667,
    -2.895833333333333,
    -0.1666666666666665,
    0.7708333333333335,
    -1.9375,
    -0.75,
    1.0833333333333333,
    0.8541666666666665,
    -4.374999999999999,
    1.0833333333333333,
    0.6041666666666667,
    -2.4583333333333335,
    1.1666666666666667,
    1.0625000000000002,
    -0.27083333333333326,
    -4.500000000000001,
    0.9583333333333333,
    0.47916666666666663,
    -0.39583333333333326,
    1.0624999999999998,
    -0.06250000000000017,
    -0.4375,
    -1.875,
    1.2083333333333335,
    -0.3124999999999998,
    0.9375,
    1.0,
    -1.2083333333333333,
    -0.10416666666666669,
    0.5833333333333334,
    1.4375,
    0.8749999999999999,
    -1.2916666666666665,
    2.083333333333333,
    -1.270833333333333,
    -1.125,
    1.3958333333333335,
    1.708333333333333,
    -1.3958333333333333,
    -2.666666666666667,
    3.5208333333333335,
    -0.5833333333333334,
    0.45833333333333326,
    2.2916666666666665,
    -0.6875,
    -1.5,
    0.5416666666666667,
    3.5,
    -2.979166666666667,
    2.0208333333333335,
    3.4583333333333335,
    -2.1875,
    0.7708333333333334,
    1.1875,
    0.7083333333333335,
    -0.9166666666666667,
    1.375,
    0.10416666666666645,
    -1.1666666666666665,
    2.125,
    0.9375,
    -0.7291666666666667,
    -2.1666666666666665,
    1.166666666666667,
    -0.35416666666666663,
    -3.4583333333333335,
    0.9583333333333334,
    -0.4166666666666665,
    -0.10416666666666671,
    -3.0208333333333335,
    1.125,
    1.0416666666666665,
    -0.7500000000000002,
    1.8125,
    -1.9583333333333335,
    -0.7708333333333331,
    -0.3749999999999999,
    1.2083333333333335,
    -1.7708333333333333,
    -0.6666666666666667,
    1.5000000000000002,
    -3.4583333333333335,
    -0.4999999999999999,
    0.02083333333333315,
    -0.7708333333333334,
    -2.4375,
    -0.0625,
    0.2500000000000001,
    -2.0416666666666665,
    1.2083333333333335,
    0.49999999999999994,
    -1.8333333333333333,
    -0.1666666666666666,
    1.0625000000000002,
    0.5833333333333333,
    -3.0208333333333335,
    1.25,
    1.9583333333333335,
    -1.2916666666666665,
    0.6875,
    0.6875,
    0.7708333333333334,
    -0.020833333333333287,
    1.625,
    0.24999999999999994,
    -2.708333333333333,
    2.2500000000000004,
    0.3541666666666668,
    -1.0208333333333335,
    -0.020833333333333454,
    0.37500000000000006,
    0.16666666666666646,
    -1.2083333333333333,
    2.5625,
    -1.942890293094024e-16,
    1.2708333333333335,
    1.875,
    0.5625000000000001,
    0.6458333333333335,
    0.18749999999999983,
    1.7083333333333335,
    -2.7083333333333335,
    0.3958333333333336,
    1.1041666666666667,
    -1.4166666666666667,
];
const CONVA_DX: &[f64] = &[
    0.265625, -0.71875, 0.421875, 0.234375, -0.75, 0.390625, 1.90625, -1.5, -0.125, 2.046875,
    -1.359375, -1.3125, 0.359375, 0.171875, -0.8125, 0.328125, 0.140625, 0.484375, -1.171875,
    0.46875, -0.28125, -0.234375, 0.609375, 0.390625, 0.453125, 0.265625, -0.71875, 0.421875,
    0.234375, -0.75, 0.53125, 1.90625, -1.5, -0.125, 2.046875, -1.359375, -0.78125, 0.359375,
    0.171875, -0.8125, 0.328125, 0.140625, -0.8125, 0.515625, 0.515625, -0.8125, 0.515625,
    0.515625, -0.234375, -0.234375, 1.09375, -0.234375, -0.234375, 0.828125, 0.515625, -0.8125,
    0.515625, 0.515625, -0.8125, -0.546875, 0.828125, 0.03125, -0.765625, -0.765625, 0.03125,
    0.828125, -0.546875, -0.8125, 0.515625, 0.515625, -0.8125, 0.515625, 0.828125, -0.234375,
    -0.234375, 1.09375, -0.234375, -0.234375, 0.515625, 0.515625, -0.8125, 0.515625, 0.515625,
    -0.8125, -0.78125, 1.328125, -0.015625, -0.828125, -0.578125, -0.0625, -0.171875, 0.59375,
    -0.234375, -0.265625, 0.5, -0.328125, -0.640625, 1.46875, -0.671875, -0.6875, 1.421875,
    -0.71875, -1.75, 0.34375, 0.3125, -0.25, 0.25, -0.046875, -0.765625, -0.78125, 1.328125,
    -0.015625, -0.828125, -0.578125, -0.140625, -0.171875, 0.59375, -0.234375, -0.265625, 0.5,
    -0.625, -0.640625, 1.46875, -0.671875, -0.6875, 1.421875, 0.828125, -0.4375, -0.640625,
    1.015625, 0.015625, -0.453125, 1.125, -0.390625, 1.015625, 1.09375, -1.75, 0.984375, 0.265625,
    -1.0, 0.390625, 0.453125, -0.8125, 0.578125, 0.6875, 0.5, -1.8125, -0.140625, 0.46875,
    0.015625, 0.765625, 0.828125, -0.4375, -0.640625, 1.015625, 0.015625, -0.015625, 1.125,
    -0.390625, 1.015625, 1.09375, -1.75, 0.203125, 0.265625, -1.0, 0.390625, 0.453125, -0.8125,
    0.390625, 0.203125, -0.78125, 0.359375, 0.171875, -0.8125, -1.3125, 2.1875, -0.421875,
    -1.171875, 0.46875, -0.28125, 0.484375, 0.296875, -0.6875, 0.453125, 0.265625, -0.71875,
    0.390625, -0.09375, -1.640625, 0.53125, 1.90625, -1.5, -0.75, 0.390625, 0.203125, -0.78125,
    0.359375, 0.171875, -1.359375, -1.3125, 2.1875, -0.421875, -1.171875, 0.46875, 0.140625,
    0.484375, 0.296875, -0.6875, 0.453125, 0.265625, 0.515625, -0.8125, 0.515625, 0.515625,
    -0.8125, 0.515625, 0.828125, -0.234375, -0.765625, 0.828125, 0.03125, -0.765625, -0.546875,
    0.515625, 0.515625, -0.546875, -0.8125, 0.515625, 0.828125, -0.765625, -0.234375, 0.828125,
    -0.234375, -0.234375, 0.515625, 0.515625, -0.8125, 0.515625, 0.515625, -0.8125, -0.234375,
    0.828125, -0.234375, -0.765625, 0.828125, 0.03125, -0.8125, -0.546875, 0.515625, 0.515625,
    -0.546875, -0.8125, -0.0625, 1.515625, -0.625, -0.640625, 1.46875, -0.671875, -0.328125,
    0.4375, 0.40625, -1.75, 0.34375, 0.3125, -0.71875, -0.734375, 1.375, -0.765625, -0.78125,
    1.328125, -0.046875, -0.34375, 0.6875, -0.140625, -0.171875, 0.59375, -0.578125, -0.0625,
    1.515625, -0.625, -0.640625, 1.46875, 0.5, -0.328125, 0.4375, 0.40625, -1.75, 0.34375,
    1.421875, -0.71875, -0.734375, 1.375, -0.765625, -0.78125, -0.453125, -1.1875, 0.203125,
    0.265625, -1.0, 0.390625, 0.984375, 0.53125, -1.78125, 0.6875, 0.5, -1.8125, 0.578125,
    0.640625, -0.625, 0.765625, 0.828125, -0.4375, 0.015625, -0.171875, -0.359375, -0.015625,
    1.125, -0.390625, 0.015625, -0.453125, -1.1875, 0.203125, 0.265625, -1.0, -1.75, 0.984375,
    0.53125, -1.78125, 0.6875, 0.5, -0.8125, 0.578125, 0.640625, -0.625, 0.765625, 0.828125,
];
const CONVA_DW: &[f64] = &[
    2.208333333333334,
    -4.854166666666667,
    -3.0625000000000004,
    3.270833333333333,
    1.9374999999999996,
    -2.2916666666666665,
    3.1458333333333335,
    0.9374999999999997,
    1.520833333333333,
    -2.812499999999999,
    1.7499999999999998,
    -1.1666666666666679,
    -4.854166666666667,
    -0.5833333333333329,
    3.270833333333333,
    -1.0208333333333335,
    -2.2916666666666665,
    2.6874999999999996,
    0.9374999999999997,
    -0.20833333333333348,
    -2.812499999999999,
    5.604166666666664,
    -1.1666666666666679,
    -1.6041666666666665,
    -0.5833333333333329,
    2.9791666666666665,
    -1.0208333333333335,
    -3.8958333333333335,
    2.6874999999999996,
    -1.1875,
    -0.20833333333333348,
    -1.708333333333333,
    5.604166666666664,
    2.333333333333333,
    -1.6041666666666665,
    6.104166666666667,
    2.7083333333333326,
    -0.8125000000000004,
    -6.083333333333333,
    9.229166666666668,
    -3.229166666666667,
    -4.979166666666666,
    -2.375,
    -3.375,
    -1.041666666666667,
    -6.666666666666668,
    2.479166666666667,
    0.06250000000000033,
    -0.8125000000000004,
    -0.43749999999999956,
    9.229166666666668,
    1.1666666666666663,
    -4.979166666666666,
    3.895833333333332,
    -3.375,
    3.0625000000000004,
    -6.666666666666668,
    1.5208333333333335,
    0.06250000000000033,
    -1.6458333333333335,
    -0.43749999999999956,
    2.416666666666666,
    1.1666666666666663,
    -3.708333333333334,
    3.895833333333332,
    4.270833333333332,
    3.0625000000000004,
    -1.479166666666667,
    1.5208333333333335,
    -0.5625,
    -1.6458333333333335,
    -5.125,
];
const CONVA_DB: &[f64] = &[-1.375, -1.0, 1.5, -0.25, 0.125, 0.5];
const CONVB_OUT: &[f64] = &[
    -0.2708333333333334,
    1.479166666666667,
    -0.5416666666666667,
    -0.9375000000000001,
    -2.1041666666666665,
    -0.27083333333333326,
    2.8541666666666665,
    -0.9791666666666667,
    -0.375,
    2.729166666666666,
    -1.6666666666666667,
    -1.0208333333333333,
    1.3541666666666667,
    -0.6041666666666665,
    0.9374999999999998,
    -1.0625,
    -0.6875000000000001,
    2.4791666666666665,
    -1.2291666666666665,
    -0.41666666666666663,
    1.0208333333333335,
    1.7708333333333335,
    -1.8958333333333333,
    1.0208333333333333,
    1.7708333333333333,
    2.5416666666666665,
    -1.1250000000000002,
    1.1249999999999998,
    2.125,
    -1.041666666666667,
    0.04166666666666674,
    1.2291666666666667,
    1.2916666666666665,
    -1.8541666666666665,
    0.020833333333333426,
    1.3333333333333335,
    2.1041666666666665,
    -0.1458333333333332,
    -0.47916666666666663,
    2.4791666666666665,
    0.5624999999999999,
    -2.9375000000000004,
    0.1458333333333333,
    0.1458333333333336,
    1.4583333333333333,
    -2.0833333333333335,
    0.9999999999999994,
    0.12500000000000006,
    -2.0,
    0.7500000000000002,
    0.27083333333333337,
    0.10416666666666663,
    -2.6874999999999996,
    0.02083333333333337,
    0.3333333333333336,
    0.08333333333333326,
    -0.6458333333333333,
    -1.2708333333333335,
    1.7708333333333335,
    -1.25,
];
const CONVB_DX: &[f64] = &[
    -0.3125, -0.125, 0.4375, 0.296875, -0.40625, 1.3125, -0.953125, -0.484375, 0.125, -0.046875,
    -1.515625, 1.125, -0.9375, -0.078125, -0.21875, -0.71875, 0.125, 0.421875, -0.515625, 0.890625,
    -0.125, -0.140625, 0.4375, 0.390625, -0.078125, 0.53125, 0.53125, -0.140625, 1.6875, -1.0625,
    -0.265625, -0.046875, -0.53125, -0.265625, -0.53125, 0.046875, -0.625, 1.0625, 0.0, 0.140625,
];
const CONVB_DW: &[f64] = &[
    -0.3333333333333335,
    4.895833333333333,
    -5.541666666666666,
    2.333333333333333,
    -6.270833333333334,
    2.6875000000000004,
    4.541666666666666,
    -7.979166666666666,
    2.3333333333333335,
    -6.4375,
    4.125,
    -1.25,
    -0.3333333333333333,
    5.729166666666666,
    -2.5625,
    2.3958333333333335,
    -9.0,
    2.229166666666667,
    4.333333333333333,
    -4.8125,
    1.25,
    -6.541666666666666,
    3.9166666666666665,
    0.9999999999999998,
    -2.8125,
    5.854166666666666,
    -0.29166666666666696,
    3.166666666666667,
    -5.708333333333334,
    1.0624999999999996,
    4.125,
    -2.354166666666667,
    -0.5416666666666666,
    -3.458333333333333,
    3.0,
    2.541666666666667,
];
const CONVB_DB: &[f64] = &[0.5, 0.125, -0.25];

type ConvCase = (
    &'static str,
    [usize; 4],
    [usize; 4],
    Conv2dOptions,
    [&'static [f64]; 4],
);

fn conv_cases() -> [ConvCase; 2] {
    [
        (
            "A",
            [2, 4, 7, 6],
            [6, 2, 3, 2],
            Conv2dOptions::new()
                .stride([2, 1])
                .padding([1, 2])
                .dilation([1, 2])
                .groups(2),
            [CONVA_OUT, CONVA_DX, CONVA_DW, CONVA_DB],
        ),
        (
            "B",
            [1, 2, 5, 4],
            [3, 2, 2, 3],
            Conv2dOptions::new().padding("same"),
            [CONVB_OUT, CONVB_DX, CONVB_DW, CONVB_DB],
        ),
    ]
}

#[test]
fn conv2d_matches_pytorch_values_and_gradients() {
    for (tag, xs, ws, opts, [out, dx, dw, db]) in conv_cases() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            let x = det(&xs, 7, 3, 19, 6.0, 1.5)
                .to_dtype(dtype)
                .requires_grad_(true);
            let w = det(&ws, 5, 1, 13, 8.0, 0.75)
                .to_dtype(dtype)
                .requires_grad_(true);
            let b = det(&[ws[0]], 3, 2, 7, 4.0, 0.5)
                .to_dtype(dtype)
                .requires_grad_(true);
            let y = F::conv2d(&x, &w, Some(&b), &opts);
            assert_eq!(y.grad_fn(), Some("ConvolutionBackward"), "{tag}");
            assert_values(&format!("{tag} output"), &y, out, tol);
            let c = det(y.shape(), 11, 4, 17, 8.0, 1.0).to_dtype(dtype);
            (&y * &c).sum().backward();
            assert_values(&format!("{tag} dx"), &x.grad().unwrap(), dx, tol);
            assert_values(&format!("{tag} dw"), &w.grad().unwrap(), dw, tol);
            assert_values(&format!("{tag} db"), &b.grad().unwrap(), db, tol);
        }
    }
}

#[test]
fn conv2d_gradients_pass_gradcheck() {
    let mut g = Generator::new(12);
    let mut randn = |s: &[usize]| Tensor::randn_with(s, &mut g).to_dtype(DType::F64);
    let (x, w, b) = (randn(&[2, 4, 5, 4]), randn(&[2, 2, 2, 3]), randn(&[2]));
    let opts = Conv2dOptions::new()
        .stride([1, 2])
        .padding([1, 1])
        .dilation([2, 1])
        .groups(2);
    let report = gradcheck(|t| F::conv2d(&t[0], &t[1], Some(&t[2]), &opts), &[x, w, b]);
    assert!(report.passed, "{report}");
    // A strided (permuted) input without a bias.
    let xp = randn(&[3, 4, 2, 5]).permute(&[0, 2, 3, 1]);
    let w = randn(&[3, 2, 3, 3]);
    let same = Conv2dOptions::new().padding("same");
    let report = gradcheck(|t| F::conv2d(&t[0], &t[1], None, &same), &[xp, w]);
    assert!(report.passed, "{report}");
}

/// The layer on the tape, the compile-time path and TrainStep; PyTorch's
/// initialisation bounds.
#[test]
fn conv2d_layer_paths_agree() {
    manual_seed(7);
    let mut conv = Conv2d::with_options(
        4,
        6,
        [3, 2],
        &Conv2dOptions::new().padding(1).groups(2),
        &CPU,
    );
    let bound = 1.0 / (2.0f64 * 3.0 * 2.0).sqrt();
    for p in conv.parameters() {
        let v = p.to_vec::<f64>();
        assert!(
            v.iter().all(|x| x.abs() <= bound),
            "init within ±1/sqrt(fan_in)"
        );
    }
    conv.to_dtype(DType::F64);
    let x = Tensor::randn_with([2, 4, 5, 5], &mut Generator::new(13)).to_dtype(DType::F64);
    let y = conv.forward(&x);
    assert_eq!(y.shape(), &[2, 6, 5, 6]);
    let v = Tensor::randn_with(y.shape(), &mut Generator::new(14)).to_dtype(DType::F64);
    assert_paths_agree(&conv, &x, &v);
    let tape: Vec<Tensor> = conv
        .parameters()
        .iter()
        .map(|p| p.grad().unwrap().clone_data())
        .collect();
    let xt = x.detach().requires_grad_(true);
    for p in conv.parameters() {
        p.set_grad(None);
    }
    conv.forward(&xt).backward_with(&v);
    let dx_tape = xt.grad().unwrap();
    for p in conv.parameters() {
        p.set_grad(None);
    }
    let mut ws = conv.workspace();
    let yw = conv.forward_train_ws(&x, &mut ws).clone_data();
    assert!(max_abs_diff(&yw, &y) < 1e-12);
    let dx = conv.backward_ws(&mut ws, &v, true).unwrap().clone_data();
    assert!(max_abs_diff(&dx, &dx_tape) < 1e-10);
    for (p, t) in conv.parameters().iter().zip(&tape) {
        assert!(max_abs_diff(&p.grad().unwrap(), t) < 1e-10);
    }
    let names: Vec<String> = conv
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["weight", "bias"]);
}

#[test]
fn conv2d_errors_give_pytorch_words_and_the_fix() {
    let conv = Conv2d::new(3, 8, 3, &CPU);
    let err = conv
        .try_forward(&Tensor::zeros([1, 4, 8, 8]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected input[1, 4, 8, 8] to have 3 channels, but got 4 channels"),
        "{err}"
    );
    let err = conv
        .try_forward(&Tensor::zeros([3, 8, 8]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected a 4-D input [N, C, H, W]") && err.contains(".unsqueeze(0)"),
        "{err}"
    );
    let err = conv
        .try_forward(&Tensor::zeros([1, 3, 2, 8]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Kernel size can't be greater than actual input size"),
        "{err}"
    );
    let err = F::try_conv2d(
        &Tensor::zeros([1, 3, 8, 8]),
        &conv.weight,
        None,
        &Conv2dOptions::new().stride(2).padding("same"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("padding='same' is not supported for strided convolutions"),
        "{err}"
    );
}

// ----- pooling (PyTorch's values: tests/data/make_layer_reference.py)

const POOL_MAX_OUT: &[f64] = &[
    1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0,
    2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 1.0, 1.0, 2.0, 1.0, 1.0, 2.0,
    2.0, 1.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 2.0, 1.0, 0.0, 2.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0, 1.0,
    2.0, 2.0, 1.0, 0.0, 2.0, 1.0, 0.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0,
    2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 2.0,
    1.0,
];
const POOL_MAX_DX: &[f64] = &[
    -0.5, 0.0, 0.0, 0.125, 0.0, -0.625, 0.0, 0.0, 0.875, 0.0, -0.75, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.625, 0.0, -0.875, 0.0, 0.0, 0.375, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, -1.0, 0.0, 0.0, -0.375,
    0.0, 1.0, 0.0, 0.0, 0.375, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0, 0.875, 0.0, 0.0, -0.375, 0.0, 0.75,
    0.0, 0.0, -0.625, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.625, 0.0, 0.0, -0.875, 0.0, 0.5, 0.0, 0.0,
    -0.125, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.375, 0.0, 0.0, -0.25, 0.0, 0.0, 0.0, 0.0, -0.375, 0.0,
    0.25, 0.0, 0.0, -0.5, 0.0, 1.125, 0.0, 0.0, 0.75, 0.0, 0.875, 0.0, 0.0, -0.625, 0.0, 0.0, 0.0,
    0.0, 0.625, 0.0, 0.0, 0.0, 0.0, -0.75, 0.0, 0.0, 0.0, 0.0, -0.875, 0.0, -0.25, 0.0, 0.0,
    -1.125, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.375, 0.0, 0.0, 1.0, 0.0, 0.25, 0.0, -0.375, 0.125, 0.0,
    0.0, 0.0, -0.5, 0.875, 0.0, 0.0, 0.0, 0.0, 0.75, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, -0.125, 0.0, 0.0, -0.25, 0.0, -0.25, 0.0, -0.875, 0.0, 0.0, 0.0, 0.0, -1.0, 0.375,
    0.0, -0.375, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0, 0.0, 1.125, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, -0.625,
    0.0, 0.0, 0.875, 0.0, -0.75, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.625, 0.0, -0.875, 0.0, 0.0,
    0.375, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, -1.0, 0.0, 0.0, -0.375, 0.0, 1.0, 0.0, 0.0, -0.125, 0.0,
    0.875, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.375, 0.0, 0.75, 0.0, 0.0, -0.625, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.625, 0.0, 0.0, -0.875, 0.0, 0.5, 0.0, 0.0, -0.125, 0.0, 0.0, 0.0,
];
const POOL_AVG_OUT: &[f64] = &[
    -0.3333333333333333,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    0.0,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    0.1111111111111111,
    -0.1111111111111111,
    -0.3333333333333333,
    -0.1111111111111111,
    0.0,
    -0.1111111111111111,
    -0.3333333333333333,
    0.0,
    0.3333333333333333,
    0.3333333333333333,
    -0.3333333333333333,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    0.0,
    -0.1111111111111111,
    0.3333333333333333,
    0.3333333333333333,
    0.0,
    -0.3333333333333333,
    -0.1111111111111111,
    0.0,
    0.0,
    -0.1111111111111111,
    -0.3333333333333333,
    0.0,
    0.3333333333333333,
    0.3333333333333333,
    -0.1111111111111111,
    0.0,
    0.3333333333333333,
    0.1111111111111111,
    -0.1111111111111111,
    -0.3333333333333333,
    0.3333333333333333,
    0.3333333333333333,
    0.0,
    -0.3333333333333333,
    -0.1111111111111111,
    0.0,
    -0.1111111111111111,
    -0.3333333333333333,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    0.1111111111111111,
    -0.1111111111111111,
    0.0,
    0.3333333333333333,
    0.1111111111111111,
    -0.1111111111111111,
    -0.3333333333333333,
    0.3333333333333333,
    0.1111111111111111,
    -0.1111111111111111,
    -0.3333333333333333,
    0.0,
    0.1111111111111111,
    -0.1111111111111111,
    -0.3333333333333333,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    0.1111111111111111,
    0.0,
    0.1111111111111111,
    0.3333333333333333,
    0.0,
    -0.3333333333333333,
    -0.3333333333333333,
    0.3333333333333333,
    0.1111111111111111,
    -0.1111111111111111,
    -0.3333333333333333,
    0.0,
    0.1111111111111111,
    -0.3333333333333333,
    -0.3333333333333333,
    0.0,
    0.3333333333333333,
    0.1111111111111111,
    0.0,
    0.0,
    0.1111111111111111,
    0.3333333333333333,
    0.0,
    -0.3333333333333333,
    -0.3333333333333333,
    0.1111111111111111,
    0.0,
    -0.3333333333333333,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    -0.3333333333333333,
    -0.3333333333333333,
    0.0,
    0.3333333333333333,
    0.1111111111111111,
    0.0,
    0.1111111111111111,
    0.3333333333333333,
    0.1111111111111111,
    -0.1111111111111111,
    -0.3333333333333333,
    -0.1111111111111111,
    0.1111111111111111,
    0.0,
    -0.3333333333333333,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    -0.3333333333333333,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    0.0,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    0.1111111111111111,
    -0.1111111111111111,
    -0.3333333333333333,
    -0.1111111111111111,
    0.0,
    -0.1111111111111111,
    -0.3333333333333333,
    0.0,
    0.3333333333333333,
    0.3333333333333333,
    -0.3333333333333333,
    -0.1111111111111111,
    0.1111111111111111,
    0.3333333333333333,
    0.0,
    -0.1111111111111111,
];
const POOL_AVG_DX: &[f64] = &[
    0.04166666666666667,
    0.05555555555555556,
    0.04166666666666666,
    0.02777777777777777,
    0.013888888888888881,
    0.08333333333333333,
    0.02777777777777779,
    0.02777777777777779,
    -1.3877787807814457e-17,
    -0.02777777777777779,
    -0.055555555555555566,
    0.11111111111111112,
    -0.013888888888888881,
    -0.02777777777777777,
    -0.041666666666666664,
    -0.05555555555555555,
    -0.06944444444444445,
    0.027777777777777776,
    -0.08333333333333331,
    -0.13888888888888887,
    0.06944444444444445,
    0.04166666666666667,
    0.013888888888888881,
    0.0,
    -0.06944444444444445,
    -0.1111111111111111,
    0.1111111111111111,
    0.09722222222222222,
    0.08333333333333334,
    -0.027777777777777776,
    0.041666666666666664,
    -0.06944444444444445,
    0.1388888888888889,
    0.1111111111111111,
    0.08333333333333336,
    -0.1111111111111111,
    0.1111111111111111,
    0.04166666666666666,
    0.02777777777777777,
    0.013888888888888881,
    0.0,
    -0.08333333333333333,
    0.05555555555555556,
    -0.041666666666666664,
    -0.05555555555555555,
    -0.06944444444444445,
    -0.08333333333333333,
    -0.1388888888888889,
    0.05555555555555556,
    0.06944444444444445,
    0.04166666666666667,
    0.013888888888888881,
    -0.013888888888888881,
    -0.09722222222222222,
    0.0,
    0.1111111111111111,
    0.09722222222222222,
    0.08333333333333334,
    0.06944444444444445,
    0.04166666666666667,
    -0.05555555555555556,
    0.1388888888888889,
    0.1111111111111111,
    0.08333333333333336,
    0.055555555555555566,
    0.02777777777777779,
    -0.05555555555555556,
    0.02777777777777777,
    0.013888888888888881,
    0.0,
    -0.013888888888888881,
    -0.013888888888888881,
    -0.16666666666666669,
    -0.02777777777777779,
    -0.055555555555555566,
    -0.08333333333333333,
    -0.1111111111111111,
    -0.08333333333333331,
    -0.1111111111111111,
    -0.05555555555555555,
    -0.06944444444444445,
    -0.08333333333333333,
    -0.09722222222222224,
    -0.06944444444444445,
    0.06944444444444445,
    0.09722222222222222,
    0.08333333333333334,
    0.06944444444444445,
    0.05555555555555556,
    0.1111111111111111,
    0.08333333333333333,
    0.1111111111111111,
    0.08333333333333336,
    0.055555555555555566,
    0.02777777777777779,
    0.16666666666666666,
    0.013888888888888881,
    0.013888888888888881,
    0.0,
    -0.013888888888888881,
    -0.02777777777777777,
    0.05555555555555556,
    -0.02777777777777779,
    -0.055555555555555566,
    -0.08333333333333333,
    -0.1111111111111111,
    -0.13888888888888887,
    0.05555555555555556,
    -0.04166666666666667,
    -0.06944444444444445,
    -0.08333333333333333,
    -0.09722222222222224,
    -0.1111111111111111,
    0.0,
    0.09722222222222221,
    0.013888888888888881,
    -0.013888888888888881,
    -0.04166666666666668,
    -0.06944444444444445,
    -0.05555555555555556,
    0.1388888888888889,
    0.08333333333333334,
    0.06944444444444445,
    0.05555555555555556,
    0.04166666666666666,
    -0.05555555555555556,
    0.08333333333333333,
    0.0,
    -0.013888888888888881,
    -0.02777777777777777,
    -0.041666666666666664,
    -0.1111111111111111,
    0.11111111111111112,
    -0.08333333333333333,
    -0.1111111111111111,
    -0.13888888888888887,
    0.06944444444444445,
    -0.04166666666666666,
    0.027777777777777776,
    -0.08333333333333333,
    -0.09722222222222224,
    -0.1111111111111111,
    0.1111111111111111,
    0.06944444444444445,
    0.0,
    -0.013888888888888881,
    -0.04166666666666668,
    -0.06944444444444445,
    0.1388888888888889,
    0.08333333333333333,
    -0.027777777777777776,
    0.06944444444444445,
    0.05555555555555556,
    0.04166666666666666,
    0.02777777777777777,
    0.013888888888888881,
    -0.1111111111111111,
    0.055555555555555566,
    0.02777777777777779,
    -1.3877787807814457e-17,
    -0.02777777777777779,
    -0.02777777777777779,
    -0.08333333333333333,
    -0.013888888888888881,
    -0.02777777777777777,
    -0.041666666666666664,
    -0.05555555555555555,
    -0.04166666666666667,
    -0.1388888888888889,
    -0.09722222222222224,
    -0.1111111111111111,
    0.1111111111111111,
    0.09722222222222222,
    0.1388888888888889,
    -0.09722222222222222,
    -0.04166666666666668,
    -0.06944444444444445,
    0.1388888888888889,
    0.1111111111111111,
    0.2222222222222222,
    0.04166666666666667,
    0.05555555555555556,
    0.04166666666666666,
    0.02777777777777777,
    0.013888888888888881,
    0.08333333333333333,
    0.02777777777777779,
    0.02777777777777779,
    -1.3877787807814457e-17,
    -0.02777777777777779,
    -0.055555555555555566,
    0.11111111111111112,
    -0.013888888888888881,
    -0.02777777777777777,
    -0.041666666666666664,
    -0.05555555555555555,
    -0.06944444444444445,
    0.027777777777777776,
    -0.08333333333333331,
    -0.13888888888888887,
    0.06944444444444445,
    0.04166666666666667,
    0.013888888888888881,
    0.0,
    -0.06944444444444445,
    -0.1111111111111111,
    0.1111111111111111,
    0.09722222222222222,
    0.08333333333333334,
    -0.027777777777777776,
    0.1111111111111111,
    0.04166666666666666,
    0.02777777777777777,
    0.013888888888888881,
    0.0,
    -0.08333333333333333,
    0.16666666666666666,
    -1.3877787807814457e-17,
    -0.02777777777777779,
    -0.055555555555555566,
    -0.08333333333333333,
    -0.2222222222222222,
    0.05555555555555556,
    -0.041666666666666664,
    -0.05555555555555555,
    -0.06944444444444445,
    -0.08333333333333333,
    -0.1388888888888889,
    0.05555555555555556,
    0.06944444444444445,
    0.04166666666666667,
    0.013888888888888881,
    -0.013888888888888881,
    -0.09722222222222222,
    0.0,
    0.1111111111111111,
    0.09722222222222222,
    0.08333333333333334,
    0.06944444444444445,
    0.04166666666666667,
    -0.05555555555555556,
    0.1388888888888889,
    0.1111111111111111,
    0.08333333333333336,
    0.055555555555555566,
    0.02777777777777779,
    -0.05555555555555556,
    0.02777777777777777,
    0.013888888888888881,
    0.0,
    -0.013888888888888881,
    -0.013888888888888881,
];
const POOL_AVG_NOPAD_OUT: &[f64] = &[
    -0.5,
    0.0,
    0.6666666666666666,
    -0.75,
    0.16666666666666666,
    0.0,
    0.0,
    0.5,
    -0.5,
    0.75,
    0.0,
    -0.16666666666666666,
    0.25,
    -0.5,
    0.16666666666666666,
    -0.25,
    -0.16666666666666666,
    0.5,
    -0.75,
    0.16666666666666666,
    0.0,
    -1.0,
    0.3333333333333333,
    -0.6666666666666666,
    1.0,
    0.6666666666666666,
    -0.3333333333333333,
    0.75,
    0.0,
    -0.16666666666666666,
    0.25,
    -0.5,
    0.16666666666666666,
    -0.25,
    -0.16666666666666666,
    0.5,
    -0.75,
    0.16666666666666666,
    0.0,
    0.0,
    0.5,
    -0.5,
    0.75,
    0.0,
    -0.16666666666666666,
    0.5,
    -0.6666666666666666,
    0.0,
    0.0,
    -0.3333333333333333,
    0.3333333333333333,
    -0.25,
    -0.16666666666666666,
    0.5,
    -0.75,
    0.16666666666666666,
    0.0,
    0.0,
    0.5,
    -0.5,
    0.75,
    0.0,
    -0.16666666666666666,
    0.25,
    -0.5,
    0.16666666666666666,
    -0.25,
    -0.16666666666666666,
    0.5,
    -0.5,
    0.0,
    0.6666666666666666,
    -1.0,
    0.3333333333333333,
    -0.6666666666666666,
    0.0,
    0.5,
    -0.5,
    0.75,
    0.0,
    -0.16666666666666666,
    0.25,
    -0.5,
    0.16666666666666666,
    -0.25,
    -0.16666666666666666,
    0.5,
    -0.75,
    0.16666666666666666,
    0.0,
    0.0,
    0.5,
    -0.5,
    1.0,
    0.6666666666666666,
    -0.3333333333333333,
    0.5,
    -0.6666666666666666,
    0.0,
    0.25,
    -0.5,
    0.16666666666666666,
    -0.25,
    -0.16666666666666666,
    0.5,
    -0.75,
    0.16666666666666666,
    0.0,
    0.0,
    0.5,
    -0.5,
    0.75,
    0.0,
    -0.16666666666666666,
    0.25,
    -0.5,
    0.16666666666666666,
    0.0,
    -0.3333333333333333,
    0.3333333333333333,
    -0.5,
    0.0,
    0.6666666666666666,
    -0.75,
    0.16666666666666666,
    0.0,
    0.0,
    0.5,
    -0.5,
    0.75,
    0.0,
    -0.16666666666666666,
    0.25,
    -0.5,
    0.16666666666666666,
    -0.25,
    -0.16666666666666666,
    0.5,
    -0.75,
    0.16666666666666666,
    0.0,
    -1.0,
    0.3333333333333333,
    -0.6666666666666666,
];
const POOL_AVG_NOPAD_DX: &[f64] = &[
    -0.40625,
    0.010416666666666685,
    0.4166666666666667,
    0.45833333333333337,
    0.041666666666666664,
    0.041666666666666664,
    -0.34375,
    -0.11458333333333333,
    0.22916666666666669,
    0.20833333333333334,
    -0.020833333333333332,
    -0.020833333333333332,
    -0.40625,
    -0.21875,
    0.1875,
    0.12500000000000003,
    -0.0625,
    -0.0625,
    -0.46875,
    -0.3229166666666667,
    0.14583333333333331,
    0.04166666666666666,
    -0.10416666666666666,
    -0.10416666666666666,
    0.0,
    0.10416666666666666,
    0.10416666666666666,
    -0.041666666666666664,
    -0.14583333333333331,
    -0.14583333333333331,
    0.46875,
    0.5312500000000001,
    0.0625,
    -0.125,
    -0.1875,
    -0.1875,
    0.59375,
    0.6145833333333334,
    0.020833333333333332,
    -0.33333333333333337,
    -0.3541666666666667,
    -0.3541666666666667,
    0.4375,
    0.35416666666666663,
    -0.08333333333333333,
    -0.5416666666666667,
    -0.45833333333333337,
    -0.45833333333333337,
    0.21875,
    0.11458333333333334,
    -0.10416666666666666,
    -0.10416666666666666,
    0.0,
    0.0,
    0.15625,
    0.010416666666666671,
    -0.14583333333333331,
    0.16666666666666669,
    0.3125,
    0.3125,
    0.09375,
    -0.09375,
    -0.1875,
    0.08333333333333334,
    0.27083333333333337,
    0.27083333333333337,
    0.03125,
    -0.19791666666666669,
    -0.22916666666666669,
    0.0,
    0.22916666666666669,
    0.22916666666666669,
    -0.03125,
    -0.30208333333333337,
    -0.27083333333333337,
    -0.08333333333333336,
    0.1875,
    0.1875,
    -0.15625,
    -0.6354166666666667,
    -0.47916666666666663,
    -0.2708333333333333,
    0.20833333333333331,
    0.20833333333333331,
    -0.3125,
    0.16666666666666666,
    0.47916666666666663,
    0.5833333333333334,
    0.10416666666666666,
    0.10416666666666666,
    -0.28125,
    -0.010416666666666657,
    0.27083333333333337,
    0.2916666666666667,
    0.020833333333333332,
    0.020833333333333332,
    -0.34375,
    -0.11458333333333333,
    0.22916666666666669,
    0.20833333333333334,
    -0.020833333333333332,
    -0.020833333333333332,
    -0.40625,
    -0.21875,
    0.1875,
    0.12500000000000003,
    -0.0625,
    -0.0625,
    -0.46875,
    -0.3229166666666667,
    0.14583333333333331,
    0.04166666666666666,
    -0.10416666666666666,
    -0.10416666666666666,
    0.0,
    0.10416666666666666,
    0.10416666666666666,
    -0.041666666666666664,
    -0.14583333333333331,
    -0.14583333333333331,
    0.6875,
    0.7708333333333334,
    0.08333333333333333,
    -0.20833333333333334,
    -0.2916666666666667,
    -0.2916666666666667,
    0.53125,
    0.5104166666666666,
    -0.020833333333333332,
    -0.41666666666666663,
    -0.39583333333333337,
    -0.39583333333333337,
    0.28125,
    0.21874999999999997,
    -0.0625,
    -0.375,
    -0.3125,
    -0.3125,
    0.21875,
    0.11458333333333334,
    -0.10416666666666666,
    -0.10416666666666666,
    0.0,
    0.0,
    0.15625,
    0.010416666666666671,
    -0.14583333333333331,
    0.16666666666666669,
    0.3125,
    0.3125,
    0.09375,
    -0.09375,
    -0.1875,
    0.08333333333333334,
    0.27083333333333337,
    0.27083333333333337,
    0.03125,
    -0.19791666666666669,
    -0.22916666666666669,
    0.0,
    0.22916666666666669,
    0.22916666666666669,
    -0.0625,
    -0.4791666666666667,
    -0.4166666666666667,
    -0.14583333333333334,
    0.2708333333333333,
    0.2708333333333333,
    -0.21875,
    -0.38541666666666663,
    -0.16666666666666666,
    6.938893903907228e-18,
    0.16666666666666666,
    0.16666666666666666,
    -0.21875,
    0.09375,
    0.3125,
    0.37499999999999994,
    0.0625,
    0.0625,
    -0.28125,
    -0.010416666666666657,
    0.27083333333333337,
    0.2916666666666667,
    0.020833333333333332,
    0.020833333333333332,
    -0.34375,
    -0.11458333333333333,
    0.22916666666666669,
    0.20833333333333334,
    -0.020833333333333332,
    -0.020833333333333332,
    -0.40625,
    -0.21875,
    0.1875,
    0.12500000000000003,
    -0.0625,
    -0.0625,
    -0.46875,
    -0.3229166666666667,
    0.14583333333333331,
    0.04166666666666666,
    -0.10416666666666666,
    -0.10416666666666666,
    0.25,
    0.3958333333333333,
    0.14583333333333331,
    -0.08333333333333333,
    -0.22916666666666666,
    -0.22916666666666666,
    0.625,
    0.6666666666666667,
    0.041666666666666664,
    -0.2916666666666667,
    -0.33333333333333337,
    -0.33333333333333337,
    0.34375,
    0.3229166666666667,
    -0.020833333333333332,
    -0.2916666666666667,
    -0.27083333333333337,
    -0.27083333333333337,
    0.28125,
    0.21874999999999997,
    -0.0625,
    -0.375,
    -0.3125,
    -0.3125,
    0.21875,
    0.11458333333333334,
    -0.10416666666666666,
    -0.10416666666666666,
    0.0,
    0.0,
    0.15625,
    0.010416666666666671,
    -0.14583333333333331,
    0.16666666666666669,
    0.3125,
    0.3125,
    0.09375,
    -0.09375,
    -0.1875,
    0.08333333333333334,
    0.27083333333333337,
    0.27083333333333337,
    0.03125,
    -0.3229166666666667,
    -0.3541666666666667,
    -0.020833333333333343,
    0.33333333333333337,
    0.33333333333333337,
];
const POOL_ADAPTIVE_OUT: &[f64] = &[
    -0.16666666666666666,
    0.16666666666666666,
    0.0,
    -0.5,
    0.5,
    0.0,
    -0.16666666666666666,
    0.16666666666666666,
    -0.5,
    -0.16666666666666666,
    0.5,
    0.0,
    0.5,
    0.0,
    -0.16666666666666666,
    0.16666666666666666,
    -0.5,
    -0.16666666666666666,
    0.5,
    0.0,
    0.16666666666666666,
    0.5,
    -0.5,
    -0.16666666666666666,
    -0.5,
    -0.16666666666666666,
    0.5,
    0.0,
    0.16666666666666666,
    0.5,
    -0.5,
    -0.16666666666666666,
    0.0,
    -0.5,
    0.16666666666666666,
    0.5,
    0.16666666666666666,
    0.5,
    -0.5,
    -0.16666666666666666,
    0.0,
    -0.5,
    0.16666666666666666,
    0.5,
    -0.16666666666666666,
    0.16666666666666666,
    0.0,
    -0.5,
    0.0,
    -0.5,
    0.16666666666666666,
    0.5,
    -0.16666666666666666,
    0.16666666666666666,
    0.0,
    -0.5,
    0.5,
    0.0,
    -0.16666666666666666,
    0.16666666666666666,
    -0.16666666666666666,
    0.16666666666666666,
    0.0,
    -0.5,
    0.5,
    0.0,
    -0.16666666666666666,
    0.16666666666666666,
    -0.5,
    -0.16666666666666666,
    0.5,
    0.0,
];
const POOL_ADAPTIVE_DX: &[f64] = &[
    -0.08333333333333333,
    0.06250000000000001,
    0.14583333333333334,
    0.020833333333333332,
    -0.08333333333333334,
    -0.10416666666666667,
    -0.08333333333333333,
    0.06250000000000001,
    0.14583333333333334,
    0.020833333333333332,
    -0.08333333333333334,
    -0.10416666666666667,
    0.04166666666666667,
    0.1875,
    0.14583333333333334,
    -0.10416666666666667,
    -0.10416666666666667,
    0.0,
    0.125,
    0.125,
    0.0,
    -0.125,
    -0.02083333333333333,
    0.10416666666666667,
    0.10416666666666667,
    -0.04166666666666667,
    -0.14583333333333334,
    -0.04166666666666667,
    0.020833333333333336,
    0.0625,
    -0.020833333333333332,
    -0.16666666666666669,
    -0.14583333333333334,
    0.08333333333333333,
    0.041666666666666664,
    -0.041666666666666664,
    -0.020833333333333332,
    -0.16666666666666669,
    -0.14583333333333334,
    0.08333333333333333,
    0.041666666666666664,
    -0.041666666666666664,
    -0.16666666666666666,
    -0.10416666666666666,
    0.0625,
    -0.0625,
    0.10416666666666666,
    0.16666666666666666,
    -0.16666666666666666,
    -0.10416666666666666,
    0.0625,
    -0.0625,
    0.10416666666666666,
    0.16666666666666666,
    -0.125,
    -0.14583333333333331,
    -0.02083333333333333,
    0.08333333333333334,
    0.2708333333333333,
    0.1875,
    0.041666666666666664,
    -0.041666666666666664,
    -0.08333333333333333,
    0.14583333333333334,
    0.16666666666666669,
    0.020833333333333332,
    -0.0625,
    -0.020833333333333343,
    0.04166666666666667,
    0.14583333333333334,
    0.041666666666666685,
    -0.10416666666666667,
    -0.10416666666666667,
    0.02083333333333333,
    0.125,
    0.0,
    -0.125,
    -0.125,
    -0.10416666666666667,
    0.02083333333333333,
    0.125,
    0.0,
    -0.125,
    -0.125,
    0.10416666666666667,
    0.08333333333333334,
    -0.020833333333333332,
    -0.14583333333333334,
    -0.06250000000000001,
    0.08333333333333333,
    0.10416666666666667,
    0.08333333333333334,
    -0.020833333333333332,
    -0.14583333333333334,
    -0.06250000000000001,
    0.08333333333333333,
    0.0625,
    -0.12499999999999997,
    -0.1875,
    -0.08333333333333334,
    -0.06250000000000001,
    0.02083333333333333,
    -0.041666666666666664,
    -0.20833333333333331,
    -0.16666666666666666,
    0.0625,
    0.0,
    -0.0625,
    0.125,
    6.938893903907228e-18,
    -0.125,
    -0.02083333333333333,
    0.06250000000000001,
    0.08333333333333334,
    0.16666666666666666,
    0.20833333333333331,
    0.041666666666666664,
    -0.08333333333333333,
    0.06250000000000001,
    0.14583333333333334,
    0.16666666666666666,
    0.20833333333333331,
    0.041666666666666664,
    -0.08333333333333333,
    0.06250000000000001,
    0.14583333333333334,
    0.020833333333333332,
    -0.08333333333333334,
    -0.10416666666666667,
    0.125,
    0.125,
    0.0,
    0.020833333333333332,
    -0.08333333333333334,
    -0.10416666666666667,
    0.125,
    0.125,
    0.0,
    -0.10416666666666667,
    -0.10416666666666667,
    0.0,
    0.10416666666666667,
    -0.04166666666666667,
    -0.14583333333333334,
    -0.125,
    -0.02083333333333333,
    0.10416666666666667,
    -0.020833333333333332,
    -0.16666666666666669,
    -0.14583333333333334,
    -0.04166666666666667,
    0.020833333333333336,
    0.0625,
    -0.1875,
    -0.27083333333333337,
    -0.08333333333333334,
    0.08333333333333333,
    0.041666666666666664,
    -0.041666666666666664,
    -0.16666666666666666,
    -0.10416666666666666,
    0.0625,
    0.08333333333333333,
    0.041666666666666664,
    -0.041666666666666664,
    -0.16666666666666666,
    -0.10416666666666666,
    0.0625,
    -0.0625,
    0.10416666666666666,
    0.16666666666666666,
    0.041666666666666664,
    -0.041666666666666664,
    -0.08333333333333333,
    -0.0625,
    0.10416666666666666,
    0.16666666666666666,
    0.041666666666666664,
    -0.041666666666666664,
    -0.08333333333333333,
    0.08333333333333334,
    0.2708333333333333,
    0.1875,
    -0.0625,
    -0.020833333333333343,
    0.04166666666666667,
    0.14583333333333334,
    0.16666666666666669,
    0.020833333333333332,
    -0.10416666666666667,
    0.02083333333333333,
    0.125,
    0.14583333333333334,
    0.041666666666666685,
    -0.10416666666666667,
    0.0,
    0.10416666666666667,
    0.10416666666666667,
    0.0,
    -0.125,
    -0.125,
    0.10416666666666667,
    0.08333333333333334,
    -0.020833333333333332,
    0.0,
    -0.125,
    -0.125,
    0.10416666666666667,
    0.08333333333333334,
    -0.020833333333333332,
    -0.14583333333333334,
    -0.06250000000000001,
    0.08333333333333333,
    -0.041666666666666664,
    -0.20833333333333331,
    -0.16666666666666666,
    -0.14583333333333334,
    -0.06250000000000001,
    0.08333333333333333,
    -0.041666666666666664,
    -0.20833333333333331,
    -0.16666666666666666,
    -0.08333333333333334,
    -0.06250000000000001,
    0.02083333333333333,
    0.125,
    6.938893903907228e-18,
    -0.125,
    0.0625,
    0.0,
    -0.0625,
    0.16666666666666666,
    0.20833333333333331,
    0.041666666666666664,
    -0.02083333333333333,
    0.06250000000000001,
    0.08333333333333334,
    0.1875,
    0.12499999999999999,
    -0.0625,
    -0.08333333333333333,
    0.06250000000000001,
    0.14583333333333334,
    0.020833333333333332,
    -0.08333333333333334,
    -0.10416666666666667,
    -0.08333333333333333,
    0.06250000000000001,
    0.14583333333333334,
    0.020833333333333332,
    -0.08333333333333334,
    -0.10416666666666667,
];

/// The reference script's pooling input: few distinct values, so windows
/// hold ties (the first largest takes the gradient, as in PyTorch).
fn pool_input() -> Tensor {
    let v: Vec<f64> = (0..252).map(|k| ((k * 7 + 3) % 5) as f64 - 2.0).collect();
    Tensor::from_vec(v, [2, 3, 7, 6])
}

#[test]
fn pooling_matches_pytorch_values_and_gradients() {
    type Pool = fn(&Tensor) -> Tensor;
    type Case = (
        &'static str,
        Pool,
        &'static [usize],
        &'static [f64],
        &'static [f64],
        &'static str,
    );
    let cases: [Case; 4] = [
        (
            "max",
            |t| F::max_pool2d_with(t, [3, 2], 2, 1),
            &[2, 3, 4, 4],
            POOL_MAX_OUT,
            POOL_MAX_DX,
            "MaxPool2DWithIndicesBackward",
        ),
        (
            "avg",
            |t| F::avg_pool2d_with(t, 3, [2, 1], 1, true),
            &[2, 3, 4, 6],
            POOL_AVG_OUT,
            POOL_AVG_DX,
            "AvgPool2DBackward",
        ),
        (
            "avg, no pad",
            |t| F::avg_pool2d_with(t, [2, 3], [1, 2], 1, false),
            &[2, 3, 8, 3],
            POOL_AVG_NOPAD_OUT,
            POOL_AVG_NOPAD_DX,
            "AvgPool2DBackward",
        ),
        (
            "adaptive",
            |t| F::adaptive_avg_pool2d(t, [3, 4]),
            &[2, 3, 3, 4],
            POOL_ADAPTIVE_OUT,
            POOL_ADAPTIVE_DX,
            "AdaptiveAvgPool2DBackward",
        ),
    ];
    for (what, f, shape, out, dx, name) in cases {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-6)] {
            let x = pool_input().to_dtype(dtype).requires_grad_(true);
            let y = f(&x);
            assert_eq!(y.shape(), shape, "{what}");
            assert_eq!(y.grad_fn(), Some(name), "{what}");
            assert_values(&format!("{what} output"), &y, out, tol);
            let c = det(y.shape(), 11, 4, 17, 8.0, 1.0).to_dtype(dtype);
            (&y * &c).sum().backward();
            assert_values(&format!("{what} dx"), &x.grad().unwrap(), dx, tol);
        }
    }
}

/// Max pooling's picks at NaN, ties and signed zeros, as PyTorch makes
/// them (`F.max_pool2d(x, 2, return_indices=True)` on this input gives
/// `[nan, 3, nan, -0]`, indices `[5, 2, 13, 10]`: the first largest, the
/// last NaN), forward, indices and gradient.
#[test]
fn max_pooling_picks_nan_ties_and_zeros_like_pytorch() {
    let nan = f64::NAN;
    let v = vec![
        1., 3., 3., 0., 2., nan, -1., 3., nan, 0., -0., 0., 5., nan, 0., -0.,
    ];
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::from_vec(v.clone(), [1, 1, 4, 4])
            .to_dtype(dtype)
            .requires_grad_(true);
        let (y, idx) = F::max_pool2d_with_indices(&x, 2, 2, 0);
        let y = y.to_vec::<f64>();
        assert!(y[0].is_nan() && y[2].is_nan(), "{y:?}");
        assert_eq!(y[1], 3.0);
        assert!(y[3] == 0.0 && y[3].is_sign_negative(), "{y:?}");
        assert_eq!(idx.to_vec::<i64>(), [5, 2, 13, 10]);
        let y = F::max_pool2d(&x, 2);
        y.backward_with(&Tensor::from_vec(vec![1., 2., 3., 4.], [1, 1, 2, 2]).to_dtype(dtype));
        let want = [
            0., 0., 2., 0., 0., 1., 0., 0., 0., 0., 4., 0., 0., 3., 0., 0.,
        ];
        assert_eq!(x.grad().unwrap().to_vec::<f64>(), want, "{dtype}");
    }
}

#[test]
fn pooling_layers_gradcheck_and_paths_agree() {
    let x = Tensor::randn_with([2, 3, 6, 5], &mut Generator::new(15)).to_dtype(DType::F64);
    // Distinct values keep max pooling differentiable for gradcheck.
    let report = gradcheck(
        |t| F::max_pool2d_with(&t[0], 2, [2, 1], [1, 0]),
        std::slice::from_ref(&x),
    );
    assert!(report.passed, "{report}");
    let report = gradcheck(
        |t| F::avg_pool2d_with(&t[0], 3, 2, 1, false),
        std::slice::from_ref(&x),
    );
    assert!(report.passed, "{report}");
    let report = gradcheck(
        |t| F::adaptive_avg_pool2d(&t[0], [4, 3]),
        std::slice::from_ref(&x),
    );
    assert!(report.passed, "{report}");
    let v =
        |shape: &[usize]| Tensor::randn_with(shape, &mut Generator::new(16)).to_dtype(DType::F64);
    assert_paths_agree(&MaxPool2d::new(2, &CPU), &x, &v(&[2, 3, 3, 2]));
    assert_paths_agree(&AvgPool2d::with(2, 1, 1, true), &x, &v(&[2, 3, 7, 6]));
    assert_paths_agree(&AdaptiveAvgPool2d::new(1, &CPU), &x, &v(&[2, 3, 1, 1]));
    let err = std::panic::catch_unwind(|| F::max_pool2d_with(&x, 2, 2, 2)).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("pad should be at most half of effective kernel size"),
        "{msg}"
    );
}

// ----- Conv1d (PyTorch's values: tests/data/make_layer_reference.py)

const CONVC_OUT: &[f64] = &[
    -0.37499999999999994,
    -1.0208333333333335,
    1.6875,
    0.7916666666666667,
    1.9583333333333333,
    1.6666666666666665,
    -0.3333333333333334,
    0.29166666666666674,
    -0.7083333333333335,
    0.7083333333333331,
    0.49999999999999994,
    -1.1458333333333335,
    0.6666666666666667,
    2.3541666666666665,
    0.37499999999999994,
    -0.5,
    -1.3958333333333335,
    -1.1458333333333335,
    0.24999999999999994,
    -0.3333333333333334,
    0.7291666666666666,
    -0.45833333333333326,
    -0.8333333333333335,
    1.0416666666666667,
    -1.0624999999999998,
    -0.5624999999999998,
    -1.0208333333333335,
    0.16666666666666663,
    -1.1102230246251565e-16,
    1.6875,
    1.6666666666666665,
    -0.24999999999999997,
    -0.14583333333333337,
    -1.0625000000000002,
    0.7083333333333331,
    0.8333333333333333,
    0.12500000000000006,
    0.375,
    2.3541666666666665,
    0.041666666666666685,
    0.5833333333333335,
    -1.3541666666666667,
    -1.1458333333333335,
    0.29166666666666663,
    0.08333333333333326,
    1.1041666666666665,
    -0.45833333333333326,
    -0.9583333333333333,
];
const CONVC_DX: &[f64] = &[
    0.0, -0.421875, 0.0, 0.0625, 0.0, 0.078125, 0.0, 0.921875, 0.0, 0.0, -0.390625, 0.0, 0.875,
    0.0, -1.4375, 0.0, 0.625, 0.0, 0.0, 0.71875, 0.0, -1.3125, 0.0, -0.1875, 0.0, -0.25, 0.0, 0.0,
    0.53125, 0.0, -1.375, 0.0, 0.1875, 0.0, -0.03125, 0.0, 0.0, -0.453125, 0.0, 0.171875, 0.0,
    0.984375, 0.0, -1.46875, 0.0, 0.0, -0.328125, 0.0, -0.96875, 0.0, 0.96875, 0.0, -0.046875, 0.0,
    0.0, -0.421875, 0.0, 0.1875, 0.0, 0.25, 0.0, -0.03125, 0.0, 0.0, -0.515625, 0.0, 0.0, 0.0,
    -0.03125, 0.0, -0.25, 0.0,
];
const CONVC_DW: &[f64] = &[
    0.3958333333333335,
    -0.9375000000000001,
    0.625,
    0.6666666666666667,
    -0.9374999999999999,
    0.35416666666666674,
    -1.125,
    1.6666666666666667,
    -1.0625,
    0.9166666666666667,
    -0.14583333333333304,
    0.4375000000000001,
    -0.5208333333333334,
    -0.3333333333333335,
    2.5625,
    -1.3125,
    -1.8333333333333335,
    1.2291666666666665,
    -1.0208333333333333,
    2.583333333333333,
    -1.604166666666667,
    1.2916666666666665,
    -0.7291666666666667,
    2.791666666666667,
    0.5833333333333333,
    -1.625,
    1.3125000000000002,
    0.7083333333333335,
    -0.02083333333333348,
    -1.0833333333333335,
    0.41666666666666674,
    0.895833333333333,
    -1.791666666666667,
    -1.6458333333333335,
    0.6875,
    0.35416666666666674,
];
const CONVC_DB: &[f64] = &[0.0, -0.625, 0.875, 0.25, -0.375, -1.0];
const CONVD_OUT: &[f64] = &[
    -0.8750000000000001,
    3.375,
    -1.5625,
    -0.5625000000000001,
    1.2291666666666665,
    -1.1666666666666665,
    -0.10416666666666674,
    -0.10416666666666685,
    4.208333333333332,
    -0.7500000000000001,
    0.22916666666666677,
    2.0,
    -0.45833333333333326,
    0.6458333333333333,
    -1.3541666666666667,
    1.125,
    -0.6041666666666667,
    -1.5416666666666665,
    3.458333333333333,
    -0.9583333333333335,
    -0.3541666666666667,
];
const CONVD_DX: &[f64] = &[
    -0.875, 0.9375, 0.0625, -1.921875, 1.140625, 0.21875, -1.28125, 0.84375, -1.234375, -0.015625,
    2.0625, -1.4375, -0.15625, 1.53125,
];
const CONVD_DW: &[f64] = &[
    -1.0625,
    1.8541666666666667,
    -0.4375,
    -0.5,
    1.2083333333333333,
    -3.916666666666667,
    1.5,
    1.8333333333333333,
    -0.25,
    -0.8958333333333335,
    1.4791666666666665,
    -0.18749999999999983,
    1.5833333333333335,
    1.6875,
    -3.75,
    0.37500000000000006,
    -1.208333333333333,
    1.6666666666666667,
    -0.5,
    -0.5833333333333333,
    1.2500000000000002,
    -3.6875,
    1.625,
    2.1041666666666665,
];
const CONVD_DB: &[f64] = &[-0.125, -0.75, 0.75];

#[test]
fn conv1d_matches_pytorch_values_and_gradients() {
    type Case = (
        &'static str,
        [usize; 3],
        [usize; 3],
        Conv1dOptions,
        [&'static [f64]; 4],
    );
    let cases: [Case; 2] = [
        (
            "C",
            [2, 4, 9],
            [6, 2, 3],
            Conv1dOptions::new()
                .stride(2)
                .padding(1)
                .dilation(2)
                .groups(2),
            [CONVC_OUT, CONVC_DX, CONVC_DW, CONVC_DB],
        ),
        (
            "D",
            [1, 2, 7],
            [3, 2, 4],
            Conv1dOptions::new().padding("same"),
            [CONVD_OUT, CONVD_DX, CONVD_DW, CONVD_DB],
        ),
    ];
    for (tag, xs, ws, opts, [out, dx, dw, db]) in cases {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            let x = det(&xs, 7, 3, 19, 6.0, 1.5)
                .to_dtype(dtype)
                .requires_grad_(true);
            let w = det(&ws, 5, 1, 13, 8.0, 0.75)
                .to_dtype(dtype)
                .requires_grad_(true);
            let b = det(&[ws[0]], 3, 2, 7, 4.0, 0.5)
                .to_dtype(dtype)
                .requires_grad_(true);
            let y = F::conv1d(&x, &w, Some(&b), &opts);
            assert_eq!(y.ndim(), 3, "{tag}");
            assert_values(&format!("{tag} output"), &y, out, tol);
            let c = det(y.shape(), 11, 4, 17, 8.0, 1.0).to_dtype(dtype);
            (&y * &c).sum().backward();
            assert_values(&format!("{tag} dx"), &x.grad().unwrap(), dx, tol);
            assert_values(&format!("{tag} dw"), &w.grad().unwrap(), dw, tol);
            assert_values(&format!("{tag} db"), &b.grad().unwrap(), db, tol);
        }
    }
}

#[test]
fn conv1d_layer_gradcheck_and_paths_agree() {
    let mut g = Generator::new(17);
    let mut randn = |s: &[usize]| Tensor::randn_with(s, &mut g).to_dtype(DType::F64);
    let (x, w, b) = (randn(&[2, 4, 8]), randn(&[2, 2, 3]), randn(&[2]));
    let opts = Conv1dOptions::new()
        .stride(2)
        .padding(2)
        .dilation(2)
        .groups(2);
    let report = gradcheck(
        |t| F::conv1d(&t[0], &t[1], Some(&t[2]), &opts),
        &[x.clone(), w, b],
    );
    assert!(report.passed, "{report}");
    let mut conv = Conv1d::with_options(4, 6, 3, &Conv1dOptions::new().padding("same"), &CPU);
    conv.to_dtype(DType::F64);
    let v = randn(&[2, 6, 8]);
    assert_paths_agree(&conv, &x, &v);
    let err = conv
        .try_forward(&Tensor::zeros([2, 4, 8, 8]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv1d: expected a 3-D input [N, C, L]"),
        "{err}"
    );
    let x32 = Tensor::zeros([1, 4, 8]);
    let err = F::try_conv1d(&x32, &conv.weight, None, &Conv1dOptions::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv1d") && err.contains(".to_dtype(DType::F64)"),
        "{err}"
    );
}

// ----- BatchNorm and GroupNorm (PyTorch's values: tests/data/make_layer_reference.py)

const BN_TRAIN_OUT: &[f64] = &[
    -0.39366417433674417,
    0.061397164804813345,
    0.5164585039463708,
    -0.2636466488677277,
    0.19141469027382974,
    -0.5886904625402688,
    0.41909067985251114,
    1.68256262950656,
    -0.4833892841860953,
    0.7800826654679536,
    2.043554615122002,
    -0.12239729857065273,
    0.4790872156190869,
    2.615482312549435,
    -1.0469092821883044,
    1.0894858147420434,
    -2.5729057799956956,
    -0.43651068306534796,
    1.1624943338193727,
    -0.26849342723047226,
    0.5662494333819373,
    1.4009922939943469,
    -0.029995467055498076,
    0.8047473935569114,
    -0.5886904625402688,
    -0.13362912339871127,
    0.3214322157428462,
    -0.4586729370712524,
    -0.0036115979296948925,
    0.45144974121186254,
    -0.12239729857065273,
    1.141074651083396,
    2.404546600737445,
    0.2385946870447898,
    1.5020666366988384,
    -0.6638852769938164,
    -0.43651068306534796,
    1.6998844138650002,
    -1.9625071808727392,
    0.17388791605760887,
    2.310283012987957,
    -1.3521085817497827,
    0.8047473935569114,
    -0.6262403674929335,
    0.2085024931194761,
    1.0432453537318858,
    -0.3877424073179594,
    0.4470004532944502,
    0.45144974121186254,
    -0.32865541160223594,
    0.1264059275393215,
    0.581467266680879,
    -0.19863788613321953,
    0.2564234530083379,
    -0.6638852769938164,
    0.5995866726602322,
    1.863058622314281,
    -0.30289329137837395,
    0.9605786582756749,
    2.224050607929724,
    -1.3521085817497827,
    0.7842865151805654,
    -2.8781050795571743,
    -0.741709982626826,
    1.3946851143035222,
    -2.2677064804342177,
    0.4470004532944502,
    1.2817433139068597,
    -0.1492444471429852,
    0.6854984134694243,
    1.5202412740818338,
    0.08925351303198897,
];
const BN_TRAIN_DX: &[f64] = &[
    -0.3103025879296603,
    0.3373567847676464,
    0.1561544325999734,
    -0.3272485656555089,
    0.32041080704179775,
    -0.16299219121368452,
    -0.7946594377882328,
    0.4837610310008222,
    0.032680158008325605,
    -0.9902232815010653,
    0.2881971872879899,
    -0.16288368570450684,
    -1.6634025086033044,
    0.824487198050811,
    -0.49747333901341806,
    1.9904163676406976,
    0.6684558305764685,
    -0.734945532178264,
    0.3894045513933845,
    0.3532213359742118,
    -0.47532077148794954,
    0.21656161716534936,
    0.18037840174617664,
    -0.6481637057159848,
    0.08079066904072126,
    -0.10041168312695173,
    -0.28161403529462475,
    0.06384469131487266,
    -0.11735766085280036,
    -0.2985600130204734,
    0.5139762873244478,
    -0.508927152184943,
    0.7694933166041121,
    0.3184124436116154,
    -0.7044909958977754,
    1.1457520394081737,
    0.4095518411772796,
    -0.9938495215774529,
    1.5754810107671662,
    0.17207964801243372,
    -1.2313217147422988,
    1.3380088176023204,
    -0.2009800303879082,
    -0.2371632458070809,
    0.454719142846218,
    -0.37382296461594344,
    -0.410006180035116,
    0.28187620861818286,
    -0.05477715276606758,
    0.29068157384342985,
    0.10947922167575685,
    -0.0717231304919162,
    0.27373559611758125,
    0.09253324394990825,
    -0.47871189586131746,
    0.7997085729277378,
    -0.2231948665816532,
    -0.6742757395741499,
    0.6041447292149053,
    -0.41875871029448564,
    -1.4087848784509842,
    1.0791048282031312,
    -0.24285570886109775,
    -1.6462570716158302,
    0.8416326350382854,
    -0.48032790202594366,
    0.7290598839462594,
    -0.09948222351590193,
    -0.1356654389350747,
    0.5562169497182243,
    -0.2723251577439372,
    -0.30850837316310986,
];
const BN_TRAIN_DW: &[f64] = &[
    -4.233996639578988,
    2.77136555623522,
    0.22433452788279562,
    5.498702970700794,
];
const BN_TRAIN_DB: &[f64] = &[0.875, 0.625, -1.75, 0.125];
const BN_TRAIN_RUNNING_MEAN: &[f64] = &[
    0.0009259259259259238,
    0.6722222222222223,
    0.21851851851851853,
    -0.2175925925925926,
];
const BN_TRAIN_RUNNING_VAR: &[f64] = &[
    0.9978667392883079,
    1.8902777777777777,
    0.5333787218591141,
    1.4307915758896153,
];
const BN_EVAL_OUT: &[f64] = &[
    -0.3757463379098864,
    0.06221886631440304,
    0.5001840705386925,
    -0.2506134224172323,
    0.18735178180705714,
    -0.5634457111488675,
    0.018621639454500495,
    0.8671821682641961,
    -0.5874930239809965,
    0.26106750482869917,
    1.1096280336383946,
    -0.3450471586067977,
    0.005463807480965663,
    2.601305722206909,
    -1.8487089887518509,
    0.7471329259740921,
    -3.702881784984667,
    -1.1070398702587243,
    1.136198015066494,
    0.09118834773293727,
    0.7007773203441788,
    1.3103662929554205,
    0.26535662562186346,
    0.8749455982331049,
    -0.5634457111488675,
    -0.12548050692457813,
    0.3124846972997113,
    -0.43831279565621345,
    -0.0003475914319240384,
    0.43761761279236533,
    -0.3450471586067977,
    0.5035133702028979,
    1.3520738990125936,
    -0.10260129323259892,
    0.7459592355770965,
    -0.7087159566680957,
    -1.1070398702587243,
    1.488802044467219,
    -2.961212666491541,
    -0.3653707517655973,
    2.230471162960346,
    -2.219543547998414,
    0.8749455982331049,
    -0.17006406910045196,
    0.4395249035107896,
    1.049113876122031,
    0.004104208788474153,
    0.6136931813997157,
    0.43761761279236533,
    -0.31317988016355935,
    0.12478532406073005,
    0.5627505282850195,
    -0.1880469646709052,
    0.24991823955338413,
    -0.7087159566680957,
    0.13984457214159976,
    0.9884051009512953,
    -0.466270091293897,
    0.3822904375157986,
    1.2308509663254943,
    -2.219543547998414,
    0.37629836672752914,
    -4.07371634423123,
    -1.4778744295052872,
    1.117967485220656,
    -3.332047225738104,
    0.6136931813997157,
    1.2232821540109573,
    0.17827248667740034,
    0.7878614592886418,
    1.3974504318998835,
    0.3524407645663265,
];
const BN_EVAL_DX: &[f64] = &[
    -0.18769937323898117,
    0.32847390316821706,
    0.04692484330974529,
    -0.2346242165487265,
    0.2815490598584718,
    0.0,
    -0.5455031970919472,
    0.4545859975766226,
    -0.09091719951532452,
    -0.6364203966072717,
    0.3636687980612981,
    -0.18183439903064905,
    -2.22500735547938,
    0.8343777583047675,
    -0.8343777583047675,
    2.22500735547938,
    0.556251838869845,
    -1.11250367773969,
    0.4571917294584311,
    0.06531310420834731,
    -0.32656552104173653,
    0.3918786252500839,
    0.0,
    -0.3918786252500839,
    0.2346242165487265,
    -0.04692484330974529,
    -0.32847390316821706,
    0.18769937323898117,
    -0.09384968661949059,
    -0.37539874647796234,
    0.2727515985459736,
    -0.2727515985459736,
    0.7273375961225962,
    0.18183439903064905,
    -0.3636687980612981,
    0.6364203966072717,
    0.2781259194349225,
    -1.3906295971746123,
    1.668755516609535,
    0.0,
    -1.668755516609535,
    1.3906295971746123,
    -0.06531310420834731,
    -0.4571917294584311,
    0.26125241683338923,
    -0.13062620841669462,
    -0.5225048336667785,
    0.19593931262504194,
    -0.1407745299292359,
    0.37539874647796234,
    0.09384968661949059,
    -0.18769937323898117,
    0.32847390316821706,
    0.04692484330974529,
    -0.4545859975766226,
    0.5455031970919472,
    0.0,
    -0.5455031970919472,
    0.4545859975766226,
    -0.09091719951532452,
    -1.946881436044457,
    1.11250367773969,
    -0.556251838869845,
    -2.22500735547938,
    0.8343777583047675,
    -0.8343777583047675,
    0.5225048336667785,
    0.13062620841669462,
    -0.26125241683338923,
    0.4571917294584311,
    0.06531310420834731,
    -0.32656552104173653,
];
const BN_EVAL_DW: &[f64] = &[
    -4.067630800185748,
    1.5430669139962023,
    0.951491749451438,
    4.046025855514138,
];
const BN_EVAL_DB: &[f64] = &[0.875, 0.625, -1.75, 0.125];
const BN_CMA_RUNNING_MEAN: &[f64] = &[0.5104166666666666, 0.32291666666666663, 0.16666666666666666];
const BN_CMA_RUNNING_VAR: &[f64] = &[1.009672619047619, 1.0096726190476188, 1.097222222222222];
// num_batches_tracked = 2
const GN_OUT: &[f64] = &[
    -0.38135403811798513,
    0.1040056467594505,
    0.5893653316368861,
    -0.2426798424387178,
    1.3971462465032474,
    -0.8216408843650296,
    0.4726516086414654,
    1.7669441016479603,
    -2.65299486960594,
    -0.5169994299562155,
    1.6189960096935088,
    -2.0427104582774476,
    0.6320326851431836,
    1.4535693927007698,
    0.04522075117347907,
    0.8667574587310652,
    -2.348457592004569,
    -0.7053841768893967,
    0.937689238225776,
    -1.8790080448288056,
    0.3028130740572734,
    0.631427757080308,
    0.06808830046939161,
    0.39670298349242616,
    -0.5545372776013708,
    -0.06161525306681893,
    0.43130677146773294,
    -0.4137024134486417,
    0.9612522962290937,
    2.275711028321232,
    0.02235320187756643,
    1.3368119339697044,
    2.3272370184572644,
    -1.2072594639984127,
    0.8545301507673988,
    -2.679966331688278,
    0.3583935704144359,
    1.1513895760935944,
    -0.20803214792782,
    0.5849638577513384,
    1.4824900141978958,
    -1.2363534338449327,
    0.3496385775133838,
    -2.3692048705294444,
    0.19335742816577445,
    0.5105558304374378,
    -0.03321285917112793,
    0.28398554310053536,
];
const GN_DX: &[f64] = &[
    -0.029264034599595437,
    0.213234668381987,
    -0.42831462609175963,
    -0.175418959178005,
    0.5871079776008299,
    0.31997541071733204,
    -0.841602117553667,
    0.3542816807228782,
    0.5008296271872457,
    -1.3683492234123447,
    0.6530350482072063,
    0.13024756576463759,
    -0.6122523716131199,
    -0.14005160567358926,
    0.18217009680021673,
    0.6543708627397475,
    0.42308425674495886,
    -0.7940877434960255,
    0.9814811195084832,
    0.20106624252675717,
    -0.3119314369505818,
    -0.08554607962609305,
    -0.020951771691444535,
    -0.3931145870160544,
    -0.19014824790087292,
    0.04733380919636859,
    0.28481586629361016,
    -0.08457260726075155,
    -0.023134130354421356,
    -0.31378281382991396,
    0.28506840366573694,
    -0.005580279809755617,
    1.6665444451937423,
    -0.042219005308590074,
    -1.1440476123069543,
    0.90259144979987,
    -0.3351793296006357,
    -0.6213549021861513,
    -0.0700797365028828,
    -0.3562553090883984,
    -0.7692462195081213,
    1.036315019151983,
    0.053874178059704125,
    -1.0293357468256965,
    0.33322588601896397,
    0.16643807933953356,
    -0.10111881113301868,
    0.3098476148966519,
];
const GN_DW: &[f64] = &[
    -1.1096026551300546,
    -0.7424850849867449,
    0.9699144714924716,
    -0.30878061686710606,
    0.2467526408080767,
    1.3821304128498877,
];
const GN_DB: &[f64] = &[0.0, -0.625, 0.875, 0.25, -0.375, -1.0];

/// The reference script's BatchNorm2d(4): parameters and running statistics
/// set to its values, in `dtype`.
fn bn_case(dtype: DType) -> BatchNorm2d {
    let mut bn = BatchNorm2d::new(4, &CPU);
    bn.to_dtype(dtype);
    no_grad(|| {
        let set = |t: &Option<Tensor>, v: Tensor| {
            t.as_ref().unwrap().copy_(&v.to_dtype(dtype));
        };
        set(&bn.weight, &det(&[4], 5, 1, 13, 8.0, 0.75) + 1.0);
        set(&bn.bias, det(&[4], 3, 2, 7, 4.0, 0.5));
        set(&bn.running_mean, det(&[4], 3, 1, 5, 4.0, 0.25));
        set(&bn.running_var, det(&[4], 2, 1, 5, 2.0, -0.5));
    });
    bn
}

#[test]
fn batch_norm_matches_pytorch_in_training_and_evaluation() {
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 3e-5)] {
        let mut bn = bn_case(dtype);
        let x = det(&[3, 4, 2, 3], 7, 3, 19, 6.0, 1.5).to_dtype(dtype);
        let c = det(&[3, 4, 2, 3], 11, 4, 17, 8.0, 1.0).to_dtype(dtype);
        let grads =
            |bn: &BatchNorm2d| [&bn.weight, &bn.bias].map(|p| p.as_ref().unwrap().grad().unwrap());
        // Training: the batch's statistics; the running ones move.
        let xt = x.detach().requires_grad_(true);
        let y = bn.forward(&xt);
        assert_eq!(y.grad_fn(), Some("NativeBatchNormBackward"));
        assert_values("train output", &y, BN_TRAIN_OUT, tol);
        (&y * &c).sum().backward();
        assert_values("train dx", &xt.grad().unwrap(), BN_TRAIN_DX, tol);
        let [dw, db] = grads(&bn);
        assert_values("train dw", &dw, BN_TRAIN_DW, tol);
        assert_values("train db", &db, BN_TRAIN_DB, tol);
        let stats = |bn: &BatchNorm2d| {
            [&bn.running_mean, &bn.running_var].map(|t| t.as_ref().unwrap().clone_data())
        };
        let [m, v] = stats(&bn);
        assert_values("running_mean", &m, BN_TRAIN_RUNNING_MEAN, tol);
        assert_values("running_var", &v, BN_TRAIN_RUNNING_VAR, tol);
        let count = bn.num_batches_tracked.clone().unwrap();
        assert_eq!(
            (count.dtype(), count.to_vec::<i64>()),
            (DType::I64, vec![1])
        );
        // Evaluation: the running statistics, which stay.
        bn.eval();
        bn.zero_grad();
        for p in bn.parameters() {
            p.set_grad(None);
        }
        let xt = x.detach().requires_grad_(true);
        let y = bn.forward(&xt);
        assert_values("eval output", &y, BN_EVAL_OUT, tol);
        (&y * &c).sum().backward();
        assert_values("eval dx", &xt.grad().unwrap(), BN_EVAL_DX, tol);
        let [dw, db] = grads(&bn);
        assert_values("eval dw", &dw, BN_EVAL_DW, tol);
        assert_values("eval db", &db, BN_EVAL_DB, tol);
        assert_values(
            "eval running_mean",
            &stats(&bn)[0],
            BN_TRAIN_RUNNING_MEAN,
            tol,
        );
        assert_eq!(count.to_vec::<i64>(), vec![1]);
    }
}

#[test]
fn batch_norm_cumulative_average_matches_pytorch() {
    let opts = BatchNormOptions {
        momentum: None,
        ..Default::default()
    };
    let mut bn = BatchNorm1d::with_options(3, &opts, &CPU);
    bn.to_dtype(DType::F64);
    bn.forward(&det(&[4, 3, 2], 7, 3, 19, 6.0, 1.5));
    bn.forward(&det(&[4, 3, 2], 5, 2, 11, 3.0, 1.0));
    let m = bn.running_mean.as_ref().unwrap();
    let v = bn.running_var.as_ref().unwrap();
    assert_values("running_mean", m, BN_CMA_RUNNING_MEAN, 1e-12);
    assert_values("running_var", v, BN_CMA_RUNNING_VAR, 1e-12);
    assert_eq!(
        bn.num_batches_tracked.as_ref().unwrap().to_vec::<i64>(),
        [2]
    );
}

#[test]
fn group_norm_matches_pytorch_values_and_gradients() {
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 3e-5)] {
        let x = det(&[2, 6, 2, 2], 7, 3, 19, 6.0, 1.5)
            .to_dtype(dtype)
            .requires_grad_(true);
        let c = det(&[2, 6, 2, 2], 11, 4, 17, 8.0, 1.0).to_dtype(dtype);
        let mut gn = GroupNorm::new(3, 6, &CPU);
        gn.to_dtype(dtype);
        no_grad(|| {
            let w = &det(&[6], 5, 1, 13, 8.0, 0.75) + 1.0;
            gn.weight.as_ref().unwrap().copy_(&w.to_dtype(dtype));
            let b = det(&[6], 3, 2, 7, 4.0, 0.5);
            gn.bias.as_ref().unwrap().copy_(&b.to_dtype(dtype));
        });
        let y = gn.forward(&x);
        assert_eq!(y.grad_fn(), Some("NativeGroupNormBackward"));
        assert_values("output", &y, GN_OUT, tol);
        (&y * &c).sum().backward();
        assert_values("dx", &x.grad().unwrap(), GN_DX, tol);
        assert_values(
            "dw",
            &gn.weight.as_ref().unwrap().grad().unwrap(),
            GN_DW,
            tol,
        );
        assert_values("db", &gn.bias.as_ref().unwrap().grad().unwrap(), GN_DB, tol);
    }
}

#[test]
fn norm_gradients_pass_gradcheck() {
    let mut gen = Generator::new(12);
    let mut r = |shape: &[usize]| Tensor::randn_with(shape, &mut gen).to_dtype(DType::F64);
    let (x, w, b, c) = (r(&[3, 4, 2, 3]), r(&[4]), r(&[4]), r(&[3, 4, 2, 3]));
    let (m, v) = (r(&[4]), &r(&[4]).abs() + 0.5);
    let train = |t: &[Tensor]| {
        &F::batch_norm(&t[0], None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5) * &c
    };
    let report = gradcheck(train, &[x.clone(), w.clone(), b.clone()]);
    assert!(report.passed, "batch_norm, training: {report}");
    let eval = |t: &[Tensor]| {
        &F::batch_norm(
            &t[0],
            Some(&m),
            Some(&v),
            Some(&t[1]),
            Some(&t[2]),
            false,
            0.1,
            1e-5,
        ) * &c
    };
    let report = gradcheck(eval, &[x.clone(), w.clone(), b.clone()]);
    assert!(report.passed, "batch_norm, evaluation: {report}");
    // [N, C] and a strided (permuted) input, without parameters.
    let report = gradcheck(
        |t| F::batch_norm(&t[0], None, None, None, None, true, 0.1, 1e-5),
        &[r(&[5, 3])],
    );
    assert!(report.passed, "batch_norm, [N, C]: {report}");
    let xp = r(&[3, 2, 4]).permute(&[0, 2, 1]);
    let report = gradcheck(|t| F::group_norm(&t[0], 2, None, None, 1e-5), &[xp]);
    assert!(report.passed, "group_norm, strided: {report}");
    let (gw, gb) = (r(&[4]), r(&[4]));
    let report = gradcheck(
        |t| &F::group_norm(&t[0], 2, Some(&t[1]), Some(&t[2]), 1e-5) * &c,
        &[x, gw, gb],
    );
    assert!(report.passed, "group_norm: {report}");
}

/// A norm layer on the tape, the compile-time path and TrainStep.
fn assert_norm_layer_paths_agree<L: TrainStep>(layer: &L, x: &Tensor, what: &str) {
    // Parameters away from their initial ones and zeros.
    no_grad(|| {
        for p in layer.parameters() {
            p.add_(
                &(Tensor::randn_with(p.shape(), &mut Generator::new(6)).to_dtype(DType::F64) * 0.3),
            );
        }
    });
    assert_paths_match_tape(layer, x, what);
}

#[test]
fn norm_layer_paths_agree() {
    let mut gen = Generator::new(13);
    let mut r = |shape: &[usize]| Tensor::randn_with(shape, &mut gen).to_dtype(DType::F64);
    let mut bn = bn_case(DType::F64);
    assert_norm_layer_paths_agree(&bn, &r(&[3, 4, 2, 3]), "BatchNorm2d, training");
    bn.eval();
    assert_norm_layer_paths_agree(&bn, &r(&[3, 4, 2, 3]), "BatchNorm2d, evaluation");
    for opts in [
        BatchNormOptions {
            affine: false,
            ..Default::default()
        },
        BatchNormOptions {
            track_running_stats: false,
            eps: 1e-3,
            ..Default::default()
        },
    ] {
        let mut bn = BatchNorm1d::with_options(3, &opts, &CPU);
        bn.to_dtype(DType::F64);
        assert_norm_layer_paths_agree(&bn, &r(&[5, 3]), "BatchNorm1d, training");
        bn.eval();
        assert_norm_layer_paths_agree(&bn, &r(&[4, 3, 2]), "BatchNorm1d, evaluation");
    }
    let mut gn = GroupNorm::new(2, 4, &CPU);
    gn.to_dtype(DType::F64);
    assert_norm_layer_paths_agree(&gn, &r(&[3, 4, 5]), "GroupNorm");
}

#[test]
fn batch_norm_buffers_are_state_not_parameters() {
    let model = Sequential::new()
        .add(Linear::new(3, 4, &CPU))
        .add(BatchNorm1d::new(4, &CPU));
    let names = |v: Vec<(String, Tensor)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(
        names(model.named_parameters()),
        ["0.weight", "0.bias", "1.weight", "1.bias"]
    );
    assert_eq!(
        names(model.named_buffers()),
        ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    );
    let keys: Vec<String> = model.state_dict().keys().map(str::to_string).collect();
    for k in [
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "0.weight",
    ] {
        assert!(keys.iter().any(|n| n == k), "{k} missing from {keys:?}");
    }
    // A training step moves the statistics; a state dict carries them over.
    model.forward(&Tensor::randn_with([8, 3], &mut Generator::new(2)));
    let saved = model.state_dict();
    let mut other = Sequential::new()
        .add(Linear::new(3, 4, &CPU))
        .add(BatchNorm1d::new(4, &CPU));
    other.load_state_dict(&saved).unwrap();
    for ((n, a), (_, b)) in model.named_buffers().iter().zip(other.named_buffers()) {
        assert_eq!(a.to_vec::<f64>(), b.to_vec::<f64>(), "{n}");
    }
    assert_eq!(other.named_buffers()[2].1.to_vec::<i64>(), [1]);
    // Float buffers follow the dtype; the batch count stays i64.
    other.to_dtype(DType::F64);
    let dtypes: Vec<DType> = other.buffers().iter().map(Tensor::dtype).collect();
    assert_eq!(dtypes, [DType::F64, DType::F64, DType::I64]);
    // eval() reaches the layer: the same input gives the same output twice.
    other.eval();
    let x = Tensor::randn_with([8, 3], &mut Generator::new(3)).to_dtype(DType::F64);
    let (a, b) = (other.forward(&x), other.forward(&x.narrow(0, 0, 2)));
    assert!(max_abs_diff(&a.narrow(0, 0, 2), &b) < 1e-12);
    assert_eq!(other.named_buffers()[2].1.to_vec::<i64>(), [1]);
    // An empty batch in training, as in PyTorch: an empty output, the
    // statistics unchanged, the batch counted, one sample refused.
    other.train();
    let before: Vec<Vec<f64>> = other.buffers()[..2].iter().map(|t| t.to_vec()).collect();
    let y = other.forward(&Tensor::zeros([0, 3]).to_dtype(DType::F64));
    assert_eq!(y.shape(), [0, 4]);
    let after: Vec<Vec<f64>> = other.buffers()[..2].iter().map(|t| t.to_vec()).collect();
    assert_eq!(before, after);
    assert_eq!(other.named_buffers()[2].1.to_vec::<i64>(), [2]);
    let one = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        other.forward(&Tensor::zeros([1, 3]).to_dtype(DType::F64))
    }));
    assert!(one.is_err(), "one value per channel has no variance");
}

#[test]
fn norm_errors_give_pytorch_words_and_the_fix() {
    let bn = BatchNorm2d::new(4, &CPU);
    let err = |r: deriv::Result<Tensor>| r.unwrap_err().to_string();
    let e = err(bn.try_forward(&Tensor::zeros([2, 3, 5, 5])));
    assert!(e.contains("BatchNorm2d(4) expects 4 channels"), "{e}");
    let e = err(bn.try_forward(&Tensor::zeros([2, 4, 5])));
    assert!(
        e.contains("BatchNorm2d(4) expected 4D input (got 3D input"),
        "{e}"
    );
    let bn1 = BatchNorm1d::new(4, &CPU);
    let e = err(bn1.try_forward(&Tensor::zeros([1, 4])));
    // A refused batch is not counted and moves nothing.
    assert_eq!(
        bn1.num_batches_tracked.as_ref().unwrap().to_vec::<i64>(),
        [0]
    );
    assert_eq!(bn1.running_mean.as_ref().unwrap().to_vec::<f32>(), [0.0; 4]);
    assert!(
        e.contains("Expected more than 1 value per channel when training, got input size [1, 4]"),
        "{e}"
    );
    let e = err(F::try_group_norm(
        &Tensor::zeros([2, 6, 3]),
        4,
        None,
        None,
        1e-5,
    ));
    assert!(
        e.contains("Expected number of channels in input to be divisible by num_groups"),
        "{e}"
    );
    let e = err(F::try_batch_norm(
        &Tensor::zeros([2, 3]),
        None,
        None,
        None,
        None,
        false,
        0.1,
        1e-5,
    ));
    assert!(e.contains("must be defined in evaluation mode"), "{e}");
    // Statistics of the wrong size: an error, and nothing updated.
    let (m, v) = (Tensor::zeros([4]), Tensor::ones([4]));
    let e = err(F::try_batch_norm(
        &Tensor::ones([2, 3]),
        Some(&m),
        Some(&v),
        None,
        None,
        true,
        0.1,
        1e-5,
    ));
    assert!(
        e.contains("running_mean must be a f32 tensor of the channels' shape [3]"),
        "{e}"
    );
    assert_eq!(m.to_vec::<f32>(), [0.0; 4]);
    let r = std::panic::catch_unwind(|| GroupNorm::new(4, 6, &CPU));
    assert!(r.is_err());
}

// ----- ConvTranspose2d (PyTorch's values: tests/data/make_layer_reference.py)

// E: output shape [2, 6, 6, 8]
const CONVTE_OUT: &[f64] = &[
    -0.49999999999999994,
    1.0208333333333335,
    -1.0833333333333333,
    -0.9375,
    0.7083333333333334,
    -0.5208333333333334,
    -0.6666666666666665,
    0.4166666666666667,
    -1.5,
    3.020833333333333,
    -0.7708333333333334,
    -0.9791666666666669,
    1.5416666666666667,
    -1.416666666666667,
    -1.2916666666666665,
    1.3125,
    1.125,
    0.3124999999999999,
    -0.24999999999999994,
    1.5208333333333333,
    -0.8333333333333333,
    -0.43750000000000006,
    0.9583333333333334,
    -0.5000000000000001,
    1.0208333333333333,
    -1.1041666666666667,
    0.16666666666666685,
    0.04166666666666674,
    -1.0833333333333333,
    1.1875,
    1.2291666666666667,
    -1.25,
    -0.41666666666666674,
    1.1875,
    -1.0,
    -0.7708333333333333,
    0.7916666666666666,
    -0.3541666666666665,
    -0.5833333333333334,
    0.5625,
    -0.6666666666666667,
    1.2708333333333335,
    -0.6666666666666667,
    -0.31249999999999994,
    0.9166666666666665,
    -0.31249999999999994,
    -0.6666666666666667,
    0.4791666666666667,
    1.375,
    0.08333333333333326,
    0.6458333333333333,
    2.5,
    -0.08333333333333348,
    -0.22916666666666652,
    1.1666666666666665,
    1.1666666666666665,
    1.9166666666666665,
    -1.1458333333333333,
    -0.02083333333333326,
    1.7083333333333337,
    -0.375,
    0.6041666666666669,
    2.041666666666667,
    -0.5,
    0.4375,
    -0.5416666666666665,
    1.6875,
    -0.10416666666666674,
    0.9583333333333333,
    2.3125,
    0.22916666666666652,
    0.125,
    -0.6875,
    2.354166666666667,
    0.9374999999999999,
    0.06250000000000022,
    2.1666666666666665,
    0.541666666666667,
    -0.5625,
    2.104166666666667,
    1.4791666666666667,
    0.02083333333333326,
    0.75,
    2.4375,
    0.02083333333333348,
    -0.2916666666666665,
    1.2708333333333335,
    1.0625,
    1.2291666666666667,
    -0.16666666666666674,
    1.0833333333333335,
    0.7291666666666665,
    0.14583333333333337,
    0.8333333333333333,
    1.1875,
    0.16666666666666663,
    -0.12500000000000006,
    -0.9791666666666666,
    0.8958333333333333,
    -1.2291666666666667,
    -0.4583333333333333,
    1.2916666666666665,
    0.16666666666666657,
    -0.9166666666666666,
    -1.5625,
    2.958333333333333,
    -1.0208333333333335,
    -1.4166666666666667,
    1.1041666666666665,
    -1.8333333333333335,
    -1.5208333333333333,
    1.0833333333333335,
    -1.1875,
    1.1875,
    -0.5625,
    -1.0416666666666665,
    0.45833333333333337,
    -1.2916666666666667,
    -0.8958333333333333,
    0.6250000000000001,
    1.0,
    -1.0833333333333335,
    -0.04166666666666652,
    -0.3125,
    -1.4791666666666665,
    0.8541666666666665,
    1.0416666666666667,
    -1.4375000000000002,
    -0.27083333333333326,
    -1.0,
    0.75,
    -1.25,
    -0.6041666666666666,
    1.2708333333333333,
    0.020833333333333315,
    -1.0,
    -0.7916666666666667,
    0.9791666666666667,
    -1.0833333333333335,
    -0.7916666666666666,
    0.6041666666666665,
    -0.5833333333333331,
    -0.875,
    0.27083333333333337,
    0.6041666666666666,
    -0.04166666666666674,
    1.0416666666666665,
    -0.6666666666666667,
    -0.10416666666666674,
    2.2708333333333335,
    0.7291666666666667,
    -0.16666666666666674,
    0.5208333333333333,
    -0.3125000000000001,
    0.6041666666666667,
    -0.4583333333333335,
    0.29166666666666674,
    2.166666666666667,
    -0.02083333333333326,
    0.7916666666666665,
    1.1666666666666667,
    -0.9583333333333333,
    0.02083333333333337,
    1.9791666666666665,
    0.8541666666666667,
    -0.22916666666666674,
    -0.29166666666666663,
    1.4166666666666665,
    0.8541666666666667,
    -0.5,
    0.5416666666666667,
    2.125,
    0.22916666666666669,
    -0.39583333333333315,
    -0.08333333333333326,
    0.7916666666666667,
    0.14583333333333337,
    1.6875,
    0.9791666666666667,
    -0.5208333333333333,
    -0.16666666666666674,
    2.4166666666666665,
    0.6666666666666666,
    -0.16666666666666663,
    0.43750000000000006,
    2.0625,
    1.0625,
    -0.5625,
    -0.29166666666666674,
    1.958333333333333,
    0.33333333333333337,
    -0.5,
    -1.375,
    0.6458333333333333,
    -1.0833333333333333,
    -0.75,
    0.3958333333333335,
    -0.9583333333333333,
    -1.2916666666666667,
    -0.020833333333333315,
    -0.18750000000000022,
    -1.7708333333333335,
    0.4791666666666665,
    0.666666666666667,
    -1.625,
    -1.6458333333333335,
    1.4166666666666665,
    -0.4791666666666666,
    -1.0,
    -0.5833333333333333,
    0.4791666666666665,
    -0.7916666666666666,
    -1.2083333333333335,
    -1.0,
    0.27083333333333326,
    -1.0,
    0.10416666666666652,
    0.4583333333333335,
    -2.0,
    -1.8541666666666665,
    1.0416666666666665,
    0.9791666666666667,
    -1.0625,
    -0.45833333333333337,
    0.5625,
    -0.6249999999999998,
    -1.125,
    -0.8333333333333334,
    0.35416666666666663,
    -1.0416666666666665,
    -1.3333333333333333,
    0.0,
    -1.5833333333333333,
    -1.6041666666666667,
    -0.22916666666666669,
    1.0208333333333335,
    -0.8541666666666665,
    -1.5,
    0.5,
    -0.33333333333333337,
    0.5625,
    -0.7083333333333333,
    0.7083333333333333,
    0.3750000000000001,
    -0.33333333333333337,
    0.27083333333333326,
    0.6041666666666667,
    -0.29166666666666674,
    0.3125,
    1.5,
    0.20833333333333337,
    -1.875,
    0.10416666666666669,
    3.0625,
    8.326672684688674e-17,
    -1.625,
    0.75,
    0.45833333333333304,
    -0.29166666666666663,
    0.35416666666666663,
    0.6458333333333334,
    0.25,
    -0.39583333333333326,
    1.3125,
    0.29166666666666685,
    -1.7083333333333333,
    0.18750000000000006,
    3.2291666666666665,
    0.08333333333333337,
    -2.125,
    -0.02083333333333337,
    0.8541666666666666,
    -0.25,
    0.4374999999999999,
    0.6875,
    0.33333333333333304,
    -0.35416666666666663,
    0.22916666666666663,
    0.5833333333333333,
    -0.25,
    0.04166666666666671,
    1.625,
    0.7708333333333335,
    -0.7916666666666665,
    -0.47916666666666674,
    1.9374999999999998,
    0.25,
    -0.5833333333333333,
    0.7916666666666666,
    -0.3541666666666665,
    -0.5833333333333334,
    0.0625,
    1.2083333333333333,
    -0.7083333333333333,
    0.625,
    -1.0833333333333333,
    1.4375,
    -1.3541666666666665,
    -1.3958333333333335,
    1.375,
    0.9166666666666666,
    -1.4374999999999996,
    1.645833333333333,
    -1.3333333333333333,
    -0.7500000000000001,
    -0.2708333333333333,
    1.0416666666666667,
    0.14583333333333348,
    -0.3333333333333333,
    1.3541666666666665,
    -0.9166666666666665,
    -0.02083333333333326,
    -1.1875,
    1.25,
    1.125,
    -1.1666666666666667,
    0.27083333333333337,
    -0.02083333333333348,
    -0.9791666666666666,
    1.2500000000000002,
    0.875,
    -0.18750000000000006,
    -0.49999999999999994,
    1.0208333333333335,
    -1.0833333333333333,
    -0.9375,
    0.7083333333333334,
    -0.9375,
    0.9166666666666667,
    -0.3125,
    -0.6666666666666666,
    1.2708333333333333,
    -0.6666666666666666,
    -0.31250000000000006,
    0.9166666666666667,
    -0.7291666666666667,
    0.02083333333333348,
    -0.2916666666666665,
    1.2708333333333335,
    2.125,
    0.5416666666666667,
    0.5833333333333333,
    -0.1875,
    0.5416666666666667,
    -0.4375,
    0.47916666666666663,
    1.9791666666666665,
    0.16666666666666663,
    -0.75,
    4.208333333333333,
    -0.3125,
    1.8541666666666665,
    1.0625,
    2.25,
    0.3333333333333334,
    -0.47916666666666674,
    1.5833333333333333,
    -0.04166666666666663,
    0.8541666666666667,
    1.4791666666666665,
    2.104166666666667,
    0.41666666666666646,
    -0.625,
    2.479166666666667,
    1.0,
    0.1875,
    2.2291666666666665,
    -0.6875,
    0.125,
    -0.3541666666666665,
    1.375,
    0.08333333333333326,
    0.6458333333333333,
    2.5,
    -0.08333333333333348,
    0.4375,
    0.16666666666666663,
    0.875,
    1.2083333333333333,
    -0.20833333333333326,
    1.0625,
    0.6875000000000002,
    0.125,
    1.4583333333333335,
    -0.6041666666666666,
    1.2708333333333333,
    0.020833333333333315,
    -1.3541666666666665,
    -1.3333333333333333,
    -0.41666666666666663,
    -0.31249999999999994,
    0.9583333333333333,
    1.0833333333333333,
    -1.6041666666666665,
    -1.5416666666666667,
    1.5416666666666665,
    0.9791666666666667,
    -1.6458333333333333,
    1.125,
    -1.8541666666666665,
    0.3125000000000001,
    -1.3125,
    -1.0416666666666667,
    1.208333333333333,
    -0.41666666666666663,
    -1.0208333333333333,
    0.6041666666666665,
    -0.6666666666666667,
    -1.5000000000000002,
    1.0833333333333335,
    1.0208333333333335,
    -1.3125,
    -0.02083333333333337,
    -0.5416666666666667,
    -1.4583333333333333,
    0.7708333333333335,
    -0.75,
    1.25,
    -0.12500000000000006,
    -0.9791666666666666,
    0.8958333333333333,
    -1.2291666666666667,
    -0.4583333333333333,
    0.875,
    0.6458333333333334,
    -0.5,
    -0.8333333333333333,
    0.8958333333333333,
    -1.125,
    -0.8750000000000001,
    0.5625,
    -1.0833333333333335,
    -0.16666666666666674,
    2.4166666666666665,
    0.6666666666666666,
    -0.1874999999999999,
    1.1041666666666665,
    -0.8125,
    -0.04166666666666674,
    1.4166666666666667,
    0.16666666666666657,
    0.9999999999999999,
    0.6458333333333334,
    -0.33333333333333304,
    0.7291666666666665,
    -0.4791666666666665,
    0.41666666666666663,
    0.7916666666666669,
    0.7916666666666666,
    -0.47916666666666674,
    1.2291666666666665,
    -1.1041666666666665,
    0.08333333333333331,
    1.8333333333333335,
    0.9166666666666665,
    -0.16666666666666652,
    0.10416666666666669,
    0.02083333333333337,
    2.1666666666666665,
    -1.3125,
    0.6666666666666667,
    2.104166666666667,
    0.3541666666666666,
    0.7916666666666667,
    -0.22916666666666663,
    2.5625,
    0.6041666666666666,
    -0.04166666666666674,
    1.0416666666666665,
    -0.6666666666666667,
    -0.10416666666666674,
    1.4166666666666667,
    -0.4375,
    1.9375,
    0.18749999999999994,
    -0.29166666666666663,
    1.2083333333333335,
    -0.5416666666666667,
    -0.14583333333333326,
    1.375,
    0.35416666666666663,
    -1.0416666666666665,
    -1.3333333333333333,
    0.7291666666666665,
    -1.0416666666666665,
    -0.6666666666666667,
    0.4375,
    -1.0833333333333335,
    -1.4374999999999998,
    -0.35416666666666674,
    -0.375,
    -1.8749999999999998,
    0.29166666666666674,
    0.5624999999999998,
    -1.8125,
    -0.6250000000000001,
    -1.25,
    0.8958333333333333,
    -0.9583333333333333,
    -0.5,
    0.5208333333333335,
    -0.7083333333333335,
    -1.1666666666666665,
    -0.08333333333333337,
    1.2291666666666665,
    -1.2916666666666665,
    -1.2708333333333333,
    2.333333333333333,
    -2.1875,
    -1.9583333333333333,
    0.8541666666666667,
    -0.604166666666667,
    0.3125,
    -1.125,
    -1.375,
    0.6458333333333333,
    -1.0833333333333333,
    -0.75,
    0.3958333333333335,
    -1.0625,
    -0.7083333333333334,
    -1.4791666666666665,
    0.6458333333333333,
    -1.2291666666666665,
    -0.37500000000000006,
    1.0,
    -1.0,
    -1.1041666666666667,
    -0.35416666666666663,
    0.22916666666666663,
    0.5833333333333333,
    -0.6666666666666667,
    0.7291666666666666,
    0.41666666666666674,
    -0.3125,
    1.1458333333333335,
    0.06249999999999989,
    1.395833333333333,
    0.35416666666666663,
    1.5833333333333333,
    0.24999999999999978,
    -1.7916666666666665,
    0.14583333333333326,
    1.6041666666666665,
    0.625,
    -0.5833333333333333,
    0.7708333333333333,
    0.5,
    -0.27083333333333337,
    0.39583333333333337,
    0.6666666666666666,
    -0.4166666666666665,
    0.04166666666666666,
    -2.208333333333333,
    1.9166666666666665,
    -2.0208333333333335,
    0.22916666666666663,
    3.3125,
    0.12499999999999983,
    -1.0624999999999998,
    -0.375,
    0.1875,
    0.5625,
    -0.7083333333333333,
    0.7083333333333333,
    0.3750000000000001,
    -0.33333333333333337,
    1.1875,
    -0.5833333333333333,
    2.0,
    0.1458333333333333,
    -0.41666666666666674,
    0.875,
    -0.8541666666666667,
    -0.375,
    1.1458333333333335,
];
const CONVTE_DX: &[f64] = &[
    -0.703125, 0.84375, -0.765625, 0.015625, -0.265625, 0.03125, 0.96875, -0.484375, 0.390625,
    -0.703125, -0.828125, 0.375, 1.390625, -1.375, 0.65625, 1.625, -0.265625, -0.96875, 0.09375,
    -1.234375, -0.65625, 0.625, -0.703125, 0.625, -1.140625, 0.21875, 1.328125, -1.015625,
    1.359375, 0.1875, -0.484375, 0.96875, 0.234375, -1.203125, -0.015625, 0.375, 1.109375,
    0.265625, -1.890625, -0.59375, 0.6875, -1.21875, 0.671875, 1.234375, -0.796875, 0.625,
    0.921875, -1.703125, 0.421875, -1.140625, 0.96875, -0.109375, 0.390625, -0.703125, -0.828125,
    0.375, -0.546875, -1.703125, 0.03125, 0.96875, -0.609375, -1.0625, 1.234375, -0.984375,
    -0.65625, 0.625, -0.703125, 0.625, -1.046875, 0.625, -0.96875, 0.09375, 1.484375, 0.0625,
    -0.6875, 0.15625, 0.234375, -1.203125, -0.015625, 0.375, -0.09375, 2.1875, 0.1875, -0.484375,
    0.609375, -1.046875, 0.515625, 1.546875, -0.796875, 0.625, 0.921875, -1.703125, -0.15625,
    0.34375, -1.21875, 0.671875,
];
const CONVTE_DW: &[f64] = &[
    1.4375,
    -4.625,
    3.6875,
    1.958333333333334,
    -3.6875,
    -1.4791666666666665,
    -0.5625000000000004,
    4.0625,
    -5.416666666666666,
    1.3125,
    -4.770833333333334,
    1.770833333333333,
    4.1875,
    -0.04166666666666696,
    -3.5000000000000004,
    -0.45833333333333304,
    4.166666666666667,
    -3.8958333333333326,
    1.1875,
    -4.916666666666666,
    1.6250000000000004,
    4.291666666666666,
    4.666666666666667,
    -2.6874999999999996,
    -0.35416666666666696,
    4.270833333333334,
    -3.791666666666667,
    -3.4791666666666665,
    2.5625,
    -0.7916666666666665,
    -1.6666666666666665,
    3.3541666666666674,
    1.0624999999999996,
    -0.3125,
    -4.708333333333333,
    4.333333333333334,
    -3.1875,
    2.7083333333333335,
    1.4791666666666665,
    -2.0416666666666665,
    1.3749999999999991,
    2.979166666666666,
    0.020833333333333037,
    -4.5625,
    3.0625,
    -2.895833333333333,
    2.854166666666667,
    1.625,
    -3.479166666666667,
    -2.375,
    2.0625,
    0.3541666666666665,
    -4.416666666666666,
    3.208333333333334,
    1.25,
    -0.41666666666666696,
    -0.31249999999999967,
    -2.0416666666666665,
    2.7499999999999996,
    -0.958333333333333,
    -2.7291666666666665,
    2.124999999999999,
    0.8958333333333339,
    4.354166666666667,
    -1.4374999999999996,
    -1.3333333333333333,
    -2.2708333333333335,
    2.541666666666666,
    1.3125000000000004,
    -2.25,
    3.6875,
    -0.37499999999999933,
    0.02083333333333337,
    -3.1666666666666665,
    -0.5833333333333333,
    -2.5,
    2.333333333333333,
    1.104166666666667,
    -2.125,
    -0.0625,
    0.4791666666666663,
    -2.8125,
    0.5208333333333333,
    1.9583333333333335,
    4.9375,
    -1.666666666666667,
    -0.31249999999999956,
    4.9375,
    -2.1666666666666674,
    -1.1666666666666667,
    -2.520833333333333,
    0.45833333333333304,
    4.729166666666667,
    4.9375,
    -1.833333333333333,
    -0.8333333333333335,
    -0.020833333333333592,
    -2.3333333333333335,
    -1.3333333333333335,
    0.9583333333333336,
    -0.3125000000000002,
    -0.2916666666666674,
    4.9375,
    -1.9999999999999996,
    -1.0,
    -1.4374999999999998,
    -1.0833333333333326,
    -2.2083333333333335,
];
const CONVTE_DB: &[f64] = &[-1.875, 1.625, 0.875, 0.125, -0.625, -1.375];
// F: output shape [1, 3, 4, 7]
const CONVTF_OUT: &[f64] = &[
    -0.08333333333333326,
    -0.08333333333333331,
    0.6041666666666666,
    0.16666666666666666,
    0.7083333333333334,
    0.020833333333333343,
    -1.0208333333333335,
    -0.33333333333333337,
    -0.33333333333333337,
    0.7083333333333333,
    0.3541666666666667,
    1.3750000000000002,
    0.25,
    -2.0208333333333335,
    -1.0833333333333333,
    -0.25,
    1.9166666666666667,
    0.04166666666666667,
    -0.1875,
    -0.45833333333333337,
    0.7291666666666666,
    -0.375,
    0.041666666666666685,
    1.1875,
    0.08333333333333337,
    -1.0208333333333335,
    -0.27083333333333337,
    1.0,
    0.6666666666666667,
    0.6666666666666666,
    0.9375,
    0.5,
    1.5625,
    -0.0625,
    1.6041666666666667,
    0.41666666666666663,
    0.41666666666666663,
    0.5833333333333333,
    1.8541666666666667,
    0.6249999999999998,
    0.9166666666666666,
    1.0833333333333333,
    0.3333333333333333,
    1.1666666666666665,
    -0.08333333333333337,
    0.625,
    0.75,
    -0.7083333333333335,
    1.2916666666666667,
    0.7083333333333334,
    1.125,
    0.5625,
    0.7500000000000001,
    0.7708333333333333,
    -0.02083333333333326,
    0.9791666666666666,
    -0.33333333333333337,
    -0.33333333333333326,
    -0.47916666666666663,
    0.4375,
    -0.6875000000000001,
    0.8125,
    -0.22916666666666666,
    -0.5833333333333334,
    -0.5833333333333334,
    0.33333333333333337,
    -0.8333333333333335,
    0.29166666666666685,
    0.10416666666666674,
    0.0,
    0.0,
    -1.3333333333333333,
    -0.5833333333333334,
    1.1102230246251565e-16,
    -1.416666666666667,
    0.5416666666666667,
    -0.7083333333333334,
    0.04166666666666674,
    -0.625,
    -0.18749999999999983,
    -0.06250000000000006,
    -0.8125,
    0.10416666666666663,
    -0.5208333333333334,
];
const CONVTF_DX: &[f64] = &[
    -0.109375, 0.578125, -0.59375, 0.109375, -0.5, -1.640625, -1.359375, 1.484375, -0.453125,
    0.15625, 0.984375, -1.109375, -1.40625, 0.125, 0.0625, 0.5, 0.828125, -2.5625, -2.46875,
    1.3125, 0.3125, 0.078125, 1.0, -1.0,
];
const CONVTF_DW: &[f64] = &[
    -1.8125,
    0.04166666666666691,
    2.604166666666667,
    -2.7708333333333335,
    -0.6874999999999998,
    2.1041666666666665,
    -0.5416666666666669,
    0.9583333333333335,
    -0.375,
    -0.04166666666666674,
    0.2708333333333335,
    0.5833333333333334,
    2.8541666666666665,
    0.4583333333333335,
    -1.9375,
    2.333333333333333,
    -1.9583333333333335,
    0.125,
    0.6041666666666667,
    2.3541666666666665,
    -1.9166666666666663,
    -0.22916666666666685,
    1.75,
    -2.291666666666666,
    -0.33333333333333337,
    -1.7708333333333335,
    -0.375,
    0.29166666666666685,
    0.5,
    0.7083333333333333,
    -1.9791666666666665,
    -1.6458333333333337,
    2.583333333333333,
    -2.3749999999999996,
    2.791666666666667,
    0.875,
];
const CONVTF_DB: &[f64] = &[0.0, 0.625, -0.875];

// G: an output padding at or above the stride, below the dilation.
const CONVTG_OUT: &[f64] = &[
    -0.2083333333333333,
    -0.16666666666666674,
    -0.9375,
    -0.9166666666666667,
    0.3125,
    1.5,
    -0.4166666666666666,
    -0.41666666666666663,
    0.8333333333333333,
    1.1875,
    0.10416666666666671,
    -0.35416666666666674,
    -0.625,
    -1.1041666666666667,
    0.625,
    0.5208333333333335,
    -0.10416666666666671,
    -0.22916666666666674,
    -0.8333333333333335,
    -0.9791666666666665,
    0.41666666666666663,
    1.4375,
    -0.3125,
    -0.5208333333333334,
    -0.375,
    1.7083333333333333,
    -0.5208333333333333,
    -0.5625,
    0.5208333333333334,
    -0.4583333333333335,
    -0.41666666666666663,
    0.6666666666666666,
    0.625,
    -0.25,
    -0.3125,
    1.8333333333333333,
    -0.4583333333333333,
    -0.43750000000000006,
    0.5833333333333334,
    -0.8750000000000001,
    -0.35416666666666674,
    1.7500000000000002,
    -0.5,
    -0.5208333333333333,
    0.5416666666666666,
    -0.4166666666666665,
    -0.39583333333333337,
    0.75,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    0.20833333333333337,
    0.27083333333333337,
    0.6458333333333334,
    1.625,
    1.4791666666666667,
    -0.5833333333333333,
    0.33333333333333337,
    1.4166666666666665,
    1.1666666666666665,
    0.14583333333333348,
    0.02083333333333337,
    0.7083333333333333,
    0.45833333333333337,
    2.0625,
    1.2916666666666667,
    -0.16666666666666674,
    0.14583333333333326,
    0.41666666666666674,
    0.5833333333333333,
    1.7708333333333335,
    1.4166666666666665,
    -0.4374999999999998,
    0.2708333333333333,
    1.4166666666666667,
    0.04166666666666663,
    0.5208333333333333,
    1.0625,
    2.25,
    1.6875,
    -0.375,
    0.3333333333333333,
    1.4166666666666665,
    0.9583333333333334,
    -0.4791666666666665,
    -0.39583333333333326,
    0.4583333333333333,
    0.625,
    2.1875,
    1.25,
    -0.20833333333333337,
    -0.10416666666666663,
    0.5,
    0.9166666666666667,
    2.2291666666666665,
    1.5416666666666665,
    -0.39583333333333326,
    0.1875,
    1.3333333333333335,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
    0.75,
];
const CONVTG_DX: &[f64] = &[
    0.515625, -0.78125, 0.578125, 0.609375, -0.046875, -0.921875, 1.5, 0.734375, -1.40625, 0.53125,
    0.5625, -0.734375, 0.296875, -0.03125, 0.125, -1.046875, -1.109375, 0.59375, 0.484375,
    0.640625, 0.140625, 0.15625, -1.015625, -0.0625,
];
const CONVTG_DW: &[f64] = &[
    0.5416666666666665,
    0.20833333333333348,
    1.3333333333333335,
    -0.6874999999999999,
    2.770833333333333,
    -3.1875,
    0.3333333333333335,
    1.7291666666666667,
    0.02083333333333348,
    0.5208333333333335,
    -0.3124999999999999,
    1.5208333333333333,
    0.7708333333333333,
    0.22916666666666696,
    -0.4375000000000002,
    1.6458333333333335,
    -3.729166666666667,
    -0.8541666666666667,
    0.9791666666666665,
    0.06249999999999986,
    0.4583333333333335,
    0.4375,
    2.125,
    -0.666666666666667,
];
const CONVTG_DB: &[f64] = &[-1.25, 1.625];

type ConvTransposeCase = (
    [usize; 4],
    [usize; 4],
    ConvTranspose2dOptions,
    [&'static [f64]; 4],
);

fn conv_transpose_cases() -> [ConvTransposeCase; 3] {
    let e = ConvTranspose2dOptions::new()
        .stride(2)
        .padding(1)
        .output_padding(1)
        .groups(2);
    let f = ConvTranspose2dOptions::new()
        .stride([1, 2])
        .padding([1, 0])
        .dilation([2, 1]);
    let g = ConvTranspose2dOptions::new()
        .stride([1, 2])
        .padding([0, 1])
        .output_padding([2, 1])
        .dilation([3, 1]);
    [
        (
            [2, 4, 3, 4],
            [4, 3, 3, 3],
            e,
            [CONVTE_OUT, CONVTE_DX, CONVTE_DW, CONVTE_DB],
        ),
        (
            [1, 2, 4, 3],
            [2, 3, 2, 3],
            f,
            [CONVTF_OUT, CONVTF_DX, CONVTF_DW, CONVTF_DB],
        ),
        (
            [1, 2, 3, 4],
            [2, 2, 2, 3],
            g,
            [CONVTG_OUT, CONVTG_DX, CONVTG_DW, CONVTG_DB],
        ),
    ]
}

#[test]
fn conv_transpose2d_matches_pytorch_values_and_gradients() {
    for (xs, ws, opts, [out, dx, dw, db]) in conv_transpose_cases() {
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 2e-4)] {
            let x = det(&xs, 7, 3, 19, 6.0, 1.5)
                .to_dtype(dtype)
                .requires_grad_(true);
            let w = det(&ws, 5, 1, 13, 8.0, 0.75)
                .to_dtype(dtype)
                .requires_grad_(true);
            let cout = ws[1] * opts.groups;
            let b = det(&[cout], 3, 2, 7, 4.0, 0.5)
                .to_dtype(dtype)
                .requires_grad_(true);
            let y = F::conv_transpose2d(&x, &w, Some(&b), &opts);
            assert_eq!(y.grad_fn(), Some("ConvolutionBackward"));
            assert_values("output", &y, out, tol);
            let c = det(y.shape(), 11, 4, 17, 8.0, 1.0).to_dtype(dtype);
            (&y * &c).sum().backward();
            assert_values("dx", &x.grad().unwrap(), dx, tol);
            assert_values("dw", &w.grad().unwrap(), dw, tol);
            assert_values("db", &b.grad().unwrap(), db, tol);
        }
    }
}

#[test]
fn conv_transpose2d_gradients_pass_gradcheck_and_paths_agree() {
    let (xs, ws, opts, _) = conv_transpose_cases()[0];
    let mut gen = Generator::new(14);
    let mut r = |shape: &[usize]| Tensor::randn_with(shape, &mut gen).to_dtype(DType::F64);
    let (x, w, b) = (r(&xs), r(&ws), r(&[6]));
    let report = gradcheck(
        |t| F::conv_transpose2d(&t[0], &t[1], Some(&t[2]), &opts),
        &[x.clone(), w, b],
    );
    assert!(report.passed, "{report}");
    let mut layer = ConvTranspose2d::with_options(4, 6, 3, &opts, &CPU);
    layer.to_dtype(DType::F64);
    assert_eq!(layer.weight.shape(), &[4, 3, 3, 3]);
    let y = layer.forward(&x);
    assert_eq!(y.shape(), &[2, 6, 6, 8]);
    assert_paths_agree(&layer, &x, &r(y.shape()));
    // PyTorch's init: U(-b, b) with b = 1/sqrt(fan_in), fan_in = out/groups·kh·kw.
    let bound = 1.0 / ((3 * 9) as f64).sqrt();
    let bias = layer.bias.as_ref().unwrap().to_vec::<f64>();
    assert!(bias.iter().all(|v| v.abs() <= bound));
    let e = F::try_conv_transpose2d(
        &x,
        &Tensor::zeros([4, 3, 3, 3]).to_dtype(DType::F64),
        None,
        &ConvTranspose2dOptions::new().output_padding(1),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("output padding must be smaller than either stride or dilation"),
        "{e}"
    );
}

const POOL_MAX_IDX: &[i64] = &[
    0, 8, 3, 5, 18, 8, 10, 23, 18, 20, 28, 23, 30, 38, 33, 35, 6, 1, 3, 11, 6, 8, 16, 11, 18, 26,
    21, 23, 36, 31, 33, 41, 6, 1, 4, 11, 6, 14, 9, 11, 24, 19, 34, 29, 36, 31, 34, 41, 6, 2, 4, 11,
    12, 7, 22, 17, 24, 32, 22, 29, 36, 32, 34, 41, 0, 2, 10, 5, 12, 20, 10, 17, 30, 20, 22, 35, 30,
    32, 40, 35, 0, 8, 3, 5, 18, 8, 10, 23, 18, 20, 28, 23, 30, 38, 33, 35,
];

#[test]
fn max_pooling_returns_pytorchs_indices() {
    for dtype in [DType::F64, DType::F32] {
        let x = pool_input().to_dtype(dtype);
        let (y, idx) = F::max_pool2d_with_indices(&x, [3, 2], 2, 1);
        assert_eq!(idx.dtype(), DType::I64);
        assert_eq!(idx.shape(), y.shape());
        assert_eq!(idx.to_vec::<i64>(), POOL_MAX_IDX);
        let pool = MaxPool2d::with([3, 2], 2, 1);
        let (y2, idx2) = pool.forward_with_indices(&x);
        assert_eq!(
            (y2.to_vec::<f64>(), idx2.to_vec::<i64>()),
            (y.to_vec::<f64>(), idx.to_vec::<i64>())
        );
        // Each index points at its output's value in its plane.
        let (xs, ys) = (
            x.reshape([6, 42]).to_vec::<f64>(),
            y.reshape([6, -1]).to_vec::<f64>(),
        );
        let per = ys.len() / 6;
        for (k, (&i, &v)) in POOL_MAX_IDX.iter().zip(&ys).enumerate() {
            assert_eq!(xs[(k / per) * 42 + i as usize], v);
        }
    }
    let avg = deriv::ops::Pool2d::avg(2, 2, 0, true);
    assert!(avg.max_indices(&pool_input()).is_err());
}
