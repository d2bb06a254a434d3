//! Models declared with `network!` and `#[derive(Module)]` work: parameter
//! names and counts, shapes, `Default`, train/eval, and for every body op and
//! composite model the three gradients agree in f64 — the compile-time
//! backward, the tape, and central finite differences.

use deriv::nn::{
    AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d, Differentiable, Dropout,
    Embedding, Flatten, Forward, GroupNorm, LayerNorm, Linear, MaxPool2d, Module, ReLU, Sigmoid,
    Tanh,
};
use deriv::{network, no_grad, DType, Device, Generator, Tensor};

// ---------------------------------------------------------------- the harness

/// One forward pass: the tape's (recorded) or the compile-time one.
type Run<'a, M> = &'a dyn Fn(&M, &[Tensor]) -> Tensor;
/// forward_train + backward: the output and the inputs' gradients.
type Derived<'a, M> = &'a dyn Fn(&M, &[Tensor], &Tensor) -> (Tensor, Vec<Option<Tensor>>);

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

fn assert_all_close(got: &[f64], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            close(*g, *w, rel),
            "{what}: element {i}: {g} vs {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).to_vec::<f64>()
}

fn clear_grads<M: Module>(model: &M) {
    for p in model.parameters() {
        p.set_grad(None);
    }
}

/// `sum(f(inputs) * v)` with the parameter `name` (or the input `input`)
/// replaced by `data`.
fn projected<M: Module>(
    model: &mut M,
    run: Run<M>,
    inputs: &[Tensor],
    v: &Tensor,
    target: Target,
    data: Vec<f64>,
) -> f64 {
    let mut inputs = inputs.to_vec();
    let mut original = None;
    match &target {
        Target::Param(name) => model.visit_parameters_mut("", &mut |n, t| {
            if n == name {
                original = Some(t.clone());
                *t = Tensor::from_vec(data.clone(), t.shape());
            }
        }),
        Target::Input(i) => inputs[*i] = Tensor::from_vec(data, inputs[*i].shape()),
    }
    let y = no_grad(|| run(model, &inputs));
    if let (Target::Param(name), Some(orig)) = (&target, original) {
        model.visit_parameters_mut("", &mut |n, t| {
            if n == name {
                *t = orig.clone();
            }
        });
    }
    values(&y).iter().zip(values(v)).map(|(a, b)| a * b).sum()
}

#[derive(Clone)]
enum Target {
    Param(String),
    Input(usize),
}

/// Central differences (eps 1e-6) of `sum(f * v)` with respect to every
/// element of `target`, whose current data is `base`.
fn numerical<M: Module>(
    model: &mut M,
    run: Run<M>,
    inputs: &[Tensor],
    v: &Tensor,
    target: Target,
    base: &[f64],
) -> Vec<f64> {
    let eps = 1e-6;
    (0..base.len())
        .map(|j| {
            let mut plus = base.to_vec();
            plus[j] += eps;
            let mut minus = base.to_vec();
            minus[j] -= eps;
            let fp = projected(model, run, inputs, v, target.clone(), plus);
            let fm = projected(model, run, inputs, v, target.clone(), minus);
            (fp - fm) / (2.0 * eps)
        })
        .collect()
}

/// In f64: compile-time gradients == tape gradients (1e-10) for every
/// parameter and input, and both == central differences (1e-6 relative).
fn check<M: Module>(
    label: &str,
    mut model: M,
    shapes: &[&[usize]],
    tape: Run<M>,
    derived: Derived<M>,
) {
    model.to_dtype(DType::F64);
    let mut gen = Generator::new(7);
    let inputs: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::randn_with(s, &mut gen).to_dtype(DType::F64))
        .collect();

    // The tape.
    clear_grads(&model);
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|x| x.detach().requires_grad_(true))
        .collect();
    let y_tape = tape(&model, &leaves);
    let v = Tensor::randn_with(y_tape.shape(), &mut gen).to_dtype(DType::F64);
    y_tape.backward_with(&v);
    let tape_params: Vec<(String, Vec<f64>)> = model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| {
            let g = p
                .grad()
                .map(|g| values(&g))
                .unwrap_or_else(|| vec![0.0; p.numel()]);
            (n, g)
        })
        .collect();
    let tape_inputs: Vec<Vec<f64>> = leaves
        .iter()
        .map(|l| {
            l.grad()
                .map(|g| values(&g))
                .unwrap_or_else(|| vec![0.0; l.numel()])
        })
        .collect();

    // The compile-time backward.
    clear_grads(&model);
    let (y, dxs) = derived(&model, &inputs, &v);
    assert_eq!(y.shape(), y_tape.shape(), "{label}: output shapes");
    assert_all_close(
        &values(&y),
        &values(&y_tape),
        1e-12,
        &format!("{label}: outputs"),
    );
    assert!(
        y.grad_fn().is_none(),
        "{label}: forward_train must not record"
    );
    for (i, (dx, want)) in dxs.iter().zip(&tape_inputs).enumerate() {
        let got = dx
            .as_ref()
            .map(values)
            .unwrap_or_else(|| vec![0.0; want.len()]);
        assert_all_close(
            &got,
            want,
            1e-10,
            &format!("{label}: input {i}: compile-time vs tape"),
        );
        let fd = numerical(
            &mut model,
            tape,
            &inputs,
            &v,
            Target::Input(i),
            &values(&inputs[i]),
        );
        assert_all_close(
            &got,
            &fd,
            1e-6,
            &format!("{label}: input {i}: compile-time vs differences"),
        );
    }
    for (name, want) in &tape_params {
        let p = model
            .named_parameters()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
            .expect("parameter");
        let got = p
            .grad()
            .map(|g| values(&g))
            .unwrap_or_else(|| vec![0.0; p.numel()]);
        assert_all_close(
            &got,
            want,
            1e-10,
            &format!("{label}: {name}: compile-time vs tape"),
        );
        let fd = numerical(
            &mut model,
            tape,
            &inputs,
            &v,
            Target::Param(name.clone()),
            &values(&p),
        );
        assert_all_close(
            &got,
            &fd,
            1e-6,
            &format!("{label}: {name}: compile-time vs differences"),
        );
    }
}

/// [`check`] for a one-input model, through the traits.
fn check_one<M: Differentiable>(label: &str, model: M, shape: &[usize]) {
    check(
        label,
        model,
        &[shape],
        &|m: &M, xs: &[Tensor]| Forward::forward(m, &xs[0]),
        &|m: &M, xs: &[Tensor], v: &Tensor| {
            let (y, saved) = m.forward_train(&xs[0]);
            let dx = m.backward(saved, v, true);
            (y, vec![dx])
        },
    );
}

fn names<M: Module>(m: &M) -> Vec<String> {
    m.named_parameters().into_iter().map(|(n, _)| n).collect()
}

// ---------------------------------------------------------------- the sequential form

network! {
    /// A small MLP, sequential form.
    pub struct Mlp = Linear(3, 5) -> ReLU -> Linear(5, 2);
}

network! {
    pub struct Wide<const H: usize = 6> = Linear(3, H) -> Tanh -> Linear(H, 2) -> Sigmoid;
}

#[test]
fn sequential_names_counts_and_shapes() {
    let mlp = Mlp::new(&Device::Cpu);
    assert_eq!(names(&mlp), ["0.weight", "0.bias", "2.weight", "2.bias"]);
    assert_eq!(mlp.num_parameters(), 3 * 5 + 5 + 5 * 2 + 2);
    assert_eq!(mlp.forward(&Tensor::randn([7, 3])).shape(), &[7, 2]);
    // The fields are public and typed.
    let _: &Linear = &mlp.0;
    let _: &ReLU = &mlp.1;
    assert_eq!(mlp.2.out_features(), 2);
}

#[test]
fn sequential_default_and_const_generics() {
    let wide: Wide = Wide::default();
    assert_eq!(wide.0.out_features(), 6);
    let narrow = Wide::<4>::new(&Device::Cpu);
    assert_eq!(narrow.num_parameters(), 3 * 4 + 4 + 4 * 2 + 2);
    assert_eq!(narrow.forward(&Tensor::randn([2, 3])).shape(), &[2, 2]);
}

#[test]
fn sequential_gradients() {
    check_one("Mlp", Mlp::default(), &[4, 3]);
    check_one("Wide", Wide::<3>::default(), &[2, 3]);
}

#[test]
fn forward_records_on_the_tape() {
    let mlp = Mlp::default();
    let y = mlp.forward(&Tensor::randn([2, 3]));
    assert!(y.grad_fn().is_some());
    y.sum().backward();
    assert!(mlp.0.weight.grad().is_some());
}

#[test]
fn input_grad_false_skips_the_input_but_not_the_parameters() {
    let mlp = Mlp::default();
    let x = Tensor::randn([2, 3]);
    let (y, saved) = mlp.forward_train(&x);
    assert!(mlp.backward(saved, &y.ones_like(), false).is_none());
    assert!(mlp.0.weight.grad().is_some());
}

// ---------------------------------------------------------------- the class form

network! {
    /// The classifier of the brief, small.
    pub struct Net {
        fc1: Linear(4, 6),
        fc2: Linear(6, 3),
    }
    fn forward(x) {
        let h = relu(fc1(x));
        log_softmax(fc2(h), 1)
    }
}

#[test]
fn class_names_counts_default() {
    let net = Net::default();
    assert_eq!(
        names(&net),
        ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    );
    assert_eq!(net.num_parameters(), 4 * 6 + 6 + 6 * 3 + 3);
    let y = net.forward(&Tensor::randn([5, 4]));
    assert_eq!(y.shape(), &[5, 3]);
    // log-probabilities: each row's exp sums to one.
    for s in values(&y.exp().sum_dim(1, false)) {
        assert!((s - 1.0).abs() < 1e-5);
    }
}

#[test]
fn class_gradients() {
    check_one("Net", Net::default(), &[5, 4]);
}

network! {
    pub struct Residual {
        fc1: Linear(4, 8),
        fc2: Linear(8, 4),
    }
    fn forward(x) {
        let y = fc2(relu(fc1(x))) + x;
        y
    }
}

#[test]
fn residual_gradients() {
    check_one("Residual", Residual::default(), &[3, 4]);
}

network! {
    /// `h` fans out three ways; its adjoints add.
    pub struct FanOut {
        fc: Linear(3, 3),
    }
    fn forward(x) {
        let h = fc(x);
        let a = h.sigmoid();
        let b = tanh(h);
        a * b + h * 0.5 - x
    }
}

#[test]
fn fan_out_gradients() {
    check_one("FanOut", FanOut::default(), &[2, 3]);
}

network! {
    pub struct TwoInputs {
        fa: Linear(3, 4),
        fb: Linear(2, 4),
    }
    fn forward(x, y) {
        tanh(fa(x)) * fb(y) - y.sum()
    }
}

#[test]
fn two_inputs() {
    let m = TwoInputs::default();
    let (x, y) = (Tensor::randn([5, 3]), Tensor::randn([5, 2]));
    assert_eq!(m.forward(&x, &y).shape(), &[5, 4]);
    let (out, saved) = m.forward_train(&x, &y);
    let (dx, dy) = m.backward(saved, &out.ones_like(), true);
    assert_eq!(dx.map(|d| d.shape().to_vec()), Some(vec![5, 3]));
    assert_eq!(dy.map(|d| d.shape().to_vec()), Some(vec![5, 2]));
    check(
        "TwoInputs",
        TwoInputs::default(),
        &[&[5, 3], &[5, 2]],
        &|m: &TwoInputs, xs: &[Tensor]| m.forward(&xs[0], &xs[1]),
        &|m: &TwoInputs, xs: &[Tensor], v: &Tensor| {
            let (out, saved) = m.forward_train(&xs[0], &xs[1]);
            let (dx, dy) = m.backward(saved, v, true);
            (out, vec![dx, dy])
        },
    );
}

// ---------------------------------------------------------------- nesting

network! {
    pub struct Block = Linear(4, 4) -> Tanh;
}

network! {
    pub struct Outer {
        b1: Block,
        b2: Block,
        head: Linear(4, 2),
    }
    fn forward(x) {
        let h = b1(x) + x;
        head(b2(h))
    }
}

#[test]
fn nested_networks() {
    let outer = Outer::default();
    assert_eq!(
        names(&outer),
        [
            "b1.0.weight",
            "b1.0.bias",
            "b2.0.weight",
            "b2.0.bias",
            "head.weight",
            "head.bias"
        ]
    );
    check_one("Outer", Outer::default(), &[3, 4]);
}

/// A derived sequential module, with plain data skipped.
#[derive(Module)]
#[module(sequential)]
pub struct Stack {
    fc1: Linear,
    act: Sigmoid,
    fc2: Linear,
    #[module(skip)]
    label: String,
}

impl Stack {
    pub fn new(device: &Device) -> Self {
        Stack {
            fc1: Linear::new(3, 5, device),
            act: Sigmoid,
            fc2: Linear::new(5, 3, device),
            label: "stack".into(),
        }
    }
}

/// A derived module with parameters of its own (not sequential).
#[derive(Module)]
pub struct Affine {
    pub scale: Tensor,
    pub shift: Option<Tensor>,
    pub inner: Stack,
}

#[test]
fn derive_module_names_and_gradients() {
    let stack = Stack::new(&Device::Cpu);
    assert_eq!(stack.label, "stack");
    assert_eq!(
        names(&stack),
        ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    );
    assert_eq!(stack.forward(&Tensor::randn([2, 3])).shape(), &[2, 3]);
    check_one("Stack", Stack::new(&Device::Cpu), &[4, 3]);

    let affine = Affine {
        scale: Tensor::ones([3]).requires_grad_(true),
        shift: Some(Tensor::zeros([3]).requires_grad_(true)),
        inner: Stack::new(&Device::Cpu),
    };
    assert_eq!(
        names(&affine),
        [
            "scale",
            "shift",
            "inner.fc1.weight",
            "inner.fc1.bias",
            "inner.fc2.weight",
            "inner.fc2.bias"
        ]
    );
}

network! {
    /// A derived module inside a network.
    pub struct WithStack {
        stack: Stack,
        out: Linear(3, 1),
    }
    fn forward(x) {
        out(stack(x) * x)
    }
}

#[test]
fn derived_module_inside_a_network() {
    let m = WithStack::default();
    assert_eq!(names(&m)[0], "stack.fc1.weight");
    check_one("WithStack", WithStack::default(), &[2, 3]);
}

/// A user's own op with its own gradient rule: y = x³, dx = 3x²·g.
#[derive(Module)]
pub struct Cube;

impl Cube {
    pub fn new(_device: &Device) -> Self {
        Cube
    }
}

impl Forward for Cube {
    fn forward(&self, x: &Tensor) -> Tensor {
        x * x * x
    }
}

impl Differentiable for Cube {
    type Saved = Tensor;
    fn forward_train(&self, x: &Tensor) -> (Tensor, Tensor) {
        (no_grad(|| x * x * x), x.clone())
    }
    fn backward(&self, x: Tensor, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
        input_grad.then(|| no_grad(|| grad_out * &(&x * &x * 3.0)))
    }
}

network! {
    pub struct Cubic {
        fc: Linear(3, 2),
        cube: Cube,
    }
    fn forward(x) {
        cube(fc(x))
    }
}

#[test]
fn a_user_rule_through_a_field() {
    check_one("Cubic", Cubic::default(), &[4, 3]);
}

// ---------------------------------------------------------------- train / eval

network! {
    pub struct Dropper {
        fc: Linear(8, 8),
        drop: Dropout(0.5),
    }
    fn forward(x) {
        drop(fc(x))
    }
}

network! {
    pub struct SeqDropper = Linear(8, 8) -> Dropout(0.5);
}

#[test]
fn train_and_eval_reach_dropout() {
    let mut m = Dropper::default();
    assert!(m.drop.is_training());
    m.eval();
    assert!(!m.drop.is_training());
    m.train();
    assert!(m.drop.is_training());
    let mut s = SeqDropper::default();
    s.eval();
    assert!(!s.1.is_training());
    // In eval mode the model is deterministic, so its gradients check out.
    let mut m = Dropper::default();
    m.eval();
    check_one("Dropper (eval)", m, &[2, 8]);
}

network! {
    pub struct JustDrop {
        drop: Dropout(0.5),
    }
    fn forward(x) {
        drop(x)
    }
}

#[test]
fn dropout_backward_uses_the_forward_mask() {
    let m = JustDrop::default();
    let x = Tensor::randn([4, 8]);
    let (y, saved) = m.forward_train(&x);
    let dx = m.backward(saved, &y.ones_like(), true).expect("input grad");
    // y = x·mask and dx = mask for a gradient of ones.
    assert_all_close(&values(&(&dx * &x)), &values(&y), 1e-6, "mask");
    let kept = values(&dx).iter().filter(|&&m| m != 0.0).count();
    assert!(kept > 0 && kept < 32, "some kept, some dropped: {kept}");
}

// ---------------------------------------------------------------- each body op

/// One small network per op: `h = fc(x)` of shape [2, 4], then the op.
macro_rules! op_nets {
    ($($name:ident: $body:expr;)*) => {
        $(
            network! {
                pub struct $name {
                    fc: Linear(3, 4),
                }
                fn forward(x) {
                    let h = fc(x);
                    $body
                }
            }
        )*

        #[test]
        fn every_op_gradient() {
            $(
                check_one(stringify!($name), $name::default(), &[2, 3]);
            )*
        }
    };
}

op_nets! {
    OpAdd: h + h.relu();
    OpSub: h - h.sigmoid();
    OpMul: h * h.tanh();
    OpDiv: h / (h.square() + 1.0);
    OpScalars: (2.0 + h * 3.0 - 1.5) / 2.0 - (0.5 - h);
    OpRDiv: 1.0 / (h.square() + 2.0);
    OpNeg: -h;
    OpRelu: relu(h);
    OpSigmoid: sigmoid(h);
    OpTanh: tanh(h);
    OpExp: exp(h);
    OpLog: log(h.square() + 1.0);
    OpSqrt: sqrt(h.square() + 1.0);
    OpSoftmax: softmax(h, 1);
    OpLogSoftmax: log_softmax(h, -1);
    OpMatmul: matmul(h, h.t());
    OpBroadcast: h + h.sum_dim(1, true);
    OpMethods: h.relu() + h.sigmoid() + h.tanh() + h.exp() * 0.1;
    OpLogSqrt: (h.square() + 1.0).log() + (h.square() + 1.0).sqrt();
    OpPow: h.pow(3) + h.pow(2.0);
    OpTranspose: h.t().transpose(0, 1) * 2.0;
    OpReshape: h.reshape([4, 2]).view([2, 4]).reshape([-1]);
    OpFlatten: h.reshape([2, 2, 2]).flatten(1, 2);
    OpSum: h.sum() * h;
    OpSumDim: h.sum_dim(0, false) + h.sum_dim(1, true).sum_dim(0, true);
    OpMean: h.mean() + h.mean_dim(1, true) * h;
    OpMethodSoftmax: h.softmax(1) + h.log_softmax(0);
    OpMethodMatmul: h.matmul(h.t()).sum_dim(1, false);
}

network! {
    /// No parameters: the input is the only thing to differentiate.
    pub struct Pure {}
    fn forward(x) {
        (x.exp() * 2.0).sum_dim(1, false)
    }
}

#[test]
fn activity_follows_input_grad() {
    let m = Pure::default();
    assert_eq!(m.num_parameters(), 0);
    let x = Tensor::randn([2, 3]);
    let (y, saved) = m.forward_train(&x);
    assert!(m.backward(saved, &y.ones_like(), false).is_none());
    let (y, saved) = m.forward_train(&x);
    let dx = m.backward(saved, &y.ones_like(), true).expect("asked for");
    assert_all_close(&values(&dx), &values(&(x.exp() * 2.0)), 1e-6, "d/dx");
    check_one("Pure", Pure::default(), &[2, 3]);
}

network! {
    /// Shadowing, a constant binding, a raw identifier and an unused binding.
    pub struct Odd {
        fc: Linear(3, 3),
    }
    fn forward(x) {
        let r#type = fc(x);
        let x = relu(x);
        let c = 2.0;
        let unused = exp(x);
        r#type * c + x - c
    }

    /// The output is the input.
    pub struct PassThrough {}
    fn forward(x) {
        x
    }
}

#[test]
fn odd_but_valid_bodies() {
    check_one("Odd", Odd::default(), &[2, 3]);
    check_one("PassThrough", PassThrough::default(), &[2, 3]);
    let m = PassThrough::default();
    let x = Tensor::randn([2, 2]);
    let (y, saved) = m.forward_train(&x);
    let g = Tensor::randn([2, 2]);
    assert_eq!(
        values(&m.backward(saved, &g, true).expect("dx")),
        values(&g)
    );
    assert_eq!(values(&y), values(&x));
}

// ---------------------------------------------------------------- tests/ui/pass

/// Each tests/ui/pass case, compiled here as a module of this test crate
/// and its `main` run (tests/end_to_end/compile_errors.rs says why not through trybuild).
macro_rules! ui_pass_cases {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                include!(concat!("ui/pass/", stringify!($case), ".rs"));

                #[test]
                fn compiles_and_runs() {
                    main()
                }
            }
        )*
        const UI_PASS_CASES: &[&str] = &[$(stringify!($case)),*];
    };
}

ui_pass_cases!(
    class,
    const_generics,
    derive_sequential,
    nested,
    sequential,
    two_inputs,
);

/// A new file in tests/ui/pass must be added to the list above, or it
/// would never be compiled.
#[test]
fn every_ui_pass_case_is_compiled() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/pass");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut listed: Vec<String> = UI_PASS_CASES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "tests/ui/pass and ui_pass_cases! in tests/network_macro.rs must list the same cases"
    );
}

// ---------------------------------------------------------------- an embedding first

network! {
    /// A token classifier: `Embedding(10, 4)` produces size 4, which the
    /// macro checks against `Linear(4, 2)` at compile time.
    pub struct Tagger = Embedding(10, 4) -> Tanh -> Linear(4, 2);
}

/// The gradients of every parameter on the tape, the compile-time path and
/// `TrainStep` (whose input is i64 indices, without a gradient).
#[test]
fn embedding_first_agrees_on_all_three_paths() {
    use deriv::nn::TrainStep;
    let mut model = Tagger::default();
    model.to_dtype(DType::F64);
    let idx = Tensor::from_vec(vec![3i64, 9, 0, 3, 3, 7, 1, 2, 9, 9, 0, 5], [3, 4]);
    let v = Tensor::randn_with([3, 4, 2], &mut Generator::new(11)).to_dtype(DType::F64);
    let grads = |m: &Tagger| -> Vec<Vec<f64>> {
        m.parameters()
            .iter()
            .map(|p| values(&p.grad().expect("every parameter gets a gradient")))
            .collect()
    };

    clear_grads(&model);
    let y_tape = model.forward(&idx);
    y_tape.backward_with(&v);
    let tape = grads(&model);

    clear_grads(&model);
    let (y, saved) = model.forward_train(&idx);
    assert_all_close(&values(&y), &values(&y_tape), 1e-12, "outputs");
    assert!(
        model.backward(saved, &v, true).is_none(),
        "indices have no gradient"
    );
    for (g, t) in grads(&model).iter().zip(&tape) {
        assert_all_close(g, t, 1e-12, "compile-time vs tape");
    }

    clear_grads(&model);
    let mut ws = model.workspace();
    let y = model.forward_train_ws(&idx, &mut ws).clone_data();
    assert_all_close(&values(&y), &values(&y_tape), 1e-12, "TrainStep outputs");
    let _ = model.backward_ws(&mut ws, &v, false);
    for (g, t) in grads(&model).iter().zip(&tape) {
        assert_all_close(g, t, 1e-12, "TrainStep vs tape");
    }
    assert_eq!(names(&model), ["0.weight", "2.weight", "2.bias"]);
}

network! {
    /// `LayerNorm(8)` between two layers: the macro checks 8 against both.
    pub struct Normed = Linear(3, 8) -> LayerNorm(8) -> Tanh -> Linear(8, 2);
}

#[test]
fn layer_norm_in_a_network_gradients() {
    check_one("Normed", Normed::default(), &[5, 3]);
    assert_eq!(
        names(&Normed::default()),
        ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    );
}

network! {
    /// Batch and group normalisation in a small CNN: the macro checks the
    /// channels through both.
    pub struct NormedCnn = Conv2d(2, 4, 3) -> BatchNorm2d(4) -> ReLU -> GroupNorm(2, 4)
        -> Flatten -> Linear(36, 2);
}

network! {
    /// BatchNorm1d between two linear layers: the macro checks 6 features.
    pub struct BnMlp = Linear(3, 6) -> BatchNorm1d(6) -> Tanh -> Linear(6, 2);
}

#[test]
fn batch_and_group_norm_in_a_network_gradients() {
    // [3, 2, 5, 5] -> [3, 4, 3, 3] -> [3, 36] -> [3, 2].
    check_one("NormedCnn", NormedCnn::default(), &[3, 2, 5, 5]);
    check_one("BnMlp", BnMlp::default(), &[5, 3]);
    // Evaluation mode: the running statistics, on every path.
    let mut m = BnMlp::default();
    m.forward(&Tensor::randn([8, 3]));
    m.eval();
    check_one("BnMlp, eval", m, &[5, 3]);
    let buffers: Vec<String> = NormedCnn::default()
        .named_buffers()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        buffers,
        ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    );
}

/// A derived module with a normalisation layer and a buffer of its own.
#[derive(Module)]
pub struct Standardised {
    pub fc: Linear,
    pub bn: BatchNorm1d,
    #[module(buffer)]
    pub offset: Tensor,
}

#[test]
fn derive_module_visits_buffers_and_modes() {
    let mut m = Standardised {
        fc: Linear::new(3, 2, &Device::Cpu),
        bn: BatchNorm1d::new(2, &Device::Cpu),
        offset: Tensor::zeros([2]),
    };
    assert_eq!(names(&m), ["fc.weight", "fc.bias", "bn.weight", "bn.bias"]);
    let buffers: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        buffers,
        [
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked",
            "offset"
        ]
    );
    assert!(m.state_dict().get("offset").is_some());
    m.to_dtype(DType::F64);
    assert_eq!(m.offset.dtype(), DType::F64);
    assert!(m.bn.is_training() && m.is_training());
    m.eval();
    assert!(!m.bn.is_training() && !m.is_training());
    m.train();
    assert!(m.bn.is_training() && m.is_training());
    // network! passes the mode on, and reports it.
    let mut net = BnMlp::default();
    net.eval();
    assert!(!net.is_training() && !net.1.is_training());
}

network! {
    /// Down and back up: a convolution and its transpose (channels checked).
    pub struct UpConv = Conv2d(1, 4, 3) -> ReLU -> ConvTranspose2d(4, 2, 3) -> Flatten
        -> Linear(72, 2);
}

#[test]
fn conv_transpose_in_a_network_gradients() {
    // [2, 1, 6, 6] -> [2, 4, 4, 4] -> [2, 2, 6, 6] -> [2, 72] -> [2, 2].
    check_one("UpConv", UpConv::default(), &[2, 1, 6, 6]);
}

network! {
    /// Two convolutions: the macro checks the channels (4 out, 4 in).
    pub struct ConvNet = Conv2d(2, 4, 3) -> Tanh -> Conv2d(4, 3, 2) -> Flatten -> Linear(12, 2);
}

#[test]
fn conv2d_in_a_network_gradients() {
    // [3, 2, 5, 5] -> [3, 4, 3, 3] -> [3, 3, 2, 2] -> [3, 12] -> [3, 2].
    check_one("ConvNet", ConvNet::default(), &[3, 2, 5, 5]);
}

network! {
    /// LeNet's shape in miniature: convolution, pooling, a classifier.
    pub struct TinyLeNet = Conv2d(1, 3, 3) -> ReLU -> MaxPool2d(2) -> Conv2d(3, 4, 2)
        -> AvgPool2d(2) -> Flatten -> Linear(4, 2);
}

#[test]
fn pooling_in_a_network_gradients() {
    // [2, 1, 8, 8] -> [2, 3, 6, 6] -> [2, 3, 3, 3] -> [2, 4, 2, 2] -> [2, 4, 1, 1] -> [2, 4].
    check_one("TinyLeNet", TinyLeNet::default(), &[2, 1, 8, 8]);
}

network! {
    /// A 1-D convolution over sequences, then a classifier.
    pub struct SeqConv = Conv1d(3, 5, 2) -> Tanh -> Flatten -> Linear(20, 2);
}

#[test]
fn conv1d_in_a_network_gradients() {
    // [2, 3, 5] -> [2, 5, 4] -> [2, 20] -> [2, 2].
    check_one("SeqConv", SeqConv::default(), &[2, 3, 5]);
}
