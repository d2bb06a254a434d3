//! Gradient checks (f64 central differences) for every differentiable op:
//! broadcasting, scalar operands, non-contiguous views, batched matmul, the
//! reductions, the shape ops, indexing, and composite chains.

use deriv::{gradcheck, gradcheck_opts, tensor, DType, Generator, GradcheckOptions, Tensor};

/// Seeded standard-normal samples as f64.
fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut gen = Generator::new(seed);
    Tensor::randn_with(shape, &mut gen).to_dtype(DType::F64)
}

/// Seeded samples in [0.5, ∞): safe for log, sqrt, division and pow.
fn positive(shape: &[usize], seed: u64) -> Tensor {
    randn(shape, seed).abs() + 0.5
}

/// Runs gradcheck and asserts it passed and looked at every float element.
#[track_caller]
fn check(f: impl Fn(&[Tensor]) -> Tensor, inputs: &[Tensor]) {
    let report = gradcheck(f, inputs);
    let expected: usize = inputs
        .iter()
        .filter(|t| t.dtype().is_float())
        .map(|t| t.numel())
        .sum();
    assert_eq!(
        report.checked, expected,
        "not every element was checked: {report}"
    );
    assert!(report.passed, "{report}");
}

#[test]
fn gradcheck_detects_a_wrong_gradient() {
    // detach() hides one factor from autograd: analytic x, numerical 2x.
    let report = gradcheck(|t| &t[0].detach() * &t[0], &[randn(&[3, 4], 0)]);
    assert!(!report.passed, "a wrong gradient must fail: {report}");
    assert!(
        (report.numerical - 2.0 * report.analytic).abs() < 1e-6,
        "worst element should show the factor of 2: {report}"
    );
}

// ---------------------------------------------------------------- add / sub / mul / div

#[test]
fn add_same_shape() {
    check(|t| t[0].add(&t[1]), &[randn(&[3, 4], 1), randn(&[3, 4], 2)]);
    check(|t| &t[0] + &t[1], &[randn(&[2, 3], 3), randn(&[2, 3], 4)]);
}

#[test]
fn add_broadcast_3d_with_2d() {
    check(
        |t| &t[0] + &t[1],
        &[randn(&[3, 1, 4], 5), randn(&[2, 1], 6)],
    );
    check(
        |t| &t[1] + &t[0],
        &[randn(&[3, 1, 4], 7), randn(&[2, 1], 8)],
    );
}

#[test]
fn add_scalar_operands() {
    check(|t| &t[0] + 2.5, &[randn(&[3, 4], 9)]);
    check(|t| 2.5 + &t[0], &[randn(&[3, 4], 10)]);
    check(|t| t[0].add(1.5), &[randn(&[5], 11)]);
    // A 0-d tensor operand that itself requires grad.
    check(|t| &t[0] + &t[1], &[randn(&[3, 4], 12), randn(&[], 13)]);
    check(
        |t| t[0].add_scaled(&t[1], -0.75),
        &[randn(&[3, 4], 14), randn(&[4], 15)],
    );
}

#[test]
fn sub_broadcast_and_scalars() {
    check(|t| &t[0] - &t[1], &[randn(&[4], 16), randn(&[3, 4], 17)]);
    check(
        |t| t[0].sub(&t[1]),
        &[randn(&[3, 1, 4], 18), randn(&[2, 1], 19)],
    );
    check(|t| 1.0 - &t[0], &[randn(&[3, 4], 20)]);
    check(|t| &t[0] - 1.0, &[randn(&[3, 4], 21)]);
    check(|t| &t[0] - &t[1], &[randn(&[2, 3], 22), randn(&[], 23)]);
}

#[test]
fn mul_broadcast_and_scalars() {
    check(|t| &t[0] * &t[1], &[randn(&[4], 24), randn(&[3, 4], 25)]);
    check(
        |t| t[0].mul(&t[1]),
        &[randn(&[3, 1, 4], 26), randn(&[2, 1], 27)],
    );
    check(|t| &t[0] * 3.0, &[randn(&[3, 4], 28)]);
    check(|t| -2.0 * &t[0], &[randn(&[3, 4], 29)]);
    check(|t| &t[0] * &t[1], &[randn(&[], 30), randn(&[2, 3], 31)]);
}

#[test]
fn mul_same_tensor_twice() {
    check(|t| &t[0] * &t[0], &[randn(&[3, 4], 32)]);
    check(|t| t[0].mul(t[0].t()), &[randn(&[3, 3], 33)]);
}

#[test]
fn div_broadcast_and_scalars() {
    check(|t| &t[0] / &t[1], &[randn(&[3, 4], 34), positive(&[4], 35)]);
    check(
        |t| t[0].div(&t[1]),
        &[randn(&[4], 36), positive(&[3, 4], 37)],
    );
    check(
        |t| &t[0] / &t[1],
        &[randn(&[3, 1, 4], 38), positive(&[2, 1], 39)],
    );
    check(|t| 3.0 / &t[0], &[positive(&[3, 4], 40)]);
    check(|t| &t[0] / 4.0, &[randn(&[3, 4], 41)]);
    check(|t| &t[0] / &t[1], &[randn(&[2, 3], 42), positive(&[], 43)]);
}

// ---------------------------------------------------------------- pow, maximum, minimum

#[test]
fn pow_tensor_exponent() {
    check(
        |t| t[0].pow(&t[1]),
        &[positive(&[3, 4], 44), randn(&[3, 4], 45)],
    );
    // Broadcast exponent.
    check(
        |t| t[0].pow(&t[1]),
        &[positive(&[3, 4], 46), randn(&[4], 47)],
    );
    // Broadcast base.
    check(
        |t| t[0].pow(&t[1]),
        &[positive(&[4], 48), randn(&[3, 4], 49)],
    );
}

#[test]
fn pow_scalar_exponents() {
    for (i, p) in [2.0, 3.0, 1.0, 0.5, -1.5, 2.7, -2.0]
        .into_iter()
        .enumerate()
    {
        check(|t| t[0].pow_scalar(p), &[positive(&[3, 4], 50 + i as u64)]);
        check(|t| t[0].pow(p), &[positive(&[5], 60 + i as u64)]);
    }
    // Integer powers of negative numbers are fine too.
    check(|t| t[0].pow_scalar(3.0), &[randn(&[3, 4], 70)]);
    check(|t| t[0].square(), &[randn(&[3, 4], 71)]);
    // x^0 is constant: zero gradient, and gradcheck must agree.
    check(|t| t[0].pow_scalar(0.0) + &t[0], &[randn(&[3, 4], 72)]);
}

#[test]
fn maximum_minimum() {
    check(
        |t| t[0].maximum(&t[1]),
        &[randn(&[3, 4], 73), randn(&[3, 4], 74)],
    );
    check(
        |t| t[0].minimum(&t[1]),
        &[randn(&[3, 4], 75), randn(&[3, 4], 76)],
    );
    check(
        |t| t[0].maximum(&t[1]),
        &[randn(&[3, 4], 77), randn(&[4], 78)],
    );
    check(
        |t| t[0].minimum(&t[1]),
        &[randn(&[3, 1], 79), randn(&[3, 4], 80)],
    );
    check(|t| t[0].maximum(0.3), &[randn(&[3, 4], 81)]);
    check(|t| t[0].minimum(-0.2), &[randn(&[3, 4], 82)]);
}

#[test]
fn maximum_minimum_ties_split_evenly() {
    let a = tensor![1., 2., 3.].requires_grad_(true);
    let b = tensor![1., 0., 5.].requires_grad_(true);
    a.maximum(&b).sum().backward();
    assert_eq!(a.grad().unwrap().to_vec::<f32>(), vec![0.5, 1.0, 0.0]);
    assert_eq!(b.grad().unwrap().to_vec::<f32>(), vec![0.5, 0.0, 1.0]);

    let a = tensor![1., 2., 3.].requires_grad_(true);
    let b = tensor![1., 0., 5.].requires_grad_(true);
    a.minimum(&b).sum().backward();
    assert_eq!(a.grad().unwrap().to_vec::<f32>(), vec![0.5, 0.0, 1.0]);
    assert_eq!(b.grad().unwrap().to_vec::<f32>(), vec![0.5, 1.0, 0.0]);
}

// ---------------------------------------------------------------- unary math and activations

#[test]
fn neg_exp_log_sqrt_abs() {
    check(|t| t[0].neg(), &[randn(&[3, 4], 83)]);
    check(|t| -&t[0], &[randn(&[3, 4], 84)]);
    check(|t| t[0].exp(), &[randn(&[3, 4], 85)]);
    check(|t| t[0].log(), &[positive(&[3, 4], 86)]);
    check(|t| t[0].sqrt(), &[positive(&[3, 4], 87)]);
    check(|t| t[0].abs(), &[randn(&[3, 4], 88)]);
}

#[test]
fn clamp_variants() {
    check(|t| t[0].clamp(Some(-0.5), Some(0.5)), &[randn(&[4, 5], 89)]);
    check(|t| t[0].clamp(Some(-0.3), None), &[randn(&[4, 5], 90)]);
    check(|t| t[0].clamp(None, Some(0.3)), &[randn(&[4, 5], 91)]);
    check(|t| t[0].clamp_min(0.1), &[randn(&[4, 5], 92)]);
    check(|t| t[0].clamp_max(-0.1), &[randn(&[4, 5], 93)]);
}

#[test]
fn activations() {
    check(|t| t[0].relu(), &[randn(&[4, 5], 94)]);
    check(|t| t[0].sigmoid(), &[randn(&[4, 5], 95)]);
    check(|t| t[0].tanh(), &[randn(&[4, 5], 96)]);
    // Large magnitudes exercise the stable branches of sigmoid.
    check(|t| (&t[0] * 8.0).sigmoid(), &[randn(&[4, 5], 97)]);
}

#[test]
fn unary_ops_on_non_contiguous_inputs() {
    check(|t| t[0].t().exp(), &[randn(&[3, 4], 98)]);
    check(
        |t| t[0].permute(&[2, 0, 1]).tanh(),
        &[randn(&[2, 3, 4], 99)],
    );
    check(
        |t| t[0].slice_step(1, 0..5, 2).sigmoid(),
        &[randn(&[3, 5], 100)],
    );
    check(|t| t[0].t().log(), &[positive(&[3, 4], 101)]);
    check(|t| t[0].slice(0, 1..).sqrt(), &[positive(&[3, 4], 102)]);
    check(|t| t[0].t().relu(), &[randn(&[3, 4], 103)]);
    check(
        |t| t[0].t().clamp(Some(-0.4), Some(0.4)),
        &[randn(&[3, 4], 104)],
    );
}

#[test]
fn binary_ops_on_non_contiguous_inputs() {
    check(
        |t| &t[0].t() + &t[1],
        &[randn(&[4, 3], 105), randn(&[3, 4], 106)],
    );
    check(
        |t| &t[0].t() * &t[1].slice(1, 1..5),
        &[randn(&[4, 3], 107), randn(&[3, 5], 108)],
    );
    check(
        |t| t[0].transpose(0, 2).div(t[1].t()),
        &[randn(&[4, 2, 3], 109), positive(&[4, 2], 110)],
    );
    check(
        |t| t[0].t().pow(t[1].slice_step(0, 0..6, 2)),
        &[positive(&[4, 3], 111), randn(&[6, 4], 112)],
    );
    check(
        |t| t[0].t().maximum(t[1].t()),
        &[randn(&[4, 3], 113), randn(&[4, 3], 114)],
    );
    check(
        |t| t[0].expand([3, 4]) * &t[1].t(),
        &[randn(&[3, 1], 115), randn(&[4, 3], 116)],
    );
}

#[test]
fn where_with_mask() {
    let mask = tensor![
        [true, false, true, false],
        [false, false, true, true],
        [true, true, false, true]
    ];
    check(
        |t| Tensor::where_cond(&t[0], &t[1], &t[2]),
        &[mask.clone(), randn(&[3, 4], 117), randn(&[3, 4], 118)],
    );
    // Broadcast b and a column mask.
    check(
        |t| Tensor::where_cond(&t[0], &t[1], &t[2]),
        &[mask, randn(&[3, 4], 119), randn(&[4], 120)],
    );
    let col = tensor![[true], [false], [true]];
    check(
        |t| Tensor::where_cond(&t[0], &t[1], &t[2]),
        &[col, randn(&[1, 4], 121), randn(&[3, 4], 122)],
    );
    // A mask computed from the data.
    check(
        |t| Tensor::where_cond(&t[0].gt_scalar(0.0), &t[0], &(&t[0] * 0.1)),
        &[randn(&[4, 5], 123)],
    );
}

// ---------------------------------------------------------------- reductions

#[test]
fn sum_and_sum_dim() {
    check(|t| t[0].sum(), &[randn(&[3, 4], 124)]);
    check(|t| t[0].sum_dim(1, false), &[randn(&[3, 4], 125)]);
    check(|t| t[0].sum_dim(0, true), &[randn(&[3, 4], 126)]);
    check(|t| t[0].sum_dim([0, 2], true), &[randn(&[2, 3, 4], 127)]);
    check(|t| t[0].sum_dim([0, 2], false), &[randn(&[2, 3, 4], 128)]);
    check(|t| t[0].sum_dim(-1, false), &[randn(&[2, 3, 4], 129)]);
    check(|t| t[0].t().sum_dim(0, false), &[randn(&[3, 4], 130)]);
    check(|t| t[0].sum_to(&[1, 4]), &[randn(&[3, 4], 131)]);
}

#[test]
fn mean_and_mean_dim() {
    check(|t| t[0].mean(), &[randn(&[3, 4], 132)]);
    check(|t| t[0].mean_dim(1, false), &[randn(&[3, 4], 133)]);
    check(|t| t[0].mean_dim([0, 1], true), &[randn(&[2, 3, 4], 134)]);
    check(|t| t[0].mean_dim(-2, false), &[randn(&[2, 3, 4], 135)]);
    check(
        |t| t[0].permute(&[1, 2, 0]).mean_dim(2, true),
        &[randn(&[2, 3, 4], 136)],
    );
}

#[test]
fn max_min_all() {
    check(|t| t[0].max(), &[randn(&[3, 4], 137)]);
    check(|t| t[0].min(), &[randn(&[3, 4], 138)]);
    check(|t| t[0].t().max(), &[randn(&[3, 4], 139)]);
}

#[test]
fn max_all_ties_split_evenly() {
    let x = tensor![[1., 3.], [3., 2.]].requires_grad_(true);
    let m = x.max();
    assert_eq!(m.item(), 3.0);
    m.backward();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![0.0, 0.5, 0.5, 0.0]);

    let x = tensor![-1., 4., -1., -1.].requires_grad_(true);
    (x.min() * 6.0).backward();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![2.0, 0.0, 2.0, 2.0]);
}

#[test]
fn max_dim_min_dim() {
    check(|t| t[0].max_dim(1, false).0, &[randn(&[3, 5], 140)]);
    check(|t| t[0].max_dim(0, true).0, &[randn(&[3, 5], 141)]);
    check(|t| t[0].min_dim(-1, false).0, &[randn(&[2, 3, 4], 142)]);
    check(|t| t[0].min_dim(1, true).0, &[randn(&[2, 3, 4], 143)]);
    check(|t| t[0].t().max_dim(1, false).0, &[randn(&[3, 5], 144)]);
}

#[test]
fn max_dim_ties_go_to_the_returned_index() {
    let x = tensor![[2., 5., 5.], [7., 1., 7.]].requires_grad_(true);
    let (v, i) = x.max_dim(1, false);
    assert_eq!(v.to_vec::<f32>(), vec![5., 7.]);
    assert_eq!(i.to_vec::<i64>(), vec![1, 0]);
    v.sum().backward();
    assert_eq!(
        x.grad().unwrap().to_vec::<f32>(),
        vec![0., 1., 0., 1., 0., 0.]
    );
}

#[test]
fn var_and_std() {
    check(|t| t[0].var(), &[randn(&[3, 4], 145)]);
    check(|t| t[0].std(), &[randn(&[3, 4], 146)]);
    for correction in [0, 1] {
        let c = correction as u64;
        check(
            |t| t[0].var_dim(1, correction, false),
            &[randn(&[3, 4], 147 + c)],
        );
        check(
            |t| t[0].var_dim(0, correction, true),
            &[randn(&[3, 4], 149 + c)],
        );
        check(
            |t| t[0].var_dim([0, 2], correction, true),
            &[randn(&[2, 3, 4], 151 + c)],
        );
        check(
            |t| t[0].std_dim(1, correction, false),
            &[randn(&[3, 4], 153 + c)],
        );
        check(
            |t| t[0].std_dim(-1, correction, true),
            &[randn(&[2, 3, 4], 155 + c)],
        );
        check(
            |t| t[0].std_dim([0, 1], correction, false),
            &[randn(&[2, 3, 4], 157 + c)],
        );
        check(
            |t| t[0].t().var_dim(1, correction, false),
            &[randn(&[3, 4], 159 + c)],
        );
    }
}

// ---------------------------------------------------------------- matmul

#[test]
fn mm_and_matmul_2d() {
    check(
        |t| t[0].mm(&t[1]),
        &[randn(&[3, 4], 161), randn(&[4, 5], 162)],
    );
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[1, 4], 163), randn(&[4, 1], 164)],
    );
}

#[test]
fn matmul_batched() {
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[2, 3, 4], 165), randn(&[2, 4, 5], 166)],
    );
    // Broadcast batch dims on both sides.
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[2, 1, 3, 4], 167), randn(&[5, 4, 2], 168)],
    );
    // A plain matrix against a batch, and a batch against a plain matrix.
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[3, 4], 169), randn(&[2, 4, 5], 170)],
    );
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[2, 3, 4], 171), randn(&[4, 5], 172)],
    );
}

#[test]
fn matmul_with_1d_operands() {
    // vector · matrix, matrix · vector, vector · vector.
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[4], 173), randn(&[4, 5], 174)],
    );
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[3, 4], 175), randn(&[4], 176)],
    );
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[5], 177), randn(&[5], 178)],
    );
    check(|t| t[0].dot(&t[1]), &[randn(&[6], 179), randn(&[6], 180)]);
    // vector · batch and batch · vector.
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[4], 181), randn(&[2, 4, 5], 182)],
    );
    check(
        |t| t[0].matmul(&t[1]),
        &[randn(&[2, 3, 4], 183), randn(&[4], 184)],
    );
}

#[test]
fn matmul_non_contiguous_operands() {
    check(
        |t| t[0].t().mm(&t[1]),
        &[randn(&[4, 3], 185), randn(&[4, 5], 186)],
    );
    check(
        |t| t[0].mm(&t[1].t()),
        &[randn(&[3, 4], 187), randn(&[5, 4], 188)],
    );
    check(
        |t| t[0].t().mm(&t[1].t()),
        &[randn(&[4, 3], 189), randn(&[5, 4], 190)],
    );
    check(
        |t| t[0].slice(1, 1..5).mm(&t[1].slice_step(0, 0..8, 2)),
        &[randn(&[3, 6], 191), randn(&[8, 5], 192)],
    );
    check(
        |t| t[0].transpose(-2, -1).matmul(&t[1]),
        &[randn(&[2, 4, 3], 193), randn(&[2, 4, 5], 194)],
    );
    check(
        |t| t[0].permute(&[1, 0, 2]).matmul(&t[1].transpose(1, 2)),
        &[randn(&[3, 2, 4], 195), randn(&[2, 5, 4], 196)],
    );
    // Strided vectors and an expanded (stride-0) matrix.
    check(
        |t| t[0].slice_step(0, 0..10, 2).dot(&t[1].select(1, 2)),
        &[randn(&[10], 197), randn(&[5, 3], 198)],
    );
    check(
        |t| t[0].expand([3, 4]).mm(&t[1]),
        &[randn(&[3, 1], 199), randn(&[4, 2], 200)],
    );
    check(
        |t| t[0].t().matmul(&t[1].select(0, 1)),
        &[randn(&[4, 3], 201), randn(&[2, 4], 202)],
    );
}

// ---------------------------------------------------------------- views

#[test]
fn reshape_view_flatten() {
    check(|t| t[0].reshape([4, 3]), &[randn(&[3, 4], 203)]);
    check(|t| t[0].reshape([2, -1]), &[randn(&[3, 4], 204)]);
    // A reshape that must copy (non-contiguous input).
    check(|t| t[0].t().reshape([12]), &[randn(&[3, 4], 205)]);
    check(|t| t[0].view([6, 2]), &[randn(&[3, 4], 206)]);
    check(|t| t[0].flatten(0, -1), &[randn(&[2, 3, 4], 207)]);
    check(|t| t[0].flatten(1, 2), &[randn(&[2, 3, 4], 208)]);
    check(
        |t| t[0].permute(&[2, 0, 1]).flatten(0, 1),
        &[randn(&[2, 3, 4], 209)],
    );
}

#[test]
fn transpose_permute_t() {
    check(|t| t[0].t(), &[randn(&[3, 4], 210)]);
    check(|t| t[0].transpose(0, 2), &[randn(&[2, 3, 4], 211)]);
    check(|t| t[0].transpose(-1, -2), &[randn(&[2, 3, 4], 212)]);
    check(|t| t[0].permute(&[1, 2, 0]), &[randn(&[2, 3, 4], 213)]);
}

#[test]
fn squeeze_unsqueeze_expand() {
    check(|t| t[0].squeeze(), &[randn(&[3, 1, 4, 1], 214)]);
    check(|t| t[0].squeeze_dim(1), &[randn(&[3, 1, 4], 215)]);
    check(|t| t[0].unsqueeze(0), &[randn(&[3, 4], 216)]);
    check(|t| t[0].unsqueeze(-1), &[randn(&[3, 4], 217)]);
    check(|t| t[0].expand([2, 3, 4]), &[randn(&[3, 1], 218)]);
    check(|t| t[0].expand([3, 4]), &[randn(&[4], 219)]);
    check(
        |t| t[0].expand_as(&t[1]) * &t[1],
        &[randn(&[1, 4], 220), randn(&[3, 4], 221)],
    );
    check(|t| t[0].t().expand([2, 4, 3]), &[randn(&[3, 4], 222)]);
}

#[test]
fn narrow_slice_select() {
    check(|t| t[0].narrow(1, 1, 2), &[randn(&[3, 4], 223)]);
    check(|t| t[0].slice(0, 1..3), &[randn(&[4, 3], 224)]);
    check(|t| t[0].slice(1, -3..-1), &[randn(&[3, 5], 225)]);
    check(|t| t[0].slice(1, 2..), &[randn(&[3, 5], 226)]);
    check(|t| t[0].slice_step(1, 1..7, 2), &[randn(&[3, 7], 227)]);
    check(|t| t[0].slice_step(0, .., 3), &[randn(&[7, 2], 228)]);
    check(|t| t[0].select(0, 1), &[randn(&[3, 4], 229)]);
    check(|t| t[0].select(1, -1), &[randn(&[3, 4], 230)]);
    check(
        |t| t[0].t().slice(0, 1..3).select(1, 2),
        &[randn(&[3, 4], 231)],
    );
}

#[test]
fn split_chunk_contiguous() {
    check(
        |t| {
            let p = t[0].split(2, 1);
            Tensor::cat(&[&p[2] * 3.0, p[0].clone(), &p[1] * -1.0], 1)
        },
        &[randn(&[3, 5], 232)],
    );
    check(
        |t| {
            let p = t[0].split_sizes(&[1, 3], 0);
            &p[0].sum() * &p[1].sum() + p[1].exp().sum()
        },
        &[randn(&[4, 2], 233)],
    );
    check(
        |t| {
            let p = t[0].chunk(3, -1);
            p[0].tanh().sum() + p[1].sigmoid().sum() * 2.0 + p[2].sum() * -3.0
        },
        &[randn(&[2, 6], 234)],
    );
    check(|t| t[0].t().contiguous(), &[randn(&[3, 4], 235)]);
    check(|t| t[0].slice(1, 1..3).clone_data(), &[randn(&[3, 4], 236)]);
}

#[test]
fn to_dtype_roundtrip() {
    // Through f32 and back: linear, so only f32 rounding limits the check.
    let opts = GradcheckOptions {
        eps: 1e-2,
        atol: 1e-3,
        rtol: 1e-3,
        seed: 0,
    };
    let report = gradcheck_opts(
        |t| (t[0].to_dtype(DType::F32) * 2.0).to_dtype(DType::F64),
        &[randn(&[3, 4], 237)],
        opts,
    );
    assert!(report.passed, "{report}");
    assert_eq!(report.checked, 12, "{report}");
    check(|t| t[0].to_dtype(DType::F64).exp(), &[randn(&[3, 4], 238)]);
}

// ---------------------------------------------------------------- indexing

#[test]
fn index_select_with_repeats() {
    check(
        |t| t[0].index_select(0, &t[1]),
        &[randn(&[4, 3], 239), tensor![2, 0, 2, 3]],
    );
    check(
        |t| t[0].index_select(1, &t[1]),
        &[randn(&[2, 4, 3], 240), tensor![3, 3, 1]],
    );
    check(
        |t| t[0].index_select(-1, &t[1]),
        &[randn(&[3, 4], 241), tensor![0, 1, 0]],
    );
    check(
        |t| t[0].t().index_select(0, &t[1]),
        &[randn(&[3, 4], 242), tensor![1, 3]],
    );
}

#[test]
fn gather_with_index() {
    check(
        |t| t[0].gather(1, &t[1]),
        &[randn(&[2, 3], 243), tensor![[0, 2], [1, 0]]],
    );
    check(
        |t| t[0].gather(0, &t[1]),
        &[randn(&[3, 4], 244), tensor![[0, 2, 1, 0], [2, 2, 0, 1]]],
    );
    // Index smaller than the input outside `dim`, repeated entries.
    check(
        |t| t[0].gather(1, &t[1]),
        &[randn(&[3, 4], 245), tensor![[3, 3, 0], [1, 1, 1]]],
    );
    check(
        |t| t[0].t().gather(1, &t[1]),
        &[randn(&[3, 4], 246), tensor![[0, 2], [1, 0]]],
    );
}

#[test]
fn scatter_add_with_index() {
    // Both the destination and the source get gradients; index has repeats.
    check(
        |t| t[0].scatter_add(0, &t[2], &t[1]),
        &[
            randn(&[3, 4], 247),
            randn(&[2, 4], 248),
            tensor![[0, 1, 2, 0], [2, 0, 1, 0]],
        ],
    );
    check(
        |t| t[0].scatter_add(1, &t[2], &t[1]),
        &[
            randn(&[2, 3], 249),
            randn(&[2, 2], 250),
            tensor![[0, 2], [1, 1]],
        ],
    );
    // A source larger than the index: only its leading part is used.
    check(
        |t| t[0].scatter_add(1, &t[2], &t[1]),
        &[
            randn(&[2, 3], 251),
            randn(&[2, 4], 252),
            tensor![[2, 0], [1, 1]],
        ],
    );
    // A multiplied output, so the incoming gradient is not all ones.
    check(
        |t| t[0].scatter_add(1, &t[2], &t[1]).exp(),
        &[
            randn(&[2, 3], 253),
            randn(&[2, 2], 254),
            tensor![[0, 2], [1, 1]],
        ],
    );
}

// ---------------------------------------------------------------- cat and stack

#[test]
fn cat_several_inputs() {
    check(
        |t| Tensor::cat(&[t[0].clone(), t[1].clone(), t[2].clone()], 1),
        &[
            randn(&[2, 3], 255),
            randn(&[2, 1], 256),
            randn(&[2, 4], 257),
        ],
    );
    check(
        |t| Tensor::cat(&[t[0].clone(), t[1].clone(), t[2].clone()], 0),
        &[
            randn(&[1, 3], 258),
            randn(&[2, 3], 259),
            randn(&[3, 3], 260),
        ],
    );
    // Non-contiguous pieces and the same tensor twice.
    check(
        |t| Tensor::cat(&[t[0].t(), t[1].clone(), t[0].t().exp()], -1),
        &[randn(&[2, 3], 261), randn(&[3, 1], 262)],
    );
}

#[test]
fn stack_several_inputs() {
    check(
        |t| Tensor::stack(&[t[0].clone(), t[1].clone(), t[2].clone()], 0),
        &[
            randn(&[2, 3], 263),
            randn(&[2, 3], 264),
            randn(&[2, 3], 265),
        ],
    );
    check(
        |t| Tensor::stack(&[t[0].clone(), t[1].clone(), t[2].clone()], -1),
        &[
            randn(&[2, 3], 266),
            randn(&[2, 3], 267),
            randn(&[2, 3], 268),
        ],
    );
    check(
        |t| Tensor::stack(&[t[0].t(), &t[1] * 2.0], 1),
        &[randn(&[4, 3], 269), randn(&[3, 4], 270)],
    );
}

// ---------------------------------------------------------------- composite chains

#[test]
fn two_layer_mlp() {
    // x: [5, 3]; w1: [3, 4]; b1: [4]; w2: [4, 2]; b2: [2].
    check(
        |t| {
            ((t[0].mm(&t[1]) + &t[2]).tanh().mm(&t[3]) + &t[4])
                .sigmoid()
                .mean()
        },
        &[
            randn(&[5, 3], 271),
            randn(&[3, 4], 272),
            randn(&[4], 273),
            randn(&[4, 2], 274),
            randn(&[2], 275),
        ],
    );
    check(
        |t| {
            let h = (t[0].matmul(&t[1]) + &t[2]).relu();
            (h.matmul(&t[3]) + &t[4]).pow_scalar(2.0).sum()
        },
        &[
            randn(&[5, 3], 276),
            randn(&[3, 4], 277),
            randn(&[4], 278),
            randn(&[4, 2], 279),
            randn(&[2], 280),
        ],
    );
}

#[test]
fn softmax_cross_entropy() {
    check(
        |t| {
            let logits = &t[0];
            let m = logits.max_dim(1, true).0;
            let lse = (logits - &m).exp().sum_dim(1, true).log() + &m;
            let logp = logits - &lse;
            -logp.gather(1, &t[1]).mean()
        },
        &[randn(&[4, 5], 281), tensor![[1], [0], [4], [2]]],
    );
}

#[test]
fn layer_norm() {
    check(
        |t| {
            let x = &t[0];
            let mu = x.mean_dim(-1, true);
            let var = x.var_dim(-1, 0, true);
            (x - &mu) / (var + 1e-5).sqrt() * &t[1] + &t[2]
        },
        &[randn(&[3, 5], 282), randn(&[5], 283), randn(&[5], 284)],
    );
}

#[test]
fn batched_attention() {
    check(
        |t| {
            let scores = t[0].matmul(&t[1].transpose(-2, -1)) / 2.0;
            let e = (&scores - &scores.max_dim(-1, true).0).exp();
            let p = &e / &e.sum_dim(-1, true);
            p.matmul(&t[2])
        },
        &[
            randn(&[2, 3, 4], 285),
            randn(&[2, 3, 4], 286),
            randn(&[2, 3, 4], 287),
        ],
    );
}

#[test]
fn fan_out_and_reuse() {
    check(
        |t| {
            let a = &t[0] * 2.0;
            let b = a.exp() + &a * &a + a.t().t();
            (b.std_dim(0, 1, false) * a.sum()).sum()
        },
        &[randn(&[3, 4], 288)],
    );
    check(
        |t| {
            let x = &t[0];
            Tensor::where_cond(&x.lt(&t[1]), &(x * &t[1]), &x.minimum(&t[1]).abs())
                .clamp(Some(-1.0), Some(1.5))
        },
        &[randn(&[3, 4], 289), randn(&[4], 290)],
    );
}
