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

// ------------------------------------------------------------ layer ops

/// A layer op of the table (convolution, pooling, normalisation, embedding,
/// attention, the recurrent cell, the newer losses): its functional form on
/// inputs of fixed sample shapes, which [`layer_sets`] turns into a plain,
/// a non-contiguous and (where the op takes one) an empty case. The same
/// checks as the elementwise rows run on each: f64 gradcheck, f32 = f64,
/// views = contiguous copies, empty inputs, and (`tests/cuda.rs`) CPU =
/// CUDA.
pub struct LayerRow {
    /// The case's name: the op and what it exercises.
    pub name: &'static str,
    /// The op on its float inputs (index tensors and given statistics are
    /// made inside, on the inputs' device).
    pub f: fn(&[Tensor]) -> Tensor,
    /// The float inputs' shapes.
    pub shapes: &'static [&'static [usize]],
    /// The shapes of a case with no samples, where the op takes one (as
    /// PyTorch does for every row with samples).
    pub empty: Option<&'static [&'static [usize]]>,
    /// The inputs that must be positive (`kl_div`'s target).
    pub positive: &'static [usize],
}

/// A fixed tensor of `values` in the dtype and on the device of `like`.
fn fixed(values: &[f64], shape: &[usize], like: &Tensor) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape)
        .to_dtype(like.dtype())
        .to(&like.device())
}

/// The recurrent cell of `kind` on `[xg, hg]` and, for an LSTM or GRU, the
/// state it updates.
fn cell(kind: deriv::ops::CellKind, t: &[Tensor]) -> Tensor {
    let inputs: Vec<&Tensor> = t.iter().collect();
    deriv::autograd::apply(deriv::ops::RecurrentCell { kind }, &inputs)
}

/// Every layer op of the table.
pub fn layer_rows() -> Vec<LayerRow> {
    use deriv::nn::{Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions, KlDivOptions};
    use deriv::ops::CellKind;
    fn row(
        name: &'static str,
        f: fn(&[Tensor]) -> Tensor,
        shapes: &'static [&'static [usize]],
        empty: Option<&'static [&'static [usize]]>,
    ) -> LayerRow {
        LayerRow {
            name,
            f,
            shapes,
            empty,
            positive: &[],
        }
    }
    vec![
        row(
            "conv1d, stride 2, padding 1",
            |t| {
                let o = Conv1dOptions::new().stride(2).padding(1);
                F::conv1d(&t[0], &t[1], Some(&t[2]), &o)
            },
            &[&[2, 3, 7], &[4, 3, 3], &[4]],
            Some(&[&[0, 3, 7], &[4, 3, 3], &[4]]),
        ),
        row(
            "conv1d, groups 2, dilation 2, padding same",
            |t| {
                let o = Conv1dOptions::new().groups(2).dilation(2).padding("same");
                F::conv1d(&t[0], &t[1], None, &o)
            },
            &[&[2, 4, 9], &[6, 2, 3]],
            Some(&[&[0, 4, 9], &[6, 2, 3]]),
        ),
        row(
            "conv2d, stride (2, 1), padding 1",
            |t| {
                let o = Conv2dOptions::new().stride((2, 1)).padding(1);
                F::conv2d(&t[0], &t[1], Some(&t[2]), &o)
            },
            &[&[2, 3, 6, 5], &[4, 3, 3, 2], &[4]],
            Some(&[&[0, 3, 6, 5], &[4, 3, 3, 2], &[4]]),
        ),
        row(
            "conv2d, groups 2, dilation (1, 2), padding same",
            |t| {
                let o = Conv2dOptions::new()
                    .groups(2)
                    .dilation((1, 2))
                    .padding("same");
                F::conv2d(&t[0], &t[1], Some(&t[2]), &o)
            },
            &[&[1, 4, 5, 6], &[6, 2, 3, 2], &[6]],
            Some(&[&[0, 4, 5, 6], &[6, 2, 3, 2], &[6]]),
        ),
        row(
            "conv_transpose2d, stride 2, padding 1, output_padding 1",
            |t| {
                let o = ConvTranspose2dOptions::new()
                    .stride(2)
                    .padding(1)
                    .output_padding(1);
                F::conv_transpose2d(&t[0], &t[1], Some(&t[2]), &o)
            },
            &[&[2, 3, 4, 3], &[3, 2, 3, 3], &[2]],
            Some(&[&[0, 3, 4, 3], &[3, 2, 3, 3], &[2]]),
        ),
        row(
            "conv_transpose2d, groups 2, stride (1, 2), dilation 2",
            |t| {
                let o = ConvTranspose2dOptions::new()
                    .groups(2)
                    .stride((1, 2))
                    .dilation(2);
                F::conv_transpose2d(&t[0], &t[1], None, &o)
            },
            &[&[1, 4, 3, 3], &[4, 1, 2, 2]],
            Some(&[&[0, 4, 3, 3], &[4, 1, 2, 2]]),
        ),
        row(
            "max_pool2d, kernel 3, stride 2, padding 1",
            |t| F::max_pool2d_with(&t[0], 3, 2, 1),
            &[&[2, 3, 6, 5]],
            Some(&[&[0, 3, 6, 5]]),
        ),
        row(
            "avg_pool2d, kernel 3, stride 2, padding 1",
            |t| F::avg_pool2d_with(&t[0], 3, 2, 1, true),
            &[&[2, 3, 6, 5]],
            Some(&[&[0, 3, 6, 5]]),
        ),
        row(
            "avg_pool2d, count_include_pad false",
            |t| F::avg_pool2d_with(&t[0], (2, 3), (2, 1), (1, 1), false),
            &[&[2, 2, 5, 4]],
            Some(&[&[0, 2, 5, 4]]),
        ),
        row(
            "adaptive_avg_pool2d to (3, 2)",
            |t| F::adaptive_avg_pool2d(&t[0], (3, 2)),
            &[&[2, 3, 7, 5]],
            Some(&[&[0, 3, 7, 5]]),
        ),
        row(
            "layer_norm over [4, 5]",
            |t| F::layer_norm(&t[0], &[4, 5], Some(&t[1]), Some(&t[2]), 1e-5),
            &[&[3, 4, 5], &[4, 5], &[4, 5]],
            Some(&[&[0, 4, 5], &[4, 5], &[4, 5]]),
        ),
        row(
            "group_norm, 3 groups",
            |t| F::group_norm(&t[0], 3, Some(&t[1]), Some(&t[2]), 1e-5),
            &[&[2, 6, 3, 2], &[6], &[6]],
            Some(&[&[0, 6, 3, 2], &[6], &[6]]),
        ),
        row(
            "batch_norm, batch statistics",
            |t| F::batch_norm(&t[0], None, None, Some(&t[1]), Some(&t[2]), true, 0.1, 1e-5),
            &[&[4, 3, 5], &[3], &[3]],
            Some(&[&[0, 3, 5], &[3], &[3]]),
        ),
        row(
            "batch_norm, running statistics",
            |t| {
                let mean = fixed(&[0.3, -0.2, 0.1], &[3], &t[0]);
                let var = fixed(&[0.5, 1.5, 2.0], &[3], &t[0]);
                let (w, b) = (Some(&t[1]), Some(&t[2]));
                F::batch_norm(&t[0], Some(&mean), Some(&var), w, b, false, 0.1, 1e-5)
            },
            &[&[4, 3, 2, 2], &[3], &[3]],
            Some(&[&[0, 3, 2, 2], &[3], &[3]]),
        ),
        row(
            "embedding",
            |t| {
                let idx =
                    Tensor::from_vec(vec![4i64, 0, 6, 4, 2, 4, 1, 0], [2, 4]).to(&t[0].device());
                F::embedding(&idx, &t[0])
            },
            &[&[7, 3]],
            None,
        ),
        row(
            "scaled_dot_product_attention, float mask, scale 0.7",
            |t| {
                F::scaled_dot_product_attention(
                    &t[0],
                    &t[1],
                    &t[2],
                    Some(&t[3]),
                    0.0,
                    false,
                    Some(0.7),
                )
            },
            &[&[2, 3, 4], &[2, 5, 4], &[2, 5, 2], &[3, 5]],
            Some(&[&[0, 3, 4], &[0, 5, 4], &[0, 5, 2], &[3, 5]]),
        ),
        row(
            "scaled_dot_product_attention, causal",
            |t| F::scaled_dot_product_attention(&t[0], &t[1], &t[2], None, 0.0, true, None),
            &[&[2, 2, 4, 3], &[2, 2, 4, 3], &[2, 2, 4, 2]],
            Some(&[&[0, 2, 4, 3], &[0, 2, 4, 3], &[0, 2, 4, 2]]),
        ),
        row(
            "recurrent_cell, tanh",
            |t| cell(CellKind::RnnTanh, t),
            &[&[3, 4], &[3, 4]],
            Some(&[&[0, 4], &[0, 4]]),
        ),
        row(
            "recurrent_cell, relu",
            |t| cell(CellKind::RnnRelu, t),
            &[&[3, 4], &[3, 4]],
            Some(&[&[0, 4], &[0, 4]]),
        ),
        row(
            "recurrent_cell, lstm",
            |t| cell(CellKind::Lstm, t),
            &[&[3, 8], &[3, 8], &[3, 2]],
            Some(&[&[0, 8], &[0, 8], &[0, 2]]),
        ),
        row(
            "recurrent_cell, gru",
            |t| cell(CellKind::Gru, t),
            &[&[3, 6], &[3, 6], &[3, 2]],
            Some(&[&[0, 6], &[0, 6], &[0, 2]]),
        ),
        row(
            "huber_loss, delta 1.5, sum",
            |t| F::huber_loss_with(&t[0], &t[1], deriv::nn::Reduction::Sum, 1.5),
            &[&[3, 4], &[3, 4]],
            None,
        ),
        row(
            "smooth_l1_loss, beta 0.5",
            |t| F::smooth_l1_loss_with(&t[0], &t[1], deriv::nn::Reduction::Mean, 0.5),
            &[&[3, 4], &[3, 4]],
            None,
        ),
        LayerRow {
            positive: &[1],
            ..row(
                "kl_div, batchmean",
                |t| {
                    let o = KlDivOptions {
                        reduction: deriv::nn::KlDivReduction::BatchMean,
                        log_target: false,
                    };
                    F::kl_div_with(&t[0], &t[1], &o)
                },
                &[&[3, 4], &[3, 4]],
                None,
            )
        },
        row(
            "kl_div, log_target",
            |t| {
                let o = KlDivOptions {
                    reduction: deriv::nn::KlDivReduction::Sum,
                    log_target: true,
                };
                F::kl_div_with(&t[0], &t[1], &o)
            },
            &[&[3, 4], &[3, 4]],
            None,
        ),
    ]
}

/// The cases of a layer row: its inputs (seeded normal samples, positive
/// where asked), the same values through non-contiguous views (each input
/// of two or more dims stored with its first and last dims swapped), and
/// the empty case.
pub fn layer_sets(row: &LayerRow, dtype: DType) -> Vec<(&'static str, Vec<Tensor>)> {
    let make = |shapes: &[&[usize]]| -> Vec<Tensor> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = Tensor::randn_with(s, &mut Generator::new(60 + i as u64));
                let t = if row.positive.contains(&i) {
                    &t.abs() + 0.25
                } else {
                    t
                };
                t.to_dtype(dtype)
            })
            .collect()
    };
    let plain = make(row.shapes);
    let views = plain
        .iter()
        .map(|t| {
            if t.ndim() < 2 {
                t.clone()
            } else {
                t.transpose(0, -1).contiguous().transpose(0, -1)
            }
        })
        .collect();
    let mut sets = vec![("plain", plain), ("non-contiguous", views)];
    if let Some(empty) = row.empty {
        sets.push(("empty", make(empty)));
    }
    sets
}
