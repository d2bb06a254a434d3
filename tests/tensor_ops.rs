//! Forward correctness of the tensor operations, each checked against values
//! derived independently: by hand, or with a naive reference loop in f64.

use std::sync::{Mutex, MutexGuard};

use deriv::prelude::*;

// ---------------------------------------------------------------- helpers

/// The global generator is shared by every test thread: tests that seed it and
/// then draw from it hold this lock so another test cannot draw in between.
static GLOBAL_RNG: Mutex<()> = Mutex::new(());

fn rng_lock() -> MutexGuard<'static, ()> {
    GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Asserts `t` holds `expected` (row-major) within `tol`, and has `shape`.
#[track_caller]
fn assert_tensor(t: &Tensor, shape: &[usize], expected: &[f64], tol: f64) {
    assert_eq!(t.shape(), shape, "shape");
    let got = t.to_vec::<f64>();
    assert_eq!(got.len(), expected.len(), "element count");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let ok = if e.is_nan() {
            g.is_nan()
        } else {
            (g - e).abs() <= tol * (1.0 + e.abs())
        };
        assert!(ok, "element {i}: got {g}, expected {e} (all: {got:?})");
    }
}

#[track_caller]
fn assert_f32(t: &Tensor, shape: &[usize], expected: &[f64]) {
    assert_eq!(t.dtype(), DType::F32, "dtype");
    assert_tensor(t, shape, expected, 1e-6);
}

/// Row-major multi-index of flat position `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Flat row-major position of `idx` in `shape`.
fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

// ---------------------------------------------------------------- creation

#[test]
fn from_vec_and_from_slice_are_row_major() {
    let t = Tensor::from_vec(vec![1.0f32, 2., 3., 4., 5., 6.], [2, 3]);
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(t.size(), &[2, 3]);
    assert_eq!(t.ndim(), 2);
    assert_eq!(t.dim(), 2);
    assert_eq!(t.numel(), 6);
    assert_eq!(t.strides(), &[3, 1]);
    assert_eq!(t.size_of(-1), 3);
    assert_eq!(t.size_of(0), 2);
    assert_eq!(t.dtype(), DType::F32);
    assert!(t.is_contiguous());
    // Element [1, 2] is the sixth value.
    assert_eq!(t.select(0, 1).select(0, 2).item(), 6.0);

    let s = Tensor::from_slice(&[1.5f64, -2.5], [2, 1]);
    assert_eq!(s.dtype(), DType::F64);
    assert_eq!(s.shape(), &[2, 1]);
    assert_eq!(s.to_vec::<f64>(), vec![1.5, -2.5]);

    let i = Tensor::from_vec(vec![7i64, 8, 9], [3]);
    assert_eq!(i.dtype(), DType::I64);
    assert_eq!(i.to_vec::<i64>(), vec![7, 8, 9]);

    let b = Tensor::from_vec(vec![true, false], [2]);
    assert_eq!(b.dtype(), DType::Bool);
    assert_eq!(b.to_vec::<bool>(), vec![true, false]);

    let v: Tensor = vec![1.0f32, 2.0].into();
    assert_eq!(v.shape(), &[2]);
}

#[test]
fn tensor_macro_infers_shape_and_dtype() {
    let a = tensor![[1., 2., 3.], [4., 5., 6.]];
    assert_eq!(a.dtype(), DType::F32);
    assert_f32(&a, &[2, 3], &[1., 2., 3., 4., 5., 6.]);

    let i = tensor![[1, 2], [3, 4]];
    assert_eq!(i.dtype(), DType::I64);
    assert_eq!(i.shape(), &[2, 2]);
    assert_eq!(i.to_vec::<i64>(), vec![1, 2, 3, 4]);

    let b = tensor![true, false, true];
    assert_eq!(b.dtype(), DType::Bool);
    assert_eq!(b.to_vec::<bool>(), vec![true, false, true]);

    let c = tensor![[[1.], [2.]], [[3.], [4.]]];
    assert_eq!(c.shape(), &[2, 2, 1]);

    // An explicit dtype keeps full f64 precision (0.1 is not rounded through f32).
    let d = tensor![0.1, 0.2; dtype = DType::F64];
    assert_eq!(d.dtype(), DType::F64);
    assert_eq!(d.to_vec::<f64>(), vec![0.1, 0.2]);
    assert_ne!(tensor![0.1].to_vec::<f64>()[0], 0.1);

    let e = tensor![1, 2; dtype = DType::F32];
    assert_eq!(e.dtype(), DType::F32);
    assert_eq!(e.to_vec::<f32>(), vec![1., 2.]);
}

#[test]
fn scalar_tensors_are_zero_dimensional() {
    let s = Tensor::scalar(3.5f32);
    assert_eq!(s.ndim(), 0);
    assert_eq!(s.shape(), &[] as &[usize]);
    assert_eq!(s.numel(), 1);
    assert_eq!(s.dtype(), DType::F32);
    assert_eq!(s.item(), 3.5);
    assert_eq!(Tensor::scalar(2.25f64).dtype(), DType::F64);
    assert_eq!(Tensor::scalar(-4i64).item(), -4.0);
    assert_eq!(Tensor::scalar(true).item(), 1.0);
    let f: Tensor = 2.0f32.into();
    assert_eq!(f.ndim(), 0);
}

#[test]
fn zeros_ones_full() {
    let z = Tensor::zeros([2, 3]);
    assert_f32(&z, &[2, 3], &[0.; 6]);
    let o = Tensor::ones([4]);
    assert_f32(&o, &[4], &[1.; 4]);
    let f = Tensor::full([3, 1], -2.5);
    assert_f32(&f, &[3, 1], &[-2.5; 3]);
    // A zero-sized dimension is allowed.
    let e = Tensor::zeros([0, 3]);
    assert_eq!(e.numel(), 0);
    assert_eq!(e.to_vec::<f32>(), Vec::<f32>::new());
}

#[test]
fn arange_int_and_float() {
    let a = Tensor::arange(0, 5, 1);
    assert_eq!(a.dtype(), DType::I64);
    assert_eq!(a.to_vec::<i64>(), vec![0, 1, 2, 3, 4]);
    let b = Tensor::arange(2, 11, 3);
    assert_eq!(b.to_vec::<i64>(), vec![2, 5, 8]);
    let c = Tensor::arange(5, 0, -2);
    assert_eq!(c.to_vec::<i64>(), vec![5, 3, 1]);
    let f = Tensor::arange(0., 1., 0.25);
    assert_eq!(f.dtype(), DType::F32);
    assert_f32(&f, &[4], &[0., 0.25, 0.5, 0.75]);
    // The end is exclusive even when it is hit exactly; a partial step counts.
    assert_eq!(Tensor::arange(0., 1.1, 0.5).numel(), 3);
    assert_eq!(Tensor::arange(3, 3, 1).numel(), 0);
    let o = Tensor::arange_opts(1., 4., 1., &TensorOptions::new().dtype(DType::F64));
    assert_eq!(o.dtype(), DType::F64);
    assert_eq!(o.to_vec::<f64>(), vec![1., 2., 3.]);
}

#[test]
fn linspace_and_eye() {
    let l = Tensor::linspace(0., 1., 5);
    assert_f32(&l, &[5], &[0., 0.25, 0.5, 0.75, 1.]);
    let l = Tensor::linspace(-1., 2., 4);
    assert_f32(&l, &[4], &[-1., 0., 1., 2.]);
    // The end point is exact even when the step is not representable.
    let l = Tensor::linspace(0., 1., 7).to_vec::<f32>();
    assert_eq!(l[6], 1.0);
    for (i, v) in l.iter().enumerate() {
        assert!((*v as f64 - i as f64 / 6.0).abs() < 1e-6);
    }
    assert_f32(&Tensor::linspace(3., 9., 1), &[1], &[3.]);
    assert_eq!(Tensor::linspace(3., 9., 0).numel(), 0);

    let e = Tensor::eye(3);
    assert_f32(&e, &[3, 3], &[1., 0., 0., 0., 1., 0., 0., 0., 1.]);
}

#[test]
fn like_constructors_copy_shape_and_dtype() {
    let x = tensor![[1., 2.], [3., 4.]; dtype = DType::F64];
    let z = x.zeros_like();
    assert_eq!((z.shape(), z.dtype()), (&[2usize, 2][..], DType::F64));
    assert_eq!(z.to_vec::<f64>(), vec![0.; 4]);
    let o = x.ones_like();
    assert_eq!(o.to_vec::<f64>(), vec![1.; 4]);
    assert_eq!(o.dtype(), DType::F64);
    let f = tensor![1, 2, 3].full_like(7.0);
    assert_eq!(f.dtype(), DType::I64);
    assert_eq!(f.to_vec::<i64>(), vec![7, 7, 7]);
    // The new tensors are fresh storage, not views of x.
    assert!(!z.shares_storage(&x));
    let _g = rng_lock();
    let r = x.rand_like();
    assert_eq!((r.shape(), r.dtype()), (&[2usize, 2][..], DType::F64));
    assert!(r.to_vec::<f64>().iter().all(|v| (0.0..1.0).contains(v)));
    let n = x.randn_like();
    assert_eq!((n.shape(), n.dtype()), (&[2usize, 2][..], DType::F64));
}

#[test]
fn creation_with_options() {
    let opts = TensorOptions::new()
        .dtype(DType::F64)
        .device(&Device::Cpu)
        .requires_grad(true);
    let w = Tensor::zeros_opts([3, 2], &opts);
    assert_eq!(w.shape(), &[3, 2]);
    assert_eq!(w.dtype(), DType::F64);
    assert!(w.requires_grad());
    assert!(w.is_leaf());
    assert_eq!(w.to_vec::<f64>(), vec![0.; 6]);
    let o = Tensor::ones_opts([2], &TensorOptions::new().dtype(DType::I64));
    assert_eq!(o.dtype(), DType::I64);
    assert!(!o.requires_grad());
    assert_eq!(o.to_vec::<i64>(), vec![1, 1]);
    let f = Tensor::full_opts([2], 0.5, &TensorOptions::default());
    assert_f32(&f, &[2], &[0.5, 0.5]);
    // options() round-trips dtype and device but not requires_grad.
    let back = w.options();
    assert_eq!(back, TensorOptions::new().dtype(DType::F64));
}

// ---------------------------------------------------------------- random

#[test]
fn rand_is_reproducible_with_manual_seed() {
    let _g = rng_lock();
    manual_seed(42);
    let a = Tensor::rand([5, 4]);
    let b = Tensor::randn([7]);
    manual_seed(42);
    let a2 = Tensor::rand([5, 4]);
    let b2 = Tensor::randn([7]);
    assert_eq!(a.to_vec::<f32>(), a2.to_vec::<f32>());
    assert_eq!(b.to_vec::<f32>(), b2.to_vec::<f32>());
    // Draws advance the generator, and another seed gives other numbers.
    assert_ne!(a.to_vec::<f32>(), Tensor::rand([5, 4]).to_vec::<f32>());
    manual_seed(43);
    assert_ne!(a.to_vec::<f32>(), Tensor::rand([5, 4]).to_vec::<f32>());
    // The global generator seeded with s draws what Generator::new(s) draws.
    manual_seed(7);
    let g = Tensor::rand([6]);
    let mut gen = Generator::new(7);
    assert_eq!(
        g.to_vec::<f32>(),
        Tensor::rand_with([6], &mut gen).to_vec::<f32>()
    );
    assert_eq!(a.dtype(), DType::F32);
    assert_eq!(a.shape(), &[5, 4]);
    assert!(a.to_vec::<f32>().iter().all(|v| (0.0..1.0).contains(v)));
}

#[test]
fn explicit_generators_are_independent_of_the_global_one() {
    let mut g1 = Generator::new(123);
    let mut g2 = Generator::new(123);
    assert_eq!(g1.initial_seed(), 123);
    let a = Tensor::randn_with([10], &mut g1);
    // Drawing from the global generator in between changes nothing.
    drop((rng_lock(), Tensor::randn([3])));
    let b = Tensor::randn_with([10], &mut g2);
    assert_eq!(a.to_vec::<f32>(), b.to_vec::<f32>());
    let c = Tensor::randn_with([10], &mut g1);
    assert_ne!(a.to_vec::<f32>(), c.to_vec::<f32>());
    g1.manual_seed(123);
    assert_eq!(
        Tensor::randn_with([10], &mut g1).to_vec::<f32>(),
        a.to_vec::<f32>()
    );
    let u = Tensor::rand_with([1000], &mut g2).to_vec::<f32>();
    assert!(u.iter().all(|v| (0.0..1.0).contains(v)));
    // Uniform over [0, 1): mean 1/2 within a loose bound.
    let m = u.iter().map(|&v| v as f64).sum::<f64>() / 1000.0;
    assert!((m - 0.5).abs() < 0.05, "mean {m}");
}

#[test]
fn randn_is_standard_normal() {
    let mut g = Generator::new(2024);
    let x = Tensor::randn_with([100_000], &mut g);
    let v: Vec<f64> = x.to_vec::<f64>();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((var.sqrt() - 1.0).abs() < 0.02, "std {}", var.sqrt());
    // About 68% within one standard deviation.
    let within = v.iter().filter(|x| x.abs() < 1.0).count() as f64 / n;
    assert!((within - 0.6827).abs() < 0.01, "within 1 sd: {within}");
    // The tensor's own reductions agree with the two-pass values.
    assert!((x.mean().item() - mean).abs() < 1e-4);
    assert!((x.std().item() - var.sqrt()).abs() < 1e-3);
}

#[test]
fn randint_stays_in_range_and_covers_it() {
    let _g = rng_lock();
    manual_seed(5);
    let r = Tensor::randint(-3, 4, [2000]);
    assert_eq!(r.dtype(), DType::I64);
    assert_eq!(r.shape(), &[2000]);
    let v = r.to_vec::<i64>();
    assert!(v.iter().all(|x| (-3..4).contains(x)));
    for k in -3..4 {
        assert!(v.contains(&k), "{k} never drawn");
    }
    manual_seed(5);
    assert_eq!(Tensor::randint(-3, 4, [2000]).to_vec::<i64>(), v);
}

#[test]
fn randperm_is_a_permutation() {
    let _g = rng_lock();
    manual_seed(11);
    let p = Tensor::randperm(50);
    assert_eq!(p.dtype(), DType::I64);
    let mut v = p.to_vec::<i64>();
    assert_ne!(v, (0..50).collect::<Vec<i64>>(), "not shuffled");
    v.sort_unstable();
    assert_eq!(v, (0..50).collect::<Vec<i64>>());
    assert_eq!(Tensor::randperm(0).numel(), 0);
}

// ---------------------------------------------------------------- dtypes

#[test]
fn default_dtypes() {
    assert_eq!(Tensor::zeros([1]).dtype(), DType::F32);
    assert_eq!(
        Tensor::rand_with([1], &mut Generator::new(0)).dtype(),
        DType::F32
    );
    assert_eq!(tensor![1., 2.].dtype(), DType::F32);
    assert_eq!(tensor![1, 2].dtype(), DType::I64);
    assert!(DType::F32.is_float() && DType::F64.is_float());
    assert!(!DType::I64.is_float() && !DType::Bool.is_float());
    assert_eq!(DType::F32.size_in_bytes(), 4);
    assert_eq!(DType::Bool.size_in_bytes(), 1);
    assert_eq!(DType::F64.to_string(), "f64");
}

#[test]
fn comparisons_give_bool_masks() {
    let m = tensor![1., 5., 3.].gt_scalar(2.0);
    assert_eq!(m.dtype(), DType::Bool);
    assert_eq!(m.to_vec::<bool>(), vec![false, true, true]);
    // Masks sum to an i64 count.
    let s = m.sum();
    assert_eq!(s.dtype(), DType::I64);
    assert_eq!(s.item(), 2.0);
    // A mask converts to numbers.
    assert_eq!(m.to_dtype(DType::F32).to_vec::<f32>(), vec![0., 1., 1.]);
    assert_eq!(m.logical_not().to_vec::<bool>(), vec![true, false, false]);
}

#[test]
fn promotion_follows_pytorch() {
    let a = tensor![1., 2.];
    let b = tensor![0.5, 0.25; dtype = DType::F64];
    let c = &a + &b;
    assert_eq!(c.dtype(), DType::F64);
    assert_eq!(c.to_vec::<f64>(), vec![1.5, 2.25]);
    assert_eq!((&b * &a).dtype(), DType::F64);
    // i64 with f32 gives f32.
    let d = &tensor![1, 2] + &a;
    assert_eq!(d.dtype(), DType::F32);
    assert_eq!(d.to_vec::<f32>(), vec![2., 4.]);
    // i64 with i64 stays i64.
    let e = &tensor![1, 2] * &tensor![3, 4];
    assert_eq!(e.dtype(), DType::I64);
    assert_eq!(e.to_vec::<i64>(), vec![3, 8]);
    // bool with i64 gives i64.
    let f = &tensor![true, false] + &tensor![1, 1];
    assert_eq!(f.dtype(), DType::I64);
    assert_eq!(f.to_vec::<i64>(), vec![2, 1]);
    assert_eq!(DType::promote(DType::I64, DType::F64), DType::F64);
    assert_eq!(DType::promote(DType::Bool, DType::I64), DType::I64);
}

#[test]
fn zero_dim_operands_promote_only_across_categories() {
    // A 0-d tensor of the same category does not widen a dimensioned one
    // (PyTorch's result_type): f32 tensor with f64 0-d tensor stays f32.
    let a = tensor![1., 2.];
    let s64 = Tensor::scalar(0.5f64);
    for t in [
        &a + &s64,
        &s64 + &a,
        &a * &s64,
        a.div(&s64),
        a.maximum(&s64),
    ] {
        assert_eq!(t.dtype(), DType::F32, "{t}");
    }
    assert_f32(&(&a - &s64), &[2], &[0.5, 1.5]);
    // Dimensioned f64 still wins over f32, whatever its size.
    assert_eq!((&a + &tensor![0.5; dtype = DType::F64]).dtype(), DType::F64);
    // Two 0-d tensors promote as usual.
    assert_eq!((&Tensor::scalar(1.0f32) + &s64).dtype(), DType::F64);
    // A higher category does promote: i64 tensor with f64 0-d tensor gives f64.
    let i = tensor![1, 2];
    assert_eq!((&i + &s64).dtype(), DType::F64);
    assert_eq!((&i + &s64).to_vec::<f64>(), vec![1.5, 2.5]);
    assert_eq!((&i + &Tensor::scalar(3i64)).dtype(), DType::I64);
    // Comparisons compute in the result type: 0.1 as f32 equals 0.1 as f64 rounded to f32.
    let tenth = tensor![0.1];
    assert_eq!(
        tenth.eq(&Tensor::scalar(0.1f64)).to_vec::<bool>(),
        vec![true]
    );
    // Against a dimensioned f64 tensor the comparison is in f64, where they differ.
    assert_eq!(
        tenth.eq(&tensor![0.1; dtype = DType::F64]).to_vec::<bool>(),
        vec![false]
    );
    // where_ with a 0-d f64 branch keeps the f32 one's dtype.
    let w = Tensor::where_cond(&tensor![true, false], &a, &s64);
    assert_eq!(w.dtype(), DType::F32);
    assert_eq!(w.to_vec::<f32>(), vec![1., 0.5]);
}

#[test]
fn integer_ops_stay_exact_integers() {
    // 2^24 + 1 is not representable in f32: these must not go through it.
    let big = 16_777_217i64;
    let x = Tensor::from_vec(vec![big, -big, 3], [3]);
    let m = x.maximum(Tensor::from_vec(vec![0i64, 0, 5], [3]));
    assert_eq!(m.dtype(), DType::I64);
    assert_eq!(m.to_vec::<i64>(), vec![big, 0, 5]);
    let n = x.minimum(Tensor::scalar(4i64));
    assert_eq!(n.dtype(), DType::I64);
    assert_eq!(n.to_vec::<i64>(), vec![4, -big, 3]);
    let c = x.clamp(Some(-(big - 1) as f64), None);
    assert_eq!(c.dtype(), DType::I64);
    assert_eq!(c.to_vec::<i64>(), vec![big, -(big - 1), 3]);
    assert_eq!(
        tensor![-5, 0, 5].clamp(Some(-1.), Some(2.)).to_vec::<i64>(),
        vec![-1, 0, 2]
    );
    // A fractional bound makes the result float, as in PyTorch.
    let f = tensor![-5, 0, 5].clamp(Some(-0.5), None);
    assert_eq!(f.dtype(), DType::F32);
    assert_eq!(f.to_vec::<f32>(), vec![-0.5, 0., 5.]);
    assert_eq!(
        tensor![1, 2].maximum(tensor![1.5, 1.5]).to_vec::<f32>(),
        vec![1.5, 2.]
    );
    assert_eq!(tensor![1, 2].maximum(tensor![1.5, 1.5]).dtype(), DType::F32);
}

#[test]
fn clamp_with_min_above_max_gives_max() {
    // PyTorch computes min(max(x, lo), hi): when lo > hi every element is hi.
    let x = tensor![-1., 0.5, 3.];
    assert_f32(&x.clamp(Some(2.), Some(1.)), &[3], &[1., 1., 1.]);
    let y = x.clone_data();
    y.clamp_(Some(2.), Some(1.));
    assert_eq!(y.to_vec::<f32>(), vec![1., 1., 1.]);
    let d = tensor![-1., 3.; dtype = DType::F64];
    d.clamp_(Some(2.), Some(1.));
    assert_eq!(d.to_vec::<f64>(), vec![1., 1.]);
    // In place, NaN stays NaN for both float types.
    let n = tensor![f64::NAN, 5.; dtype = DType::F64];
    n.clamp_(Some(0.), Some(1.));
    let v = n.to_vec::<f64>();
    assert!(v[0].is_nan() && v[1] == 1.0, "{v:?}");
    let n = tensor![f32::NAN, -5.];
    n.clamp_(None, Some(1.));
    let v = n.to_vec::<f32>();
    assert!(v[0].is_nan() && v[1] == -5.0, "{v:?}");
}

#[test]
fn integer_division_is_true_division() {
    let x = tensor![1, 2, 3];
    let h = &x / 2.0;
    assert_eq!(h.dtype(), DType::F32);
    assert_f32(&h, &[3], &[0.5, 1.0, 1.5]);
    let q = x.div(2i64);
    assert_f32(&q, &[3], &[0.5, 1.0, 1.5]);
    let r = &tensor![7, -7] / &tensor![2, 2];
    assert_f32(&r, &[2], &[3.5, -3.5]);
    // A float number with an int tensor keeps the fraction.
    assert_f32(&(&x * 0.5), &[3], &[0.5, 1.0, 1.5]);
}

#[test]
fn to_dtype_converts_and_truncates() {
    let x = tensor![1.7, -1.7, 0.0];
    assert_eq!(x.to_dtype(DType::I64).to_vec::<i64>(), vec![1, -1, 0]);
    assert_eq!(
        x.to_dtype(DType::Bool).to_vec::<bool>(),
        vec![true, true, false]
    );
    let d = x.to_dtype(DType::F64);
    assert_eq!(d.dtype(), DType::F64);
    assert!((d.to_vec::<f64>()[0] - 1.7).abs() < 1e-6);
    // Same dtype: the same tensor.
    assert!(x.to_dtype(DType::F32).shares_storage(&x));
}

// ---------------------------------------------------------------- broadcasting arithmetic

/// The NumPy broadcast of two shapes, computed independently of the library.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let db = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            assert!(da == db || da == 1 || db == 1);
            da.max(db)
        })
        .collect()
}

type BinOp = fn(f64, f64) -> f64;

/// `f(a, b)` elementwise over the broadcast of the two shapes, by explicit indexing.
fn broadcast_ref(
    a: &[f64],
    ashape: &[usize],
    b: &[f64],
    bshape: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> (Vec<usize>, Vec<f64>) {
    let shape = broadcast_shape(ashape, bshape);
    let n: usize = shape.iter().product();
    let pick = |idx: &[usize], s: &[usize]| -> usize {
        let lead = idx.len() - s.len();
        let own: Vec<usize> = s
            .iter()
            .enumerate()
            .map(|(d, &size)| if size == 1 { 0 } else { idx[lead + d] })
            .collect();
        ravel(&own, s)
    };
    let out = (0..n)
        .map(|i| {
            let idx = unravel(i, &shape);
            f(a[pick(&idx, ashape)], b[pick(&idx, bshape)])
        })
        .collect();
    (shape, out)
}

#[test]
fn broadcast_add_sub_mul_div_match_reference() {
    let mut g = Generator::new(3);
    let cases: [(&[usize], &[usize]); 7] = [
        (&[2, 3], &[3]),
        (&[2, 1], &[1, 3]),
        (&[3, 1, 2], &[4, 1]),
        (&[4], &[2, 3, 4]),
        (&[], &[2, 2]),
        (&[2, 3, 1], &[]),
        (&[1, 5, 1, 2], &[3, 1, 4, 1]),
    ];
    for (sa, sb) in cases {
        let a = Tensor::randn_with(sa, &mut g);
        // Keep the divisor away from zero.
        let b = Tensor::rand_with(sb, &mut g) + 0.5;
        let (av, bv) = (a.to_vec::<f64>(), b.to_vec::<f64>());
        let ops: [(&str, Tensor, BinOp); 4] = [
            ("add", &a + &b, |x, y| x + y),
            ("sub", &a - &b, |x, y| x - y),
            ("mul", &a * &b, |x, y| x * y),
            ("div", &a / &b, |x, y| x / y),
        ];
        for (name, got, f) in ops {
            let (shape, want) = broadcast_ref(&av, sa, &bv, sb, f);
            assert_eq!(got.shape(), shape.as_slice(), "{name} {sa:?} {sb:?}");
            assert_tensor(&got, &shape, &want, 1e-6);
        }
        // The method forms agree with the operators.
        assert_eq!(a.add(&b).to_vec::<f32>(), (&a + &b).to_vec::<f32>());
        assert_eq!(a.sub(&b).to_vec::<f32>(), (&a - &b).to_vec::<f32>());
        assert_eq!(a.mul(&b).to_vec::<f32>(), (&a * &b).to_vec::<f32>());
        assert_eq!(a.div(&b).to_vec::<f32>(), (&a / &b).to_vec::<f32>());
    }
}

#[test]
fn broadcast_by_hand() {
    let a = tensor![[1., 2., 3.], [4., 5., 6.]];
    let b = tensor![10., 20., 30.];
    assert_f32(&(&a + &b), &[2, 3], &[11., 22., 33., 14., 25., 36.]);
    let col = tensor![[1.], [2.]];
    let row = tensor![[1., 10., 100.]];
    assert_f32(&(&col * &row), &[2, 3], &[1., 10., 100., 2., 20., 200.]);
    assert_f32(&(&row - &col), &[2, 3], &[0., 9., 99., -1., 8., 98.]);
    assert_f32(&(&a / &col), &[2, 3], &[1., 2., 3., 2., 2.5, 3.]);
}

#[test]
fn owned_borrowed_and_number_operands() {
    let a = tensor![1., 2., 4.];
    let b = tensor![2., 2., 2.];
    let want = [3., 4., 6.];
    assert_f32(&(&a + &b), &[3], &want);
    assert_f32(&(a.clone() + b.clone()), &[3], &want);
    assert_f32(&(&a + b.clone()), &[3], &want);
    assert_f32(&(a.clone() + &b), &[3], &want);
    // Numbers on either side.
    assert_f32(&(&a + 1.0), &[3], &[2., 3., 5.]);
    assert_f32(&(1.0 + &a), &[3], &[2., 3., 5.]);
    assert_f32(&(&a - 1.0), &[3], &[0., 1., 3.]);
    assert_f32(&(10.0 - &a), &[3], &[9., 8., 6.]);
    assert_f32(&(a.clone() * 3.0), &[3], &[3., 6., 12.]);
    assert_f32(&(3.0 * a.clone()), &[3], &[3., 6., 12.]);
    assert_f32(&(&a / 4.0), &[3], &[0.25, 0.5, 1.]);
    assert_f32(&(4.0 / &a), &[3], &[4., 2., 1.]);
    assert_f32(&(4.0 / a.clone()), &[3], &[4., 2., 1.]);
    // Method forms take numbers too, and keep the tensor's dtype.
    assert_f32(&a.add(1.0), &[3], &[2., 3., 5.]);
    assert_f32(&a.sub(0.5f32), &[3], &[0.5, 1.5, 3.5]);
    assert_f32(&a.mul(2), &[3], &[2., 4., 8.]);
    assert_f32(&a.div(2i64), &[3], &[0.5, 1., 2.]);
    let d = tensor![1., 2.; dtype = DType::F64];
    assert_eq!(d.add(0.1).dtype(), DType::F64);
    assert_eq!(d.add(0.1).to_vec::<f64>(), vec![1.1, 2.1]);
    assert_f32(&a.add_scaled(&b, -0.5), &[3], &[0., 1., 3.]);
    // Negation, as an operator and a method.
    assert_f32(&-&a, &[3], &[-1., -2., -4.]);
    assert_f32(&-(a.clone()), &[3], &[-1., -2., -4.]);
    assert_eq!(tensor![3, -4].neg().to_vec::<i64>(), vec![-3, 4]);
    assert_eq!(tensor![3, -4].neg().dtype(), DType::I64);
}

#[test]
fn same_tensor_on_both_sides() {
    let x = tensor![1., -2., 3.];
    assert_f32(&(&x * &x), &[3], &[1., 4., 9.]);
    assert_f32(&(&x - &x), &[3], &[0., 0., 0.]);
    // A view of x against x itself.
    let m = tensor![[1., 2.], [3., 4.]];
    assert_f32(&(&m + &m.t()), &[2, 2], &[2., 5., 5., 8.]);
}

// ---------------------------------------------------------------- unary math

#[test]
fn unary_math_matches_std() {
    let vals = [0.25f64, 0.5, 1.0, 2.0, 3.5];
    let x = Tensor::from_vec(vals.to_vec(), [5]);
    let check = |t: Tensor, f: fn(f64) -> f64| {
        assert_eq!(t.dtype(), DType::F64);
        let want: Vec<f64> = vals.iter().map(|&v| f(v)).collect();
        assert_tensor(&t, &[5], &want, 1e-12);
    };
    check(x.exp(), f64::exp);
    check(x.log(), f64::ln);
    check(x.sqrt(), f64::sqrt);
    check(x.neg(), |v| -v);
    check(x.tanh(), f64::tanh);
    check(x.sigmoid(), |v| 1.0 / (1.0 + (-v).exp()));
    check(x.pow(2.0), |v| v * v);
    check(x.pow(3), |v| v * v * v);
    check(x.pow(0.5), f64::sqrt);
    check(x.pow(-1.0), |v| 1.0 / v);
    check(x.pow(1.5), |v| v.powf(1.5));
    check(x.square(), |v| v * v);
}

#[test]
fn unary_math_on_f32_and_ints() {
    let x = tensor![-2., -0.5, 0., 0.5, 2.];
    assert_f32(&x.abs(), &[5], &[2., 0.5, 0., 0.5, 2.]);
    assert_f32(&x.relu(), &[5], &[0., 0., 0., 0.5, 2.]);
    let want: Vec<f64> = [-2f64, -0.5, 0., 0.5, 2.]
        .iter()
        .map(|v| v.tanh())
        .collect();
    assert_f32(&x.tanh(), &[5], &want);
    let want: Vec<f64> = [-2f64, -0.5, 0., 0.5, 2.]
        .iter()
        .map(|v| 1.0 / (1.0 + (-v).exp()))
        .collect();
    assert_f32(&x.sigmoid(), &[5], &want);
    // exp of an integer tensor is computed in f32, as in PyTorch.
    let e = tensor![0, 1].exp();
    assert_eq!(e.dtype(), DType::F32);
    assert_tensor(&e, &[2], &[1., std::f64::consts::E], 1e-6);
    assert_eq!(tensor![-3, 4].abs().to_vec::<i64>(), vec![3, 4]);
    assert_eq!(tensor![-3, 4].abs().dtype(), DType::I64);
    // log/sqrt of negatives are NaN; log(0) is -inf.
    let l = tensor![-1., 0.].log().to_vec::<f32>();
    assert!(l[0].is_nan() && l[1] == f32::NEG_INFINITY);
    assert!(tensor![-4.].sqrt().item().is_nan());
}

#[test]
fn sigmoid_is_stable_at_the_extremes() {
    let s = tensor![-100., 100., -1000.].sigmoid().to_vec::<f32>();
    assert!(s.iter().all(|v| v.is_finite()), "{s:?}");
    assert!(s[0] >= 0.0 && s[0] < 1e-40);
    assert_eq!(s[1], 1.0);
    assert_eq!(s[2], 0.0);
}

#[test]
fn pow_with_a_tensor_exponent_broadcasts() {
    let base = tensor![[2.], [3.]];
    let e = tensor![0., 1., 2., -1.];
    let p = base.pow(&e);
    assert_f32(&p, &[2, 4], &[1., 2., 4., 0.5, 1., 3., 9., 1.0 / 3.0]);
    // Owned exponent.
    assert_f32(&tensor![4., 9.].pow(tensor![0.5, 0.5]), &[2], &[2., 3.]);
}

#[test]
fn clamp_forms() {
    let x = tensor![-3., -1., 0., 1., 3.];
    assert_f32(
        &x.clamp(Some(-1.5), Some(2.)),
        &[5],
        &[-1.5, -1., 0., 1., 2.],
    );
    assert_f32(&x.clamp(None, Some(0.5)), &[5], &[-3., -1., 0., 0.5, 0.5]);
    assert_f32(&x.clamp(Some(0.), None), &[5], &[0., 0., 0., 1., 3.]);
    assert_f32(&x.clamp_min(-2.), &[5], &[-2., -1., 0., 1., 3.]);
    assert_f32(&x.clamp_max(-2.), &[5], &[-3., -2., -2., -2., -2.]);
    // NaN stays NaN, as in PyTorch.
    assert!(tensor![f32::NAN].clamp(Some(0.), Some(1.)).item().is_nan());
}

#[test]
fn maximum_and_minimum_broadcast() {
    let a = tensor![[1., 5.], [-2., 0.]];
    let b = tensor![0., 3.];
    assert_f32(&a.maximum(&b), &[2, 2], &[1., 5., 0., 3.]);
    assert_f32(&a.minimum(&b), &[2, 2], &[0., 3., -2., 0.]);
    assert_f32(&a.maximum(0.5), &[2, 2], &[1., 5., 0.5, 0.5]);
    assert_f32(&a.minimum(0.5), &[2, 2], &[0.5, 0.5, -2., 0.]);
    // NaN propagates (unlike f32::max).
    let n = tensor![f32::NAN, 1.]
        .maximum(tensor![0., f32::NAN])
        .to_vec::<f32>();
    assert!(n[0].is_nan() && n[1].is_nan());
}

#[test]
fn softmax_and_log_softmax_match_reference() {
    let rows = [[1.0f64, 2., 3.], [-1., 0., 10.]];
    let x = tensor![[1., 2., 3.], [-1., 0., 10.]];
    let mut soft = vec![];
    let mut logsoft = vec![];
    for r in rows {
        let z: f64 = r.iter().map(|v| v.exp()).sum();
        soft.extend(r.iter().map(|v| v.exp() / z));
        logsoft.extend(r.iter().map(|v| v - z.ln()));
    }
    assert_tensor(&x.softmax(1), &[2, 3], &soft, 1e-6);
    assert_tensor(&x.softmax(-1), &[2, 3], &soft, 1e-6);
    assert_tensor(&x.log_softmax(-1), &[2, 3], &logsoft, 1e-6);
    // Along dim 0: each column sums to one.
    let s0 = x.softmax(0);
    let col = s0.sum_dim(0, false).to_vec::<f32>();
    assert!(col.iter().all(|v| (v - 1.0).abs() < 1e-6));
    let c0 = 1.0 / (1.0 + (-2.0f64).exp());
    assert!((s0.to_vec::<f64>()[0] - c0).abs() < 1e-6);
    // Huge logits do not overflow.
    let big = tensor![1000., 1000., 990.];
    let z = 2.0 + (-10.0f64).exp();
    assert_tensor(
        &big.softmax(0),
        &[3],
        &[1. / z, 1. / z, (-10.0f64).exp() / z],
        1e-6,
    );
    let ls = big.log_softmax(0).to_vec::<f64>();
    assert!((ls[0] + z.ln()).abs() < 1e-5, "{ls:?}");
    // f64 in, f64 out.
    assert_eq!(x.to_dtype(DType::F64).softmax(1).dtype(), DType::F64);
}

// ---------------------------------------------------------------- comparisons and where

#[test]
fn comparisons_with_tensors_and_numbers() {
    let a = tensor![1., 2., 3.];
    let b = tensor![3., 2., 1.];
    let bools = |t: Tensor| {
        assert_eq!(t.dtype(), DType::Bool);
        t.to_vec::<bool>()
    };
    assert_eq!(bools(a.eq(&b)), vec![false, true, false]);
    assert_eq!(bools(a.ne(&b)), vec![true, false, true]);
    assert_eq!(bools(a.lt(&b)), vec![true, false, false]);
    assert_eq!(bools(a.le(&b)), vec![true, true, false]);
    assert_eq!(bools(a.gt(&b)), vec![false, false, true]);
    assert_eq!(bools(a.ge(&b)), vec![false, true, true]);
    assert_eq!(bools(a.eq_scalar(2.)), vec![false, true, false]);
    assert_eq!(bools(a.ne_scalar(2.)), vec![true, false, true]);
    assert_eq!(bools(a.lt_scalar(2.)), vec![true, false, false]);
    assert_eq!(bools(a.le_scalar(2.)), vec![true, true, false]);
    assert_eq!(bools(a.gt_scalar(2.)), vec![false, false, true]);
    assert_eq!(bools(a.ge_scalar(2.)), vec![false, true, true]);
    // Broadcasting: a column against a row.
    let c = tensor![[1.], [2.]];
    assert_eq!(c.lt(&a).shape(), &[2, 3]);
    assert_eq!(bools(c.lt(&a)), vec![false, true, true, false, false, true]);
    // Integer tensors against fractional numbers compare exactly.
    let i = tensor![1, 2, 3];
    assert_eq!(bools(i.gt_scalar(1.5)), vec![false, true, true]);
    assert_eq!(bools(i.eq_scalar(2.0)), vec![false, true, false]);
    // Mixed dtypes promote.
    assert_eq!(bools(i.eq(&a)), vec![true, true, true]);
    // NaN: unequal to everything, itself included.
    let n = tensor![f32::NAN];
    assert_eq!(bools(n.eq(&n)), vec![false]);
    assert_eq!(bools(n.ne(&n)), vec![true]);
    assert_eq!(bools(n.lt_scalar(0.)), vec![false]);
    assert_eq!(bools(n.ge_scalar(0.)), vec![false]);
}

#[test]
fn where_selects_with_broadcasting() {
    let cond = tensor![[true], [false]];
    let a = tensor![1., 2., 3.];
    let b = Tensor::scalar(-1.0f32);
    let w = Tensor::where_cond(&cond, &a, &b);
    assert_f32(&w, &[2, 3], &[1., 2., 3., -1., -1., -1.]);
    // A mask computed from the data: relu by hand.
    let x = tensor![-1., 2., -3., 4.];
    let r = Tensor::where_cond(&x.gt_scalar(0.), &x, &x.zeros_like());
    assert_f32(&r, &[4], &[0., 2., 0., 4.]);
    // Promotion of the two branches.
    let m = Tensor::where_cond(
        &tensor![true, false],
        &tensor![1, 2],
        &tensor![0.5, 0.5; dtype = DType::F64],
    );
    assert_eq!(m.dtype(), DType::F64);
    assert_eq!(m.to_vec::<f64>(), vec![1., 0.5]);
    // Ok through the fallible form.
    let t = Tensor::try_where(&cond, &a, &b).unwrap();
    assert_eq!(t.to_vec::<f32>(), w.to_vec::<f32>());
}

// ---------------------------------------------------------------- reductions

/// Folds the elements of `vals` (of `shape`) over `dims` by explicit indexing:
/// returns the output shape (with or without the reduced dims) and, for each
/// output position, the reduced elements in row-major order.
fn groups(
    vals: &[f64],
    shape: &[usize],
    dims: &[usize],
    keepdim: bool,
) -> (Vec<usize>, Vec<Vec<f64>>) {
    let keep_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &s)| if dims.contains(&d) { 1 } else { s })
        .collect();
    let n_out: usize = keep_shape.iter().product();
    let mut out = vec![vec![]; n_out];
    for (i, &v) in vals.iter().enumerate() {
        let mut idx = unravel(i, shape);
        for &d in dims {
            idx[d] = 0;
        }
        out[ravel(&idx, &keep_shape)].push(v);
    }
    let shape = if keepdim {
        keep_shape
    } else {
        shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !dims.contains(d))
            .map(|(_, &s)| s)
            .collect()
    };
    (shape, out)
}

fn two_pass_var(v: &[f64], correction: f64) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - correction)
}

#[test]
fn reductions_over_everything() {
    let x = tensor![[1., 5., -2.], [4., 0., 3.]];
    let s = x.sum();
    assert_eq!(s.ndim(), 0);
    assert_eq!(s.dtype(), DType::F32);
    assert_eq!(s.item(), 11.0);
    assert!((x.mean().item() - 11.0 / 6.0).abs() < 1e-6);
    assert_eq!(x.max().item(), 5.0);
    assert_eq!(x.min().item(), -2.0);
    let am = x.argmax();
    assert_eq!(am.dtype(), DType::I64);
    assert_eq!(am.ndim(), 0);
    assert_eq!(am.item(), 1.0);
    assert_eq!(x.argmin().item(), 2.0);
    // Over a transposed view the flat order is the view's.
    assert_eq!(x.t().argmax().item(), 2.0);
    assert_eq!(x.t().argmin().item(), 4.0);
    // Integers and bools sum to i64; max of i64 stays i64.
    let i = tensor![[1, 2], [3, 4]];
    assert_eq!(i.sum().dtype(), DType::I64);
    assert_eq!(i.sum().item(), 10.0);
    assert_eq!(i.max().dtype(), DType::I64);
    assert_eq!(i.max().item(), 4.0);
    assert_eq!(tensor![true, true, false].sum().item(), 2.0);
    // NaN wins max and min.
    assert!(tensor![1., f32::NAN, 3.].max().item().is_nan());
    assert!(tensor![1., f32::NAN, 3.].min().item().is_nan());
    // 0-d tensors reduce to themselves.
    let z = Tensor::scalar(2.5f32);
    assert_eq!(z.sum().item(), 2.5);
    assert_eq!(z.max().item(), 2.5);
    assert_eq!(z.sum_dim(0, false).item(), 2.5);
    // An empty sum is zero.
    assert_eq!(Tensor::zeros([0, 3]).sum().item(), 0.0);
    assert_eq!(
        Tensor::zeros([0, 3]).sum_dim(0, false).to_vec::<f32>(),
        vec![0.; 3]
    );
}

#[test]
fn sum_and_mean_over_dims_match_reference() {
    let shape = [3usize, 4, 5];
    let x = Tensor::randn_with(shape, &mut Generator::new(9)).to_dtype(DType::F64);
    let vals = x.to_vec::<f64>();
    let dim_sets: [&[isize]; 7] = [&[0], &[1], &[2], &[-1], &[0, 2], &[-3, -2], &[0, 1, 2]];
    for dims in dim_sets {
        let norm: Vec<usize> = dims
            .iter()
            .map(|&d| if d < 0 { (d + 3) as usize } else { d as usize })
            .collect();
        for keepdim in [false, true] {
            let (oshape, g) = groups(&vals, &shape, &norm, keepdim);
            let sums: Vec<f64> = g.iter().map(|v| v.iter().sum()).collect();
            let means: Vec<f64> = g
                .iter()
                .map(|v| v.iter().sum::<f64>() / v.len() as f64)
                .collect();
            assert_tensor(&x.sum_dim(dims, keepdim), &oshape, &sums, 1e-12);
            assert_tensor(&x.mean_dim(dims, keepdim), &oshape, &means, 1e-12);
            // The same through a permuted (non-contiguous) view of the data.
            let p = x.transpose(0, 2).contiguous().transpose(0, 2);
            assert!(!p.is_contiguous());
            assert_tensor(&p.sum_dim(dims, keepdim), &oshape, &sums, 1e-12);
        }
    }
    // The brief's example: several dims with keepdim.
    let y = Tensor::arange(0., 24., 1.).reshape([2, 3, 4]);
    let s = y.sum_dim([0, 2], true);
    assert_eq!(s.shape(), &[1, 3, 1]);
    // Row j sums i*12 + j*4 + k over i in 0..2, k in 0..4: 60 + 32 j.
    assert_f32(&s, &[1, 3, 1], &[60., 92., 124.]);
    assert_f32(
        &y.sum_dim(-1, false),
        &[2, 3],
        &[6., 22., 38., 54., 70., 86.],
    );
    assert_f32(
        &y.mean_dim(1, false),
        &[2, 4],
        &[4., 5., 6., 7., 16., 17., 18., 19.],
    );
    // Several dim spellings.
    assert_eq!(y.sum_dim(vec![0usize, 1], false).shape(), &[4]);
    assert_eq!(y.sum_dim(&[1i64, 2][..], false).shape(), &[2]);
}

#[test]
fn large_and_strided_sums_match_reference() {
    // Above the parallel threshold, contiguous and transposed.
    let x = Tensor::rand_with([300, 200], &mut Generator::new(1)).to_dtype(DType::F64);
    let vals = x.to_vec::<f64>();
    for (dim, keep) in [(0usize, false), (1, true)] {
        let (shape, g) = groups(&vals, &[300, 200], &[dim], keep);
        let want: Vec<f64> = g.iter().map(|v| v.iter().sum()).collect();
        assert_tensor(&x.sum_dim(dim as isize, keep), &shape, &want, 1e-10);
        // x.t() summed over the other dim gives the same numbers.
        let td = 1 - dim as isize;
        let got = x.t().sum_dim(td, false);
        assert_tensor(&got, &[want.len()], &want, 1e-10);
    }
    let total: f64 = vals.iter().sum();
    assert!((x.sum().item() - total).abs() < 1e-9);
    assert!((x.t().sum().item() - total).abs() < 1e-9);
    // A sliced (offset, strided) view.
    let v = x.slice_step(0, 10..290, 3).slice(1, 5..);
    let mut want = 0.0;
    for i in (10..290).step_by(3) {
        for j in 5..200 {
            want += vals[i * 200 + j];
        }
    }
    assert!((v.sum().item() - want).abs() < 1e-9);
    // f32 accumulation of many ones is exact.
    assert_eq!(Tensor::ones([1 << 20]).sum().item(), (1 << 20) as f64);
}

#[test]
fn max_min_dim_values_and_indices() {
    let x = tensor![[1., 7., 3.], [9., 2., 9.], [4., 4., 0.]];
    let (v, i) = x.max_dim(1, false);
    assert_f32(&v, &[3], &[7., 9., 4.]);
    assert_eq!(i.dtype(), DType::I64);
    // Ties give the first index, as in PyTorch.
    assert_eq!(i.to_vec::<i64>(), vec![1, 0, 0]);
    let (v, i) = x.min_dim(0, true);
    assert_f32(&v, &[1, 3], &[1., 2., 0.]);
    assert_eq!(i.shape(), &[1, 3]);
    assert_eq!(i.to_vec::<i64>(), vec![0, 1, 2]);
    let (v, i) = x.max_dim(-2, false);
    assert_f32(&v, &[3], &[9., 7., 9.]);
    assert_eq!(i.to_vec::<i64>(), vec![1, 0, 1]);
    assert_eq!(x.argmax_dim(1, false).to_vec::<i64>(), vec![1, 0, 0]);
    assert_eq!(x.argmin_dim(-1, true).to_vec::<i64>(), vec![0, 1, 2]);
    assert_eq!(x.argmin_dim(-1, true).shape(), &[3, 1]);
    // All ties, large enough to run in parallel: index 0 everywhere.
    let z = Tensor::zeros([200, 300]);
    assert!(z
        .max_dim(1, false)
        .1
        .to_vec::<i64>()
        .iter()
        .all(|&k| k == 0));
    assert!(z
        .min_dim(0, false)
        .1
        .to_vec::<i64>()
        .iter()
        .all(|&k| k == 0));
    assert_eq!(Tensor::ones([5]).argmax().item(), 0.0);
    // NaN is the maximum and the minimum, as in PyTorch.
    let (v, i) = tensor![1., f32::NAN, 5.].max_dim(0, false);
    assert!(v.item().is_nan());
    assert_eq!(i.item(), 1.0);
}

#[test]
fn max_dim_matches_reference_on_a_strided_view() {
    let x = Tensor::randn_with([4, 6, 5], &mut Generator::new(21));
    let p = x.permute(&[2, 0, 1]); // [5, 4, 6]
    let vals = p.contiguous().to_vec::<f64>();
    for dim in 0..3usize {
        let (shape, g) = groups(&vals, &[5, 4, 6], &[dim], false);
        let (v, i) = p.max_dim(dim as isize, false);
        let (mv, mi) = p.min_dim(dim as isize, false);
        let mut want_v = vec![];
        let mut want_i = vec![];
        let mut want_mv = vec![];
        let mut want_mi = vec![];
        for grp in &g {
            let (mut bi, mut si) = (0, 0);
            for (k, &e) in grp.iter().enumerate() {
                if e > grp[bi] {
                    bi = k;
                }
                if e < grp[si] {
                    si = k;
                }
            }
            want_v.push(grp[bi]);
            want_i.push(bi as i64);
            want_mv.push(grp[si]);
            want_mi.push(si as i64);
        }
        assert_tensor(&v, &shape, &want_v, 0.0);
        assert_eq!(i.to_vec::<i64>(), want_i);
        assert_tensor(&mv, &shape, &want_mv, 0.0);
        assert_eq!(mi.to_vec::<i64>(), want_mi);
    }
}

#[test]
fn var_and_std_unbiased_by_default() {
    let v = [2.0f64, 4., 4., 4., 5., 5., 7., 9.];
    let x = Tensor::from_slice(&v, [8]);
    // Population variance of this classic sample is 4; unbiased is 32/7.
    assert!((x.var().item() - 32.0 / 7.0).abs() < 1e-12);
    assert!((x.std().item() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    assert!((x.var_dim(0, 0, false).item() - 4.0).abs() < 1e-12);
    assert!((x.std_dim(0, 0, false).item() - 2.0).abs() < 1e-12);
    assert!((x.var().item() - two_pass_var(&v, 1.0)).abs() < 1e-12);

    // Over dims, against the two-pass formula.
    let shape = [3usize, 4, 5];
    let y = Tensor::randn_with(shape, &mut Generator::new(4)).to_dtype(DType::F64);
    let vals = y.to_vec::<f64>();
    for dims in [vec![0usize], vec![2], vec![0, 2], vec![1, 2]] {
        for correction in [0usize, 1] {
            for keepdim in [false, true] {
                let (oshape, g) = groups(&vals, &shape, &dims, keepdim);
                let var: Vec<f64> = g
                    .iter()
                    .map(|v| two_pass_var(v, correction as f64))
                    .collect();
                let std: Vec<f64> = var.iter().map(|v| v.sqrt()).collect();
                assert_tensor(
                    &y.var_dim(dims.clone(), correction, keepdim),
                    &oshape,
                    &var,
                    1e-12,
                );
                assert_tensor(
                    &y.std_dim(dims.clone(), correction, keepdim),
                    &oshape,
                    &std,
                    1e-12,
                );
            }
        }
    }
    // f32 keeps its dtype; a constant has zero spread.
    let c = Tensor::full([10], 3.0);
    assert_eq!(c.var().dtype(), DType::F32);
    assert_eq!(c.std().item(), 0.0);
    // A single element with the unbiased estimator: NaN, as in PyTorch.
    assert!(tensor![1.].var().item().is_nan());
}

// ---------------------------------------------------------------- matmul

/// The batched matrix product of two ≥2-D arrays with broadcast batch dims,
/// by a naive triple loop in f64.
fn matmul_ref(a: &[f64], ashape: &[usize], b: &[f64], bshape: &[usize]) -> (Vec<usize>, Vec<f64>) {
    let (an, bn) = (ashape.len(), bshape.len());
    let (m, k) = (ashape[an - 2], ashape[an - 1]);
    let (k2, n) = (bshape[bn - 2], bshape[bn - 1]);
    assert_eq!(k, k2);
    let (abatch, bbatch) = (&ashape[..an - 2], &bshape[..bn - 2]);
    let batch = broadcast_shape(abatch, bbatch);
    let nb: usize = batch.iter().product();
    let batch_index = |idx: &[usize], own: &[usize]| -> usize {
        let lead = idx.len() - own.len();
        let i: Vec<usize> = own
            .iter()
            .enumerate()
            .map(|(d, &s)| if s == 1 { 0 } else { idx[lead + d] })
            .collect();
        ravel(&i, own)
    };
    let mut out = vec![0.0; nb * m * n];
    for bi in 0..nb {
        let idx = unravel(bi, &batch);
        let ao = batch_index(&idx, abatch) * m * k;
        let bo = batch_index(&idx, bbatch) * k * n;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0;
                for p in 0..k {
                    acc += a[ao + i * k + p] * b[bo + p * n + j];
                }
                out[bi * m * n + i * n + j] = acc;
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    (shape, out)
}

/// Checks `a.matmul(b)` (any strides) against the reference.
#[track_caller]
fn check_matmul(a: &Tensor, b: &Tensor, tol: f64) {
    let av = a.to_vec::<f64>();
    let bv = b.to_vec::<f64>();
    let (shape, want) = matmul_ref(&av, a.shape(), &bv, b.shape());
    let got = a.matmul(b);
    assert_tensor(&got, &shape, &want, tol);
}

#[test]
fn matmul_by_hand() {
    let a = tensor![[1., 2.], [3., 4.]];
    let b = tensor![[5., 6.], [7., 8.]];
    assert_f32(&a.matmul(&b), &[2, 2], &[19., 22., 43., 50.]);
    assert_f32(&a.mm(&b), &[2, 2], &[19., 22., 43., 50.]);
    // 2x3 @ 3x1.
    let c = tensor![[1., 0., -1.], [2., 1., 0.]];
    assert_f32(&c.matmul(&tensor![[1.], [2.], [3.]]), &[2, 1], &[-2., 4.]);
    // Integers stay integers.
    let i = tensor![[1, 2], [3, 4]];
    let p = i.matmul(&i);
    assert_eq!(p.dtype(), DType::I64);
    assert_eq!(p.to_vec::<i64>(), vec![7, 10, 15, 22]);
    // f32 with f64 is refused, as in PyTorch (no silent promotion), and the
    // message names both dtypes and the conversion that fixes it.
    let err = a
        .try_matmul(&b.to_dtype(DType::F64))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected both operands to have the same dtype, but got f32 and f64")
            && err.contains(".to_dtype(DType::F32)"),
        "{err}"
    );
    let d = a.to_dtype(DType::F64).matmul(&b.to_dtype(DType::F64));
    assert_eq!(d.dtype(), DType::F64);
    assert_eq!(d.to_vec::<f64>(), vec![19., 22., 43., 50.]);
}

#[test]
fn matmul_with_one_dimensional_operands() {
    let v = tensor![1., 2., 3.];
    let w = tensor![4., 5., 6.];
    // 1-D · 1-D: a 0-d dot product.
    let d = v.matmul(&w);
    assert_eq!(d.ndim(), 0);
    assert_eq!(d.item(), 32.0);
    assert_eq!(v.dot(&w).item(), 32.0);
    let m = tensor![[1., 0., 2.], [0., 1., -1.]];
    // 2-D · 1-D: a vector.
    assert_f32(&m.matmul(&v), &[2], &[7., -1.]);
    // 1-D · 2-D: a vector.
    assert_f32(&tensor![1., 2.].matmul(&m), &[3], &[1., 2., 0.]);
    // 1-D · 3-D broadcasts over the batch.
    let b = Tensor::arange(0., 12., 1.).reshape([2, 3, 2]);
    // Batch 0 is [[0,1],[2,3],[4,5]]: v · it = [16, 22]; batch 1 adds 6 to each entry: + 36.
    assert_f32(&v.matmul(&b), &[2, 2], &[16., 22., 52., 58.]);
    // 3-D · 1-D.
    let bb = b.transpose(1, 2); // [2, 2, 3]
    assert_f32(&bb.matmul(&v), &[2, 2], &[16., 22., 52., 58.]);
    // t() of 1-D is the identity; of 2-D the transpose.
    assert_eq!(v.t().shape(), &[3]);
    assert_eq!(m.t().shape(), &[3, 2]);
    assert_f32(&m.t(), &[3, 2], &[1., 0., 0., 1., 2., -1.]);
}

#[test]
fn matmul_matches_naive_loop() {
    let mut g = Generator::new(17);
    let a = Tensor::randn_with([33, 17], &mut g).to_dtype(DType::F64);
    let b = Tensor::randn_with([17, 45], &mut g).to_dtype(DType::F64);
    check_matmul(&a, &b, 1e-12);
    // The same in f32, within f32 accuracy.
    check_matmul(&a.to_dtype(DType::F32), &b.to_dtype(DType::F32), 1e-5);
    // Big enough to run multithreaded.
    for (m, k, n) in [(130, 70, 90), (130, 100, 90), (200, 150, 120)] {
        let a = Tensor::randn_with([m, k], &mut g).to_dtype(DType::F64);
        let b = Tensor::randn_with([k, n], &mut g).to_dtype(DType::F64);
        check_matmul(&a, &b, 1e-11);
        check_matmul(&a.to_dtype(DType::F32), &b.to_dtype(DType::F32), 1e-4);
    }
}

#[test]
fn matmul_on_non_contiguous_operands() {
    let mut g = Generator::new(18);
    // Transposed operands.
    let at = Tensor::randn_with([17, 33], &mut g)
        .to_dtype(DType::F64)
        .t();
    let bt = Tensor::randn_with([45, 17], &mut g)
        .to_dtype(DType::F64)
        .t();
    assert!(!at.is_contiguous() && !bt.is_contiguous());
    check_matmul(&at, &bt, 1e-12);
    let big = Tensor::randn_with([70, 130], &mut g)
        .to_dtype(DType::F64)
        .t();
    let bigb = Tensor::randn_with([90, 70], &mut g).to_dtype(DType::F64);
    check_matmul(&big, &bigb.t(), 1e-11);
    // Strided slices (gaps between rows and columns) with an offset.
    let s = Tensor::randn_with([20, 30], &mut g)
        .slice_step(0, 1.., 2)
        .slice_step(1, 3.., 3); // [10, 9]
    let r = Tensor::randn_with([18, 7], &mut g).slice_step(0, .., 2); // [9, 7]
    check_matmul(&s, &r, 1e-5);
    // A row broadcast with expand (stride 0).
    let e = tensor![[1., 2., 3.]].expand([4, 3]);
    let w = tensor![[1., 0.], [0., 1.], [1., 1.]];
    assert_f32(&e.matmul(&w), &[4, 2], &[4., 5., 4., 5., 4., 5., 4., 5.]);
    // A permuted batch.
    let p = Tensor::randn_with([5, 3, 4], &mut g).permute(&[1, 0, 2]); // [3, 5, 4]
    let q = Tensor::randn_with([3, 4, 6], &mut g);
    check_matmul(&p, &q, 1e-5);
}

#[test]
fn batched_matmul_broadcasts_batch_dims() {
    let mut g = Generator::new(19);
    let cases: [(&[usize], &[usize]); 5] = [
        (&[4, 3, 5], &[4, 5, 2]),
        (&[4, 3, 5], &[5, 2]),
        (&[3, 5], &[4, 5, 2]),
        (&[2, 1, 3, 5], &[6, 5, 4]),
        (&[16, 40, 30], &[30, 50]),
    ];
    for (sa, sb) in cases {
        let a = Tensor::randn_with(sa, &mut g).to_dtype(DType::F64);
        let b = Tensor::randn_with(sb, &mut g).to_dtype(DType::F64);
        check_matmul(&a, &b, 1e-12);
    }
    // Many small products, run in parallel.
    let a = Tensor::randn_with([64, 12, 30], &mut g);
    let b = Tensor::randn_with([64, 30, 12], &mut g);
    check_matmul(&a, &b, 1e-5);
    check_matmul(
        &a,
        &b.transpose(-2, -1).contiguous().transpose(-2, -1),
        1e-5,
    );
    // Empty inner dimension: zeros.
    let z = Tensor::ones([2, 0]).matmul(&Tensor::ones([0, 3]));
    assert_f32(&z, &[2, 3], &[0.; 6]);
}

// ---------------------------------------------------------------- shape ops

#[test]
fn reshape_and_view() {
    let x = Tensor::arange(0., 12., 1.);
    let r = x.reshape([3, 4]);
    assert_f32(&r, &[3, 4], &(0..12).map(f64::from).collect::<Vec<_>>());
    assert!(r.shares_storage(&x));
    assert_eq!(x.reshape([2, -1, 3]).shape(), &[2, 2, 3]);
    assert_eq!(x.reshape([-1]).shape(), &[12]);
    assert_eq!(x.reshape(vec![4usize, 3]).shape(), &[4, 3]);
    assert_eq!(x.reshape(&[6i64, 2][..]).shape(), &[6, 2]);
    let v = x.view([4, -1]);
    assert_eq!(v.shape(), &[4, 3]);
    assert!(v.shares_storage(&x));
    // A scalar and back.
    let s = Tensor::scalar(5.0f32);
    assert_eq!(s.reshape([1, 1]).shape(), &[1, 1]);
    assert_eq!(s.reshape([1, 1]).reshape([0usize; 0]).ndim(), 0);
    // Reshaping a transposed matrix copies, in the logical order.
    let t = r.t(); // [4, 3]: column-major view of r
    let f = t.reshape([12]);
    assert!(!f.shares_storage(&x));
    let want: Vec<f64> = (0..4)
        .flat_map(|j| (0..3).map(move |i| (i * 4 + j) as f64))
        .collect();
    assert_f32(&f, &[12], &want);
    // Splitting a dim of the transposed view can still be a view.
    let split = t.reshape([2, 2, 3]);
    assert!(split.shares_storage(&x));
    assert_eq!(split.to_vec::<f32>(), t.contiguous().to_vec::<f32>());
}

#[test]
#[should_panic(expected = "use .reshape(..) instead")]
fn view_of_a_transposed_tensor_panics_naming_reshape() {
    let _ = Tensor::arange(0., 6., 1.).reshape([2, 3]).t().view([6]);
}

#[test]
fn transpose_permute_and_t() {
    let x = Tensor::arange(0., 24., 1.).reshape([2, 3, 4]);
    let t = x.transpose(0, 2); // [4, 3, 2]: t[i][j][k] = x[k][j][i]
    assert_eq!(t.shape(), &[4, 3, 2]);
    assert!(t.shares_storage(&x));
    assert!(!t.is_contiguous());
    let tv = t.to_vec::<f64>();
    let xv = x.to_vec::<f64>();
    for i in 0..4 {
        for j in 0..3 {
            for k in 0..2 {
                assert_eq!(
                    tv[ravel(&[i, j, k], &[4, 3, 2])],
                    xv[ravel(&[k, j, i], &[2, 3, 4])]
                );
            }
        }
    }
    assert_eq!(x.transpose(-1, -3).to_vec::<f32>(), t.to_vec::<f32>());
    let p = x.permute(&[1, 2, 0]); // p[a][b][c] = x[c][a][b]
    assert_eq!(p.shape(), &[3, 4, 2]);
    assert_eq!(p.strides(), &[4, 1, 12]);
    let pv = p.to_vec::<f64>();
    for a in 0..3 {
        for b in 0..4 {
            for c in 0..2 {
                assert_eq!(
                    pv[ravel(&[a, b, c], &[3, 4, 2])],
                    xv[ravel(&[c, a, b], &[2, 3, 4])]
                );
            }
        }
    }
    // Transposing twice is the original layout.
    let back = t.transpose(0, 2);
    assert!(back.is_contiguous());
    assert_eq!(back.to_vec::<f32>(), x.to_vec::<f32>());
    let m = tensor![[1., 2., 3.], [4., 5., 6.]];
    assert_f32(&m.t(), &[3, 2], &[1., 4., 2., 5., 3., 6.]);
    assert_eq!(m.t().strides(), &[1, 3]);
}

#[test]
fn squeeze_unsqueeze_flatten() {
    let x = Tensor::zeros([1, 3, 1, 2]);
    assert_eq!(x.squeeze().shape(), &[3, 2]);
    assert!(x.squeeze().shares_storage(&x));
    assert_eq!(x.squeeze_dim(0).shape(), &[3, 1, 2]);
    assert_eq!(x.squeeze_dim(-2).shape(), &[1, 3, 2]);
    // A dim that is not 1 is left alone, as in PyTorch.
    assert_eq!(x.squeeze_dim(1).shape(), &[1, 3, 1, 2]);
    let y = tensor![1., 2., 3.];
    assert_eq!(y.unsqueeze(0).shape(), &[1, 3]);
    assert_eq!(y.unsqueeze(1).shape(), &[3, 1]);
    assert_eq!(y.unsqueeze(-1).shape(), &[3, 1]);
    assert_eq!(y.unsqueeze(-2).shape(), &[1, 3]);
    assert_eq!(y.unsqueeze(1).to_vec::<f32>(), vec![1., 2., 3.]);
    assert!(y.unsqueeze(0).shares_storage(&y));
    // Unsqueezing a transposed view stays a view.
    let m = Tensor::arange(0., 6., 1.).reshape([2, 3]).t();
    let u = m.unsqueeze(1);
    assert_eq!(u.shape(), &[3, 1, 2]);
    assert!(u.shares_storage(&m));
    assert_eq!(u.to_vec::<f32>(), m.to_vec::<f32>());
    let z = Tensor::arange(0., 24., 1.).reshape([2, 3, 4]);
    assert_eq!(z.flatten(0, -1).shape(), &[24]);
    assert_eq!(z.flatten(1, 2).shape(), &[2, 12]);
    assert_eq!(z.flatten(0, 1).shape(), &[6, 4]);
    assert_eq!(z.flatten(-2, -1).to_vec::<f32>(), z.to_vec::<f32>());
    assert_eq!(Tensor::scalar(1.0f32).flatten(0, -1).shape(), &[1]);
    // Flattening a permuted tensor copies in logical order.
    let pf = z.permute(&[2, 0, 1]).flatten(0, -1);
    assert_eq!(pf.to_vec::<f32>(), z.permute(&[2, 0, 1]).to_vec::<f32>());
    assert_eq!(pf.to_vec::<f32>()[1], 4.0);
}

#[test]
fn expand_broadcasts_without_copying() {
    let r = tensor![[1., 2., 3.]];
    let e = r.expand([4, 3]);
    assert_eq!(e.shape(), &[4, 3]);
    assert_eq!(e.strides()[0], 0);
    assert!(e.shares_storage(&r));
    assert_f32(
        &e,
        &[4, 3],
        &[1., 2., 3., 1., 2., 3., 1., 2., 3., 1., 2., 3.],
    );
    let c = tensor![[1.], [2.]];
    assert_f32(&c.expand([2, 3]), &[2, 3], &[1., 1., 1., 2., 2., 2.]);
    let col = c.expand([2, 2, 3]);
    assert_eq!(col.shape(), &[2, 2, 3]);
    assert_eq!(col.sum().item(), 18.0);
    assert_eq!(c.expand_as(&Tensor::zeros([2, 4])).shape(), &[2, 4]);
    // Expanding to the same shape is a no-op.
    assert_eq!(r.expand([1, 3]).strides(), r.strides());
}

#[test]
fn narrow_slice_select() {
    let x = Tensor::arange(0., 10., 1.);
    let vals = |t: Tensor| t.to_vec::<f32>();
    assert_eq!(vals(x.narrow(0, 2, 3)), vec![2., 3., 4.]);
    assert_eq!(vals(x.slice(0, 2..5)), vec![2., 3., 4.]);
    assert_eq!(vals(x.slice(0, 2..=4)), vec![2., 3., 4.]);
    assert_eq!(vals(x.slice(0, -3..)), vec![7., 8., 9.]);
    assert_eq!(vals(x.slice(0, ..-7)), vec![0., 1., 2.]);
    assert_eq!(
        vals(x.slice(0, ..)),
        (0..10).map(|v| v as f32).collect::<Vec<_>>()
    );
    assert_eq!(vals(x.slice(0, -4..-2)), vec![6., 7.]);
    // Out-of-range bounds clip, as in Python; reversed ranges are empty.
    assert_eq!(vals(x.slice(0, 8..100)), vec![8., 9.]);
    assert_eq!(vals(x.slice(0, -100..2)), vec![0., 1.]);
    let (hi, lo) = (5, 2);
    assert_eq!(x.slice(0, hi..lo).numel(), 0);
    assert_eq!(vals(x.slice_step(0, 1..8, 3)), vec![1., 4., 7.]);
    assert_eq!(vals(x.slice_step(0, .., 4)), vec![0., 4., 8.]);
    assert_eq!(vals(x.slice_step(0, -5.., 2)), vec![5., 7., 9.]);

    let m = Tensor::arange(0., 12., 1.).reshape([3, 4]);
    let s = m.slice(1, 1..3);
    assert_f32(&s, &[3, 2], &[1., 2., 5., 6., 9., 10.]);
    assert!(s.shares_storage(&m));
    assert_f32(&m.slice(-1, -1..), &[3, 1], &[3., 7., 11.]);
    assert_f32(
        &m.narrow(0, 1, 2),
        &[2, 4],
        &[4., 5., 6., 7., 8., 9., 10., 11.],
    );
    assert_f32(&m.narrow(-1, 3, 1), &[3, 1], &[3., 7., 11.]);
    assert_eq!(m.narrow(1, 4, 0).shape(), &[3, 0]);
    // select removes the dim.
    assert_f32(&m.select(0, 1), &[4], &[4., 5., 6., 7.]);
    assert_f32(&m.select(1, -1), &[3], &[3., 7., 11.]);
    assert_f32(&m.select(-2, -3), &[4], &[0., 1., 2., 3.]);
    assert_eq!(m.select(0, 2).select(0, 1).item(), 9.0);
    assert!(m.select(1, 2).shares_storage(&m));
    // Slices of slices keep offsets straight.
    let ss = m.slice(0, 1..).slice(1, 1..).slice_step(1, .., 2);
    assert_f32(&ss, &[2, 2], &[5., 7., 9., 11.]);
}

#[test]
fn index_select_gather_scatter_add() {
    let x = tensor![[1., 2.], [3., 4.], [5., 6.]];
    let i = tensor![2, 0, 2];
    let r = x.index_select(0, &i);
    assert_f32(&r, &[3, 2], &[5., 6., 1., 2., 5., 6.]);
    assert!(!r.shares_storage(&x));
    assert_f32(&x.index_select(1, &tensor![1]), &[3, 1], &[2., 4., 6.]);
    assert_f32(
        &x.index_select(-1, &tensor![1, 0]),
        &[3, 2],
        &[2., 1., 4., 3., 6., 5.],
    );
    // Of a transposed view: rows of x.t() are columns of x.
    assert_f32(&x.t().index_select(0, &tensor![1]), &[1, 3], &[2., 4., 6.]);
    assert_eq!(
        tensor![10, 20, 30]
            .index_select(0, &tensor![2, 1])
            .to_vec::<i64>(),
        vec![30, 20]
    );

    // gather: out[i][j] = x[i][index[i][j]] for dim 1.
    let t = tensor![[1., 2.], [3., 4.]];
    let g = t.gather(1, &tensor![[0, 0], [1, 0]]);
    assert_f32(&g, &[2, 2], &[1., 1., 4., 3.]);
    // dim 0: out[i][j] = x[index[i][j]][j]; an index smaller than the input.
    let g0 = x.gather(0, &tensor![[2, 1]]);
    assert_f32(&g0, &[1, 2], &[5., 4.]);

    // Against a reference loop in 3-D, on every dim.
    let mut gen = Generator::new(31);
    let src = Tensor::randn_with([3, 4, 5], &mut gen);
    let sv = src.to_vec::<f64>();
    for dim in 0..3 {
        let mut ishape = vec![2usize, 3, 4];
        ishape[dim] = 6;
        let n: usize = ishape.iter().product();
        let size = [3, 4, 5][dim] as i64;
        let idx: Vec<i64> = (0..n).map(|k| (k as i64 * 7 + 3) % size).collect();
        let index = Tensor::from_vec(idx.clone(), &ishape);
        let got = src.gather(dim as isize, &index);
        let want: Vec<f64> = (0..n)
            .map(|p| {
                let mut c = unravel(p, &ishape);
                c[dim] = idx[p] as usize;
                sv[ravel(&c, &[3, 4, 5])]
            })
            .collect();
        assert_tensor(&got, &ishape, &want, 0.0);
        // scatter_add is gather's adjoint: it adds each value where gather read it.
        let vals = Tensor::randn_with(&ishape, &mut gen);
        let vv = vals.to_vec::<f64>();
        let base = Tensor::randn_with([3, 4, 5], &mut gen);
        let mut want = base.to_vec::<f64>();
        for p in 0..n {
            let mut c = unravel(p, &ishape);
            c[dim] = idx[p] as usize;
            want[ravel(&c, &[3, 4, 5])] += vv[p];
        }
        let out = base.scatter_add(dim as isize, &index, &vals);
        assert_tensor(&out, &[3, 4, 5], &want, 1e-6);
    }

    // PyTorch's documented scatter_add example: src larger than index.
    let src = Tensor::ones([2, 5]);
    let z = Tensor::zeros([3, 5]);
    let one = z.scatter_add(0, &tensor![[0, 1, 2, 0, 0]], &src);
    assert_f32(
        &one,
        &[3, 5],
        &[1., 0., 0., 1., 1., 0., 1., 0., 0., 0., 0., 0., 1., 0., 0.],
    );
    let two = z.scatter_add(0, &tensor![[0, 1, 2, 0, 0], [0, 1, 2, 2, 2]], &src);
    assert_f32(
        &two,
        &[3, 5],
        &[2., 0., 0., 1., 1., 0., 2., 0., 0., 0., 0., 0., 2., 1., 1.],
    );
    // The input is not modified.
    assert_eq!(z.sum().item(), 0.0);
}

#[test]
fn cat_and_stack() {
    let a = tensor![[1., 2.], [3., 4.]];
    let b = tensor![[5., 6.]];
    let c = Tensor::cat(&[a.clone(), b.clone()], 0);
    assert_f32(&c, &[3, 2], &[1., 2., 3., 4., 5., 6.]);
    assert!(!c.shares_storage(&a));
    let d = Tensor::cat(&[a.clone(), tensor![[7.], [8.]]], 1);
    assert_f32(&d, &[2, 3], &[1., 2., 7., 3., 4., 8.]);
    let e = Tensor::cat(&[a.clone(), a.t()], -1);
    assert_f32(&e, &[2, 4], &[1., 2., 1., 3., 3., 4., 2., 4.]);
    // Mixed dtypes promote.
    let m = Tensor::cat(&[tensor![1, 2], tensor![0.5]], 0);
    assert_eq!(m.dtype(), DType::F32);
    assert_f32(&m, &[3], &[1., 2., 0.5]);
    // A single tensor is a copy.
    assert_eq!(
        Tensor::cat(std::slice::from_ref(&b), 0).to_vec::<f32>(),
        vec![5., 6.]
    );

    let s0 = Tensor::stack(&[tensor![1., 2.], tensor![3., 4.], tensor![5., 6.]], 0);
    assert_f32(&s0, &[3, 2], &[1., 2., 3., 4., 5., 6.]);
    let s1 = Tensor::stack(&[tensor![1., 2.], tensor![3., 4.], tensor![5., 6.]], 1);
    assert_f32(&s1, &[2, 3], &[1., 3., 5., 2., 4., 6.]);
    let sl = Tensor::stack(&[a.clone(), a.clone()], -1);
    assert_f32(&sl, &[2, 2, 2], &[1., 1., 2., 2., 3., 3., 4., 4.]);
    let s2 = Tensor::stack(&[a.clone(), a.t()], 0);
    assert_f32(&s2, &[2, 2, 2], &[1., 2., 3., 4., 1., 3., 2., 4.]);
}

#[test]
fn split_split_sizes_chunk() {
    let x = Tensor::arange(0., 10., 1.);
    let parts = x.split(4, 0);
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].to_vec::<f32>(), vec![0., 1., 2., 3.]);
    assert_eq!(parts[1].to_vec::<f32>(), vec![4., 5., 6., 7.]);
    assert_eq!(parts[2].to_vec::<f32>(), vec![8., 9.]);
    assert!(parts.iter().all(|p| p.shares_storage(&x)));
    let s = x.split_sizes(&[2, 5, 3], 0);
    assert_eq!(
        s.iter().map(|t| t.numel()).collect::<Vec<_>>(),
        vec![2, 5, 3]
    );
    assert_eq!(s[1].to_vec::<f32>(), vec![2., 3., 4., 5., 6.]);
    assert_eq!(s[2].to_vec::<f32>(), vec![7., 8., 9.]);
    // chunk: pieces of ceil(n / chunks), as torch.chunk (so 6 in 4 gives 3 pieces).
    let c = Tensor::arange(0., 6., 1.).chunk(4, 0);
    assert_eq!(c.len(), 3);
    assert_eq!(
        c.iter().map(|t| t.numel()).collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
    let c = x.chunk(3, 0);
    assert_eq!(
        c.iter().map(|t| t.numel()).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    // Along a later dim.
    let m = Tensor::arange(0., 12., 1.).reshape([2, 6]);
    let cols = m.chunk(2, -1);
    assert_f32(&cols[1], &[2, 3], &[3., 4., 5., 9., 10., 11.]);
    let rows = m.split(1, 0);
    assert_f32(&rows[1], &[1, 6], &[6., 7., 8., 9., 10., 11.]);
}

#[test]
fn contiguous_copies_only_when_needed() {
    let x = Tensor::arange(0., 6., 1.).reshape([2, 3]);
    let c = x.contiguous();
    assert!(c.shares_storage(&x));
    let t = x.t();
    let tc = t.contiguous();
    assert!(tc.is_contiguous());
    assert!(!tc.shares_storage(&x));
    assert_eq!(tc.strides(), &[2, 1]);
    assert_f32(&tc, &[3, 2], &[0., 3., 1., 4., 2., 5.]);
    // clone_data always copies.
    let cd = x.clone_data();
    assert!(!cd.shares_storage(&x));
    assert_eq!(cd.to_vec::<f32>(), x.to_vec::<f32>());
}

#[test]
fn writes_through_views_reach_the_base() {
    let base = Tensor::zeros([3, 4]);
    base.narrow(0, 1, 1).fill_(5.0);
    base.t().select(0, 3).add_(1.0); // column 3
    base.slice_step(1, .., 2).select(0, 0).fill_(-1.0); // row 0, columns 0 and 2
    base.reshape([12]).narrow(0, 11, 1).mul_(10.0);
    assert_f32(
        &base,
        &[3, 4],
        &[-1., 0., -1., 1., 5., 5., 5., 6., 0., 0., 0., 10.],
    );
    // Writes through the base are seen by earlier views.
    let v = base.select(1, 1);
    base.zero_();
    assert_eq!(v.to_vec::<f32>(), vec![0., 0., 0.]);
    // A split piece is a window of the original.
    let x = Tensor::arange(0., 6., 1.);
    x.split(3, 0)[1].fill_(0.0);
    assert_eq!(x.to_vec::<f32>(), vec![0., 1., 2., 0., 0., 0.]);
}

// ---------------------------------------------------------------- in-place ops

#[test]
fn in_place_arithmetic_with_tensors_and_numbers() {
    let x = tensor![1., 2., 3.];
    x.add_(tensor![10., 20., 30.]);
    assert_eq!(x.to_vec::<f32>(), vec![11., 22., 33.]);
    x.sub_(1.0);
    assert_eq!(x.to_vec::<f32>(), vec![10., 21., 32.]);
    x.mul_(tensor![0.5]);
    assert_eq!(x.to_vec::<f32>(), vec![5., 10.5, 16.]);
    x.div_(2.0);
    assert_eq!(x.to_vec::<f32>(), vec![2.5, 5.25, 8.]);
    x.sub_(tensor![0.5, 0.25, 1.0]);
    assert_eq!(x.to_vec::<f32>(), vec![2., 5., 7.]);
    x.mul_(2).add_(1).div_(tensor![5., 11., 15.]);
    assert_eq!(x.to_vec::<f32>(), vec![1., 1., 1.]);
    // Broadcasting a row into a matrix.
    let m = Tensor::zeros([2, 3]);
    m.add_(tensor![1., 2., 3.]).mul_(tensor![[1.], [-1.]]);
    assert_f32(&m, &[2, 3], &[1., 2., 3., -1., -2., -3.]);
    // Integer tensors stay integer.
    let i = tensor![1, 2];
    i.add_(3).mul_(tensor![2, 3]).sub_(1);
    assert_eq!(i.dtype(), DType::I64);
    assert_eq!(i.to_vec::<i64>(), vec![7, 14]);
    // f64 with an f32 operand: computed into the f64 storage.
    let d = tensor![1., 2.; dtype = DType::F64];
    d.add_(tensor![0.5, 0.5]);
    assert_eq!(d.to_vec::<f64>(), vec![1.5, 2.5]);
}

#[test]
fn add_scaled_clamp_zero_fill() {
    let w = tensor![1., 1., 1.];
    w.add_scaled_(&tensor![2., 4., -6.], -0.5);
    assert_eq!(w.to_vec::<f32>(), vec![0., -1., 4.]);
    w.clamp_(Some(-0.5), Some(2.0));
    assert_eq!(w.to_vec::<f32>(), vec![0., -0.5, 2.]);
    w.clamp_(None, Some(1.0));
    assert_eq!(w.to_vec::<f32>(), vec![0., -0.5, 1.]);
    w.clamp_(Some(0.25), None);
    assert_eq!(w.to_vec::<f32>(), vec![0.25, 0.25, 1.]);
    let d = tensor![-2., 0.5, 3.; dtype = DType::F64];
    d.clamp_(Some(-1.), Some(1.));
    assert_eq!(d.to_vec::<f64>(), vec![-1., 0.5, 1.]);
    let i = tensor![-5, 0, 5];
    i.clamp_(Some(-1.), Some(2.));
    assert_eq!(i.to_vec::<i64>(), vec![-1, 0, 2]);
    w.fill_(7.5);
    assert_eq!(w.to_vec::<f32>(), vec![7.5; 3]);
    w.zero_();
    assert_eq!(w.to_vec::<f32>(), vec![0.; 3]);
    let b = tensor![true, false];
    b.fill_(1.0);
    assert_eq!(b.to_vec::<bool>(), vec![true, true]);
    // In-place ops return self, so they chain and share storage.
    let y = Tensor::ones([2]);
    let r = y.add_(1.0).clone();
    assert!(r.shares_storage(&y));
}

#[test]
fn copy_broadcasts_and_converts() {
    let dst = Tensor::zeros([2, 3]);
    dst.copy_(&tensor![1, 2, 3]);
    assert_f32(&dst, &[2, 3], &[1., 2., 3., 1., 2., 3.]);
    dst.copy_(&tensor![[7.], [8.]]);
    assert_f32(&dst, &[2, 3], &[7., 7., 7., 8., 8., 8.]);
    dst.copy_(&Tensor::scalar(0.5f64));
    assert_f32(&dst, &[2, 3], &[0.5; 6]);
    // Into a transposed view: element [i][j] of the view is [j][i] of dst.
    dst.t().copy_(&tensor![[1., 2.], [3., 4.], [5., 6.]]);
    assert_f32(&dst, &[2, 3], &[1., 3., 5., 2., 4., 6.]);
    // From a non-contiguous source.
    let src = Tensor::arange(0., 6., 1.).reshape([3, 2]).t();
    dst.copy_(&src);
    assert_f32(&dst, &[2, 3], &[0., 2., 4., 1., 3., 5.]);
}

#[test]
fn in_place_with_itself_as_operand() {
    let a = tensor![1., 2., 3.];
    a.add_(&a);
    assert_eq!(a.to_vec::<f32>(), vec![2., 4., 6.]);
    a.mul_(&a);
    assert_eq!(a.to_vec::<f32>(), vec![4., 16., 36.]);
    a.sub_(a.clone());
    assert_eq!(a.to_vec::<f32>(), vec![0., 0., 0.]);
    // An overlapping view reads the values from before the write.
    let m = tensor![[1., 2.], [3., 4.]];
    m.add_(m.t());
    assert_eq!(m.to_vec::<f32>(), vec![2., 5., 5., 8.]);
    let v = Tensor::arange(0., 5., 1.);
    v.slice(0, 1..).copy_(&v.slice(0, ..4));
    assert_eq!(v.to_vec::<f32>(), vec![0., 0., 1., 2., 3.]);
    let w = Tensor::arange(1., 4., 1.);
    w.div_(&w);
    assert_eq!(w.to_vec::<f32>(), vec![1., 1., 1.]);
}

#[test]
fn big_rank_tensor_single_element_through_views() {
    // A minibatch of 8 one-second videos: 25 frames of 400x400 RGB.
    let shape = [8usize, 25, 400, 400, 3];
    let x = Tensor::zeros(shape);
    assert_eq!(x.numel(), 96_000_000);
    assert_eq!(x.dtype(), DType::F32);
    let at = [5usize, 17, 123, 321, 2];
    let value = 7.5;
    x.select(0, 5)
        .select(0, 17)
        .narrow(0, 123, 1)
        .narrow(1, 321, 1)
        .select(-1, 2)
        .fill_(value);
    assert_eq!(x.sum().item(), value);
    // The single nonzero is at its row-major position in the storage.
    let flat = x.view([-1]);
    assert_eq!(flat.narrow(0, ravel(&at, &shape), 1).item(), value);
    assert_eq!(
        flat.narrow(0, ravel(&at, &shape) - 1, 3).sum().item(),
        value
    );
    // Summing out the width (dim 3) leaves it at [5, 17, 123, 2].
    let s = x.sum_dim(3, false);
    assert_eq!(s.shape(), &[8, 25, 400, 3]);
    assert_eq!(s.sum().item(), value);
    assert_eq!(
        s.select(0, 5)
            .select(0, 17)
            .select(0, 123)
            .select(0, 2)
            .item(),
        value
    );
    assert_eq!(
        s.select(0, 5)
            .select(0, 17)
            .select(0, 123)
            .select(0, 1)
            .item(),
        0.0
    );
    assert_eq!(
        s.argmax().item(),
        ravel(&[5, 17, 123, 2], &[8, 25, 400, 3]) as f64
    );
}

// ---------------------------------------------------------------- to_vec and item

#[test]
fn to_vec_converts_and_follows_the_view() {
    let x = tensor![[1.5, -2.5], [3., 4.]];
    assert_eq!(x.to_vec::<f64>(), vec![1.5, -2.5, 3., 4.]);
    assert_eq!(x.to_vec::<i64>(), vec![1, -2, 3, 4]);
    assert_eq!(x.to_vec::<bool>(), vec![true, true, true, true]);
    assert_eq!(x.t().to_vec::<f32>(), vec![1.5, 3., -2.5, 4.]);
    assert_eq!(tensor![true, false].to_vec::<f32>(), vec![1., 0.]);
    assert_eq!(
        tensor![[1, 2], [3, 4]].t().to_vec::<i64>(),
        vec![1, 3, 2, 4]
    );
    // item of a one-element tensor of any rank.
    assert_eq!(tensor![[2.5]].item(), 2.5);
    assert_eq!(x.select(0, 1).select(0, 0).item(), 3.0);
    assert_eq!(tensor![7].item(), 7.0);
}

#[test]
#[should_panic(
    expected = "cannot be converted to a scalar; reduce it first (e.g. .sum() or .mean())"
)]
fn item_of_many_elements_panics_naming_the_fix() {
    let _ = tensor![1., 2.].item();
}

// ---------------------------------------------------------------- devices

#[test]
fn devices() {
    let d = Device::Cpu;
    assert!(d.is_cpu());
    assert_eq!(d.to_string(), "cpu");
    assert_eq!(Device::default(), Device::Cpu);
    let x = Tensor::zeros_on([2, 3], &d);
    assert_eq!(x.device(), Device::Cpu);
    assert_eq!(x.to_vec::<f32>(), vec![0.; 6]);
    let o = Tensor::ones_on([2], &d);
    assert_eq!(o.to_vec::<f32>(), vec![1., 1.]);
    // Moving to the device a tensor is already on returns it.
    let y = x.to(&Device::Cpu);
    assert!(y.shares_storage(&x));
    assert_eq!(y.device(), Device::Cpu);
    assert_eq!((&x + &y).device(), Device::Cpu);
    assert_eq!(tensor![1.].device(), Device::Cpu);
    assert_eq!(x.options(), TensorOptions::new().device(&Device::Cpu));
}

// ---------------------------------------------------------------- Display

#[test]
fn display_floats_like_pytorch() {
    assert_eq!(
        tensor![[1., 2.], [3., 4.]].to_string(),
        "tensor([[1., 2.],\n        [3., 4.]])"
    );
    assert_eq!(tensor![0.5, 1.25].to_string(), "tensor([0.5000, 1.2500])");
    // Elements are right-aligned to a common width.
    assert_eq!(tensor![-1., 2.].to_string(), "tensor([-1.,  2.])");
    assert_eq!(
        tensor![-0.5, 2.25].to_string(),
        "tensor([-0.5000,  2.2500])"
    );
    assert_eq!(tensor![0., 10.].to_string(), "tensor([ 0., 10.])");
    // Zeros do not count towards the precision choice.
    assert_eq!(tensor![0., 0.5].to_string(), "tensor([0.0000, 0.5000])");
    assert_eq!(Tensor::zeros([3]).to_string(), "tensor([0., 0., 0.])");
    assert_eq!(Tensor::scalar(0.0f32).to_string(), "tensor(0.)");
    assert_eq!(Tensor::scalar(-2.0f32).to_string(), "tensor(-2.)");
    // A non-contiguous view prints in its logical order.
    assert_eq!(
        tensor![[1., 2.], [3., 4.]].t().to_string(),
        "tensor([[1., 3.],\n        [2., 4.]])"
    );
}

#[test]
fn display_scientific_notation() {
    assert_eq!(tensor![1e-5].to_string(), "tensor([1.0000e-05])");
    assert_eq!(
        tensor![1e-5, 1.0].to_string(),
        "tensor([1.0000e-05, 1.0000e+00])"
    );
    // Integral values spanning more than 1000x, or above 1e8.
    assert_eq!(
        tensor![1., 2000.].to_string(),
        "tensor([1.0000e+00, 2.0000e+03])"
    );
    assert_eq!(
        tensor![1., 1e9].to_string(),
        "tensor([1.0000e+00, 1.0000e+09])"
    );
    assert_eq!(tensor![123456.].to_string(), "tensor([123456.])");
    assert_eq!(
        tensor![-2.5e-7, 3.0].to_string(),
        "tensor([-2.5000e-07,  3.0000e+00])"
    );
    assert_eq!(
        tensor![1e-10, 1.; dtype = DType::F64].to_string(),
        "tensor([1.0000e-10, 1.0000e+00], dtype=f64)"
    );
    assert_eq!(
        Tensor::scalar(1e100f64).to_string(),
        "tensor(1.0000e+100, dtype=f64)"
    );
}

#[test]
fn display_non_finite_values() {
    assert_eq!(
        tensor![1., f32::NAN, f32::INFINITY].to_string(),
        "tensor([1., nan, inf])"
    );
    assert_eq!(
        tensor![0.5, f32::NAN].to_string(),
        "tensor([0.5000,    nan])"
    );
    assert_eq!(
        tensor![f32::NEG_INFINITY, 1.].to_string(),
        "tensor([-inf, 1.])"
    );
}

#[test]
fn display_ints_and_bools() {
    assert_eq!(tensor![1, 2, 3].to_string(), "tensor([1, 2, 3])");
    assert_eq!(tensor![-1, 10, 100].to_string(), "tensor([ -1,  10, 100])");
    assert_eq!(Tensor::scalar(5i64).to_string(), "tensor(5)");
    assert_eq!(tensor![true, false].to_string(), "tensor([ True, False])");
    assert_eq!(tensor![true, true].to_string(), "tensor([True, True])");
    assert_eq!(
        tensor![[true, false], [false, true]].to_string(),
        "tensor([[ True, False],\n        [False,  True]])"
    );
    assert_eq!(
        tensor![0.5, 2.].gt_scalar(1.).to_string(),
        "tensor([False,  True])"
    );
}

#[test]
fn display_suffixes() {
    assert_eq!(
        tensor![1., 2.; dtype = DType::F64].to_string(),
        "tensor([1., 2.], dtype=f64)"
    );
    assert_eq!(
        Tensor::scalar(3.5f32).requires_grad_(true).to_string(),
        "tensor(3.5000, requires_grad=True)"
    );
    let x = tensor![1., 2.].requires_grad_(true);
    assert_eq!(x.to_string(), "tensor([1., 2.], requires_grad=True)");
    let y = &x * 2.0;
    assert_eq!(y.to_string(), "tensor([2., 4.], grad_fn=<MulBackward>)");
    assert_eq!(x.sum().to_string(), "tensor(3., grad_fn=<SumBackward>)");
    let d = tensor![1., 2.; dtype = DType::F64].requires_grad_(true);
    assert_eq!(
        d.to_string(),
        "tensor([1., 2.], dtype=f64, requires_grad=True)"
    );
    // A suffix that would pass 80 columns goes on its own line.
    let long = Tensor::arange_opts(
        0.,
        14.,
        1.,
        &TensorOptions::new().dtype(DType::F64).requires_grad(true),
    );
    assert_eq!(
        long.to_string(),
        "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.],\n       \
         dtype=f64, requires_grad=True)"
    );
    // No grad_fn under no_grad.
    let z = no_grad(|| &x * 2.0);
    assert_eq!(z.to_string(), "tensor([2., 4.])");
}

#[test]
fn display_higher_rank_and_wrapping() {
    assert_eq!(
        Tensor::arange(0., 8., 1.).reshape([2, 2, 2]).to_string(),
        "tensor([[[0., 1.],\n         [2., 3.]],\n\n        [[4., 5.],\n         [6., 7.]]])"
    );
    // Rows wrap at 80 columns, continuing under the first element.
    assert_eq!(
        Tensor::arange(0., 30., 1.).to_string(),
        "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,\n        \
         14., 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27.,\n        \
         28., 29.])"
    );
    // Empty tensors.
    assert_eq!(Tensor::zeros([0]).to_string(), "tensor([])");
    assert_eq!(Tensor::zeros([0, 3]).to_string(), "tensor([], size=(0, 3))");
    assert_eq!(
        Tensor::from_vec(Vec::<i64>::new(), [0]).to_string(),
        "tensor([], dtype=i64)"
    );
}

#[test]
fn display_summarises_large_tensors() {
    // Exactly 1000 elements print in full; one more is summarised.
    let full = Tensor::ones([1000]).to_string();
    assert!(!full.contains("..."));
    assert_eq!(full.matches("1.").count(), 1000);
    assert_eq!(
        Tensor::ones([1001]).to_string(),
        "tensor([1., 1., 1.,  ..., 1., 1., 1.])"
    );
    assert_eq!(
        Tensor::arange(0., 2000., 1.).to_string(),
        "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n        \
         1.9990e+03])"
    );
    assert_eq!(
        Tensor::arange(0, 2000, 1).to_string(),
        "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])"
    );
    let row = "[0., 0., 0.,  ..., 0., 0., 0.]";
    let want = format!(
        "tensor([{row},\n        {row},\n        {row},\n        ...,\n        {row},\n        \
         {row},\n        {row}])"
    );
    assert_eq!(Tensor::zeros([100, 100]).to_string(), want);
    // Only the shown elements decide the format: the middle 1e-9 is hidden.
    let x = Tensor::ones([2000]);
    x.narrow(0, 1000, 1).fill_(1e-9);
    assert_eq!(x.to_string(), "tensor([1., 1., 1.,  ..., 1., 1., 1.])");
}

#[test]
fn debug_names_size_dtype_and_device() {
    assert_eq!(
        format!("{:?}", tensor![1., 2.]),
        "tensor([1., 2.], size=[2], dtype=f32, device=cpu)"
    );
}

/// Numbers promote like Python numbers in PyTorch: a float makes integer math
/// f32, an integer keeps the tensor's dtype.
#[test]
fn number_operands_promote_like_python_numbers() {
    let i = tensor![1, 2];
    let f = &i + 1.0;
    assert_eq!(f.dtype(), DType::F32);
    assert_eq!(f.to_vec::<f32>(), vec![2., 3.]);
    let k = i.add(1);
    assert_eq!(k.dtype(), DType::I64);
    assert_eq!(k.to_vec::<i64>(), vec![2, 3]);
    let h = tensor![1.5; dtype = DType::F64].mul(2);
    assert_eq!(h.dtype(), DType::F64);
    assert_eq!(h.to_vec::<f64>(), vec![3.0]);
    assert_eq!(i.eq_scalar(2.0).to_vec::<bool>(), vec![false, true]);
}

// ---------------------------------------------------------------- ranges and indexing

/// `slice` takes every integer range type and every range form, with
/// Python's meaning (negative from the end, clipped, `..=-1` through the last).
// `1..-1` is empty as a Rust iterator (clippy says so), not as a slice.
#[allow(clippy::reversed_empty_ranges)]
#[test]
fn slice_takes_any_integer_range() {
    let x = Tensor::arange(0, 6, 1);
    let n: usize = x.shape()[0];
    let got = |t: Tensor| t.to_vec::<i64>();
    assert_eq!(got(x.slice(0, 1..n)), vec![1, 2, 3, 4, 5]);
    assert_eq!(got(x.slice(0, 1usize..3usize)), vec![1, 2]);
    assert_eq!(got(x.slice(0, 1isize..3)), vec![1, 2]);
    assert_eq!(got(x.slice(0, 1i32..3)), vec![1, 2]);
    assert_eq!(got(x.slice(0, 1i64..3)), vec![1, 2]);
    assert_eq!(got(x.slice(0, 4..)), vec![4, 5]);
    assert_eq!(got(x.slice(0, ..2)), vec![0, 1]);
    assert_eq!(got(x.slice(0, 1..=3)), vec![1, 2, 3]);
    assert_eq!(got(x.slice(0, ..=1)), vec![0, 1]);
    assert_eq!(got(x.slice(0, ..)), vec![0, 1, 2, 3, 4, 5]);
    // Negative bounds count from the end; an inclusive -1 is the last element.
    assert_eq!(got(x.slice(0, -2..)), vec![4, 5]);
    assert_eq!(got(x.slice(0, 1..-1)), vec![1, 2, 3, 4]);
    assert_eq!(got(x.slice(0, 3..=-1)), vec![3, 4, 5]);
    assert_eq!(got(x.slice(0, ..=-2)), vec![0, 1, 2, 3, 4]);
    // Clipped like Python, and empty when the range is reversed.
    assert_eq!(got(x.slice(0, 4..100)), vec![4, 5]);
    assert_eq!(got(x.slice(0, -100..2)), vec![0, 1]);
    assert_eq!(x.slice(0, 4..2).shape(), &[0]);
    assert_eq!(got(x.slice_step(0, 1usize.., 2)), vec![1, 3, 5]);
}

#[test]
fn permute_takes_negative_dims() {
    let x = Tensor::arange(0., 24., 1.).reshape([2, 3, 4]);
    let p = x.permute(&[0, -1, -2]);
    assert_eq!(p.shape(), &[2, 4, 3]);
    assert_eq!(p.to_vec::<f32>(), x.transpose(1, 2).to_vec::<f32>());
    let dims: Vec<i64> = vec![-1, 0, 1];
    assert_eq!(x.permute(&dims).shape(), &[4, 2, 3]);
    let dims: Vec<usize> = vec![2, 1, 0];
    assert_eq!(x.permute(&dims).shape(), &[4, 3, 2]);
    // -1 and 2 name the same dim: not a permutation.
    let r = std::panic::catch_unwind(|| x.permute(&[0, 2, -1]));
    let msg = r
        .unwrap_err()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(
        msg.starts_with("permute: [0, 2, -1] is not a permutation of the 3 dims"),
        "{msg}"
    );
}

/// `i` reads like Python's `x[...]`: positions remove their dim, ranges keep
/// it, `Ellipsis` fills in; the values are those numpy would give.
#[test]
fn i_indexes_like_python() {
    // x[a][b][c] = 100a + 10b + c, shape [2, 3, 4].
    let v: Vec<i64> = (0..24)
        .map(|k| 100 * (k / 12) + 10 * (k / 4 % 3) + k % 4)
        .collect();
    let x = Tensor::from_vec(v, [2, 3, 4]);
    let got = |t: &Tensor| t.to_vec::<i64>();
    let t = x.i(1);
    assert_eq!(t.shape(), &[3, 4]);
    assert_eq!(got(&t)[..4], [100, 101, 102, 103]);
    let t = x.i((.., 1..3));
    assert_eq!(t.shape(), &[2, 2, 4]);
    assert_eq!(got(&t.i((1, 0))), vec![110, 111, 112, 113]);
    let t = x.i((Ellipsis, -1));
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(got(&t), vec![3, 13, 23, 103, 113, 123]);
    let t = x.i((0, Ellipsis, 1..=2));
    assert_eq!(t.shape(), &[3, 2]);
    assert_eq!(got(&t), vec![1, 2, 11, 12, 21, 22]);
    let t = x.i((-1, -1, -1));
    assert_eq!(t.shape(), &[] as &[usize]);
    assert_eq!(t.item(), 123.0);
    let t = x.i((.., 2usize, ..2i64));
    assert_eq!(got(&t), vec![20, 21, 120, 121]);
    // A view: writing through it changes x.
    x.i((0, 0, 0)).fill_(7.0);
    assert_eq!(got(&x)[0], 7);
}

#[test]
fn i_is_differentiable() {
    let x = Tensor::arange(0., 12., 1.)
        .reshape([3, 4])
        .requires_grad_(true);
    x.i((.., 1..3)).sum().backward();
    let g = x.grad().unwrap().to_vec::<f32>();
    assert_eq!(g, vec![0., 1., 1., 0., 0., 1., 1., 0., 0., 1., 1., 0.]);
    let report = deriv::gradcheck(
        |t| t[0].i((Ellipsis, -1)).exp().sum(),
        &[Tensor::randn([2, 3])],
    );
    assert!(report.passed, "{report}");
}

#[test]
fn i_refuses_bad_indices_with_pytorch_messages() {
    let x = Tensor::zeros([2, 3]);
    let err = x.try_i((0, 3)).unwrap_err().to_string();
    assert!(
        err.contains("index 3 is out of bounds for dimension 1 with size 3"),
        "{err}"
    );
    let err = x.try_i((-3, 0)).unwrap_err().to_string();
    assert!(
        err.contains("index -3 is out of bounds for dimension 0 with size 2"),
        "{err}"
    );
    let err = x.try_i((0, 0, 0)).unwrap_err().to_string();
    assert!(
        err.contains("too many indices for a tensor of 2 dimensions"),
        "{err}"
    );
    let err = x.try_i((Ellipsis, 0, Ellipsis)).unwrap_err().to_string();
    assert!(err.contains("a single Ellipsis"), "{err}");
}

#[test]
fn where_cond_selects_and_the_old_name_still_works() {
    let a = tensor![[1., -2.], [-3., 4.]];
    let y = Tensor::where_cond(&a.gt_scalar(0.0), &a, &tensor![0.5]);
    assert_eq!(y.to_vec::<f32>(), vec![1., 0.5, 0.5, 4.]);
    #[allow(deprecated)]
    let old = Tensor::where_(&a.gt_scalar(0.0), &a, &tensor![0.5]);
    assert_eq!(old.to_vec::<f32>(), y.to_vec::<f32>());
}
