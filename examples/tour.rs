//! The tour of deriv: the steps of a PyTorch tutorial, in order, in Rust.
//! Each step prints its line of code and, like a notebook cell, the value it
//! gives: beside it when the value fits on the line, below it otherwise.
//!
//! Run: `cargo run --example tour` (the dev build `cargo test` shares; add
//! `--release` for an optimised one: same output, longer build).

#[path = "classification.rs"]
mod classification;
#[path = "cnn.rs"]
mod cnn;
#[path = "gradient_descent.rs"]
mod gradient_descent;
#[path = "jacobian.rs"]
mod jacobian;
#[path = "linear_regression.rs"]
mod linear_regression;
#[path = "lstm.rs"]
mod lstm;
#[path = "mlp_class.rs"]
mod mlp_class;
#[path = "mlp_sequential.rs"]
mod mlp_sequential;
#[path = "perceptron.rs"]
mod perceptron;
#[path = "trainer.rs"]
mod trainer;
#[path = "transformer.rs"]
mod transformer;

use std::path::Path;

use deriv::data::{
    read_csv, train_test_split, CsvOptions, DataLoader, StandardScaler, TabularDataset,
    TensorDataset,
};
use deriv::metrics::{self, Average};
use deriv::nn::functional as F;
use deriv::prelude::*;
use deriv::train::{Regressor, Trainer};

fn heading(title: &str) {
    println!("\n=== {title} ===");
}

/// A line of prose between the cells.
fn note(text: &str) {
    println!("# {text}");
}

/// Prints a cell: its code on one line (with the PyTorch spelling `py` as
/// a comment, when given), then its value beside it (one short line) or
/// indented below it (several lines, or a long one).
fn cell(code: &str, py: &str, value: &str) {
    // `stringify!` wraps long code; a cell shows it on one line.
    let mut code = code.split_whitespace().collect::<Vec<_>>().join(" ");
    if !py.is_empty() {
        code = format!("{code:<28} # {py}");
    }
    if value.is_empty() {
        println!("{code}");
    } else if value.contains('\n') || code.chars().count() + value.len() > 96 {
        println!("{code}");
        for line in value.lines() {
            if line.is_empty() {
                println!();
            } else {
                println!("    {line}");
            }
        }
    } else {
        println!("{code:<44} → {value}");
    }
}

/// `show!(expr)`: the expression and its value (`Display`); `show!(expr,
/// "x[:, 1:3]")` adds the PyTorch spelling as a comment.
macro_rules! show {
    ($e:expr) => {
        cell(stringify!($e), "", &format!("{}", $e))
    };
    ($e:expr, $py:literal) => {
        cell(stringify!($e), $py, &format!("{}", $e))
    };
}

/// `show_dbg!(expr)`: the expression and its value (`Debug`).
macro_rules! show_dbg {
    ($e:expr) => {
        cell(stringify!($e), "", &format!("{:?}", $e))
    };
}

/// `let_show!(name = expr)`: binds `name` and shows it, as `let name = expr;`.
macro_rules! let_show {
    ($name:ident = $e:expr) => {
        let $name = $e;
        cell(
            concat!("let ", stringify!($name), " = ", stringify!($e), ";"),
            "",
            &format!("{}", $name),
        );
    };
}

/// `run!(statement)`: prints the statement and runs it (its bindings stay
/// in scope).
macro_rules! run {
    ($($s:tt)*) => {
        cell(concat!(stringify!($($s)*), ";"), "", "");
        $($s)*;
    };
}

fn main() -> deriv::Result<()> {
    manual_seed(0);

    heading("1. Tensors of any rank");
    let_show!(a = tensor![[1., 2.], [3., 4.]]);
    let_show!(ids = tensor![3, 1, 4]);
    show!(ids.dtype());
    note("a minibatch of 8 one-second videos (25 frames of 400x400 RGB):");
    run!(let videos = Tensor::zeros([8, 25, 400, 400, 3]));
    show_dbg!(videos.shape());
    show!(videos.numel());
    show!(Tensor::randn([2, 3]));
    show!(Tensor::arange(0, 6, 1).reshape([2, 3]));
    show!(Tensor::linspace(0.0, 1.0, 5));
    show!(Tensor::eye(3));

    heading("2. Broadcasting, math and views");
    show!(a);
    let_show!(row = tensor![10., 20.]);
    show!(&a + &row);
    show!(&a * 2.0 - 1.0);
    show!(a.exp());
    show!(a.gt_scalar(2.0));
    show!(Tensor::where_cond(&a.gt_scalar(2.0), &a, &a.zeros_like()));
    let_show!(t = a.t());
    show!(t.shares_storage(&a));
    show!(Tensor::cat(&[a.clone(), a.clone()], 1));

    heading("3. Indexing and slicing: x.i(..) is PyTorch's x[..]");
    let_show!(x = Tensor::arange(0., 24., 1.).reshape([2, 3, 4]));
    show!(x.i(0), "x[0]");
    show!(x.i((.., 1..3)), "x[:, 1:3]");
    show!(x.i((Ellipsis, -1)), "x[..., -1]");
    show!(x.i((1, .., 0)), "x[1, :, 0]");
    show!(x.slice(1, 1..).slice_step(2, .., 2), "x[:, 1:, ::2]");
    note("any integer range works, e.g. a usize from shape():");
    run!(let n = x.shape()[2]);
    show!(x.slice(2, 1..n), "x[:, :, 1:n]");
    show_dbg!(x.permute(&[2, 0, -2]).shape());

    heading("4. Reductions and matmul");
    show!(x);
    show!(x.sum());
    show!(x.mean_dim(2, false));
    run!(let (values, indices) = x.max_dim(1, false));
    show!(values);
    show!(indices);
    note("var and std are unbiased (correction 1), as in PyTorch:");
    show!(x.var());
    show!(x.std());
    show!(a.matmul(&a));
    show_dbg!(x.matmul(&Tensor::ones([4, 2])).shape());

    heading("5. In-place ops end with _");
    run!(let b = Tensor::zeros([3]));
    show!(b.add_(1.0).mul_(3.0));
    note("writing through a view changes the tensor it views:");
    run!(b.narrow(0, 0, 1).fill_(-1.0));
    show!(b);

    heading("6. Autograd");
    let_show!(w = tensor![[0.5, -1.0], [2.0, 0.1]].requires_grad_(true));
    let_show!(y = w.matmul(&a).relu().mean());
    run!(y.backward_retain());
    show!(w.grad().unwrap());
    note("a second backward accumulates into .grad():");
    run!(y.backward());
    show!(w.grad().unwrap());
    run!(w.grad().unwrap().zero_());
    show!(w.grad().unwrap());
    show!(no_grad(|| &w * 2.0).requires_grad());

    heading("7. Example 0: gradient descent with autograd");
    note("minimise (x1 - 3)² + (x2 + 2)² from (0, 0), 100 steps of lr 0.1:");
    show_dbg!(gradient_descent::descend(100, 0.1, false));

    heading("8. Linear regression with minibatches");
    note("(learnt W, learnt b, true W, true b):");
    show_dbg!(linear_regression::fit(false));

    heading("9. Vector-Jacobian products");
    note("vᵀJ from backward_with against the analytic Jacobian, max difference:");
    show!(jacobian::max_error(false));

    heading("10. Devices");
    let_show!(device = Device::Cpu);
    show!(Tensor::ones_on([2, 2], &device));
    show!(a.to(&device).device());
    show!(Device::cuda_if_available());

    heading("11. Checking gradients");
    show!(deriv::gradcheck(
        |t| t[0].matmul(&t[1]).sigmoid().sum(),
        &[Tensor::randn([3, 4]), Tensor::randn([4, 2])]
    ));

    heading("12. A network as a sequence of layers (network!, compile-time backward)");
    note("mlp_sequential::Mlp is Linear(2, 16) -> ReLU -> Linear(16, 1):");
    run!(let mlp = mlp_sequential::Mlp::default());
    show_dbg!(mlp
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect::<Vec<_>>());
    note("trained with forward_train + the generated backward, held-out accuracy:");
    show!(mlp_sequential::train(false));

    heading("13. A network as a class with a custom forward (residual, log_softmax)");
    note("tape vs compile-time gradients on one batch, max difference:");
    show!(mlp_class::paths_difference());
    note("trained through the tape (loss.backward()), held-out accuracy:");
    show!(mlp_class::train(false));

    heading("14. Data: a CSV file, splits, a scaler, a DataLoader; regression");
    run!(let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/data/iris.csv"));
    note("the file's first lines (N_SAMPLES,N_FEATURES,CLASS_NAMES, then features and label):");
    for line in std::fs::read_to_string(&path)?.lines().take(3) {
        println!("    {line}");
    }
    run!(let iris = TabularDataset::from_csv(&path)?);
    show_dbg!((iris.len(), iris.num_features(), &iris.class_names));
    show_dbg!(iris.class_counts());
    note("the same file as a plain table; predict petal width from the other three:");
    run!(let table = read_csv(&path, &CsvOptions::new().skip_rows(1).has_header(false))?);
    show_dbg!(table.shape());
    run!(let (x, y) = (table.i((.., 0..3)), table.i((.., 3))));
    run!(let (x_train, x_test, y_train, y_test) = train_test_split(&x, &y, 0.2, 42));
    run!(let scaler = StandardScaler::fit(&x_train));
    run!(let (x_train, x_test) = (scaler.transform(&x_train), scaler.transform(&x_test)));
    run!(let loader = DataLoader::new(TensorDataset::new((x_train, y_train)), 16).shuffle(true).seed(0));
    run!(let mut model = Regressor::new(Linear::new(3, 1, &device)).optimizer(|p| Adam::new(p, 0.05)));
    run!(let history = Trainer::new().max_epochs(60).quiet().fit(&mut model, &loader, None)?);
    show!(history.last("train_r2").unwrap());
    run!(let pred = model.predict(&x_test));
    show!(metrics::r2_score(&y_test, &pred));
    show!(metrics::mean_absolute_error(&y_test, &pred));
    note("a bundled data set, standardised, in minibatches:");
    run!(let (train_set, test_set) = deriv::datasets::breast_cancer().standardized_split(0.2, 42));
    run!(let loader = DataLoader::new(train_set, 16).shuffle(true).seed(0));
    show_dbg!((loader.dataset().len(), test_set.len(), loader.len()));
    run!(let (xb, yb) = loader.iter().next().unwrap());
    show_dbg!((xb.shape(), yb.shape()));

    heading("15. Losses and optimizers");
    let_show!(logits = tensor![[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]);
    let_show!(classes = tensor![0i64, 2]);
    show!(F::cross_entropy(&logits, &classes));
    show!(CrossEntropyLoss::new()
        .label_smoothing(0.1)
        .forward(&logits, &classes));
    show!(F::binary_cross_entropy_with_logits(
        &tensor![100.0, -100.0],
        &tensor![1.0, 0.0]
    ));
    show!(F::huber_loss(&tensor![0.5, 3.0], &tensor![0.0, 0.0]));
    note("the seed's perceptron, by hand (W, b leaves, updates under no_grad), accuracy:");
    show!(perceptron::train(false));
    note("nn::Linear + SGD(momentum 0.9) + DataLoader(batch 16), accuracy:");
    show!(classification::train(false));

    heading("16. The Trainer (compile-time backward), metrics, checkpoints, safetensors");
    note("an MLP on the digits, 30 epochs with Adam:");
    run!(let (digits_model, test) = trainer::fit(30, false)?);
    run!(let predicted = digits_model.predict(&test.features));
    show!(metrics::accuracy(&test.targets, &predicted));
    show!(metrics::f1_score(&test.targets, &predicted, Average::Macro));
    show!(metrics::confusion_matrix(&test.targets, &predicted));
    note("a CNN (Conv2d, MaxPool2d) on the digits as 1x8x8 images, 15 epochs:");
    show!(cnn::train(15, false)?);
    note("an LSTM reading each digit as 8 rows of 8 pixels, 5 epochs (the lstm example runs 15):");
    show!(lstm::train(5, false)?);
    note("a transformer encoder learning to sort 6 digits, 100 steps (the example runs 600):");
    show!(transformer::train(100, false));
    run!(let path = std::env::temp_dir().join("deriv-tour-mlp.safetensors"));
    run!(mlp.save_safetensors(&path)?);
    run!(let mut reloaded = mlp_sequential::Mlp::default());
    run!(reloaded.load_safetensors(&path)?);
    show!(reloaded.state_dict().len());
    note("PyTorch's safetensors.torch.load_file reads the same file.");
    Ok(())
}
