//! The collectives on tensors, against the values computed on one process:
//! every rank builds every rank's input from a seed, so each knows what the
//! result must be. Run under `mpirun -np 2` by `.ci/run` (alone, as a group of
//! one, by `cargo test --features mpi`).

#[path = "common/mpi.rs"]
mod mpi_harness;

use deriv::distributed::{self, ReduceOp};
use deriv::{DType, Generator, Tensor};

fn main() {
    mpi_harness::run(&[
        (
            "all_reduce_matches_the_local_reduction",
            all_reduce_matches_the_local_reduction,
        ),
        (
            "all_reduce_of_odd_sizes_and_empty_tensors",
            all_reduce_of_odd_sizes_and_empty_tensors,
        ),
        (
            "all_reduce_of_views_and_strided_tensors",
            all_reduce_of_views_and_strided_tensors,
        ),
        (
            "integer_reductions_and_refusals",
            integer_reductions_and_refusals,
        ),
        (
            "async_all_reduce_owns_its_tensor_until_wait",
            async_all_reduce_owns_its_tensor_until_wait,
        ),
        ("dropped_work_still_delivers", dropped_work_still_delivers),
        ("broadcast_from_every_root", broadcast_from_every_root),
        ("all_gather_stacks_every_rank", all_gather_stacks_every_rank),
        (
            "reduce_scatter_gives_each_rank_its_block",
            reduce_scatter_gives_each_rank_its_block,
        ),
        (
            "many_async_collectives_in_flight",
            many_async_collectives_in_flight,
        ),
    ]);
}

fn world() -> usize {
    distributed::world_size()
}

fn rank() -> usize {
    distributed::rank()
}

/// Rank `r`'s input: `n` normal samples from seed `seed + r`, in `dtype`.
fn input(seed: u64, r: usize, n: usize, dtype: DType) -> Tensor {
    let mut g = Generator::new(seed + r as u64);
    Tensor::randn_with([n], &mut g).to_dtype(dtype)
}

/// The element-wise reduction of every rank's input, in f64.
fn expected(seed: u64, n: usize, dtype: DType, op: ReduceOp) -> Vec<f64> {
    let all: Vec<Vec<f64>> = (0..world())
        .map(|r| input(seed, r, n, dtype).to_vec::<f64>())
        .collect();
    (0..n)
        .map(|i| {
            let col = all.iter().map(|v| v[i]);
            match op {
                ReduceOp::Sum => col.sum(),
                ReduceOp::Avg => col.sum::<f64>() / world() as f64,
                ReduceOp::Product => col.product(),
                ReduceOp::Min => col.fold(f64::INFINITY, f64::min),
                ReduceOp::Max => col.fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    let d = mpi_harness::max_diff(got, want);
    assert!(d <= tol, "{what}: max difference {d} (tolerance {tol})");
}

const OPS: [ReduceOp; 5] = [
    ReduceOp::Sum,
    ReduceOp::Avg,
    ReduceOp::Product,
    ReduceOp::Min,
    ReduceOp::Max,
];

fn all_reduce_matches_the_local_reduction() {
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
        for (k, op) in OPS.into_iter().enumerate() {
            let seed = 10 + k as u64;
            let t = input(seed, rank(), 1000, dtype);
            distributed::all_reduce(&t, op).unwrap();
            assert_eq!(t.dtype(), dtype);
            assert_eq!(t.shape(), &[1000]);
            assert_close(
                &t.to_vec(),
                &expected(seed, 1000, dtype, op),
                tol,
                &format!("{op:?} {dtype}"),
            );
        }
    }
}

fn all_reduce_of_odd_sizes_and_empty_tensors() {
    for n in [0usize, 1, 7, 1001, 65_537] {
        let t = input(20, rank(), n, DType::F64);
        distributed::all_reduce(&t, ReduceOp::Sum).unwrap();
        assert_close(
            &t.to_vec(),
            &expected(20, n, DType::F64, ReduceOp::Sum),
            1e-12,
            &format!("n = {n}"),
        );
    }
    // An empty 2-D tensor and a 0-d one.
    let e = Tensor::zeros([3, 0]);
    distributed::all_reduce(&e, ReduceOp::Max).unwrap();
    assert_eq!(e.shape(), &[3, 0]);
    let s = Tensor::scalar(rank() as f64 + 1.0);
    distributed::all_reduce(&s, ReduceOp::Sum).unwrap();
    assert_eq!(s.item(), (world() * (world() + 1) / 2) as f64);
}

fn all_reduce_of_views_and_strided_tensors() {
    // A transposed (non-contiguous) matrix: reduced through a gathered copy.
    let m = input(30, rank(), 12, DType::F32).reshape([3, 4]);
    let t = m.t();
    assert!(!t.is_contiguous());
    distributed::all_reduce(&t, ReduceOp::Sum).unwrap();
    let want = expected(30, 12, DType::F32, ReduceOp::Sum);
    assert_close(&m.to_vec(), &want, 1e-5, "transposed");
    // A contiguous view into a larger storage: only the view changes.
    let base = input(31, rank(), 10, DType::F64);
    let before = base.to_vec::<f64>();
    let view = base.narrow(0, 3, 4);
    distributed::all_reduce(&view, ReduceOp::Max).unwrap();
    let want = expected(31, 10, DType::F64, ReduceOp::Max);
    let after = base.to_vec::<f64>();
    assert_close(&after[3..7], &want[3..7], 0.0, "narrowed view");
    assert_eq!(&after[..3], &before[..3], "outside the view");
    assert_eq!(&after[7..], &before[7..], "outside the view");
    // A strided slice (every other element).
    let base = input(32, rank(), 9, DType::F64);
    let every_other = base.slice_step(0, 0..9, 2);
    distributed::all_reduce(&every_other, ReduceOp::Sum).unwrap();
    let want = expected(32, 9, DType::F64, ReduceOp::Sum);
    let got = base.to_vec::<f64>();
    for i in 0..9 {
        let w = if i % 2 == 0 {
            want[i]
        } else {
            input(32, rank(), 9, DType::F64).to_vec::<f64>()[i]
        };
        assert!((got[i] - w).abs() < 1e-12, "element {i}: {} vs {w}", got[i]);
    }
    // A tensor that requires grad: the data is reduced, nothing is recorded.
    let w = Tensor::full([2], 1.0).requires_grad_(true);
    distributed::all_reduce(&w, ReduceOp::Sum).unwrap();
    assert!(w.is_leaf() && w.requires_grad());
    assert_eq!(w.to_vec::<f32>(), vec![world() as f32; 2]);
}

fn integer_reductions_and_refusals() {
    let t = Tensor::from_vec(vec![rank() as i64 * 3, 1 << 40, -(rank() as i64)], [3]);
    distributed::all_reduce(&t, ReduceOp::Sum).unwrap();
    let w = world() as i64;
    assert_eq!(
        t.to_vec::<i64>(),
        vec![3 * w * (w - 1) / 2, w << 40, -(w * (w - 1) / 2)]
    );
    let m = Tensor::from_vec(vec![rank() as i64], [1]);
    distributed::all_reduce(&m, ReduceOp::Max).unwrap();
    assert_eq!(m.item(), (w - 1) as f64);
    // Refused before any communication, on every rank alike.
    let e = distributed::all_reduce(&m, ReduceOp::Avg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Avg needs a float tensor"), "{e}");
    let b = Tensor::from_vec(vec![true, false], [2]);
    let e = distributed::all_reduce(&b, ReduceOp::Sum)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot reduce a bool tensor"), "{e}");
    let e = distributed::broadcast(&m, world()).unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
    // Bools can be broadcast and gathered.
    let b = Tensor::from_vec(vec![rank() == 0, true], [2]);
    distributed::broadcast(&b, 0).unwrap();
    assert_eq!(b.to_vec::<bool>(), vec![true, true]);
}

fn async_all_reduce_owns_its_tensor_until_wait() {
    let t = input(40, rank(), 5000, DType::F32);
    let alias = t.narrow(0, 0, 10); // another view of the same storage
    let work = distributed::all_reduce_async(&t, ReduceOp::Avg).unwrap();
    // Touching the tensor (or any view of its storage) before wait() is refused.
    let msg = mpi_harness::expect_panic(|| alias.to_vec::<f32>());
    assert!(msg.contains("call wait() on the Work"), "{msg}");
    let msg = mpi_harness::expect_panic(|| {
        alias.add_(1.0);
    });
    assert!(msg.contains("call wait() on the Work"), "{msg}");
    // The abort-on-panic switch (the silenced hook above stood in for it).
    distributed::set_abort_on_panic(false);
    distributed::set_abort_on_panic(true);
    assert_eq!(work.name(), "all_reduce");
    work.wait();
    assert_close(
        &t.to_vec(),
        &expected(40, 5000, DType::F32, ReduceOp::Avg),
        1e-6,
        "async avg",
    );
    // And usable again.
    t.add_(1.0);
}

fn dropped_work_still_delivers() {
    let t = input(50, rank(), 333, DType::F64);
    let work = distributed::all_reduce_async(&t, ReduceOp::Sum).unwrap();
    drop(work); // waits
    assert_close(
        &t.to_vec(),
        &expected(50, 333, DType::F64, ReduceOp::Sum),
        1e-12,
        "after drop",
    );
    // The caller may even drop its own handle first: the Work keeps the storage.
    let (out, work) = distributed::all_gather_async(&input(51, rank(), 4, DType::F64)).unwrap();
    let mut work = work;
    while !work.is_completed() {}
    drop(work);
    let want: Vec<f64> = (0..world())
        .flat_map(|r| input(51, r, 4, DType::F64).to_vec::<f64>())
        .collect();
    assert_eq!(out.to_vec::<f64>(), want);
}

fn broadcast_from_every_root() {
    for root in 0..world() {
        for dtype in [DType::F32, DType::F64, DType::I64] {
            let t = input(60 + root as u64, rank(), 17, DType::F64)
                .mul(100.0)
                .to_dtype(dtype);
            distributed::broadcast(&t, root).unwrap();
            let want = input(60 + root as u64, root, 17, DType::F64)
                .mul(100.0)
                .to_dtype(dtype);
            assert_eq!(
                t.to_vec::<f64>(),
                want.to_vec::<f64>(),
                "root {root} {dtype}"
            );
        }
        // Non-contiguous, and non-blocking.
        let m = input(70, rank(), 6, DType::F64).reshape([2, 3]);
        let t = m.t();
        distributed::broadcast_async(&t, root).unwrap().wait();
        assert_eq!(
            m.to_vec::<f64>(),
            input(70, root, 6, DType::F64).to_vec::<f64>()
        );
    }
}

fn all_gather_stacks_every_rank() {
    for dtype in [DType::F32, DType::F64, DType::I64, DType::Bool] {
        let x = input(80, rank(), 6, DType::F64)
            .gt_scalar(0.0)
            .to_dtype(DType::F64)
            + input(81, rank(), 6, DType::F64);
        let x = x.to_dtype(dtype).reshape([2, 3]);
        let g = distributed::all_gather(&x).unwrap();
        assert_eq!(g.shape(), &[world(), 2, 3]);
        assert_eq!(g.dtype(), dtype);
        for r in 0..world() {
            let xr = input(80, r, 6, DType::F64)
                .gt_scalar(0.0)
                .to_dtype(DType::F64)
                + input(81, r, 6, DType::F64);
            assert_eq!(
                g.select(0, r as isize).to_vec::<f64>(),
                xr.to_dtype(dtype).to_vec::<f64>()
            );
        }
    }
    // Of a strided tensor, and of an empty one.
    let x = input(82, rank(), 6, DType::F64).reshape([2, 3]).t();
    let g = distributed::all_gather(&x).unwrap();
    assert_eq!(g.shape(), &[world(), 3, 2]);
    assert_eq!(
        g.select(0, rank() as isize).to_vec::<f64>(),
        x.to_vec::<f64>()
    );
    let e = distributed::all_gather(&Tensor::zeros([0])).unwrap();
    assert_eq!(e.shape(), &[world(), 0]);
}

fn reduce_scatter_gives_each_rank_its_block() {
    let k = 3;
    let n = k * world() * 2;
    for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max] {
        let x = input(90, rank(), n, DType::F64).reshape([k * world(), 2]);
        let out = distributed::reduce_scatter(&x, op).unwrap();
        assert_eq!(out.shape(), &[k, 2]);
        let want = expected(90, n, DType::F64, op);
        let mine = &want[rank() * k * 2..(rank() + 1) * k * 2];
        assert_close(
            &out.to_vec(),
            mine,
            1e-12,
            &format!("reduce_scatter {op:?}"),
        );
    }
    let (out, work) = distributed::reduce_scatter_async(
        &input(91, rank(), 2 * world(), DType::F32),
        ReduceOp::Sum,
    )
    .unwrap();
    work.wait();
    let want = expected(91, 2 * world(), DType::F32, ReduceOp::Sum);
    assert_close(
        &out.to_vec(),
        &want[rank() * 2..rank() * 2 + 2],
        1e-5,
        "async reduce_scatter",
    );
    // A first dimension that does not split evenly is refused on every rank.
    if world() > 1 {
        let e = distributed::reduce_scatter(&Tensor::zeros([world() + 1]), ReduceOp::Sum)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must split evenly"), "{e}");
    }
}

fn many_async_collectives_in_flight() {
    let ts: Vec<Tensor> = (0..8)
        .map(|i| input(100 + i, rank(), 100 + 37 * i as usize, DType::F32))
        .collect();
    let works: Vec<_> = ts
        .iter()
        .map(|t| distributed::all_reduce_async(t, ReduceOp::Sum).unwrap())
        .collect();
    for w in works.into_iter().rev() {
        w.wait();
    }
    for (i, t) in ts.iter().enumerate() {
        let want = expected(100 + i as u64, 100 + 37 * i, DType::F32, ReduceOp::Sum);
        assert_close(&t.to_vec(), &want, 1e-5, &format!("tensor {i}"));
    }
    // The spare buffers can be dropped at any time.
    distributed::empty_cache();
}
