//! Every op of the op table (`tests/common/op_table.rs`) through the same
//! checks: PyTorch's values and gradients, f64 gradcheck on every sample
//! input set (views, broadcasting), f32 = f64, empty tensors, the registry's
//! coverage, and errors that name the op; and for every op usable in
//! `network!`, the tape, `forward_train`/`backward` and `TrainStep` giving
//! the same gradients.

use deriv::nn::{Linear, Module, TrainStep};
use deriv::{gradcheck, manual_seed, network, no_grad, DType, Generator, Tensor};

#[path = "common/op_reference.rs"]
mod op_reference;
#[path = "common/op_table.rs"]
mod op_table;

use op_table::{input_sets, layer_rows, layer_sets, rows, Row};

#[track_caller]
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= tol * (1.0 + w.abs());
        assert!(
            ok,
            "{what}: element {i}: got {g}, want {w} (tolerance {tol})"
        );
    }
}

fn row(name: &str) -> Row {
    rows()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

#[test]
fn elementwise_ops_match_pytorch_values_and_gradients() {
    for &(name, y_ref, dx_ref) in op_reference::UNARY {
        let r = row(name);
        let xs = if r.positive {
            op_reference::XP
        } else {
            op_reference::X
        };
        let x = Tensor::from_vec(xs.to_vec(), [xs.len()]).requires_grad_(true);
        let y = (r.f)(std::slice::from_ref(&x));
        assert_close(&format!("{name} forward"), &y.to_vec::<f64>(), y_ref, 1e-13);
        y.backward_with(&Tensor::from_vec(op_reference::G.to_vec(), [xs.len()]));
        let dx = x.grad().expect("a gradient").to_vec::<f64>();
        assert_close(&format!("{name} gradient"), &dx, dx_ref, 1e-13);
    }
}

#[test]
fn binary_ops_match_pytorch_values_and_gradients() {
    let n = op_reference::X.len();
    for &(name, y_ref, da_ref, db_ref) in op_reference::BINARY {
        let r = row(name);
        let a = Tensor::from_vec(op_reference::X.to_vec(), [n]).requires_grad_(true);
        let b = Tensor::from_vec(op_reference::B.to_vec(), [n]).requires_grad_(true);
        let y = (r.f)(&[a.clone(), b.clone()]);
        assert_close(&format!("{name} forward"), &y.to_vec::<f64>(), y_ref, 1e-13);
        y.backward_with(&Tensor::from_vec(op_reference::G.to_vec(), [n]));
        for (which, t, want) in [("a", &a, da_ref), ("b", &b, db_ref)] {
            let got = t.grad().expect("a gradient").to_vec::<f64>();
            assert_close(&format!("{name} gradient of {which}"), &got, want, 1e-13);
        }
    }
}

#[test]
fn reductions_and_scans_match_pytorch_values_and_gradients() {
    for &(name, dim, keepdim, y_ref, dx_ref) in op_reference::REDUCE {
        let a = Tensor::from_vec(op_reference::A.to_vec(), [3, 5]).requires_grad_(true);
        let y = match name {
            "logsumexp" => a.logsumexp(dim, keepdim),
            "cumsum" => a.cumsum(dim),
            "softmax" => a.softmax(dim),
            "log_softmax" => a.log_softmax(dim),
            "var" => a.var_dim(dim, 1, keepdim),
            "std" => a.std_dim(dim, 1, keepdim),
            "max_dim" => a.max_dim(dim, keepdim).0,
            "min_dim" => a.min_dim(dim, keepdim).0,
            other => panic!("no reduction {other}"),
        };
        let what = format!("{name}(dim {dim}, keepdim {keepdim})");
        assert_close(&what, &y.to_vec::<f64>(), y_ref, 1e-13);
        let g = Tensor::from_vec(op_reference::GA[..y.numel()].to_vec(), y.shape());
        y.backward_with(&g);
        let dx = a.grad().expect("a gradient").to_vec::<f64>();
        assert_close(&format!("{what} gradient"), &dx, dx_ref, 1e-13);
    }
}

#[test]
fn every_op_passes_gradcheck_on_every_sample_input_set() {
    for r in rows() {
        for (set, inputs) in input_sets(&r, DType::F64) {
            if inputs.iter().any(|t| t.numel() == 0) {
                continue;
            }
            let report = gradcheck(|t| (r.f)(t), &inputs);
            assert!(report.passed, "{} on {set}: {report}", r.name);
        }
    }
}

#[test]
fn every_op_computes_in_f32_what_it_computes_in_f64() {
    for r in rows() {
        for ((set, x32), (_, x64)) in input_sets(&r, DType::F32)
            .into_iter()
            .zip(input_sets(&r, DType::F64))
        {
            let (y32, y64) = ((r.f)(&x32), (r.f)(&x64));
            assert_eq!(y32.dtype(), DType::F32, "{} on {set}", r.name);
            assert_eq!(y32.shape(), y64.shape(), "{} on {set}", r.name);
            assert_close(
                &format!("{} on {set}, f32", r.name),
                &y32.to_vec::<f64>(),
                &y64.to_vec::<f64>(),
                2e-5,
            );
        }
    }
}

#[test]
fn every_op_gives_views_the_values_of_their_contiguous_copies() {
    for r in rows() {
        for (set, inputs) in input_sets(&r, DType::F64) {
            let copies: Vec<Tensor> = inputs.iter().map(|t| t.contiguous()).collect();
            let (a, b) = ((r.f)(&inputs), (r.f)(&copies));
            let what = format!("{} on {set}", r.name);
            assert_close(&what, &a.to_vec::<f64>(), &b.to_vec::<f64>(), 0.0);
        }
    }
}

#[test]
fn every_op_takes_empty_tensors_and_records_a_node() {
    for r in rows() {
        for (set, inputs) in input_sets(&r, DType::F32) {
            if inputs.iter().all(|t| t.numel() > 0) {
                continue;
            }
            let leaves: Vec<Tensor> = inputs
                .iter()
                .map(|t| t.detach().requires_grad_(true))
                .collect();
            let y = (r.f)(&leaves);
            assert!(y.grad_fn().is_some(), "{} on {set}: no node", r.name);
            y.sum().backward();
            for l in &leaves {
                let g = l.grad().expect("a gradient");
                assert_eq!(g.shape(), l.shape(), "{} on {set}", r.name);
            }
        }
    }
}

// ------------------------------------------------------------ layer ops

/// A layer row's output and its inputs' gradients (for a seeded output
/// gradient), as f64 values.
fn layer_run(f: fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) -> (Tensor, Vec<Vec<f64>>) {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.detach().requires_grad_(true))
        .collect();
    let y = f(&leaves);
    let g = Tensor::randn_with(y.shape(), &mut Generator::new(77)).to_dtype(y.dtype());
    y.backward_with(&g);
    let grads = leaves
        .iter()
        .map(|l| {
            let g = l.grad().expect("every input gets a gradient");
            assert_eq!(g.shape(), l.shape());
            g.to_vec::<f64>()
        })
        .collect();
    (y, grads)
}

#[test]
fn every_layer_op_passes_gradcheck() {
    for r in layer_rows() {
        for (set, inputs) in layer_sets(&r, DType::F64) {
            if inputs.iter().any(|t| t.numel() == 0) {
                continue;
            }
            let report = gradcheck(|t| (r.f)(t), &inputs);
            assert!(report.passed, "{} on {set}: {report}", r.name);
        }
    }
}

#[test]
fn every_layer_op_computes_in_f32_what_it_computes_in_f64() {
    for r in layer_rows() {
        for ((set, x32), (_, x64)) in layer_sets(&r, DType::F32)
            .into_iter()
            .zip(layer_sets(&r, DType::F64))
        {
            let what = format!("{} on {set}", r.name);
            let ((y32, g32), (y64, g64)) = (layer_run(r.f, &x32), layer_run(r.f, &x64));
            assert_eq!(y32.dtype(), DType::F32, "{what}");
            assert_eq!(y32.shape(), y64.shape(), "{what}");
            let (a, b) = (y32.to_vec::<f64>(), y64.to_vec::<f64>());
            assert_close(&format!("{what}, f32 forward"), &a, &b, 1e-5);
            for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
                assert_close(&format!("{what}, f32 gradient of input {i}"), a, b, 1e-4);
            }
        }
    }
}

#[test]
fn every_layer_op_gives_views_the_values_of_their_contiguous_copies() {
    for r in layer_rows() {
        let sets = layer_sets(&r, DType::F64);
        let (plain, views) = (&sets[0].1, &sets[1].1);
        assert!(
            views.iter().any(|t| !t.is_contiguous()),
            "{}: a view",
            r.name
        );
        let ((ya, ga), (yb, gb)) = (layer_run(r.f, plain), layer_run(r.f, views));
        let what = format!("{} on views", r.name);
        assert_close(&what, &yb.to_vec::<f64>(), &ya.to_vec::<f64>(), 0.0);
        for (i, (a, b)) in ga.iter().zip(&gb).enumerate() {
            assert_close(&format!("{what}, gradient of input {i}"), b, a, 0.0);
        }
    }
}

#[test]
fn every_layer_op_takes_an_empty_batch_where_pytorch_does() {
    for r in layer_rows() {
        let Some((_, inputs)) = layer_sets(&r, DType::F32)
            .into_iter()
            .find(|(set, _)| *set == "empty")
        else {
            continue;
        };
        let (y, grads) = layer_run(r.f, &inputs);
        assert_eq!(y.numel(), 0, "{}: {:?}", r.name, y.shape());
        assert!(y.grad_fn().is_some(), "{}: no node", r.name);
        // Parameters used by no sample get zero gradients.
        for (i, g) in grads.iter().enumerate() {
            assert!(g.iter().all(|&v| v == 0.0), "{}: input {i}", r.name);
        }
    }
}

#[test]
fn the_table_covers_every_registered_op() {
    let names: Vec<&str> = rows().iter().map(|r| r.name).collect();
    for name in deriv::ops::registry::NAMES {
        assert!(
            names.contains(name),
            "the op `{name}` is registered but has no row in tests/common/op_table.rs"
        );
    }
}

#[test]
fn bad_arguments_name_the_op_and_the_fix() {
    let x = Tensor::ones([2, 3]);
    type Case = (&'static str, Box<dyn Fn()>);
    let cases: Vec<Case> = vec![
        (
            "gelu: approximate argument must be either \"none\" or \"tanh\"",
            Box::new(|| {
                deriv::nn::functional::gelu(&Tensor::ones([2]), "fast");
            }),
        ),
        ("logsumexp: dimension 2 is out of range", {
            let x = x.clone();
            Box::new(move || {
                x.logsumexp(2, false);
            })
        }),
        ("cumsum: dimension -3 is out of range", {
            let x = x.clone();
            Box::new(move || {
                x.cumsum(-3);
            })
        }),
        ("softmax: dimension 5 is out of range", {
            let x = x.clone();
            Box::new(move || {
                x.softmax(5);
            })
        }),
        ("add: ", {
            let x = x.clone();
            Box::new(move || {
                let _ = &x + &Tensor::ones([4]);
            })
        }),
    ];
    for (want, f) in cases {
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .expect_err(&format!("expected a panic with {want:?}"));
        let msg = err
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.starts_with(want), "{msg:?} should start with {want:?}");
    }
    let err = Tensor::ones([2, 3]).try_add(Tensor::ones([4])).unwrap_err();
    assert!(
        err.to_string().contains("[2, 3]") && err.to_string().contains("[4]"),
        "{err}"
    );
}

// ---------------------------------------------------------------- the three paths

/// A model's gradients (the input's, then each parameter's) after one backward.
fn grads(m: &impl Module, x: &Tensor) -> Vec<Vec<f64>> {
    let mut out = vec![x.grad().map(|g| g.to_vec::<f64>()).unwrap_or_default()];
    for p in m.parameters() {
        out.push(p.grad().map(|g| g.to_vec::<f64>()).unwrap_or_default());
    }
    out
}

/// The tape, `forward_train`/`backward` and two `TrainStep` steps on one
/// f64 input and output gradient: the same outputs and gradients.
fn three_paths<M: TrainStep>(label: &str, make: impl Fn() -> M) {
    // The models start from one set of weights, copied from the first: the
    // global generator is shared with the tests running beside this one, so
    // seeding it before each build would not give the same draws.
    manual_seed(5);
    let first = make();
    let weights = first.state_dict();
    let build = || {
        let mut m = make();
        m.load_state_dict(&weights).unwrap();
        m.to_dtype(DType::F64);
        m
    };
    let mut gen = Generator::new(6);
    let x0 = (Tensor::randn_with([5, 4], &mut gen) * 1.5).to_dtype(DType::F64);
    let seed = Tensor::randn_with([5, 4], &mut gen).to_dtype(DType::F64);

    let tape = build();
    let x = x0.detach().requires_grad_(true);
    let y_tape = tape.forward(&x);
    y_tape.backward_with(&seed);
    let want = grads(&tape, &x);

    let ct = build();
    let (y_ct, saved) = ct.forward_train(&x0);
    let dx = ct.backward(saved, &seed, true).expect("an input gradient");
    let mut got = grads(&ct, &x0);
    got[0] = dx.to_vec::<f64>();
    assert_close(
        &format!("{label}: forward_train output"),
        &y_ct.to_vec::<f64>(),
        &y_tape.to_vec::<f64>(),
        1e-12,
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("{label}: compile-time gradient {i}"), g, w, 1e-12);
    }

    let ws_model = build();
    let mut ws = ws_model.workspace();
    for step in 0..2 {
        ws_model.zero_grad();
        let y = ws_model.forward_train_ws(&x0, &mut ws).to_vec::<f64>();
        assert_close(
            &format!("{label}: TrainStep output, step {step}"),
            &y,
            &y_tape.to_vec::<f64>(),
            1e-12,
        );
        let dx = no_grad(|| {
            ws_model
                .backward_ws(&mut ws, &seed, true)
                .expect("dx")
                .clone()
        });
        let mut got = grads(&ws_model, &x0);
        got[0] = dx.to_vec::<f64>();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(
                &format!("{label}: TrainStep gradient {i}, step {step}"),
                g,
                w,
                1e-12,
            );
        }
    }
}

/// For each op: a network applying it after a Linear layer (so parameters
/// get gradients through it), and a test of its three paths.
macro_rules! op_paths {
    ($($test:ident: $net:ident { $($body:tt)* })*) => {$(
        network! {
            struct $net { fc: Linear(4, 4) }
            fn forward(x) {
                let h = fc(x);
                $($body)*
            }
        }
        #[test]
        fn $test() {
            three_paths(stringify!($net), $net::default);
        }
    )*};
}

op_paths! {
    relu_paths: NetRelu { relu(h) }
    sigmoid_paths: NetSigmoid { h.sigmoid() }
    tanh_paths: NetTanh { tanh(h) }
    silu_paths: NetSilu { silu(h) }
    gelu_paths: NetGelu { gelu(h) }
    gelu_tanh_paths: NetGeluTanh { gelu(h, "tanh") }
    leaky_relu_paths: NetLeakyRelu { leaky_relu(h, 0.2) }
    elu_paths: NetElu { elu(h, 1.5) }
    softplus_paths: NetSoftplus { softplus(h, 2.0, 5.0) }
    mish_paths: NetMish { mish(h) }
    hardtanh_paths: NetHardtanh { hardtanh(h, -0.5, 2.0) }
    abs_paths: NetAbs { abs(h) * 0.5 + h }
    clamp_paths: NetClamp { clamp(h, -0.5, 2.0) + h.clamp(-1.0, 0.25) }
    extremum_paths: NetExtremum { maximum(h, h * 0.5) + h.minimum(h.square() - 0.5) }
    pow_paths: NetPow { pow(h.square() + 0.5, h * 0.5) + h.pow(3.0) * 0.1 }
    logsigmoid_paths: NetLogsigmoid { logsigmoid(h) }
    exp_paths: NetExp { (h * 0.5).exp() }
    log_paths: NetLog { log(h.square() + 1.0) }
    sqrt_paths: NetSqrt { (h.square() + 1.0).sqrt() }
    arithmetic_paths: NetArithmetic { (h * h - h / (h.square() + 2.0)) * 0.5 + 1.0 - 2.0 / (h.square() + 1.0) }
    logsumexp_paths: NetLogsumexp { h - h.logsumexp(1, true) }
    cumsum_paths: NetCumsum { h.cumsum(1) * 0.25 }
    softmax_paths: NetSoftmax { softmax(h, 1) + h.log_softmax(0) }
    views_paths: NetViews { h.t().transpose(0, 1).reshape([-1]).view([5, 4]).flatten(0, 1).reshape([5, 4]) }
    sums_paths: NetSums { h + h.sum_dim(1, true) - h.mean_dim(0, true) + h.sum() * 0.1 + h.mean() }
    matmul_paths: NetMatmul { h.matmul(h.t()).matmul(h) * 0.1 }
}

/// A user's own op, used in `network!` exactly like a built-in one.
mod user_op {
    use deriv::ops::{Reads, Unary};
    use deriv::Math;

    /// softsign(x) = x / (1 + |x|)
    #[derive(Clone, Copy, Default)]
    pub struct Softsign;
    impl Unary for Softsign {
        const GRAD_FN: &'static str = "SoftsignBackward";
        const KERNEL: &'static str = "test_softsign";
        const READS: Reads = Reads::Input;
        fn f<M: Math>(x: M, _: [M; 2]) -> M {
            x / (M::k(1.0) + x.abs())
        }
        fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
            g / (M::k(1.0) + x.abs()).square()
        }
    }
    deriv::unary_op!(Softsign);
}
use user_op::Softsign;

op_paths! {
    user_op_paths: NetSoftsign { softsign(h) + h.softsign() }
}

#[test]
fn a_user_op_is_checked_by_gradcheck_too() {
    let x = op_table::sample(&row("tanh"), &[3, 4], 1, DType::F64);
    let report = gradcheck(|t| deriv::autograd::apply(Softsign, &[&t[0]]), &[x]);
    assert!(report.passed, "{report}");
}

// ----- layering: which module may see what (docs/ARCHITECTURE.md, "Layers")

/// The Rust files under `runtime/src/<dir>`, with their code only: comments
/// and string literals blanked out, so a doc link or a message that names a
/// type is not an import of it.
fn code_files(dir: &str) -> Vec<(String, String)> {
    fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/src");
    let mut files = Vec::new();
    walk(&root.join(dir), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let code: String = text
                .lines()
                .map(|l| strip_strings(l.split("//").next().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n");
            let name = p.strip_prefix(&root).unwrap().display().to_string();
            (name, code)
        })
        .collect()
}

fn strip_strings(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (in_str, c) {
            (true, '\\') => {
                chars.next();
            }
            (_, '"') => in_str = !in_str,
            (false, c) => out.push(c),
            _ => {}
        }
    }
    out
}

fn mentions(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        let before = code[..i].chars().next_back().is_none_or(|c| !ident(c));
        let after = code[i + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| !ident(c));
        before && after
    })
}

/// No ops code imports `nn` (the losses' options live with their ops, `nn`
/// re-exports them): layers build on ops, never the other way round.
#[test]
fn ops_code_never_reaches_into_nn() {
    let offenders: Vec<String> = code_files("ops")
        .into_iter()
        .filter(|(_, code)| code.contains("crate::nn") || code.contains("super::nn"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        offenders.is_empty(),
        "ops code uses nn: {offenders:?}; move what it needs into ops (nn may re-export it)"
    );
}

/// The backend sees buffers, layouts and arrays (`backend::Array`: storage,
/// layout and dtype), never `Tensor`: the CUDA launch wrappers take and
/// return arrays, and the tensor layer wraps them.
#[test]
fn backend_code_does_not_use_tensor() {
    let users: Vec<String> = code_files("backend")
        .into_iter()
        .filter(|(_, code)| mentions(code, "Tensor"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        users.is_empty(),
        "backend files that use Tensor: {users:?}; the backend works on buffers, layouts and \
         arrays (backend::Array): pass it a tensor's .array() and wrap what it returns with \
         Tensor::from_array"
    );
}
