//! The op test table (PyTorch's OpInfo idea): each op has one row, naming
//! how to call it on the tape, its sample inputs and the reference values
//! PyTorch printed for it. `tests/ops.rs` runs every row through the forward
//! reference, f64 gradcheck, f32 = f64, views and empty tensors, and error
//! messages; `tests/cuda.rs` runs the same rows on the GPU (or the CPU
//! stand-in) against the CPU. Adding an op's row adds all of those tests.
//! (`network!`'s three paths are generated per op in `tests/ops.rs`.)

#![allow(dead_code)]

use deriv::nn::functional as F;
use deriv::{DType, Generator, Tensor};

/// One op of the table.
pub struct Row {
    /// The name in `deriv::ops::registry::NAMES` and in the reference table.
    pub name: &'static str,
    /// The op on the tape, on its sample inputs.
    pub f: fn(&[Tensor]) -> Tensor,
    /// The number of tensor inputs.
    pub arity: usize,
    /// Where the derivative jumps (gradcheck's inputs keep clear of them).
    pub kinks: &'static [f64],
    /// Whether inputs must be positive (log, sqrt).
    pub positive: bool,
    /// A reduction or scan over dims, with reference rows in `REDUCE`.
    pub reduction: bool,
}

/// Every op of the table.
pub fn rows() -> Vec<Row> {
    fn un(name: &'static str, f: fn(&[Tensor]) -> Tensor, kinks: &'static [f64]) -> Row {
        Row {
            name,
            f,
            arity: 1,
            kinks,
            positive: false,
            reduction: false,
        }
    }
    let mut rows = vec![
        un("relu", |t| t[0].relu(), &[0.0]),
        un("sigmoid", |t| t[0].sigmoid(), &[]),
        un("tanh", |t| t[0].tanh(), &[]),
        un("silu", |t| F::silu(&t[0]), &[]),
        un("gelu", |t| F::gelu(&t[0], "none"), &[]),
        un("gelu_tanh", |t| F::gelu(&t[0], "tanh"), &[]),
        un("leaky_relu", |t| F::leaky_relu(&t[0], 0.2), &[0.0]),
        un("elu", |t| F::elu(&t[0], 1.5), &[0.0]),
        un("softplus", |t| F::softplus(&t[0], 2.0, 5.0), &[2.5]),
        un("mish", |t| F::mish(&t[0]), &[]),
        un("hardtanh", |t| F::hardtanh(&t[0], -0.5, 2.0), &[-0.5, 2.0]),
        un("logsigmoid", |t| F::logsigmoid(&t[0]), &[]),
        un("exp", |t| t[0].exp(), &[]),
        un("square", |t| t[0].square(), &[]),
        un("neg", |t| -&t[0], &[]),
        un("abs", |t| t[0].abs(), &[0.0]),
        un("clamp", |t| t[0].clamp(Some(-0.5), Some(2.0)), &[-0.5, 2.0]),
        un("add_s", |t| &t[0] + 1.5, &[]),
        un("sub_s", |t| &t[0] - 1.5, &[]),
        un("rsub_s", |t| 1.5 - &t[0], &[]),
        un("mul_s", |t| &t[0] * -2.5, &[]),
        un("div_s", |t| &t[0] / 4.0, &[]),
    ];
    for (name, f) in [
        (
            "log",
            (|t: &[Tensor]| t[0].log()) as fn(&[Tensor]) -> Tensor,
        ),
        ("sqrt", |t| t[0].sqrt()),
        ("rdiv_s", |t| 3.0 / &t[0]),
    ] {
        rows.push(Row {
            positive: true,
            ..un(name, f, &[])
        });
    }
    for (name, f) in [
        (
            "add",
            (|t: &[Tensor]| &t[0] + &t[1]) as fn(&[Tensor]) -> Tensor,
        ),
        ("sub", |t| &t[0] - &t[1]),
        ("mul", |t| &t[0] * &t[1]),
        ("div", |t| &t[0] / &t[1]),
        ("maximum", |t| t[0].maximum(&t[1])),
        ("minimum", |t| t[0].minimum(&t[1])),
        ("pow", |t| t[0].pow(&t[1])),
        ("where", |t| {
            Tensor::where_cond(&t[0].gt_scalar(0.0), &t[0], &t[1])
        }),
    ] {
        rows.push(Row {
            arity: 2,
            positive: name == "div" || name == "pow",
            kinks: if name == "where" { &[0.0] } else { &[] },
            ..un(name, f, &[])
        });
    }
    for (name, f) in [
        (
            "logsumexp",
            (|t: &[Tensor]| t[0].logsumexp(1, false)) as fn(&[Tensor]) -> Tensor,
        ),
        ("cumsum", |t| t[0].cumsum(1)),
        ("softmax", |t| t[0].softmax(1)),
        ("log_softmax", |t| t[0].log_softmax(1)),
        ("var", |t| t[0].var_dim(1, 1, false)),
        ("std", |t| t[0].std_dim(1, 1, true)),
        ("max_dim", |t| t[0].max_dim(nonempty_dim(&t[0]), false).0),
        ("min_dim", |t| t[0].min_dim(nonempty_dim(&t[0]), true).0),
    ] {
        rows.push(Row {
            reduction: true,
            ..un(name, f, &[])
        });
    }
    rows
}

/// Dim 1 of a 2-D sample, or dim 0 where dim 1 is empty (a max over no
/// elements has no value; over dim 0 the expanded view's rows would tie).
fn nonempty_dim(t: &Tensor) -> isize {
    if t.shape()[1] > 0 {
        1
    } else {
        0
    }
}

/// Seeded samples of `shape` in `dtype`: normal, scaled by 2, kept at least
/// 0.05 from every kink (and positive, when asked).
pub fn sample(row: &Row, shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let mut gen = Generator::new(seed);
    let v: Vec<f64> = Tensor::randn_with(shape, &mut gen)
        .to_vec::<f64>()
        .into_iter()
        .map(|x| {
            let mut x = 2.0 * x;
            if row.positive {
                x = x.abs() + 0.25;
            }
            for &k in row.kinks {
                if (x - k).abs() < 0.05 {
                    x = k + 0.05f64.copysign(x - k + 1e-12);
                }
            }
            x
        })
        .collect();
    Tensor::from_vec(v, shape).to_dtype(dtype)
}

/// The sample input sets of a row: plain, a transposed view, an expanded
/// (stride-0) view, broadcasting operands for binary ops, and empty tensors.
pub fn input_sets(row: &Row, dtype: DType) -> Vec<(&'static str, Vec<Tensor>)> {
    let s = |shape: &[usize], seed| sample(row, shape, seed, dtype);
    let mut sets = vec![
        (
            "[3, 4]",
            (0..row.arity).map(|i| s(&[3, 4], 10 + i as u64)).collect(),
        ),
        (
            "transposed view",
            (0..row.arity)
                .map(|i| s(&[4, 3], 20 + i as u64).t())
                .collect(),
        ),
        (
            "expanded view",
            (0..row.arity)
                .map(|i| s(&[1, 4], 30 + i as u64).expand([3, 4]))
                .collect(),
        ),
    ];
    if row.arity == 2 {
        sets.push((
            "broadcast [3, 4] with [4]",
            vec![s(&[3, 4], 40), s(&[4], 41)],
        ));
        sets.push((
            "broadcast [3, 1] with [1, 4]",
            vec![s(&[3, 1], 42), s(&[1, 4], 43)],
        ));
    }
    if !row.reduction {
        sets.push((
            "empty [0, 4]",
            (0..row.arity).map(|_| s(&[0, 4], 50)).collect(),
        ));
    } else {
        sets.push(("empty [3, 0]", vec![s(&[3, 0], 50)]));
    }
    sets
}
