//! GPU tests (the `cuda` feature): every op, forward and backward, on the GPU
//! against the same op on the CPU, a short training run on both, the fused
//! optimizer kernels against their formulas, and the allocator. Without a
//! usable GPU each GPU test prints why it skipped, and passes.

use std::panic::{catch_unwind, AssertUnwindSafe};

use deriv::backend::cuda;
use deriv::optim::cuda as fused;

#[path = "common/op_table.rs"]
mod op_table;
use deriv::nn::{Forward, Linear, Module};
use deriv::{manual_seed, no_grad, DType, Device, Generator, Tensor, TensorOptions};

/// `DERIV_CUDA_TESTS_ON_CPU=1` runs the comparison tests with the CPU in
/// the GPU's place: a check of the tests themselves on machines without a GPU.
fn self_check() -> bool {
    std::env::var_os("DERIV_CUDA_TESTS_ON_CPU").is_some()
}

/// The GPU to test on, or `None` after printing why the test skips.
fn gpu(test: &str, cpu_stand_in: bool) -> Option<Device> {
    match Device::cuda_unavailable_reason() {
        None => Some(Device::Cuda(0)),
        Some(_) if cpu_stand_in && self_check() => Some(Device::Cpu),
        Some(why) => {
            println!("{test}: skipped, no CUDA device: {why}");
            None
        }
    }
}

/// The device to compare against the CPU (the CPU itself in self-check mode).
macro_rules! need_gpu {
    () => {
        match gpu(module_path!(), true) {
            Some(d) => d,
            None => return,
        }
    };
}

/// A real GPU (tests of GPU-only behaviour).
macro_rules! need_real_gpu {
    () => {
        match gpu(module_path!(), false) {
            Some(d) => d,
            None => return,
        }
    };
}

/// Asserts a GPU result equals the CPU one: same shape, dtype and device
/// kind, values within `tol` (absolute + relative).
#[track_caller]
fn assert_close(what: &str, cpu: &Tensor, gpu: &Tensor, tol: f64) {
    assert!(
        gpu.device().is_cuda() || self_check(),
        "{what}: the GPU result is on {}",
        gpu.device()
    );
    assert_eq!(cpu.shape(), gpu.shape(), "{what}: shapes differ");
    assert_eq!(cpu.dtype(), gpu.dtype(), "{what}: dtypes differ");
    let (a, b) = (cpu.to_vec::<f64>(), gpu.to_vec::<f64>());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= tol * (1.0 + x.abs());
        assert!(
            ok,
            "{what}: element {i}: cpu {x} vs gpu {y} (tolerance {tol})"
        );
    }
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn_with(shape, &mut Generator::new(seed))
}

/// Runs `f` on CPU inputs and on the same inputs moved to `dev`, seeds
/// backward with the same random gradient, and compares the outputs and
/// every input's gradient.
#[track_caller]
fn check_op(what: &str, dev: Device, inputs: &[Tensor], tol: f64, f: impl Fn(&[Tensor]) -> Tensor) {
    let cpu_in: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.detach().requires_grad_(t.dtype().is_float()))
        .collect();
    let gpu_in: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to(&dev).detach().requires_grad_(t.dtype().is_float()))
        .collect();
    let yc = f(&cpu_in);
    let yg = f(&gpu_in);
    assert_close(what, &yc, &yg, tol);
    if !yc.requires_grad() {
        return;
    }
    let seed = randn(yc.shape(), 99).to_dtype(yc.dtype());
    yc.backward_with(&seed);
    yg.backward_with(&seed.to(&dev));
    for (i, (a, b)) in cpu_in.iter().zip(&gpu_in).enumerate() {
        match (a.grad(), b.grad()) {
            (Some(ga), Some(gb)) => {
                assert_close(&format!("{what}: grad of input {i}"), &ga, &gb, tol)
            }
            (None, None) => {}
            (ga, gb) => {
                panic!("{what}: input {i} has a gradient on one device only ({ga:?} / {gb:?})")
            }
        }
    }
}

// ------------------------------------------------------------ without a GPU too

#[test]
fn write_ptx() {
    // scripts/check-ptx.sh runs this to get the PTX for ptxas.
    let ptx = cuda::ptx_source();
    assert!(ptx.starts_with(".version 8.0\n.target sm_80"));
    for k in [
        "ew_add_f32_c",
        "ew_add_f32_s",
        "gemm_f32_nn_v",
        "reduce_max_f32",
        "gather_f32",
        "opt_adam_f32",
    ] {
        assert!(
            ptx.contains(&format!(".entry {k}(")),
            "kernel {k} is missing"
        );
    }
    let ops = deriv::ops::registry::cuda_modules();
    assert!(ops
        .iter()
        .any(|(k, src)| *k == "gelu" && src.contains(".entry un_gelu_f32_c(")));
    if let Ok(path) = std::env::var("DERIV_PTX_OUT") {
        std::fs::write(&path, &ptx).expect("write the PTX");
        println!("wrote {} bytes of PTX to {path}", ptx.len());
        // Each op's own module beside it: deriv.op.<key>.ptx.
        let dir = std::path::Path::new(&path).parent().expect("a folder");
        for (key, src) in &ops {
            std::fs::write(dir.join(format!("deriv.op.{key}.ptx")), src).expect("write the PTX");
        }
        println!("wrote {} op modules", ops.len());
    }
}

#[test]
fn device_names_and_availability() {
    assert_eq!(Device::Cuda(0).to_string(), "cuda:0");
    assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
    assert!(Device::Cuda(1).is_cuda() && !Device::Cuda(1).is_cpu());
    let n = Device::cuda_device_count();
    assert_eq!(Device::cuda_is_available(), n > 0);
    assert_eq!(Device::cuda_unavailable_reason().is_none(), n > 0);
    let expect = if n > 0 { Device::Cuda(0) } else { Device::Cpu };
    assert_eq!(Device::cuda_if_available(), expect);
    if n == 0 {
        // Naming an absent GPU is a clear panic, not a crash.
        let err = catch_unwind(|| Tensor::zeros_on([2], &Device::Cuda(0))).unwrap_err();
        let msg = err
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.contains("cuda:0"), "message: {msg}");
        println!("no GPU here: creating on cuda:0 panics with: {msg}");
    }
}

#[test]
fn same_program_runs_on_the_chosen_device() {
    // What a user writes: pick a device, create there, compute, read back.
    let dev = Device::cuda_if_available();
    let x = Tensor::arange_opts(0.0, 6.0, 1.0, &TensorOptions::new().device(&dev)).reshape([2, 3]);
    assert_eq!(x.device(), dev);
    let y = (&x * 2.0 + 1.0).sum_dim(1, false);
    assert_eq!(y.to_vec::<f32>(), vec![9.0, 27.0]);
    assert_eq!(y.to(&Device::Cpu).device(), Device::Cpu);
}

// ------------------------------------------------------------ GPU tests

#[test]
fn transfers_and_creation() {
    let dev = need_real_gpu!();
    let x = randn(&[3, 5], 1);
    let g = x.to(&dev);
    assert_eq!(g.device(), dev);
    assert_eq!(g.to_vec::<f32>(), x.to_vec::<f32>());
    // A strided view travels as its values.
    assert_eq!(
        g.t().to(&Device::Cpu).to_vec::<f32>(),
        x.t().to_vec::<f32>()
    );
    assert_eq!(g.t().to_vec::<f32>(), x.t().to_vec::<f32>());
    for dt in [DType::F32, DType::F64, DType::I64, DType::Bool] {
        let opts = TensorOptions::new().dtype(dt).device(&dev);
        let z = Tensor::full_opts([2, 3], 1.0, &opts);
        assert_eq!(z.device(), dev);
        assert_eq!(z.dtype(), dt);
        assert_eq!(z.to_vec::<f64>(), vec![1.0; 6]);
        let c = Tensor::full_opts([4], 3.0, &TensorOptions::new().dtype(dt)).to(&dev);
        assert_eq!(
            c.to_vec::<f64>(),
            vec![if dt == DType::Bool { 1.0 } else { 3.0 }; 4]
        );
    }
    assert_eq!(Tensor::zeros_on([0], &dev).numel(), 0);
    assert_eq!(g.sum().item(), x.sum().item() as f32 as f64);
    let printed = format!("{g}");
    assert!(
        printed.contains("device=cuda:0") || printed.contains("cuda"),
        "{printed}"
    );
    manual_seed(5);
    let r1 = Tensor::zeros_on([64], &dev).rand_like();
    manual_seed(5);
    let r2 = Tensor::zeros([64]).rand_like();
    assert_close("rand_like on the device", &r2, &r1, 0.0);
}

#[test]
fn mixed_devices_are_an_error_naming_both() {
    let dev = need_real_gpu!();
    let a = Tensor::ones([3]);
    let b = Tensor::ones([3]).to(&dev);
    let msg = a.try_add(&b).unwrap_err().to_string();
    assert!(msg.contains("cpu") && msg.contains("cuda:0"), "{msg}");
    let msg = b.try_matmul(&Tensor::ones([3, 2])).unwrap_err().to_string();
    assert!(msg.contains("cpu") && msg.contains("cuda:0"), "{msg}");
    // A 0-d CPU tensor is a number, and combines with any device (as in PyTorch).
    assert_eq!((&b * &Tensor::scalar(2f32)).to_vec::<f32>(), vec![2.0; 3]);
}

#[test]
fn unary_ops_forward_and_backward() {
    let dev = need_gpu!();
    let x = randn(&[7, 33], 2);
    let pos = x.abs() + 0.1;
    type F = fn(&Tensor) -> Tensor;
    let ops: &[(&str, F, bool)] = &[
        ("neg", |x| -x, false),
        ("exp", |x| x.exp(), false),
        ("log", |x| x.log(), true),
        ("sqrt", |x| x.sqrt(), true),
        ("abs", |x| x.abs(), false),
        ("relu", |x| x.relu(), false),
        ("sigmoid", |x| x.sigmoid(), false),
        ("tanh", |x| x.tanh(), false),
        ("square", |x| x.square(), false),
        ("pow 3", |x| x.pow_scalar(3.0), false),
        ("pow -2", |x| x.pow_scalar(-2.0), true),
        ("pow 0.5", |x| x.pow_scalar(0.5), true),
        ("clamp", |x| x.clamp(Some(-0.5), Some(0.7)), false),
        ("add 1.5", |x| x + 1.5, false),
        ("sub 1.5", |x| x - 1.5, false),
        ("mul 3", |x| x * 3.0, false),
        ("div 4", |x| x / 4.0, false),
        ("rsub", |x| 1.0 - x, false),
        ("softmax", |x| x.softmax(1), false),
        ("log_softmax", |x| x.log_softmax(1), false),
        ("softmax dim 0", |x| x.softmax(0), false),
        ("log_softmax dim 0", |x| x.log_softmax(0), false),
    ];
    for (name, f, positive) in ops {
        let input = if *positive { &pos } else { &x };
        check_op(name, dev, std::slice::from_ref(input), 2e-5, |t| f(&t[0]));
        // The same op on a strided (transposed) view.
        check_op(
            &format!("{name} (transposed)"),
            dev,
            std::slice::from_ref(input),
            2e-5,
            |t| f(&t[0].t()),
        );
    }
    // f64 arithmetic runs on the GPU too.
    let x64 = x.to_dtype(DType::F64);
    for (name, f) in [
        ("neg", (|x: &Tensor| -x) as F),
        ("sqrt", |x| x.abs().sqrt()),
        ("relu", |x| x.relu()),
    ] {
        check_op(
            &format!("{name} f64"),
            dev,
            std::slice::from_ref(&x64),
            1e-12,
            |t| f(&t[0]),
        );
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    let dev = need_gpu!();
    let a = randn(&[4, 1, 6], 3);
    let b = randn(&[5, 6], 4);
    let bp = b.abs() + 0.5;
    type F = fn(&Tensor, &Tensor) -> Tensor;
    let ops: &[(&str, F)] = &[
        ("add", |a, b| a + b),
        ("sub", |a, b| a - b),
        ("mul", |a, b| a * b),
        ("div", |a, b| a / b),
        ("maximum", |a, b| a.maximum(b)),
        ("minimum", |a, b| a.minimum(b)),
        ("pow", |a, b| a.abs().pow(b)),
        ("add_scaled", |a, b| a.add_scaled(b, -0.25)),
        ("where", |a, b| Tensor::where_cond(&a.gt(b), a, b)),
    ];
    for (name, f) in ops {
        check_op(name, dev, &[a.clone(), bp.clone()], 2e-5, |t| {
            f(&t[0], &t[1])
        });
        check_op(
            &format!("{name} (strided)"),
            dev,
            &[a.clone(), b.t().contiguous()],
            2e-5,
            |t| f(&t[0], &t[1].t()),
        );
    }
    for (name, f) in [
        ("eq", (|a: &Tensor, b: &Tensor| a.eq(b)) as F),
        ("ne", |a, b| a.ne(b)),
        ("lt", |a, b| a.lt(b)),
        ("le", |a, b| a.le(b)),
        ("gt", |a, b| a.gt(b)),
        ("ge", |a, b| a.ge(b)),
    ] {
        let c = a.round_to(&b);
        check_op(name, dev, &[a.clone(), c.clone()], 0.0, |t| f(&t[0], &t[1]));
    }
    // Integers stay exact.
    let i = Tensor::from_vec((0..12i64).map(|v| v * 1_000_000_007).collect(), [3, 4]);
    let j = Tensor::from_vec(vec![3i64, -2, 5, 7], [4]);
    for (name, f) in [
        ("i64 add", (|a: &Tensor, b: &Tensor| a + b) as F),
        ("i64 mul", |a, b| a * b),
        ("i64 sub", |a, b| a - b),
        ("i64 max", |a, b| a.maximum(b)),
        ("i64 neg", |a, _| -a),
        ("i64 abs", |a, _| (-a).abs()),
        ("i64 clamp", |a, _| {
            a.clamp(Some(5.0), Some(3_000_000_000.0))
        }),
    ] {
        check_op(name, dev, &[i.clone(), j.clone()], 0.0, |t| f(&t[0], &t[1]));
    }
}

trait RoundTo {
    fn round_to(&self, like: &Tensor) -> Tensor;
}
impl RoundTo for Tensor {
    /// A tensor shaped like `like` that equals `self` in some places, so
    /// comparisons see ties.
    fn round_to(&self, like: &Tensor) -> Tensor {
        let s = self.sum_dim(0, false);
        Tensor::where_cond(&like.gt_scalar(0.0), &s, like)
    }
}

#[test]
fn casts_between_all_dtypes() {
    let dev = need_gpu!();
    let x = Tensor::from_vec(
        vec![-2.7f32, -0.0, 0.4, 1.0, 3.9, f32::NAN, 1e20, -1e20],
        [8],
    );
    let all = [DType::F32, DType::F64, DType::I64, DType::Bool];
    for from in all {
        let src = x.to_dtype(from);
        for to in all {
            check_op(
                &format!("cast {from} -> {to}"),
                dev,
                std::slice::from_ref(&src),
                0.0,
                |t| t[0].to_dtype(to),
            );
        }
    }
}

#[test]
fn reductions() {
    let dev = need_gpu!();
    let x = randn(&[6, 5, 70], 5);
    type F = fn(&Tensor) -> Tensor;
    let ops: &[(&str, F)] = &[
        ("sum", |x| x.sum()),
        ("sum dim 2", |x| x.sum_dim(2, false)),
        ("sum dims 0,2 keepdim", |x| x.sum_dim([0, 2], true)),
        ("mean dim 1", |x| x.mean_dim(1, false)),
        ("mean", |x| x.mean()),
        ("max", |x| x.max()),
        ("min", |x| x.min()),
        ("max_dim 2", |x| x.max_dim(2, false).0),
        ("min_dim 0", |x| x.min_dim(0, true).0),
        ("argmax dim 1", |x| x.argmax_dim(1, false)),
        ("argmin dim 2", |x| x.argmin_dim(2, true)),
        ("var dim 2", |x| x.var_dim(2, 1, false)),
        ("std", |x| x.std()),
        ("sum_to", |x| x.sum_to(&[1, 70])),
    ];
    for (name, f) in ops {
        check_op(name, dev, std::slice::from_ref(&x), 1e-4, |t| f(&t[0]));
        check_op(
            &format!("{name} (permuted)"),
            dev,
            std::slice::from_ref(&x),
            1e-4,
            |t| f(&t[0].permute(&[1, 0, 2])),
        );
    }
    // A long row (two passes), integers and bools.
    let long = randn(&[1 << 20], 6);
    check_op("sum of 2^20", dev, std::slice::from_ref(&long), 1e-4, |t| {
        t[0].sum()
    });
    let i = Tensor::from_vec((0..300i64).collect(), [3, 100]);
    check_op("i64 sum", dev, std::slice::from_ref(&i), 0.0, |t| {
        t[0].sum_dim(1, false)
    });
    check_op("bool sum", dev, std::slice::from_ref(&i), 0.0, |t| {
        t[0].gt_scalar(150.0).sum()
    });
    // Ties go to the first index, NaN wins.
    let t = Tensor::from_vec(vec![1f32, 3., 3., 2., f32::NAN, 5., f32::NAN, 0.], [2, 4]);
    check_op(
        "argmax ties and NaN",
        dev,
        std::slice::from_ref(&t),
        0.0,
        |t| t[0].argmax_dim(1, false),
    );
    check_op("max NaN", dev, std::slice::from_ref(&t), 0.0, |t| {
        t[0].max_dim(1, false).0
    });
}

#[test]
fn fused_softmax_along_any_dim() {
    let dev = need_gpu!();
    let x = randn(&[3, 300, 5], 24) * 4.0;
    for d in [0isize, 1, 2, -1] {
        check_op(
            &format!("softmax dim {d}"),
            dev,
            std::slice::from_ref(&x),
            2e-5,
            |t| t[0].softmax(d),
        );
        check_op(
            &format!("log_softmax dim {d}"),
            dev,
            std::slice::from_ref(&x),
            2e-5,
            |t| t[0].log_softmax(d),
        );
    }
    // A NaN poisons its row only, as on the CPU.
    let n = Tensor::from_vec(vec![1f32, f32::NAN, 2., 0., 1., 2.], [2, 3]);
    check_op(
        "softmax with NaN",
        dev,
        std::slice::from_ref(&n),
        2e-6,
        |t| t[0].softmax(1),
    );
}

#[test]
fn matmul_shapes_layouts_and_batches() {
    let dev = need_gpu!();
    let cases: &[(&[usize], &[usize])] = &[
        (&[1, 1], &[1, 1]),
        (&[3, 5], &[5, 7]),
        (&[129, 67], &[67, 131]),
        (&[128, 256], &[256, 64]),
        (&[7], &[7, 9]),
        (&[9, 7], &[7]),
        (&[7], &[7]),
        (&[4, 33, 17], &[17, 20]),
        (&[2, 1, 12, 16], &[3, 16, 8]),
        (&[5, 0], &[0, 3]),
    ];
    for (sa, sb) in cases {
        let (a, b) = (randn(sa, 7), randn(sb, 8));
        check_op(
            &format!("matmul {sa:?} x {sb:?}"),
            dev,
            &[a.clone(), b.clone()],
            1e-4,
            |t| t[0].matmul(&t[1]),
        );
    }
    // Transposed operands (the Linear layer's x·Wᵀ and its backward).
    let (a, b) = (randn(&[40, 64], 9), randn(&[72, 64], 10));
    check_op("a · bᵀ", dev, &[a.clone(), b.clone()], 1e-4, |t| {
        t[0].matmul(&t[1].t())
    });
    check_op(
        "aᵀ · b",
        dev,
        &[a.t().contiguous(), b.t().contiguous()],
        1e-4,
        |t| t[0].t().matmul(&t[1]),
    );
    check_op(
        "aᵀ · bᵀ (odd sizes)",
        dev,
        &[randn(&[13, 11], 1), randn(&[5, 13], 2)],
        1e-4,
        |t| t[0].t().matmul(&t[1].t()),
    );
    // A sliced operand (offset, row stride) and f64.
    let big = randn(&[50, 70], 11);
    check_op(
        "sliced",
        dev,
        &[big.clone(), randn(&[30, 20], 12)],
        1e-4,
        |t| t[0].narrow(0, 3, 40).narrow(1, 5, 30).matmul(&t[1]),
    );
    check_op(
        "f64",
        dev,
        &[a.to_dtype(DType::F64), b.to_dtype(DType::F64)],
        1e-10,
        |t| t[0].matmul(&t[1].t()),
    );
}

#[test]
fn shape_copies() {
    let dev = need_gpu!();
    let x = randn(&[4, 6, 5], 13);
    check_op(
        "contiguous of permuted",
        dev,
        std::slice::from_ref(&x),
        0.0,
        |t| t[0].permute(&[2, 0, 1]).contiguous(),
    );
    check_op(
        "expand + contiguous",
        dev,
        &[randn(&[1, 6, 1], 14)],
        0.0,
        |t| t[0].expand([4, 6, 5]).contiguous(),
    );
    check_op(
        "cat dim 1",
        dev,
        &[x.clone(), randn(&[4, 2, 5], 15)],
        0.0,
        |t| Tensor::cat(&[t[0].clone(), t[1].clone()], 1),
    );
    check_op(
        "stack",
        dev,
        &[x.clone(), randn(&[4, 6, 5], 16)],
        0.0,
        |t| Tensor::stack(&[t[0].clone(), t[1].clone()], 0),
    );
    let idx = Tensor::from_vec(vec![3i64, 0, 3, 1], [4]);
    check_op(
        "index_select dim 1",
        dev,
        std::slice::from_ref(&x),
        0.0,
        |t| t[0].index_select(1, &idx),
    );
    check_op(
        "index_select dim 0 (transposed)",
        dev,
        std::slice::from_ref(&x),
        0.0,
        |t| t[0].transpose(0, 2).index_select(0, &idx),
    );
    let gidx = Tensor::from_vec(vec![0i64, 5, 2, 2, 1, 0, 4, 3], [2, 4, 1]);
    check_op("gather dim 1", dev, std::slice::from_ref(&x), 0.0, |t| {
        t[0].gather(1, &gidx)
    });
    let src = randn(&[2, 4, 1], 17);
    check_op("scatter_add dim 1", dev, &[x.clone(), src], 1e-6, |t| {
        t[0].scatter_add(1, &gidx, &t[1])
    });
    check_op("narrow", dev, std::slice::from_ref(&x), 0.0, |t| {
        t[0].narrow(2, 1, 3) * 1.0
    });
}

#[test]
fn in_place_ops() {
    let dev = need_gpu!();
    let x = randn(&[5, 8], 18);
    let y = randn(&[8], 19);
    let (c, g) = (x.clone_data(), x.to(&dev));
    let yg = y.to(&dev);
    for (c, g) in [(&c, &g), (&c.t().contiguous().t(), &g.t().contiguous().t())] {
        c.add_(&y);
        g.add_(&yg);
        c.mul_(2.5);
        g.mul_(2.5);
        c.sub_(&y);
        g.sub_(&yg);
        c.div_(&(y.abs() + 1.0));
        g.div_(&(yg.abs() + 1.0));
        c.add_scaled_(&y, -0.5);
        g.add_scaled_(&yg, -0.5);
        c.clamp_(Some(-1.0), Some(1.0));
        g.clamp_(Some(-1.0), Some(1.0));
        // Numbers (0-d CPU tensors) as operands of in-place ops on the GPU.
        c.add_(0.25).sub_(Tensor::scalar(0.5f32));
        g.add_(0.25).sub_(Tensor::scalar(0.5f32));
        assert_close("in-place chain", c, g, 1e-6);
    }
    g.narrow(1, 2, 3).fill_(7.0);
    c.narrow(1, 2, 3).fill_(7.0);
    assert_close("fill_ of a view", &c, &g, 0.0);
    g.zero_();
    assert_eq!(g.sum().item(), 0.0);
    // copy_ takes a source on another device, as in PyTorch.
    g.copy_(&x);
    assert_close("copy_ from the CPU", &x, &g, 0.0);
}

/// The same 2-layer MLP trained with SGD on the tape, on the CPU and on the
/// GPU: same initial weights (same seed), same data, same losses.
#[test]
fn training_run_matches_the_cpu() {
    let dev = need_gpu!();
    fn run(dev: Device) -> (Vec<f64>, Vec<Vec<f32>>, Option<cuda::MemoryStats>) {
        manual_seed(42);
        let mut l1 = Linear::new(8, 32, &Device::Cpu);
        let mut l2 = Linear::new(32, 1, &Device::Cpu);
        l1.to(&dev);
        l2.to(&dev);
        let x = randn(&[64, 8], 20).to(&dev);
        let t = (randn(&[64, 8], 20).sum_dim(1, true) * 0.3).to(&dev);
        let mut losses = vec![];
        let mut stats = None;
        for step in 0..30 {
            let y = l2.forward(&l1.forward(&x).relu());
            let loss = (&y - &t).square().mean();
            loss.backward();
            no_grad(|| {
                for p in l1.parameters().iter().chain(&l2.parameters()) {
                    let g = p.grad().unwrap();
                    p.add_scaled_(&g, -0.05);
                    g.zero_();
                }
            });
            losses.push(loss.item());
            if step == 2 && dev.is_cuda() {
                stats = Some(cuda::memory_stats(0));
            }
        }
        let after = dev.is_cuda().then(|| cuda::memory_stats(0));
        if let (Some(s), Some(a)) = (stats, after) {
            assert_eq!(
                a.mallocs, s.mallocs,
                "steady-state steps called cuMemAlloc ({s:?} -> {a:?})"
            );
        }
        let params = l1
            .parameters()
            .iter()
            .chain(&l2.parameters())
            .map(|p| p.to_vec::<f32>())
            .collect();
        (losses, params, stats)
    }
    let (lc, pc, _) = run(Device::Cpu);
    let (lg, pg, _) = run(dev);
    assert!(lc[29] < lc[0] * 0.5, "the CPU run did not learn: {lc:?}");
    for (i, (a, b)) in lc.iter().zip(&lg).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
            "step {i}: loss cpu {a} vs gpu {b}"
        );
    }
    for (a, b) in pc.iter().zip(&pg) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                "final parameter cpu {x} vs gpu {y}"
            );
        }
    }
}

#[test]
fn fused_optimizer_kernels_follow_the_formulas() {
    let dev = need_real_gpu!();
    let p0 = randn(&[1000], 21);
    let g = randn(&[1000], 22).to(&dev);
    let gc = g.to(&Device::Cpu);
    let close = |what: &str, a: &Tensor, b: &Tensor| assert_close(what, a, b, 2e-5);

    // SGD with momentum, dampening, weight decay and nesterov, two steps.
    let o = fused::SgdParams {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.1,
        weight_decay: 0.01,
        nesterov: true,
        maximize: false,
        first: false,
    };
    let (p, buf) = (p0.to(&dev), Tensor::zeros_on([1000], &dev));
    let (mut pc, mut bc) = (p0.clone_data(), Tensor::zeros([1000]));
    for step in 0..2 {
        let o = fused::SgdParams {
            first: step == 0,
            ..o
        };
        fused::sgd_step(&p, &g, Some(&buf), &o);
        let d = &gc + &(&pc * 0.01);
        bc = if step == 0 {
            d.clone()
        } else {
            &(&bc * 0.9) + &(&d * 0.9)
        };
        let upd = &d + &(&bc * 0.9);
        pc = &pc - &(&upd * 0.1);
    }
    close("sgd param", &pc, &p);
    close("sgd momentum", &bc, &buf);

    // AdamW with amsgrad, three steps.
    let o = fused::AdamParams {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
        amsgrad: true,
        decoupled: true,
        maximize: false,
        step: 0,
    };
    let (p, m, v, vm) = (
        p0.to(&dev),
        Tensor::zeros_on([1000], &dev),
        Tensor::zeros_on([1000], &dev),
        Tensor::zeros_on([1000], &dev),
    );
    let (mut pc, mut mc, mut vc, mut vmc) = (
        p0.clone_data(),
        Tensor::zeros([1000]),
        Tensor::zeros([1000]),
        Tensor::zeros([1000]),
    );
    for step in 1..=3u64 {
        let gs = &gc * (step as f64);
        let gd = g.mul(step as f64);
        fused::adam_step(&p, &gd, &m, &v, Some(&vm), &fused::AdamParams { step, ..o });
        pc = &pc * (1.0 - 1e-2 * 0.1);
        mc = &(&mc * 0.9) + &(&gs * 0.1);
        vc = &(&vc * 0.999) + &(&gs.square() * 0.001);
        vmc = vmc.maximum(&vc);
        let bc1 = 1.0 - 0.9f64.powi(step as i32);
        let bc2 = 1.0 - 0.999f64.powi(step as i32);
        let denom = &(&vmc.sqrt() / bc2.sqrt()) + 1e-8;
        pc = &pc - &(&(&mc / &denom) * (1e-2 / bc1));
    }
    close("adamw param", &pc, &p);
    close("adamw exp_avg", &mc, &m);
    close("adamw exp_avg_sq", &vc, &v);

    // RMSprop, centered with momentum.
    let o = fused::RmspropParams {
        lr: 1e-2,
        alpha: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
        momentum: 0.5,
        centered: true,
        maximize: false,
    };
    let (p, sq, mb, ga) = (
        p0.to(&dev),
        Tensor::zeros_on([1000], &dev),
        Tensor::zeros_on([1000], &dev),
        Tensor::zeros_on([1000], &dev),
    );
    let (mut pc, mut sqc, mut mbc, mut gac) = (
        p0.clone_data(),
        Tensor::zeros([1000]),
        Tensor::zeros([1000]),
        Tensor::zeros([1000]),
    );
    for _ in 0..2 {
        fused::rmsprop_step(&p, &g, &sq, Some(&mb), Some(&ga), &o);
        sqc = &(&sqc * 0.99) + &(&gc.square() * 0.01);
        gac = &(&gac * 0.99) + &(&gc * 0.01);
        let avg = &(&sqc - &gac.square()).sqrt() + 1e-8;
        mbc = &(&mbc * 0.5) + &(&gc / &avg);
        pc = &pc - &(&mbc * 1e-2);
    }
    close("rmsprop param", &pc, &p);

    // Adagrad with lr decay and maximize.
    let o = fused::AdagradParams {
        lr: 0.1,
        lr_decay: 0.01,
        weight_decay: 0.0,
        eps: 1e-10,
        maximize: true,
        step: 0,
    };
    let (p, s) = (p0.to(&dev), Tensor::zeros_on([1000], &dev));
    let (mut pc, mut sc) = (p0.clone_data(), Tensor::zeros([1000]));
    for step in 1..=2u64 {
        fused::adagrad_step(&p, &g, &s, &fused::AdagradParams { step, ..o });
        let d = -&gc;
        sc = &sc + &d.square();
        let clr = 0.1 / (1.0 + (step - 1) as f64 * 0.01);
        pc = &pc - &(&(&d / &(&sc.sqrt() + 1e-10)) * clr);
    }
    close("adagrad param", &pc, &p);
}

#[test]
fn out_of_memory_is_a_clear_panic() {
    let dev = need_real_gpu!();
    let err =
        catch_unwind(AssertUnwindSafe(|| Tensor::zeros_on([1usize << 42], &dev))).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("out of memory") && msg.contains("cuda:0"),
        "{msg}"
    );
    // The device still works afterwards.
    assert_eq!(Tensor::ones_on([4], &dev).sum().item(), 4.0);
}

#[test]
fn ops_without_a_kernel_name_the_call_site() {
    let dev = need_real_gpu!();
    // f64 exp has no GPU kernel yet: a clear panic, not a crash.
    let x = Tensor::ones_opts([2], &TensorOptions::new().dtype(DType::F64).device(&dev));
    let err = catch_unwind(AssertUnwindSafe(|| x.exp())).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("not yet on CUDA"), "{msg}");
}

#[test]
fn works_from_other_threads() {
    let dev = need_gpu!();
    let x = randn(&[100], 23).to(&dev);
    let h = std::thread::spawn(move || (&x * 2.0).sum().item());
    let s = h.join().unwrap();
    let expect = (randn(&[100], 23) * 2.0).sum().item();
    assert!((s - expect).abs() < 1e-4, "{s} vs {expect}");
}

#[test]
fn losses_forward_and_backward() {
    use deriv::nn::functional as F;
    use deriv::nn::{CrossEntropyLoss, Loss};
    let dev = need_gpu!();
    let logits = randn(&[8, 5], 40) * 3.0;
    let classes = Tensor::from_vec(vec![0i64, 4, 2, 2, 1, 3, 0, 4], [8]);
    let probs = randn(&[8, 5], 41).sigmoid();
    let bits = randn(&[8, 5], 42).gt_scalar(0.0).to_dtype(DType::F32);
    let mv = |t: &Tensor| if dev.is_cuda() { t.to(&dev) } else { t.clone() };
    let (cls, bits_d) = (classes.clone(), bits.clone());
    check_op(
        "cross_entropy",
        dev,
        std::slice::from_ref(&logits),
        1e-5,
        move |t| F::cross_entropy(&t[0], &mv(&cls)),
    );
    let cls = classes.clone();
    let mv = |t: &Tensor| if dev.is_cuda() { t.to(&dev) } else { t.clone() };
    check_op(
        "cross_entropy smoothed",
        dev,
        std::slice::from_ref(&logits),
        1e-5,
        move |t| {
            CrossEntropyLoss::new()
                .label_smoothing(0.1)
                .forward(&t[0], &mv(&cls))
        },
    );
    let mv = |t: &Tensor| if dev.is_cuda() { t.to(&dev) } else { t.clone() };
    check_op(
        "bce_with_logits",
        dev,
        std::slice::from_ref(&logits),
        1e-5,
        move |t| F::binary_cross_entropy_with_logits(&t[0], &mv(&bits_d)),
    );
    check_op("bce", dev, &[probs.clone(), bits.clone()], 1e-5, |t| {
        F::binary_cross_entropy(&t[0], &t[1])
    });
    check_op("mse", dev, &[logits.clone(), probs.clone()], 1e-5, |t| {
        F::mse_loss(&t[0], &t[1])
    });
    check_op("l1", dev, &[logits.clone(), probs.clone()], 1e-5, |t| {
        F::l1_loss(&t[0], &t[1])
    });
    // The compile-time path's fused value and gradient.
    let on = |t: &Tensor| if dev.is_cuda() { t.to(&dev) } else { t.clone() };
    let (l_cpu, g_cpu) = CrossEntropyLoss::new().forward_backward(&logits, &classes);
    let (l_gpu, g_gpu) = CrossEntropyLoss::new().forward_backward(&on(&logits), &on(&classes));
    assert_close("cross_entropy forward_backward loss", &l_cpu, &l_gpu, 1e-5);
    assert_close("cross_entropy forward_backward grad", &g_cpu, &g_gpu, 1e-5);
}

#[test]
fn optimizers_through_the_optimizer_trait_match_the_cpu() {
    use deriv::optim::{Adagrad, Adam, AdamW, Optimizer, RMSprop, SGD};
    let dev = need_gpu!();
    type Make = fn(Vec<Tensor>) -> Box<dyn Optimizer>;
    let makers: [(&str, Make); 5] = [
        ("SGD nesterov", |p| {
            Box::new(
                SGD::new(p, 0.1)
                    .momentum(0.9)
                    .nesterov(true)
                    .weight_decay(0.01),
            )
        }),
        ("Adam amsgrad", |p| {
            Box::new(Adam::new(p, 0.01).amsgrad(true))
        }),
        ("AdamW", |p| Box::new(AdamW::new(p, 0.01))),
        ("RMSprop centered", |p| {
            Box::new(RMSprop::new(p, 0.01).momentum(0.5).centered(true))
        }),
        ("Adagrad", |p| Box::new(Adagrad::new(p, 0.1).lr_decay(0.01))),
    ];
    for (name, make) in makers {
        let run = |device: Device| {
            let w = randn(&[33, 7], 50)
                .to(&device)
                .detach()
                .requires_grad_(true);
            let target = randn(&[33, 7], 51).to(&device);
            let mut opt = make(vec![w.clone()]);
            for _ in 0..5 {
                opt.zero_grad();
                (&w - &target).square().mean().backward();
                opt.step();
            }
            w.to(&Device::Cpu)
        };
        assert_close(name, &run(Device::Cpu), &run(dev), 1e-5);
    }
}

#[test]
fn the_trainer_runs_on_the_gpu() {
    use deriv::optim::SGD;
    use deriv::train::{Classifier, Trainer};
    let dev = need_gpu!();
    let data = |device: Device| {
        let mut g = Generator::new(60);
        let x = Tensor::randn_with([64, 4], &mut g);
        let y = x.sum_dim(1, false).gt_scalar(0.0).to_dtype(DType::I64);
        vec![
            (
                x.narrow(0, 0, 32).to(&device),
                y.narrow(0, 0, 32).to(&device),
            ),
            (
                x.narrow(0, 32, 32).to(&device),
                y.narrow(0, 32, 32).to(&device),
            ),
        ]
    };
    let fit = |device: Device| {
        manual_seed(61);
        let mut model = Linear::new(4, 2, &Device::Cpu);
        model.to(&device);
        let mut clf = Classifier::new(model).optimizer(|p| SGD::new(p, 0.5).momentum(0.9));
        let batches = data(device);
        let h = Trainer::new()
            .max_epochs(5)
            .quiet()
            .fit(&mut clf, &batches, Some(&batches))
            .unwrap();
        (clf.model.weight.to(&Device::Cpu), h.get("val_acc"))
    };
    let (w_cpu, acc_cpu) = fit(Device::Cpu);
    let (w_gpu, acc_gpu) = fit(dev);
    assert_close("trained weight", &w_cpu, &w_gpu, 1e-4);
    assert_eq!(acc_cpu, acc_gpu);
}

/// Every row of the op table (`tests/common/op_table.rs`), forward and
/// backward, on every sample input set, on the GPU against the CPU. f64 rows
/// run where the op has an f64 kernel (f64 transcendental math does not yet).
#[test]
fn op_table_rows_match_the_cpu() {
    let dev = need_gpu!();
    for row in op_table::rows() {
        for (set, inputs) in op_table::input_sets(&row, DType::F32) {
            check_op(&format!("{} on {set}", row.name), dev, &inputs, 2e-5, row.f);
        }
    }
}

/// Every layer row of the op table (convolution, pooling, the norms,
/// embedding, attention, the recurrent cell, the newer losses), on every
/// case (plain, non-contiguous, empty), on the GPU against the CPU.
#[test]
fn layer_rows_match_the_cpu() {
    let dev = need_gpu!();
    for row in op_table::layer_rows() {
        for (set, inputs) in op_table::layer_sets(&row, DType::F32) {
            check_op(&format!("{} on {set}", row.name), dev, &inputs, 1e-4, row.f);
        }
    }
}

/// relu's kernels at the edges, against PyTorch's values:
/// `torch.relu(torch.tensor([nan, 1., -1., -0., 0.]))` is
/// `tensor([nan, 1., 0., -0., 0.])` and its backward of ones gives
/// `tensor([1., 1., 0., 0., 0.])` (`result <= 0 ? 0 : grad`), in f32 and f64.
#[test]
fn relu_at_nan_and_signed_zero_matches_pytorch() {
    let dev = need_gpu!();
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::from_vec(vec![f64::NAN, 1., -1., -0.0, 0.], [5])
            .to_dtype(dtype)
            .to(&dev)
            .requires_grad_(true);
        let y = x.relu();
        y.backward_with(&Tensor::ones_opts([5], &x.options()));
        let bits = |t: &Tensor| {
            t.to(&Device::Cpu)
                .to_vec::<f64>()
                .iter()
                .map(|v| if v.is_nan() { u64::MAX } else { v.to_bits() })
                .collect::<Vec<_>>()
        };
        let want_y =
            [f64::NAN, 1., 0., -0.0, 0.].map(|v| if v.is_nan() { u64::MAX } else { v.to_bits() });
        assert_eq!(bits(&y), want_y, "relu {dtype} on {dev}");
        let want_g = [1f64, 1., 0., 0., 0.].map(f64::to_bits);
        assert_eq!(
            bits(&x.grad().unwrap()),
            want_g,
            "relu backward {dtype} on {dev}"
        );
    }
}

#[test]
fn embedding_matches_the_cpu() {
    use deriv::nn::{functional as F, EmbeddingOptions};
    let dev = need_gpu!();
    let w = randn(&[9, 5], 31);
    let idx = Tensor::from_vec(vec![4i64, 0, 8, 4, 2, 4, 7, 0], [2, 4]);
    for pad in [None, Some(4), Some(-1)] {
        let mut opts = EmbeddingOptions::new();
        opts.padding_idx = pad;
        check_op(
            &format!("embedding, padding_idx {pad:?}"),
            dev,
            &[w.clone(), idx.clone()],
            1e-6,
            |t| F::embedding_with(&t[1], &t[0], &opts),
        );
    }
    // max_norm rescales the rows looked up in place, on either device.
    let (wc, wg) = (w.clone_data(), w.to(&dev));
    let opts = EmbeddingOptions::new().max_norm(1.0);
    let yc = F::embedding_with(&idx, &wc, &opts);
    let yg = F::embedding_with(&idx.to(&dev), &wg, &opts);
    assert_close("embedding max_norm output", &yc, &yg, 1e-6);
    assert_close("embedding max_norm weight", &wc, &wg, 1e-6);
}

#[test]
fn layer_norm_matches_the_cpu() {
    use deriv::nn::functional as F;
    let dev = need_gpu!();
    let x = randn(&[6, 3, 8], 41);
    let (w, b) = (randn(&[3, 8], 42), randn(&[3, 8], 43));
    check_op(
        "layer_norm, affine",
        dev,
        &[x.clone(), w.clone(), b.clone()],
        1e-5,
        |t| F::layer_norm(&t[0], &[3, 8], Some(&t[1]), Some(&t[2]), 1e-5),
    );
    check_op("layer_norm, plain", dev, &[x], 1e-5, |t| {
        F::layer_norm(&t[0], &[8], None, None, 1e-5)
    });
}

#[test]
fn batch_and_group_norm_match_the_cpu() {
    use deriv::nn::{functional as F, BatchNorm2d, Forward, Module};
    let dev = need_gpu!();
    let x = randn(&[4, 3, 5, 2], 44);
    let (w, b) = (randn(&[3], 45), randn(&[3], 46));
    let (m, v) = (randn(&[3], 47), randn(&[3], 48).abs() + 0.5);
    let affine = [x.clone(), w.clone(), b.clone()];
    check_op("batch_norm, training", dev, &affine, 1e-5, |t| {
        F::batch_norm(&t[0], None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5)
    });
    check_op(
        "batch_norm, evaluation",
        dev,
        &[x.clone(), w, b, m, v],
        1e-5,
        |t| {
            let (m, v) = (t[3].detach(), t[4].detach());
            F::batch_norm(
                &t[0],
                Some(&m),
                Some(&v),
                Some(&t[1]),
                Some(&t[2]),
                false,
                0.1,
                1e-5,
            )
        },
    );
    check_op("group_norm", dev, &affine, 1e-5, |t| {
        F::group_norm(&t[0], 3, Some(&t[1]), Some(&t[2]), 1e-5)
    });
    // The layer: its running statistics move on the device as on the CPU.
    let cpu = BatchNorm2d::new(3, &Device::Cpu);
    let mut gpu = BatchNorm2d::new(3, &Device::Cpu);
    gpu.to(&dev);
    for _ in 0..2 {
        cpu.forward(&x);
        gpu.forward(&x.to(&dev));
    }
    for ((name, a), (_, b)) in cpu.named_buffers().iter().zip(gpu.named_buffers()) {
        assert_eq!(b.device(), dev, "{name}");
        if name == "num_batches_tracked" {
            assert_eq!(b.to(&Device::Cpu).to_vec::<i64>(), a.to_vec::<i64>());
        } else {
            assert_close(name, a, &b, 1e-5);
        }
    }
}

#[test]
fn recurrent_layers_match_the_cpu() {
    use deriv::nn::{Module, RecurrentOptions, GRU, LSTM, RNN};
    let dev = need_gpu!();
    let opts = RecurrentOptions {
        num_layers: 2,
        batch_first: true,
        ..Default::default()
    };
    let lstm = LSTM::with_options(3, 4, &opts, &Device::Cpu);
    let mut lstm_gpu = LSTM::with_options(3, 4, &opts, &Device::Cpu);
    lstm_gpu.load_state_dict(&lstm.state_dict()).unwrap();
    lstm_gpu.to(&dev);
    let (h0, c0) = (randn(&[2, 2, 4], 52), randn(&[2, 2, 4], 53));
    check_op("lstm", dev, &[randn(&[2, 5, 3], 51), h0, c0], 1e-5, |t| {
        let net = if t[0].device().is_cuda() {
            &lstm_gpu
        } else {
            &lstm
        };
        let (out, (h, c)) = net.forward_with(&t[0], Some((t[1].clone(), t[2].clone())));
        &(&out.sum() + &h.sum()) + &c.square().sum()
    });
    let gru = GRU::new(3, 4, &Device::Cpu);
    let mut gru_gpu = GRU::new(3, 4, &Device::Cpu);
    gru_gpu.load_state_dict(&gru.state_dict()).unwrap();
    gru_gpu.to(&dev);
    let rnn = RNN::new(3, 4, &Device::Cpu);
    let mut rnn_gpu = RNN::new(3, 4, &Device::Cpu);
    rnn_gpu.load_state_dict(&rnn.state_dict()).unwrap();
    rnn_gpu.to(&dev);
    check_op("gru and rnn", dev, &[randn(&[5, 2, 3], 54)], 1e-5, |t| {
        let on_gpu = t[0].device().is_cuda();
        let (g, r) = if on_gpu {
            (&gru_gpu, &rnn_gpu)
        } else {
            (&gru, &rnn)
        };
        &g.forward_with(&t[0], None).0.square() + &r.forward_with(&t[0], None).0
    });
}

#[test]
fn attention_matches_the_cpu() {
    use deriv::nn::{
        functional as F, Module, TransformerEncoderLayer, TransformerEncoderLayerOptions,
    };
    let dev = need_gpu!();
    let (q, k, v) = (
        randn(&[2, 3, 4, 5], 61),
        randn(&[2, 3, 6, 5], 62),
        randn(&[2, 3, 6, 4], 63),
    );
    check_op(
        "sdpa, causal",
        dev,
        &[q.clone(), k.clone(), v.clone()],
        1e-5,
        |t| F::scaled_dot_product_attention(&t[0], &t[1], &t[2], None, 0.0, true, None),
    );
    check_op(
        "sdpa, float mask",
        dev,
        &[q, k, v, randn(&[4, 6], 64)],
        1e-5,
        |t| F::scaled_dot_product_attention(&t[0], &t[1], &t[2], Some(&t[3]), 0.0, false, None),
    );
    let opts = TransformerEncoderLayerOptions {
        dim_feedforward: 16,
        dropout: 0.0,
        ..Default::default()
    };
    let cpu = TransformerEncoderLayer::with_options(8, 2, &opts, &Device::Cpu);
    let mut gpu = TransformerEncoderLayer::with_options(8, 2, &opts, &Device::Cpu);
    gpu.load_state_dict(&cpu.state_dict()).unwrap();
    gpu.to(&dev);
    check_op(
        "transformer encoder layer",
        dev,
        &[randn(&[5, 2, 8], 65)],
        1e-4,
        |t| {
            use deriv::nn::Forward;
            if t[0].device().is_cuda() {
                gpu.forward(&t[0])
            } else {
                cpu.forward(&t[0])
            }
        },
    );
    // The buffer-reusing step: the attention's fused kernels on the CPU,
    // the allocating path's ops on the GPU, the same sub-layer chain.
    use deriv::nn::TrainStep;
    let (x, g) = (randn(&[5, 2, 8], 66), randn(&[5, 2, 8], 67));
    for p in cpu.parameters().iter().chain(&gpu.parameters()) {
        p.set_grad(None); // check_op's backward passes reached them
    }
    let (mut ws_cpu, mut ws_gpu) = (cpu.workspace(), gpu.workspace());
    let y_cpu = cpu.forward_train_ws(&x, &mut ws_cpu).clone_data();
    let y_gpu = gpu.forward_train_ws(&x.to(&dev), &mut ws_gpu).clone_data();
    assert_close("encoder TrainStep output", &y_cpu, &y_gpu, 1e-4);
    let dx_cpu = cpu.backward_ws(&mut ws_cpu, &g, true).unwrap().clone_data();
    let dx_gpu = gpu
        .backward_ws(&mut ws_gpu, &g.to(&dev), true)
        .unwrap()
        .clone_data();
    assert_close("encoder TrainStep dx", &dx_cpu, &dx_gpu, 1e-4);
    for ((name, c), (_, gp)) in cpu.named_parameters().iter().zip(gpu.named_parameters()) {
        let what = format!("encoder TrainStep {name}.grad");
        assert_close(&what, &c.grad().unwrap(), &gp.grad().unwrap(), 1e-4);
    }
}

#[test]
fn conv_transpose2d_matches_the_cpu() {
    use deriv::nn::{functional as F, ConvTranspose2dOptions};
    let dev = need_gpu!();
    let opts = ConvTranspose2dOptions::new()
        .stride(2)
        .padding(1)
        .output_padding(1)
        .groups(2);
    let inputs = [
        randn(&[2, 4, 3, 4], 71),
        randn(&[4, 3, 3, 3], 72),
        randn(&[6], 73),
    ];
    check_op("conv_transpose2d", dev, &inputs, 1e-4, |t| {
        F::conv_transpose2d(&t[0], &t[1], Some(&t[2]), &opts)
    });
}

#[test]
fn conv2d_matches_the_cpu() {
    use deriv::nn::{functional as F, Conv2dOptions};
    let dev = need_gpu!();
    let (x, w, b) = (
        randn(&[2, 4, 9, 8], 51),
        randn(&[6, 2, 3, 2], 52),
        randn(&[6], 53),
    );
    let opts = Conv2dOptions::new()
        .stride([2, 1])
        .padding([1, 2])
        .dilation([1, 2])
        .groups(2);
    check_op("conv2d", dev, &[x.clone(), w, b], 1e-4, |t| {
        F::conv2d(&t[0], &t[1], Some(&t[2]), &opts)
    });
    let same = Conv2dOptions::new().padding("same");
    check_op(
        "conv2d same",
        dev,
        &[x, randn(&[3, 4, 2, 3], 54)],
        1e-4,
        |t| F::conv2d(&t[0], &t[1], None, &same),
    );
}

#[test]
fn pooling_matches_the_cpu() {
    use deriv::nn::functional as F;
    let dev = need_gpu!();
    let x = randn(&[2, 3, 9, 8], 61);
    type Pool = fn(&Tensor) -> Tensor;
    let pools: [(&str, Pool); 4] = [
        ("max", |t| F::max_pool2d_with(t, [3, 2], 2, 1)),
        ("avg", |t| F::avg_pool2d_with(t, 3, [2, 1], 1, true)),
        ("avg, no pad", |t| {
            F::avg_pool2d_with(t, [2, 3], [1, 2], 1, false)
        }),
        ("adaptive", |t| F::adaptive_avg_pool2d(t, [4, 3])),
    ];
    for (what, f) in pools {
        check_op(what, dev, std::slice::from_ref(&x), 1e-5, |t| f(&t[0]));
    }
}

#[test]
fn conv1d_matches_the_cpu() {
    use deriv::nn::{functional as F, Conv1dOptions};
    let dev = need_gpu!();
    let (x, w, b) = (
        randn(&[2, 4, 11], 71),
        randn(&[6, 2, 3], 72),
        randn(&[6], 73),
    );
    let opts = Conv1dOptions::new()
        .stride(2)
        .padding(1)
        .dilation(2)
        .groups(2);
    check_op("conv1d", dev, &[x, w, b], 1e-4, |t| {
        F::conv1d(&t[0], &t[1], Some(&t[2]), &opts)
    });
}
