//! The tour of deriv: the steps of a PyTorch tutorial, in order, in Rust.
//!
//! Run: `cargo run --release --example tour`

#[path = "classification.rs"]
mod classification;
#[path = "gradient_descent.rs"]
mod gradient_descent;
#[path = "jacobian.rs"]
mod jacobian;
#[path = "linear_regression.rs"]
mod linear_regression;
#[path = "mlp_class.rs"]
mod mlp_class;
#[path = "mlp_sequential.rs"]
mod mlp_sequential;
#[path = "perceptron.rs"]
mod perceptron;
#[path = "trainer.rs"]
mod trainer;

use deriv::nn::Module;
use deriv::prelude::*;

fn heading(title: &str) {
    println!("\n=== {title} ===");
}

fn main() {
    manual_seed(0);

    heading("1. Tensors of any rank");
    let a = tensor![[1., 2.], [3., 4.]];
    println!("a = {a}");
    let ids = tensor![3, 1, 4];
    println!("integer literals give i64: {ids}  dtype={}", ids.dtype());
    let videos = Tensor::zeros([8, 25, 400, 400, 3]);
    println!(
        "a minibatch of 8 one-second videos: shape {:?}, {} elements",
        videos.shape(),
        videos.numel()
    );
    println!("randn(2, 3) = {}", Tensor::randn([2, 3]));
    println!(
        "arange(0, 6).reshape(2, 3) = {}",
        Tensor::arange(0, 6, 1).reshape([2, 3])
    );
    println!("linspace(0, 1, 5) = {}", Tensor::linspace(0.0, 1.0, 5));
    println!("eye(3) = {}", Tensor::eye(3));

    heading("2. Broadcasting, math and views");
    let row = tensor![10., 20.];
    println!("a + row (broadcast [2,2] with [2]) = {}", &a + &row);
    println!("a * 2 - 1 = {}", &a * 2.0 - 1.0);
    println!("a.exp() = {}", a.exp());
    println!("a > 2 = {}", a.gt_scalar(2.0));
    println!(
        "where(a > 2, a, 0) = {}",
        Tensor::where_cond(&a.gt_scalar(2.0), &a, &a.zeros_like())
    );
    let t = a.t();
    println!(
        "a.t() = {t}  (a view: shares storage = {})",
        t.shares_storage(&a)
    );
    let x = Tensor::arange(0., 24., 1.).reshape([2, 3, 4]);
    println!("x[:, 1:, ::2] = {}", x.slice(1, 1..).slice_step(2, .., 2));
    println!(
        "cat([a, a], 1) = {}",
        Tensor::cat(&[a.clone(), a.clone()], 1)
    );

    heading("3. Reductions and matmul");
    println!(
        "x.sum() = {}   x.mean(dim 2) = {}",
        x.sum(),
        x.mean_dim(2, false)
    );
    let (values, indices) = x.max_dim(1, false);
    println!("x.max(dim 1) = values {values}, indices {indices}");
    println!("x.var() (unbiased) = {}   x.std() = {}", x.var(), x.std());
    println!("a @ a = {}", a.matmul(&a));
    println!(
        "batched [2,3,4] @ [4,2] -> {:?}",
        x.matmul(&Tensor::ones([4, 2])).shape()
    );

    heading("4. In-place ops end with _");
    let b = Tensor::zeros([3]);
    b.add_(1.0).mul_(3.0);
    println!("zeros(3).add_(1).mul_(3) = {b}");
    b.narrow(0, 0, 1).fill_(-1.0);
    println!("after writing through a view: {b}");

    heading("5. Autograd");
    let w = tensor![[0.5, -1.0], [2.0, 0.1]].requires_grad_(true);
    let y = w.matmul(&a).relu().mean();
    println!("y = {y}");
    y.backward_retain();
    println!("dy/dw = {}", w.grad().unwrap());
    y.backward();
    println!(
        "after a second backward (gradients accumulate): {}",
        w.grad().unwrap()
    );
    w.grad().unwrap().zero_();
    println!("after w.grad().zero_(): {}", w.grad().unwrap());
    let frozen = no_grad(|| &w * 2.0);
    println!(
        "computed under no_grad: requires_grad = {}",
        frozen.requires_grad()
    );

    heading("6. Example 0: gradient descent with autograd");
    let (x1, x2) = gradient_descent::descend(100, 0.1, false);
    println!("minimise (x1 - 3)² + (x2 + 2)² from (0, 0): ({x1:.4}, {x2:.4})");

    heading("7. Linear regression with minibatches");
    let (w_fit, b_fit, w_true, b_true) = linear_regression::fit(false);
    println!("learnt W = {w_fit:.3?}, b = {b_fit:.3}; true W = {w_true:.3?}, b = {b_true:.3}");

    heading("8. Vector-Jacobian products");
    println!(
        "vᵀJ from backward_with vs the analytic Jacobian: max difference {:.1e}",
        jacobian::max_error(false)
    );

    heading("9. Devices");
    let device = Device::Cpu;
    let on_device = Tensor::ones_on([2, 2], &device);
    println!(
        "created on {}: {}; moved: {}",
        device,
        on_device,
        a.to(&device).device()
    );

    heading("10. Checking gradients");
    let report = deriv::gradcheck(
        |t| t[0].matmul(&t[1]).sigmoid().sum(),
        &[Tensor::randn([3, 4]), Tensor::randn([4, 2])],
    );
    println!("{report}");

    heading("11. A network as a sequence of layers (network!, compile-time backward)");
    let mlp = mlp_sequential::Mlp::default();
    let names: Vec<String> = mlp.named_parameters().into_iter().map(|(n, _)| n).collect();
    println!("Linear(2, 16) -> ReLU -> Linear(16, 1): parameters {names:?}");
    println!(
        "trained with forward_train + the generated backward: held-out accuracy {:.3}",
        mlp_sequential::train(false)
    );

    heading("12. A network as a class with a custom forward (residual, log_softmax)");
    println!(
        "tape vs compile-time gradients on one batch: max difference {:.1e}",
        mlp_class::paths_difference()
    );
    println!(
        "trained through the tape (loss.backward()): held-out accuracy {:.3}",
        mlp_class::train(false)
    );

    heading("13. Data: bundled data sets, CSV, DataLoader");
    let cancer = deriv::datasets::breast_cancer();
    println!(
        "breast_cancer(): {} samples, {} features, classes {:?}",
        cancer.len(),
        cancer.num_features(),
        cancer.class_names
    );
    let (train_set, test_set) = cancer.standardized_split(0.2, 42);
    let loader = deriv::data::DataLoader::new(train_set, 16)
        .shuffle(true)
        .seed(0);
    let (xb, yb) = loader.iter().next().unwrap();
    println!(
        "{} train / {} test; DataLoader(batch 16): {} batches, the first {:?} and {:?}",
        loader.dataset().len(),
        test_set.len(),
        loader.len(),
        xb.shape(),
        yb.shape()
    );

    heading("14. Losses and optimizers");
    let logits = tensor![[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]];
    let classes = tensor![0i64, 2];
    println!(
        "cross_entropy = {:.4}; with label_smoothing 0.1 = {:.4}; bce_with_logits(±100) = {:.4}",
        deriv::nn::functional::cross_entropy(&logits, &classes).item(),
        deriv::nn::CrossEntropyLoss::new()
            .label_smoothing(0.1)
            .forward(&logits, &classes)
            .item(),
        deriv::nn::functional::binary_cross_entropy_with_logits(
            &tensor![100.0, -100.0],
            &tensor![1.0, 0.0]
        )
        .item()
    );
    println!(
        "the seed's perceptron, by hand (W, b leaves, updates under no_grad): accuracy {:.3}",
        perceptron::train(false)
    );
    println!(
        "nn::Linear + SGD(momentum 0.9) + DataLoader(batch 16): accuracy {:.3}",
        classification::train(false)
    );

    heading("15. The Trainer (compile-time backward), checkpoints, safetensors");
    println!(
        "MLP on the digits, 30 epochs with Adam: held-out accuracy {:.3}",
        trainer::train(30, false).expect("training writes no files here")
    );
    let path = std::env::temp_dir().join("deriv-tour-mlp.safetensors");
    mlp.save_safetensors(&path).expect("temp dir is writable");
    let mut reloaded = mlp_sequential::Mlp::default();
    reloaded.load_safetensors(&path).expect("just written");
    println!(
        "saved and reloaded {} tensors from {} (PyTorch's safetensors.torch.load_file reads it)",
        reloaded.state_dict().len(),
        path.display()
    );
}
