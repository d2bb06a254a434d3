//! Tests of the code that runs `unsafe` blocks, at sizes Miri runs in
//! seconds (CI runs these with `cargo +nightly miri test -p deriv-runtime
//! --lib`): the helper pool, the parallel splits of `build_vec`, `update`,
//! the reductions, the matrix products, the out-variant kernels and the
//! optimizers' step, the strided walks (the AVX2 matrix kernel's test,
//! `backend::cpu::sgemm::tests`, has small shapes under Miri). Under
//! Miri the size thresholds of the parallel paths are small
//! (`cpu::PAR_THRESHOLD` and the products' `PAR_FLOPS`), so the same small
//! tests take the split paths there; natively they check the one-thread
//! paths, and the larger tests beside each kernel check the splits.

use crate::backend::cpu::{self, PAR_THRESHOLD};
use crate::backend::{lock_storages, read_storages, Storage};
use crate::ops::matmul::tests::naive;
use crate::optim::{Adam, Optimizer, SGD};
use crate::tensor::Layout;
use crate::test_util::assert_close;
use crate::{DType, Tensor};

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape).to_dtype(dtype)
}

/// `build_vec` (through `map`, `zip`, `zip3`), `update` and `update_scalar`
/// on both sides of the parallel threshold, contiguous and strided: every
/// element written once, with the right value.
#[test]
fn parallel_elementwise_kernels_write_every_element_once() {
    for n in [PAR_THRESHOLD - 1, 3 * PAR_THRESHOLD + 5] {
        let a: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let l = Layout::contiguous(&[n]);
        assert!(cpu::map("test", &a, &l, |x| x * 2.0)
            .iter()
            .copied()
            .eq(a.iter().map(|x| x * 2.0)));
        let z = cpu::zip("test", &a, &l, &a, &l, |x, y| x + y).unwrap();
        assert!(z.iter().copied().eq(a.iter().map(|x| 2.0 * x)));
        let mut d = a.clone();
        cpu::update("test", &mut d, &l, &a, &l, |x, y| x * y);
        cpu::update_scalar("test", &mut d, &l, |x| x + 1.0);
        assert!(d.iter().copied().eq(a.iter().map(|x| x * x + 1.0)));
    }
    // A transposed view (the strided walk), a row broadcast (row runs), a
    // three-way select, and a strided in-place update.
    let (r, c) = (9, 2 * PAR_THRESHOLD / 9 + 16);
    let src: Vec<f64> = (0..r * c).map(|i| i as f64).collect();
    let t = Layout {
        shape: smallvec::smallvec![c, r],
        strides: smallvec::smallvec![1, c],
        offset: 0,
    };
    let mapped = cpu::map("test", &src, &t, |x| x);
    for (k, v) in mapped.iter().enumerate() {
        let (i, j) = (k / r, k % r);
        assert_eq!(*v, src[j * c + i]);
    }
    let row: Vec<f64> = (0..c).map(|j| -(j as f64)).collect();
    let lr = Layout::contiguous(&[c]).broadcast_to(&[r, c]);
    let la = Layout::contiguous(&[r, c]);
    let sum = cpu::zip("test", &src, &la, &row, &lr, |x, y| x + y).unwrap();
    assert!(sum
        .iter()
        .enumerate()
        .all(|(k, &v)| v == src[k] + row[k % c]));
    let cond: Vec<bool> = (0..r * c).map(|k| k % 3 == 0).collect();
    let sel = cpu::zip3("test", &cond, &la, &src, &la, &row, &lr, |k, x, y| {
        if k {
            x
        } else {
            y
        }
    })
    .unwrap();
    assert!(sel
        .iter()
        .enumerate()
        .all(|(k, &v)| v == if k % 3 == 0 { src[k] } else { row[k % c] }));
    let mut dst = src.clone();
    cpu::update(
        "test",
        &mut dst,
        &t,
        &mapped,
        &Layout::contiguous(&[c, r]),
        |x, y| x - y,
    );
    assert!(dst.iter().all(|&v| v == 0.0));
}

/// `walk` against the multi-index definition: shapes with size-1 and
/// broadcast (stride-0) dims, starts inside a row, and more than 16 dims
/// (its heap-allocated index).
#[test]
fn strided_walks_visit_the_defined_offsets() {
    let cases: [(Vec<usize>, Vec<usize>); 3] = [
        (vec![3, 1, 4], vec![1, 5, 3]),
        (vec![2, 3, 5], vec![0, 7, 1]),
        (
            (0..17)
                .map(|d| {
                    if d == 16 {
                        3
                    } else if d % 5 == 0 {
                        2
                    } else {
                        1
                    }
                })
                .collect(),
            (0..17).map(|d| 1 << d).collect(),
        ),
    ];
    for (shape, strides) in cases {
        let n: usize = shape.iter().product();
        let offset_of = |mut i: usize| {
            let mut o = 11;
            for d in (0..shape.len()).rev() {
                o += (i % shape[d]) * strides[d];
                i /= shape[d];
            }
            o
        };
        for (start, len) in [(0, n), (1, n - 1), (n / 2 + 1, n / 3)] {
            let mut seen = Vec::new();
            cpu::walk(&shape, [&strides], [11], start, len, |[o]| seen.push(o));
            let want: Vec<usize> = (start..start + len).map(offset_of).collect();
            assert_eq!(seen, want, "{shape:?} from {start}");
        }
    }
}

/// The helper pool from several threads at once: each split either gets
/// the helpers or runs inline, and every part runs once either way.
#[test]
fn helper_pool_runs_every_part_once_from_several_threads() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    std::thread::scope(|s| {
        for t in 0..3 {
            s.spawn(move || {
                for round in 0..5 {
                    let parts = 2 + (t + round) % 3;
                    let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                    cpu::pool::par_run(parts, &|p| {
                        hits[p].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                }
            });
        }
    });
}

/// `matmul` on its every path at small sizes: one thread (faer and the
/// AVX2 kernel), row and column blocks, whole products per thread over a
/// batch, transposed operands and an empty inner dimension (Miri's
/// thresholds send the larger of these through the splits).
#[test]
fn matmul_paths_match_the_definition() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
        // The AVX2 kernel's shape, then row blocks and column blocks (Miri).
        for &(m, k, n) in &[(6, 5, 16), (24, 3, 8), (8, 3, 24)] {
            let (a, b) = (tensor(&[m, k], 3, dtype), tensor(&[k, n], 4, dtype));
            assert_close(
                &a.matmul(&b).to_vec::<f64>(),
                &naive(&a, &b),
                tol * k as f64,
                "matmul",
            );
            let (at, bt) = (tensor(&[k, m], 5, dtype).t(), tensor(&[n, k], 6, dtype).t());
            assert_close(
                &at.matmul(&bt).to_vec::<f64>(),
                &naive(&at, &bt),
                tol * k as f64,
                "matmul of transposes",
            );
        }
        // Whole products per thread over a batch (Miri).
        let (a, b) = (tensor(&[9, 4, 5], 7, dtype), tensor(&[5, 6], 8, dtype));
        let c = a.matmul(&b);
        for i in 0..9 {
            let ai = a.select(0, i);
            assert_close(
                &c.select(0, i).to_vec::<f64>(),
                &naive(&ai, &b),
                tol * 5.0,
                "batched matmul",
            );
        }
        let z = Tensor::zeros_opts([9, 0], &crate::TensorOptions::new().dtype(dtype)).matmul(
            &Tensor::zeros_opts([0, 11], &crate::TensorOptions::new().dtype(dtype)),
        );
        assert!(z.to_vec::<f64>().iter().all(|&v| v == 0.0) && z.shape() == [9, 11]);
    }
}

/// The Linear layer's out-variant kernels (`gemm` split into row or column
/// blocks on the helper pool under Miri) and the in-place SGD update
/// (`add_scaled_`, then `zero_`; split into blocks under Miri) against their
/// definitions.
#[test]
fn out_variant_products_and_sgd_match_the_definitions() {
    for dtype in [DType::F32, DType::F64] {
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
        // Row blocks, then column blocks, on the helper pool (Miri).
        for &(rows, nin, nout) in &[(40, 4, 32), (32, 4, 40)] {
            let x = tensor(&[nin, rows], 1, dtype).t();
            let w = tensor(&[nout, nin], 2, dtype);
            let b = tensor(&[nout], 3, dtype);
            // The Linear op's fused kernels: the forward, then the
            // gradients of the weight and the (strided) input.
            let (x, w) = (x.requires_grad_(true), w.requires_grad_(true));
            let y = crate::ops::linear::try_linear(&x, &w, Some(&b)).unwrap();
            let bv = b.to_vec::<f64>();
            let want: Vec<f64> = naive(&x, &w.t())
                .iter()
                .enumerate()
                .map(|(i, v)| v + bv[i % nout])
                .collect();
            assert_close(&y.to_vec::<f64>(), &want, tol * nin as f64, "linear");
            let g = tensor(&[rows, nout], 4, dtype);
            y.backward_with(&g);
            let (dw, dx) = (w.grad().unwrap(), x.grad().unwrap());
            assert_close(
                &dw.to_vec::<f64>(),
                &naive(&g.t(), &x),
                tol * rows as f64,
                "dw",
            );
            assert_close(&dx.to_vec::<f64>(), &naive(&g, &w), tol * nout as f64, "dx");
        }
        let n = 3 * PAR_THRESHOLD + 7;
        let (p, g) = (tensor(&[n], 5, dtype), tensor(&[n], 6, dtype));
        let (pv, gv) = (p.to_vec::<f64>(), g.to_vec::<f64>());
        crate::no_grad(|| {
            p.add_scaled_(&g, -0.5);
            g.zero_();
        });
        let want: Vec<f64> = pv.iter().zip(&gv).map(|(p, g)| p - 0.5 * g).collect();
        assert_close(&p.to_vec::<f64>(), &want, tol, "sgd");
        assert!(g.to_vec::<f64>().iter().all(|&v| v == 0.0));
    }
}

/// An optimizer step over a parameter above the parallel threshold (cut
/// into ranges run in parallel), contiguous and strided, against the
/// formulas; and a reduction whose output is filled in parallel.
#[test]
fn optimizer_steps_and_reductions_split_in_parallel() {
    let n = 3 * PAR_THRESHOLD + 7;
    let start = tensor(&[n], 1, DType::F64);
    let grad = tensor(&[n], 2, DType::F64);
    // SGD with momentum, first step: p - lr * g.
    let p = start.clone_data();
    p.set_grad(Some(grad.clone_data()));
    let mut sgd = SGD::new(vec![p.clone()], 0.1).momentum(0.9);
    sgd.step();
    let want: Vec<f64> = start
        .to_vec::<f64>()
        .iter()
        .zip(grad.to_vec::<f64>())
        .map(|(p, g)| p - 0.1 * g)
        .collect();
    assert_close(&p.to_vec::<f64>(), &want, 1e-15, "sgd strided");
    // Adam, first step on a strided parameter: p - lr * g / (|g| + eps).
    let base = tensor(&[2, n], 3, DType::F64);
    let p = base.t().select(1, 0);
    let before = p.to_vec::<f64>();
    p.set_grad(Some(grad.clone_data()));
    let mut adam = Adam::new(vec![p.clone()], 1e-2);
    adam.step();
    let want: Vec<f64> = before
        .iter()
        .zip(grad.to_vec::<f64>())
        .map(|(p, g)| p - 1e-2 * g / (g.abs() + 1e-8))
        .collect();
    assert_close(&p.to_vec::<f64>(), &want, 1e-9, "adam strided");
    // Row sums of a [rows, 3] matrix: the output is built in parallel.
    let rows = 2 * PAR_THRESHOLD;
    let m = tensor(&[rows, 3], 4, DType::F64);
    let mv = m.to_vec::<f64>();
    let want: Vec<f64> = (0..rows)
        .map(|r| mv[3 * r] + mv[3 * r + 1] + mv[3 * r + 2])
        .collect();
    assert_close(
        &m.sum_dim(1, false).to_vec::<f64>(),
        &want,
        1e-15,
        "sum_dim",
    );
}

/// `lock_storages` and `read_storages` lock each storage once, in address
/// order, and hand the guard of a repeated storage to its first entry.
#[test]
fn storage_locks_are_taken_once_each() {
    let (a, b) = (Tensor::ones([2]), Tensor::zeros([3]));
    let (sa, sb): (&Storage, &Storage) = (a.storage(), b.storage());
    let ([ga, gb, ga2], [w]) = lock_storages([Some(sa), Some(sb), Some(sa)], [None]);
    assert!(ga.is_some() && gb.is_some() && ga2.is_none() && w.is_none());
    assert_eq!((ga.unwrap().len(), gb.unwrap().len()), (2, 3));
    let c = Tensor::ones([4]);
    let ([r], [wc]) = lock_storages([Some(sa)], [Some(c.storage())]);
    assert!(r.is_some() && wc.is_some());
    drop((r, wc));
    let all = read_storages(&[sb, sa, sb]);
    let lens: Vec<usize> = (0..3)
        .map(|i| crate::backend::ReadLocked::buffer(&all, i).len())
        .collect();
    assert_eq!(lens, vec![3, 2, 3]);
    assert!(matches!(all[2], crate::backend::ReadLocked::Alias(0)));
}
