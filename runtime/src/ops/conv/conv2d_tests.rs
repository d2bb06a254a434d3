//! Unit tests of the conv2d op's CPU kernels (a child module of
//! `conv2d`, so they reach its private helpers).

use super::{inside, Conv2d};
use crate::autograd::apply;
use crate::tensor::Tensor;

/// A tap can lie wholly in the right padding, past the row's end: with
/// "same" and an even kernel on one column (1 zero before, 2 after),
/// taps 0, 2 and 3 read padding only, forward and backward.
#[test]
fn taps_wholly_in_the_padding_read_nothing() {
    let x = Tensor::from_vec(vec![2.0f64, -1.0], [1, 1, 2, 1]).requires_grad_(true);
    let w = Tensor::from_vec(vec![1.0f64, 10.0, 100.0, 1000.0], [1, 1, 1, 4]);
    let op = Conv2d {
        stride: [1, 1],
        padding: [0, 0, 1, 2],
        dilation: [1, 1],
        groups: 1,
    };
    let y = apply(op, &[&x, &w]);
    assert_eq!(y.to_vec::<f64>(), [20.0, -10.0]);
    y.backward_with(&Tensor::from_vec(vec![1.0f64, 3.0], [1, 1, 2, 1]));
    assert_eq!(x.grad().unwrap().to_vec::<f64>(), [10.0, 30.0]);
}

/// The convolution's definition summed directly, in f64: `x` `[n, c, h,
/// w]`, `wt` `[o, c/groups, kh, kw]`, `b` `[o]`.
fn direct_sum(op: &Conv2d, x: &Tensor, wt: &Tensor, b: &Tensor) -> Vec<f64> {
    use crate::tensor::DType;
    let g = op.geometry(x, wt).unwrap();
    let f64s = |t: &Tensor| t.to_dtype(DType::F64).to_vec::<f64>();
    let (xs, ws, bs) = (f64s(x), f64s(wt), f64s(b));
    let (c, h, w, o, kh, kw) = (g.c, g.h, g.w, g.o, g.kh, g.kw);
    let (cg, og) = (g.cg(), g.og());
    let (stride, padding, dilation) = (op.stride, op.padding, op.dilation);
    let mut want = vec![0.0; g.n * o * g.ho * g.wo];
    for (i, v) in want.iter_mut().enumerate() {
        let (ox, oy) = (i % g.wo, i / g.wo % g.ho);
        let (oc, s) = (i / (g.wo * g.ho) % o, i / (g.wo * g.ho * o));
        *v = bs[oc];
        for ci in 0..cg {
            for (ki, kj) in (0..kh).flat_map(|a| (0..kw).map(move |b| (a, b))) {
                let yy = (oy * stride[0] + ki * dilation[0]) as isize - padding[0] as isize;
                let xx = (ox * stride[1] + kj * dilation[1]) as isize - padding[2] as isize;
                if yy < 0 || yy >= h as isize || xx < 0 || xx >= w as isize {
                    continue;
                }
                let cin = oc / og * cg + ci;
                *v += xs[((s * c + cin) * h + yy as usize) * w + xx as usize]
                    * ws[((oc * cg + ci) * kh + ki) * kw + kj];
            }
        }
    }
    want
}

/// The largest difference between `got` and `want`.
fn worst(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// The forward, split into tiles of output rows (several per sample, the
/// last one short), against the convolution's definition summed
/// directly: with stride, asymmetric padding, dilation, groups and bias,
/// and with output rows as wide as the input's (im2col's one-copy path),
/// the top or the bottom lines reading padding.
#[test]
fn tiled_forward_matches_the_direct_sum() {
    use crate::tensor::DType;
    // 576 x 64 columns per output row: a tile holds 3 of the 10 rows
    // (3 or 7 rows under Miri, whose tiles are 512 elements).
    let (n, c, h, w, o, groups) = if cfg!(miri) {
        (1, 4, 9, 8, 4, 2)
    } else {
        (2, 128, 11, 130, 8, 2)
    };
    let (kh, kw) = (3, 3);
    let mut rng = crate::Generator::new(5);
    let mut randn = |s: &[usize]| Tensor::randn_with(s, &mut rng).to_dtype(DType::F64);
    let (x, wt, b) = (
        randn(&[n, c, h, w]),
        randn(&[o, c / groups, kh, kw]),
        randn(&[o]),
    );
    for (stride, padding, dilation) in [
        ([1, 2], [2, 1, 1, 0], [2, 1]),
        ([1, 1], [2, 0, 1, 1], [2, 1]),
        ([1, 1], [0, 3, 1, 1], [1, 1]),
    ] {
        let op = Conv2d {
            stride,
            padding,
            dilation,
            groups,
        };
        let g = op.geometry(&x, &wt).unwrap();
        assert!(g.ho.div_ceil(super::tile_rows(&g, 1)) >= 2, "crosses tiles");
        let y = apply(op, &[&x, &wt, &b]);
        let worst = worst(&y.to_vec::<f64>(), &direct_sum(&op, &x, &wt, &b));
        assert!(worst < 1e-12, "{op:?}: max difference {worst}");
    }
}

/// The f32 forward at stride 1 (the direct kernel where the CPU has AVX2 or
/// AVX-512) against the f64 sum: output channels that leave a short
/// register tile (7 = 6 + 1 = 4 + 3), rows whose wide positions end
/// mid-block, several row tiles a sample, dilation, asymmetric and no
/// padding, groups, a 1-channel 5 x 5 kernel (LeNet's first layer) and a
/// 1 x 1 one.
#[test]
fn stride_one_f32_forward_matches_the_direct_sum() {
    // [n, c, h, w, o, groups], [kh, kw], padding, dilation.
    type Case = ([usize; 6], [usize; 2], [usize; 4], [usize; 2]);
    let shapes: &[Case] = if cfg!(miri) {
        &[
            ([1, 2, 5, 6, 7, 1], [3, 3], [1, 1, 1, 1], [1, 1]),
            ([1, 4, 4, 5, 2, 2], [2, 3], [0, 1, 2, 0], [1, 2]),
        ]
    } else {
        &[
            ([2, 64, 13, 21, 7, 1], [3, 3], [1, 1, 1, 1], [1, 1]),
            ([3, 1, 28, 28, 6, 1], [5, 5], [2, 2, 2, 2], [1, 1]),
            ([2, 6, 14, 14, 16, 1], [5, 5], [0; 4], [1, 1]),
            ([1, 8, 9, 70, 12, 2], [2, 3], [0, 1, 2, 0], [2, 1]),
            ([2, 130, 30, 33, 5, 1], [3, 3], [1, 1, 1, 1], [1, 1]),
            ([1, 6, 7, 9, 3, 3], [1, 1], [0; 4], [1, 1]),
        ]
    };
    let mut rng = crate::Generator::new(11);
    for &([n, c, h, w, o, groups], [kh, kw], padding, dilation) in shapes {
        let mut randn = |s: &[usize]| Tensor::randn_with(s, &mut rng);
        let (x, wt, b) = (
            randn(&[n, c, h, w]),
            randn(&[o, c / groups, kh, kw]),
            randn(&[o]),
        );
        let op = Conv2d {
            stride: [1, 1],
            padding,
            dilation,
            groups,
        };
        let y = apply(op, &[&x, &wt, &b]);
        let want = direct_sum(&op, &x, &wt, &b);
        let got: Vec<f64> = y.to_vec::<f32>().into_iter().map(f64::from).collect();
        // f32 sums of c·kh·kw products of unit normals.
        let tol = 1e-5 * ((c / groups * kh * kw) as f64).sqrt() * 8.0;
        let worst = worst(&got, &want);
        assert!(
            worst < tol,
            "{op:?} on {:?}: max difference {worst}",
            x.shape()
        );
    }
}

/// `inside` against the per-element test it replaces, over small
/// sizes, strides, tap offsets and paddings.
#[test]
#[cfg_attr(miri, ignore = "plain arithmetic, and a long sweep under Miri")]
fn inside_is_the_range_of_columns_whose_tap_is_in_the_row() {
    for w in 0..7 {
        for wo in 0..9 {
            for s in 1..4 {
                for off in 0..7 {
                    for pad in 0..5 {
                        let want: Vec<usize> = (0..wo)
                            .filter(|&ox| {
                                let x = (ox * s + off) as isize - pad as isize;
                                x >= 0 && x < w as isize
                            })
                            .collect();
                        let got: Vec<usize> = inside(wo, w, s, off, pad).collect();
                        assert_eq!(got, want, "wo {wo} w {w} s {s} off {off} pad {pad}");
                    }
                }
            }
        }
    }
}

/// A batch-1 input whose columns fit one tile is still split into as
/// many row tiles as there are threads (one tile left the others idle);
/// a batch with a part per thread keeps its memory-sized tiles.
#[test]
#[cfg_attr(
    miri,
    ignore = "plain arithmetic, sized for the native tile (Miri's is smaller)"
)]
fn a_single_tile_input_is_split_across_the_threads() {
    let op = Conv2d {
        stride: [1, 1],
        padding: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    let tiles = |n: usize, width: usize| {
        let x = Tensor::zeros([n, 16, 14, 14]);
        let g = op.geometry(&x, &Tensor::zeros([16, 16, 3, 3])).unwrap();
        g.ho.div_ceil(super::tile_rows(&g, width))
    };
    assert_eq!(tiles(1, 1), 1);
    assert_eq!(tiles(1, 2), 2);
    assert_eq!(tiles(1, 4), 4);
    assert_eq!(tiles(1, 64), 14, "at most one tile per output row");
    assert_eq!(tiles(2, 2), 1);
}

/// The f32 input gradient at stride 1 (the direct kernel on the flipped
/// weight where the CPU has AVX2 or AVX-512, im2col's fold where the
/// padding passes the kernel's span) against the f64 one (im2col's fold):
/// groups, dilation, asymmetric padding, bias-free and with bias.
#[test]
fn stride_one_f32_input_grad_matches_f64() {
    use crate::tensor::DType;
    // [n, c, h, w, o, groups], [kh, kw], padding, dilation.
    type Case = ([usize; 6], [usize; 2], [usize; 4], [usize; 2]);
    let cases: &[Case] = if cfg!(miri) {
        &[([1, 2, 4, 5, 7, 1], [2, 3], [1, 0, 2, 1], [1, 1])]
    } else {
        &[
            ([2, 16, 12, 13, 7, 1], [3, 3], [1, 1, 1, 1], [1, 1]),
            ([2, 6, 14, 14, 16, 1], [5, 5], [0; 4], [1, 1]),
            ([1, 8, 9, 20, 12, 2], [2, 3], [0, 1, 2, 0], [2, 1]),
            ([1, 3, 6, 7, 6, 3], [3, 2], [3, 0, 0, 2], [1, 1]),
        ]
    };
    let mut rng = crate::Generator::new(3);
    for &([n, c, h, w, o, groups], [kh, kw], padding, dilation) in cases {
        let op = Conv2d {
            stride: [1, 1],
            padding,
            dilation,
            groups,
        };
        let mut randn = |s: &[usize]| Tensor::randn_with(s, &mut rng);
        let (x, wt, b) = (
            randn(&[n, c, h, w]),
            randn(&[o, c / groups, kh, kw]),
            randn(&[o]),
        );
        let g = op.geometry(&x, &wt).unwrap();
        let gy = randn(&[n, o, g.ho, g.wo]);
        let grad = |dtype: DType| {
            let x = x.to_dtype(dtype).detach().requires_grad_(true);
            let (wt, b, gy) = (wt.to_dtype(dtype), b.to_dtype(dtype), gy.to_dtype(dtype));
            apply(op, &[&x, &wt, &b]).backward_with(&gy);
            let g = x.grad().unwrap().to_dtype(DType::F64);
            g.to_vec::<f64>()
        };
        let tol = 1e-5 * ((o / groups * kh * kw) as f64).sqrt() * 8.0;
        let worst = worst(&grad(DType::F32), &grad(DType::F64));
        assert!(
            worst < tol,
            "{op:?} on {:?}: max difference {worst}",
            x.shape()
        );
    }
}
