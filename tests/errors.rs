//! Every shape and dtype precondition: the `try_` forms return the right
//! `deriv::Error` variant, whose message names the op, the shapes involved and
//! a fix; the panicking forms panic with the same message.

use deriv::prelude::*;
use deriv::Error;

/// Unwraps the `Shape` error of a fallible op, checking its `op` field, and
/// returns its Display text.
#[track_caller]
fn shape_err<T: std::fmt::Debug>(r: Result<T, Error>, op: &str) -> String {
    match r {
        Err(e @ Error::Shape { .. }) => {
            let Error::Shape { op: got, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*got, op, "op of {e}");
            let text = e.to_string();
            assert!(text.starts_with(&format!("{op}: ")), "{text}");
            text
        }
        other => panic!("expected a Shape error from {op}, got {other:?}"),
    }
}

/// Asserts `text` contains every one of `parts`.
#[track_caller]
fn contains_all(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "{text:?} does not contain {p:?}");
    }
}

/// The panic message of `f`, which must panic.
#[track_caller]
fn panic_message(f: impl FnOnce()) -> String {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let e = r.expect_err("expected a panic");
    if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else {
        panic!("panic payload is not a string")
    }
}

/// A message prefix and a closure that must panic with it.
type Case = (&'static str, Box<dyn Fn()>);

/// `case!(want, expr)`: evaluating `expr` must panic with a message starting with `want`.
macro_rules! case {
    ($want:expr, $e:expr) => {
        (
            $want,
            Box::new(|| {
                let _ = $e;
            }) as Box<dyn Fn()>,
        )
    };
}

// ---------------------------------------------------------------- broadcasting arithmetic

const BROADCAST_FIX: &str = "Reshape one operand (unsqueeze a size-1 dimension, or transpose) \
                             so that trailing dimensions match or are 1";

#[test]
fn try_arithmetic_names_op_shapes_and_fix() {
    let a = Tensor::zeros([2, 3]);
    let b = Tensor::zeros([4]);
    for (op, r) in [
        ("add", a.try_add(&b)),
        ("sub", a.try_sub(&b)),
        ("mul", a.try_mul(&b)),
        ("div", a.try_div(&b)),
    ] {
        let text = shape_err(r, op);
        contains_all(
            &text,
            &[
                "shapes [2, 3] and [4] cannot be broadcast together",
                "dimension 1 of the broadcast result is 3 in one and 4 in the other",
                BROADCAST_FIX,
            ],
        );
    }
    // Fine shapes and numbers succeed.
    assert_eq!(
        a.try_add(Tensor::ones([3])).unwrap().to_vec::<f32>(),
        vec![1.; 6]
    );
    assert_eq!(a.try_mul(2.0).unwrap().shape(), &[2, 3]);
    // A leading dim that differs is named at its broadcast position.
    let text = shape_err(
        Tensor::zeros([2, 1, 3]).try_sub(Tensor::zeros([5, 4, 3])),
        "sub",
    );
    contains_all(
        &text,
        &["[2, 1, 3] and [5, 4, 3]", "dimension 0", "2 in one and 5"],
    );
}

#[test]
fn panicking_arithmetic_prints_the_same_message() {
    let a = Tensor::zeros([2, 3]);
    let b = Tensor::zeros([4]);
    let want = a.try_add(&b).unwrap_err().to_string();
    assert_eq!(panic_message(|| drop(a.add(&b))), want);
    assert_eq!(panic_message(|| drop(&a + &b)), want);
    let want = a.try_div(&b).unwrap_err().to_string();
    assert_eq!(panic_message(|| drop(a.clone() / b.clone())), want);
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
fn add_operator_panics_with_shapes() {
    let _ = Tensor::zeros([2, 3]) + Tensor::zeros([4]);
}

#[test]
#[should_panic(expected = "sub: shapes [3] and [2] cannot be broadcast together")]
fn sub_operator_panics_with_shapes() {
    let _ = &Tensor::zeros([3]) - &Tensor::zeros([2]);
}

#[test]
#[should_panic(expected = "mul: shapes [2, 2] and [3, 1] cannot be broadcast together")]
fn mul_method_panics_with_shapes() {
    let _ = Tensor::zeros([2, 2]).mul(Tensor::zeros([3, 1]));
}

#[test]
#[should_panic(expected = "div: shapes [5] and [2, 4] cannot be broadcast together")]
fn div_panics_with_shapes() {
    let _ = Tensor::ones([5]) / Tensor::ones([2, 4]);
}

#[test]
#[should_panic(expected = "so that trailing dimensions match or are 1")]
fn broadcast_panic_names_the_fix() {
    let _ = Tensor::zeros([2]).maximum(Tensor::zeros([3]));
}

#[test]
fn comparisons_and_pow_refuse_mismatched_shapes() {
    let a = Tensor::zeros([2]);
    let b = Tensor::zeros([3]);
    let msg = panic_message(|| drop(a.lt(&b)));
    contains_all(
        &msg,
        &["lt: shapes [2] and [3] cannot be broadcast", BROADCAST_FIX],
    );
    let msg = panic_message(|| drop(a.eq(&b)));
    assert!(msg.starts_with("eq: "), "{msg}");
    let msg = panic_message(|| drop(a.pow(&b)));
    contains_all(&msg, &["pow: shapes [2] and [3]"]);
    let msg = panic_message(|| drop(a.minimum(&b)));
    contains_all(&msg, &["minimum: shapes [2] and [3]"]);
}

// ---------------------------------------------------------------- matmul

#[test]
fn try_matmul_inner_dim_mismatch() {
    let a = Tensor::zeros([2, 3]);
    let b = Tensor::zeros([4, 5]);
    let text = shape_err(a.try_matmul(&b), "matmul");
    contains_all(
        &text,
        &[
            "shapes [2, 3] and [4, 5] cannot be multiplied (2x3 and 4x5)",
            "the last dim of the first (3) must equal the second-to-last dim of the second (4)",
            "transpose an operand with .t()",
        ],
    );
    // 1-D operands are named with their own shapes.
    let text = shape_err(Tensor::zeros([3]).try_matmul(&Tensor::zeros([4])), "matmul");
    contains_all(&text, &["[3] and [4]"]);
    let text = shape_err(
        Tensor::zeros([2, 3]).try_matmul(&Tensor::zeros([2])),
        "matmul",
    );
    contains_all(&text, &["[2, 3] and [2]"]);
    // The transposed product is what was meant, and works.
    assert_eq!(
        a.try_matmul(&Tensor::zeros([2, 3]).t()).unwrap().shape(),
        &[2, 2]
    );
}

#[test]
fn try_matmul_batch_and_rank_errors() {
    let text = shape_err(
        Tensor::zeros([2, 3, 4]).try_matmul(&Tensor::zeros([5, 4, 6])),
        "matmul",
    );
    contains_all(
        &text,
        &[
            "batch dims (all but the last two) of shapes [2, 3, 4] and [5, 4, 6] must broadcast",
            "2 in one and 5 in the other",
            BROADCAST_FIX,
        ],
    );
    let text = shape_err(
        Tensor::scalar(1.0f32).try_matmul(&Tensor::zeros([2])),
        "matmul",
    );
    contains_all(
        &text,
        &[
            "at least 1 dimension",
            "[] and [2]",
            "use * to multiply by a scalar",
        ],
    );
}

#[test]
#[should_panic(expected = "matmul: shapes [2, 3] and [4, 5] cannot be multiplied")]
fn matmul_panics_with_shapes() {
    let _ = Tensor::zeros([2, 3]).matmul(&Tensor::zeros([4, 5]));
}

#[test]
#[should_panic(expected = "mm: both arguments must be 2-D, got shapes [3] and [3, 2]")]
fn mm_requires_matrices() {
    let _ = Tensor::zeros([3]).mm(&Tensor::zeros([3, 2]));
}

#[test]
#[should_panic(
    expected = "dot: expects two 1-D tensors of the same length, got shapes [3] and [4]"
)]
fn dot_requires_equal_vectors() {
    let _ = Tensor::zeros([3]).dot(&Tensor::zeros([4]));
}

#[test]
#[should_panic(expected = "use .transpose(-2, -1) to swap the last two dims")]
fn t_of_a_3d_tensor_names_transpose() {
    let _ = Tensor::zeros([2, 3, 4]).t();
}

// ---------------------------------------------------------------- reshape and view

#[test]
fn try_reshape_names_both_shapes_and_the_fix() {
    let x = Tensor::zeros([2, 3]);
    let text = shape_err(x.try_reshape([4]), "reshape");
    assert_eq!(
        text,
        "reshape: shape [4] is invalid for input of shape [2, 3] (6 elements); the new sizes \
         must multiply to 6 (use -1 for one size to infer it)"
    );
    // Two sizes to infer, an inferred size that does not divide, a zero with -1,
    // and a negative size other than -1 are all refused.
    for spec in [vec![-1i64, -1], vec![4, -1], vec![0, -1], vec![-2, -3]] {
        let text = shape_err(x.try_reshape(spec.clone()), "reshape");
        contains_all(
            &text,
            &[&format!("shape {spec:?} is invalid"), "[2, 3]", "use -1"],
        );
    }
    // The valid forms work.
    assert_eq!(x.try_reshape([3, -1]).unwrap().shape(), &[3, 2]);
    let same = x.try_reshape([2, 3]).unwrap();
    assert!(same.shares_storage(&x));
}

#[test]
#[should_panic(expected = "reshape: shape [4] is invalid for input of shape [2, 3] (6 elements)")]
fn reshape_panics_with_the_same_message() {
    let _ = Tensor::zeros([2, 3]).reshape([4]);
}

#[test]
#[should_panic(expected = "view: shape [5, -1] is invalid for input of shape [2, 3]")]
fn view_with_a_wrong_count_panics() {
    let _ = Tensor::zeros([2, 3]).view([5, -1]);
}

#[test]
fn view_of_a_non_viewable_layout_names_reshape_and_contiguous() {
    let t = Tensor::zeros([2, 3]).t();
    let msg = panic_message(|| drop(t.view([6])));
    assert_eq!(
        msg,
        "view: view size [6] is not compatible with the input's shape [3, 2] and strides \
         [1, 3] (at least one dimension spans across two contiguous subspaces); use \
         .reshape(..) instead, or .contiguous() first"
    );
    // Both suggested fixes work.
    assert_eq!(t.reshape([6]).shape(), &[6]);
    assert_eq!(t.contiguous().view([6]).shape(), &[6]);
}

// ---------------------------------------------------------------- cat and stack

#[test]
fn try_cat_errors() {
    let a = Tensor::zeros([2, 3]);
    let b = Tensor::zeros([2, 4]);
    let text = shape_err(Tensor::try_cat(&[a.clone(), b.clone()], 0), "cat");
    contains_all(
        &text,
        &[
            "sizes of tensors must match except in dimension 0",
            "tensor 0 has shape [2, 3] but tensor 1 has shape [2, 4]",
            "join along the dim where they differ",
        ],
    );
    // The fix: along dim 1 they join.
    assert_eq!(
        Tensor::try_cat(&[a.clone(), b.clone()], 1).unwrap().shape(),
        &[2, 7]
    );
    // A different rank is named too.
    let text = shape_err(Tensor::try_cat(&[a.clone(), Tensor::zeros([3])], 0), "cat");
    contains_all(
        &text,
        &["tensor 0 has shape [2, 3] but tensor 1 has shape [3]"],
    );
    // 0-d tensors cannot be concatenated (PyTorch refuses them too).
    let s = Tensor::scalar(1.0f32);
    let text = shape_err(Tensor::try_cat(&[s.clone(), s.clone()], 0), "cat");
    contains_all(&text, &["zero-dimensional tensor", "use stack"]);
    assert_eq!(Tensor::stack(&[s.clone(), s], 0).shape(), &[2]);
    // An empty list and an out-of-range dim are invalid arguments.
    assert_eq!(
        Tensor::try_cat(&[], 0).unwrap_err(),
        Error::Invalid("cat: expected a non-empty list of tensors".into())
    );
    let e = Tensor::try_cat(&[a.clone(), a.clone()], 2).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "cat: dimension 2 is out of range for a tensor of rank 2 (expected a dimension in [-2, 1])"
    );
}

#[test]
#[should_panic(
    expected = "cat: sizes of tensors must match except in dimension 1: tensor 0 has \
                           shape [2, 3] but tensor 1 has shape [1, 3]"
)]
fn cat_panics_with_the_same_message() {
    let _ = Tensor::cat(&[Tensor::zeros([2, 3]), Tensor::zeros([1, 3])], 1);
}

#[test]
fn try_stack_errors() {
    let text = shape_err(
        Tensor::try_stack(
            &[Tensor::zeros([2]), Tensor::zeros([2]), Tensor::zeros([3])],
            0,
        ),
        "stack",
    );
    contains_all(
        &text,
        &[
            "stack expects each tensor to be equal size",
            "got [2] at entry 0 and [3] at entry 2",
            "make the shapes equal, or use cat",
        ],
    );
    assert_eq!(
        Tensor::try_stack(&[], 0).unwrap_err(),
        Error::Invalid("stack: expected a non-empty list of tensors".into())
    );
    // The new dim may be 0..=rank; one past is out of range.
    let v = [Tensor::zeros([2]), Tensor::zeros([2])];
    assert_eq!(Tensor::try_stack(&v, 1).unwrap().shape(), &[2, 2]);
    assert_eq!(Tensor::try_stack(&v, -1).unwrap().shape(), &[2, 2]);
    let e = Tensor::try_stack(&v, 2).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    contains_all(
        &e.to_string(),
        &["stack: dimension 2 is out of range", "[-2, 1]"],
    );
}

#[test]
#[should_panic(
    expected = "stack: stack expects each tensor to be equal size, but got [2, 2] at \
                           entry 0 and [2, 1] at entry 1"
)]
fn stack_panics_with_the_same_message() {
    let _ = Tensor::stack(&[Tensor::zeros([2, 2]), Tensor::zeros([2, 1])], 0);
}

// ---------------------------------------------------------------- expand, from_vec, where

#[test]
fn try_expand_errors() {
    let x = Tensor::zeros([3]);
    let text = shape_err(x.try_expand([2]), "expand");
    assert_eq!(
        text,
        "expand: cannot expand shape [3] to [2]: each existing dim must equal the target size \
         or be 1, and new dims go in front"
    );
    // Fewer dims than the tensor has.
    let text = shape_err(Tensor::zeros([2, 3]).try_expand([3]), "expand");
    contains_all(&text, &["cannot expand shape [2, 3] to [3]"]);
    // New dims go in front, not at the back.
    let text = shape_err(Tensor::zeros([2, 1]).try_expand([2, 1, 3]), "expand");
    contains_all(&text, &["[2, 1] to [2, 1, 3]", "new dims go in front"]);
    assert_eq!(x.try_expand([4, 3]).unwrap().shape(), &[4, 3]);
}

#[test]
#[should_panic(expected = "expand: cannot expand shape [2, 3] to [2, 4]")]
fn expand_panics_with_the_same_message() {
    let _ = Tensor::zeros([2, 3]).expand([2, 4]);
}

#[test]
fn try_from_vec_errors() {
    let text = shape_err(
        Tensor::try_from_vec(vec![1.0f32, 2., 3.], [2, 2]),
        "from_vec",
    );
    assert_eq!(
        text,
        "from_vec: 3 values cannot fill shape [2, 2], which holds 4 elements; pass a shape \
         whose product is 3"
    );
    let text = shape_err(Tensor::try_from_vec(vec![1i64; 5], [0]), "from_vec");
    contains_all(&text, &["5 values cannot fill shape [0]"]);
    assert_eq!(
        Tensor::try_from_vec(vec![1.0f32, 2.], [2, 1])
            .unwrap()
            .shape(),
        &[2, 1]
    );
}

#[test]
#[should_panic(
    expected = "from_vec: 6 values cannot fill shape [4], which holds 4 elements; \
                           pass a shape whose product is 6"
)]
fn from_vec_panics_with_the_same_message() {
    let _ = Tensor::from_vec(vec![0.0f32; 6], [4]);
}

#[test]
#[should_panic(expected = "from_vec: 2 values cannot fill shape [3]")]
fn from_slice_panics_with_the_same_message() {
    let _ = Tensor::from_slice(&[1.0f64, 2.0], [3]);
}

#[test]
fn try_where_errors() {
    let cond = tensor![true, false];
    let a = Tensor::zeros([3]);
    let b = Tensor::ones([3]);
    let text = shape_err(Tensor::try_where(&cond, &a, &b), "where");
    contains_all(
        &text,
        &[
            "shapes [2] and [3] cannot be broadcast together",
            BROADCAST_FIX,
        ],
    );
    let text = shape_err(
        Tensor::try_where(&tensor![true], &a, &Tensor::ones([4])),
        "where",
    );
    contains_all(&text, &["shapes [3] and [4]"]);
    assert_eq!(
        Tensor::try_where(&tensor![true], &a, &b)
            .unwrap()
            .to_vec::<f32>(),
        vec![0.; 3]
    );
}

#[test]
#[should_panic(expected = "where: shapes [2, 2] and [3] cannot be broadcast together")]
fn where_panics_with_the_same_message() {
    let _ = Tensor::where_cond(&tensor![true], &Tensor::zeros([2, 2]), &Tensor::zeros([3]));
}

// ---------------------------------------------------------------- backward

#[test]
fn try_backward_opts_errors() {
    let x = tensor![1., 2., 3.].requires_grad_(true);
    let y = &x * 2.0;
    let text = shape_err(y.try_backward_opts(None, true), "backward");
    assert_eq!(
        text,
        "backward: grad can be implicitly created only for one-element outputs, but this \
         tensor has shape [3]; reduce it first (.sum(), .mean()) or pass the seed with \
         backward_with(&v)"
    );
    let text = shape_err(
        y.try_backward_opts(Some(&Tensor::ones([2])), true),
        "backward_with",
    );
    assert_eq!(
        text,
        "backward_with: the seed v has shape [2] but the output has shape [3]; v must have \
         exactly the output's shape"
    );
    // Nothing was accumulated by the failed calls.
    assert!(x.grad().is_none());
    // Both fixes work.
    y.try_backward_opts(Some(&Tensor::ones([3])), true).unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![2., 2., 2.]);
    y.sum().try_backward_opts(None, false).unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![4., 4., 4.]);
}

#[test]
fn backward_autograd_errors() {
    // A tensor outside the graph.
    let e = tensor![1.]
        .sum()
        .try_backward_opts(None, false)
        .unwrap_err();
    assert!(matches!(e, Error::Autograd(_)), "{e:?}");
    contains_all(
        &e.to_string(),
        &[
            "does not require grad and has no grad_fn",
            "requires_grad_(true)",
        ],
    );
    // Through a freed graph.
    let x = tensor![1., 2.].requires_grad_(true);
    let y = (&x * &x).sum();
    y.try_backward_opts(None, false).unwrap();
    let e = y.try_backward_opts(None, false).unwrap_err();
    assert!(matches!(e, Error::Autograd(_)), "{e:?}");
    contains_all(
        &e.to_string(),
        &[
            "backward through the graph a second time",
            "backward_retain()",
        ],
    );
}

#[test]
#[should_panic(
    expected = "backward: grad can be implicitly created only for one-element outputs, \
                           but this tensor has shape [2, 2]"
)]
fn backward_panics_with_the_same_message() {
    let x = Tensor::ones([2, 2]).requires_grad_(true);
    (&x * 3.0).backward();
}

#[test]
#[should_panic(expected = "backward_with: the seed v has shape [3] but the output has shape [2]")]
fn backward_with_panics_with_the_same_message() {
    let x = Tensor::ones([2]).requires_grad_(true);
    (&x * 3.0).backward_with(&Tensor::ones([3]));
}

// ---------------------------------------------------------------- out-of-range dims

#[test]
fn out_of_range_dims_name_the_op_the_rank_and_the_valid_range() {
    let x = Tensor::zeros([2, 3]);
    let v = Tensor::zeros([4]);
    let cases: Vec<Case> = vec![
        case!(
            "sum: dimension 2 is out of range for a tensor of rank 2",
            Tensor::zeros([2, 3]).sum_dim(2, false)
        ),
        case!(
            "mean: dimension -3 is out of range for a tensor of rank 2",
            Tensor::zeros([2, 3]).mean_dim(-3, true)
        ),
        case!(
            "max: dimension 5 is out of range for a tensor of rank 2",
            Tensor::zeros([2, 3]).max_dim(5, false)
        ),
        case!(
            "min: dimension -3 is out of range",
            Tensor::zeros([2, 3]).min_dim(-3, false)
        ),
        case!(
            "argmax: dimension 2 is out of range",
            Tensor::zeros([2, 3]).argmax_dim(2, false)
        ),
        case!(
            "var: dimension 2 is out of range",
            Tensor::zeros([2, 3]).var_dim(2, 1, false)
        ),
        case!(
            "std: dimension 3 is out of range",
            Tensor::zeros([2, 3]).std_dim([0, 3], 1, false)
        ),
        case!(
            "transpose: dimension 2 is out of range",
            Tensor::zeros([2, 3]).transpose(0, 2)
        ),
        case!(
            "select: dimension 2 is out of range",
            Tensor::zeros([2, 3]).select(2, 0)
        ),
        case!(
            "narrow: dimension -3 is out of range",
            Tensor::zeros([2, 3]).narrow(-3, 0, 1)
        ),
        case!(
            "slice: dimension 2 is out of range",
            Tensor::zeros([2, 3]).slice(2, ..)
        ),
        case!(
            "softmax: dimension 2 is out of range",
            Tensor::zeros([2, 3]).softmax(2)
        ),
        case!(
            "log_softmax: dimension -3 is out of range",
            Tensor::zeros([2, 3]).log_softmax(-3)
        ),
        case!(
            "squeeze: dimension 2 is out of range",
            Tensor::zeros([2, 3]).squeeze_dim(2)
        ),
        case!(
            "flatten: dimension 2 is out of range",
            Tensor::zeros([2, 3]).flatten(0, 2)
        ),
        case!(
            "index_select: dimension 2 is out of range",
            Tensor::zeros([2, 3]).index_select(2, &tensor![0])
        ),
        case!(
            "gather: dimension 2 is out of range",
            Tensor::zeros([2, 3]).gather(2, &tensor![[0]])
        ),
        case!(
            "split: dimension 2 is out of range",
            Tensor::zeros([2, 3]).split(1, 2)
        ),
        case!(
            "chunk: dimension -3 is out of range",
            Tensor::zeros([2, 3]).chunk(2, -3)
        ),
        case!(
            "size_of: dimension 2 is out of range",
            Tensor::zeros([2, 3]).size_of(2)
        ),
        // unsqueeze accepts one more dim than the tensor has.
        case!(
            "unsqueeze: dimension 2 is out of range for a tensor of rank 2",
            Tensor::zeros([4]).unsqueeze(2)
        ),
    ];
    for (want, f) in cases {
        let msg = panic_message(f);
        assert!(msg.starts_with(want), "{msg:?} should start with {want:?}");
        assert!(msg.contains("(expected a dimension in ["), "{msg}");
    }
    // The valid range is spelled out.
    let msg = panic_message(|| drop(Tensor::zeros([2, 3]).sum_dim(2, false)));
    assert_eq!(
        msg,
        "sum: dimension 2 is out of range for a tensor of rank 2 (expected a dimension in [-2, 1])"
    );
    // The edges of the range are accepted.
    assert_eq!(x.sum_dim(-2, false).shape(), &[3]);
    assert_eq!(x.sum_dim(1, false).shape(), &[2]);
    assert_eq!(v.unsqueeze(1).shape(), &[4, 1]);
    assert_eq!(v.unsqueeze(-2).shape(), &[1, 4]);
    // A 0-d tensor accepts dims 0 and -1 only.
    let s = Tensor::scalar(1.0f32);
    assert_eq!(s.sum_dim(-1, false).item(), 1.0);
    let msg = panic_message(|| drop(Tensor::scalar(1.0f32).sum_dim(1, false)));
    assert_eq!(
        msg,
        "sum: dimension 1 is out of range for a tensor of rank 0 (expected a dimension in [-1, 0])"
    );
}

#[test]
#[should_panic(expected = "sum: dim [0, -2] appears more than once in the list of dims to reduce")]
fn repeated_reduction_dims_are_refused() {
    let _ = Tensor::zeros([2, 3]).sum_dim([0, -2], false);
}

#[test]
#[should_panic(
    expected = "permute: [0, 0] is not a permutation of the 2 dims of a tensor of shape [2, 3]"
)]
fn permute_requires_a_permutation() {
    let _ = Tensor::zeros([2, 3]).permute(&[0, 0]);
}

#[test]
fn permute_with_the_wrong_length_or_a_large_dim() {
    let msg = panic_message(|| drop(Tensor::zeros([2, 3]).permute(&[1])));
    assert!(
        msg.starts_with("permute: [1] is not a permutation of the 2 dims"),
        "{msg}"
    );
    let msg = panic_message(|| drop(Tensor::zeros([2, 3]).permute(&[0, 2])));
    assert!(
        msg.starts_with("permute: [0, 2] is not a permutation"),
        "{msg}"
    );
}

#[test]
#[should_panic(expected = "flatten: start_dim 1 comes after end_dim 0")]
fn flatten_start_after_end() {
    let _ = Tensor::zeros([2, 3]).flatten(1, 0);
}

// ---------------------------------------------------------------- out-of-range indices

#[test]
fn out_of_range_indices() {
    let msg = panic_message(|| drop(Tensor::zeros([3, 2]).select(0, 3)));
    assert_eq!(
        msg,
        "select: index 3 is out of range for dimension 0 of size 3"
    );
    let msg = panic_message(|| drop(Tensor::zeros([3, 2]).select(1, -3)));
    assert_eq!(
        msg,
        "select: index -3 is out of range for dimension 1 of size 2"
    );
    let msg = panic_message(|| drop(Tensor::zeros([3, 2]).narrow(0, 2, 2)));
    assert_eq!(
        msg,
        "narrow: start (2) + length (2) exceeds dimension 0 of size 3 (shape [3, 2])"
    );
    let msg = panic_message(|| drop(Tensor::zeros([3, 2]).index_select(0, &tensor![0, 3])));
    assert_eq!(
        msg,
        "index_select: index 3 is out of bounds for dimension 0 with size 3"
    );
    let msg = panic_message(|| drop(Tensor::zeros([3, 2]).index_select(1, &tensor![-3])));
    assert_eq!(
        msg,
        "index_select: index -3 is out of bounds for dimension 1 with size 2"
    );
    let msg = panic_message(|| drop(Tensor::zeros([2, 2]).gather(1, &tensor![[0, 2], [1, 0]])));
    assert_eq!(
        msg,
        "gather: index 2 is out of bounds for dimension 1 with size 2"
    );
    let msg = panic_message(|| {
        drop(Tensor::zeros([2, 2]).scatter_add(0, &tensor![[5, 0]], &Tensor::ones([1, 2])))
    });
    assert_eq!(
        msg,
        "scatter_add: index 5 is out of bounds for dimension 0 with size 2"
    );
    // Negative indices are refused in index tensors (as PyTorch does)...
    let msg = panic_message(|| drop(tensor![1., 2., 3.].index_select(0, &tensor![-1])));
    assert_eq!(
        msg,
        "index_select: index -1 is out of bounds for dimension 0 with size 3"
    );
    let msg = panic_message(|| drop(tensor![[1., 2.]].gather(1, &tensor![[-1]])));
    assert_eq!(
        msg,
        "gather: index -1 is out of bounds for dimension 1 with size 2"
    );
    // ...while select counts from the end, and the last valid index works.
    assert_eq!(tensor![1., 2., 3.].select(0, -1).item(), 3.0);
    assert_eq!(tensor![1., 2., 3.].index_select(0, &tensor![2]).item(), 3.0);
}

#[test]
fn index_tensor_shapes() {
    let msg = panic_message(|| drop(Tensor::zeros([2, 2]).gather(1, &tensor![0, 1])));
    assert_eq!(
        msg,
        "gather: index of shape [2] does not fit input of shape [2, 2]: it needs the same \
         number of dims, and no larger than the input outside dim 1"
    );
    let msg = panic_message(|| drop(Tensor::zeros([2, 2]).gather(1, &tensor![[0], [1], [0]])));
    assert!(
        msg.starts_with("gather: index of shape [3, 1] does not fit input of shape [2, 2]"),
        "{msg}"
    );
    let msg = panic_message(|| {
        drop(Tensor::zeros([3, 3]).scatter_add(0, &tensor![[0, 1]], &Tensor::ones([1, 1])))
    });
    assert_eq!(
        msg,
        "scatter_add: src of shape [1, 1] must cover index of shape [1, 2]"
    );
    let msg = panic_message(|| drop(Tensor::zeros([3]).index_select(0, &tensor![[0]])));
    assert_eq!(
        msg,
        "index_select: index must be 0-d or 1-d, got shape [1, 1]"
    );
}

#[test]
fn index_tensors_of_the_wrong_dtype_are_refused() {
    let x = Tensor::zeros([3, 2]);
    let msg = panic_message(|| drop(Tensor::zeros([3, 2]).index_select(0, &tensor![0., 1.])));
    assert_eq!(
        msg,
        "index_select: index must be an i64 tensor, got f32; convert with .to_dtype(DType::I64)"
    );
    let msg = panic_message(|| drop(Tensor::zeros([2, 2]).gather(0, &tensor![[true, false]])));
    assert_eq!(
        msg,
        "gather: index must be an i64 tensor, got bool; convert with .to_dtype(DType::I64)"
    );
    let msg = panic_message(|| {
        drop(Tensor::zeros([2, 2]).scatter_add(
            0,
            &tensor![[0, 1]].to_dtype(DType::F64),
            &Tensor::ones([1, 2]),
        ))
    });
    assert_eq!(
        msg,
        "scatter_add: index must be an i64 tensor, got f64; convert with .to_dtype(DType::I64)"
    );
    // The suggested conversion works.
    let i = tensor![2., 0.].to_dtype(DType::I64);
    assert_eq!(x.index_select(0, &i).shape(), &[2, 2]);
}

// ---------------------------------------------------------------- in-place preconditions

#[test]
fn in_place_ops_cannot_grow_the_tensor() {
    let msg = panic_message(|| {
        Tensor::zeros([3]).add_(Tensor::ones([2, 3]));
    });
    assert_eq!(
        msg,
        "add_: output with shape [3] doesn't match the broadcast shape [2, 3]: an in-place op \
         cannot grow the tensor it writes into; use the out-of-place form"
    );
    let msg = panic_message(|| {
        Tensor::zeros([2, 1]).copy_(&Tensor::ones([2, 3]));
    });
    assert!(
        msg.starts_with("copy_: output with shape [2, 1] doesn't match the broadcast shape [2, 3]"),
        "{msg}"
    );
    let msg = panic_message(|| {
        Tensor::zeros([3]).mul_(Tensor::ones([2]));
    });
    assert!(
        msg.starts_with("mul_: shapes [3] and [2] cannot be broadcast together"),
        "{msg}"
    );
    assert!(msg.contains(BROADCAST_FIX), "{msg}");
    // Broadcasting into the tensor is fine.
    let x = Tensor::zeros([2, 3]);
    x.add_(Tensor::ones([3]));
    assert_eq!(x.sum().item(), 6.0);
}

#[test]
fn in_place_ops_refuse_results_they_cannot_hold() {
    // As in PyTorch: a float result cannot be stored into an integer tensor.
    let i = tensor![1, 2];
    let msg = panic_message(|| {
        tensor![1, 2].mul_(2.5);
    });
    assert_eq!(
        msg,
        "mul_: result type f32 can't be cast to the desired output type i64 of this tensor; \
         use the out-of-place form, or convert with .to_dtype(..) first"
    );
    let msg = panic_message(|| {
        tensor![1, 2].add_(tensor![0.5, 0.5]);
    });
    assert!(
        msg.starts_with("add_: result type f32 can't be cast to the desired output type i64"),
        "{msg}"
    );
    let msg = panic_message(|| {
        tensor![true].add_(tensor![1]);
    });
    assert!(
        msg.starts_with("add_: result type i64 can't be cast to the desired output type bool"),
        "{msg}"
    );
    // The tensor was not modified by the refused ops.
    assert_eq!(i.to_vec::<i64>(), vec![1, 2]);
    // Integer numbers and tensors are fine; the out-of-place form gives floats.
    i.mul_(2).add_(tensor![1, 1]);
    assert_eq!(i.to_vec::<i64>(), vec![3, 5]);
    assert_eq!(i.mul(2.5).to_vec::<f32>(), vec![7.5, 12.5]);
    // True division has no integer form, in place.
    let msg = panic_message(|| {
        tensor![4, 2].div_(2);
    });
    assert_eq!(
        msg,
        "div_: not supported for i64 tensors; convert with .to_dtype(DType::F32)"
    );
    // copy_ converts, as in PyTorch.
    let c = tensor![0, 0];
    c.copy_(&tensor![1.7, -2.2]);
    assert_eq!(c.to_vec::<i64>(), vec![1, -2]);
}

#[test]
fn in_place_ops_on_tensors_that_require_grad() {
    let w = tensor![1., 2.].requires_grad_(true);
    let msg = panic_message(|| {
        w.sub_(1.0);
    });
    assert!(
        msg.starts_with(
            "sub_: a leaf tensor that requires grad is being used in an in-place operation"
        ),
        "{msg}"
    );
    assert!(msg.contains("no_grad"), "{msg}");
    let y = &w * 2.0;
    let msg = panic_message(|| {
        y.mul_(2.0);
    });
    let want = "mul_: in-place operations on a tensor that is part of the autograd graph \
                (grad_fn MulBackward)";
    assert!(msg.starts_with(want), "{msg}");
    let msg = panic_message(|| {
        Tensor::zeros([2]).add_(&w);
    });
    assert!(msg.starts_with("add_: the source requires grad"), "{msg}");
    // The named fix works.
    no_grad(|| {
        w.sub_(1.0);
    });
    assert_eq!(w.to_vec::<f32>(), vec![0., 1.]);
}

// ---------------------------------------------------------------- dtype preconditions

#[test]
fn float_only_ops_refuse_integers() {
    let msg = panic_message(|| drop(tensor![1, 2].mean()));
    assert_eq!(
        msg,
        "mean: input dtype must be floating point, got i64; convert with .to_dtype(DType::F32)"
    );
    let msg = panic_message(|| drop(tensor![1, 2].var()));
    assert!(
        msg.starts_with("var: input dtype must be floating point, got i64"),
        "{msg}"
    );
    let msg = panic_message(|| drop(tensor![true, false].std_dim(0, 1, false)));
    assert!(
        msg.starts_with("std: input dtype must be floating point, got bool"),
        "{msg}"
    );
    let msg = panic_message(|| drop(tensor![1, 2].requires_grad_(true)));
    assert_eq!(
        msg,
        "requires_grad_: only floating point tensors can require gradients, this one is i64; \
         convert it first with .to_dtype(DType::F32)"
    );
    // The conversion fixes it.
    assert_eq!(tensor![1, 2].to_dtype(DType::F32).mean().item(), 1.5);
}

#[test]
fn requires_grad_flags_only_change_on_leaves() {
    let x = tensor![1.].requires_grad_(true);
    let y = &x * 2.0;
    let msg = panic_message(|| y.set_requires_grad(false));
    assert!(
        msg.starts_with("requires_grad_: you can only change requires_grad flags of leaf tensors"),
        "{msg}"
    );
    assert!(msg.contains(".detach()"), "{msg}");
}

// ---------------------------------------------------------------- other arguments

#[test]
fn invalid_arguments() {
    let cases: Vec<Case> = vec![
        case!(
            "arange: step must be finite and non-zero, got 0",
            Tensor::arange(0., 1., 0.)
        ),
        case!(
            "arange: upper bound and larger bound inconsistent with step sign",
            Tensor::arange(0, 5, -1)
        ),
        case!(
            "randint: low (3) must be below high (3)",
            Tensor::randint(3, 3, [2])
        ),
        case!(
            "slice: step must be positive, got 0",
            Tensor::zeros([4]).slice_step(0, .., 0)
        ),
        case!(
            "split: split_size must be positive, got 0",
            Tensor::zeros([4]).split(0, 0)
        ),
        case!(
            "chunk: number of chunks must be positive, got 0",
            Tensor::zeros([4]).chunk(0, 0)
        ),
        case!(
            "split_with_sizes: sizes [1, 2] must sum to the size of dimension 0 (4)",
            Tensor::zeros([4]).split_sizes(&[1, 2], 0)
        ),
        case!(
            "max: cannot reduce an empty tensor (shape [0]); pass a dim with max_dim/min_dim",
            Tensor::zeros([0]).max()
        ),
        case!(
            "min: cannot reduce an empty tensor (shape [2, 0])",
            Tensor::zeros([2, 0]).min()
        ),
        case!(
            "max: cannot reduce over dimension 0 of size 0 (shape [0, 3])",
            Tensor::zeros([0, 3]).max_dim(0, false)
        ),
        case!(
            "item: a Tensor with 2 elements (shape [2]) cannot be converted to a scalar",
            tensor![1., 2.].item()
        ),
    ];
    for (want, f) in cases {
        let msg = panic_message(f);
        assert!(msg.starts_with(want), "{msg:?} should start with {want:?}");
    }
}

// ---------------------------------------------------------------- the error type

#[test]
fn error_variants_display_and_compare() {
    let e = Tensor::zeros([2]).try_add(Tensor::zeros([3])).unwrap_err();
    // Display is "op: message"; Debug shows the variant.
    assert!(e.to_string().starts_with("add: shapes [2] and [3]"));
    assert!(format!("{e:?}").starts_with("Shape { op: \"add\""));
    // Errors are values: clone and compare.
    assert_eq!(e.clone(), e);
    assert_ne!(
        e,
        Tensor::zeros([2]).try_sub(Tensor::zeros([3])).unwrap_err()
    );
    // An Invalid error displays its message alone.
    let inv = Tensor::try_cat(&[], 0).unwrap_err();
    assert_eq!(inv.to_string(), "cat: expected a non-empty list of tensors");
    // It is a std error, so `?` lifts it into Box<dyn Error>.
    fn lifted() -> Result<Tensor, Box<dyn std::error::Error>> {
        Ok(Tensor::zeros([2, 2]).try_matmul(&Tensor::zeros([3, 3]))?)
    }
    let boxed = lifted().unwrap_err();
    assert!(boxed
        .to_string()
        .starts_with("matmul: shapes [2, 2] and [3, 3] cannot be multiplied"));
    // The crate's Result alias.
    let ok: deriv::Result<Tensor> = Tensor::zeros([2]).try_add(1.0);
    assert_eq!(ok.unwrap().to_vec::<f32>(), vec![1., 1.]);
}

// ---------------------------------------------------------------- what a new user trips over

/// `?` on a `std::io` call works in a function returning `deriv::Result`.
#[test]
fn io_errors_convert_with_the_question_mark() {
    fn read_first_byte(path: &std::path::Path) -> deriv::Result<u8> {
        let bytes = std::fs::read(path)?;
        Ok(bytes[0])
    }
    let dir = std::env::temp_dir().join(format!("deriv-errors-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("one.bin");
    std::fs::write(&path, [42u8]).unwrap();
    assert_eq!(read_first_byte(&path).unwrap(), 42);
    let err = read_first_byte(&dir.join("missing.bin")).unwrap_err();
    match &err {
        Error::Io { path, msg } => {
            assert!(path.is_empty(), "{path}");
            assert!(msg.contains("No such file"), "{msg}");
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    // Without a path the message is the operating system's alone.
    assert!(err.to_string().starts_with("No such file"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A Linear fed the wrong number of features names the layer, in_features
/// and the input's last dimension, with PyTorch's words beside deriv's.
#[test]
fn linear_with_the_wrong_last_dim_names_the_layer() {
    let fc = Linear::new(13, 3, &Device::Cpu);
    let msg = panic_message(|| drop(fc.forward(&Tensor::zeros([64, 14]))));
    contains_all(
        &msg,
        &[
            "linear: mat1 and mat2 shapes cannot be multiplied (64x14 and 13x3)",
            "Linear(in_features=13, out_features=3)",
            "in_features = 13",
            "shape [64, 14]",
            "in_features = 14",
        ],
    );
    // Leading dims fold into the first matrix's rows, as PyTorch prints them.
    let text = shape_err(fc.try_forward(&Tensor::zeros([2, 5, 7])), "linear");
    contains_all(&text, &["(10x7 and 13x3)", "shape [2, 5, 7]"]);
    let text = shape_err(
        deriv::nn::functional::try_linear(&Tensor::zeros([4]), &fc.weight, None),
        "linear",
    );
    contains_all(&text, &["(1x4 and 13x3)", "the weight (shape [3, 13])"]);
    // The compile-time path reports the same.
    let msg = panic_message(|| drop(fc.forward_train(&Tensor::zeros([8, 12]))));
    contains_all(&msg, &["(8x12 and 13x3)", "Linear(in_features=13"]);
}

/// f64 data through an f32 model is refused (PyTorch: "expected both to
/// have the same dtype"), with both fixes; matmul refuses mixed dtypes too.
#[test]
fn f64_input_to_an_f32_model_is_refused_with_the_fix() {
    network! {
        struct Net = Linear(4, 8) -> ReLU -> Linear(8, 2);
    }
    let net = Net::default();
    let x = Tensor::randn([5, 4]).to_dtype(DType::F64);
    let msg = panic_message(|| drop(net.forward(&x)));
    contains_all(
        &msg,
        &[
            "linear: expected both to have the same dtype, but the input is f64",
            "the weight of Linear(in_features=4, out_features=8) is f32",
            "x.to_dtype(DType::F32)",
            "the model with .to_dtype(DType::F64)",
        ],
    );
    let msg = panic_message(|| drop(net.forward_train(&x)));
    assert!(
        msg.contains("expected both to have the same dtype"),
        "{msg}"
    );
    // Both fixes work.
    assert_eq!(net.forward(&x.to_dtype(DType::F32)).dtype(), DType::F32);
    let mut net64 = Net::default();
    net64.to_dtype(DType::F64);
    assert_eq!(net64.forward(&x).dtype(), DType::F64);
    // The fallible forms return a DType error.
    let fc = Linear::new(4, 2, &Device::Cpu);
    assert!(matches!(
        fc.try_forward(&x),
        Err(Error::DType { op: "linear", .. })
    ));
    let e = Tensor::ones([2, 3]).try_matmul(&Tensor::ones([3, 2]).to_dtype(DType::F64));
    match e {
        Err(Error::DType { op: "matmul", msg }) => contains_all(
            &msg,
            &["same dtype, but got f32 and f64", ".to_dtype(DType::F32)"],
        ),
        other => panic!("expected a DType error, got {other:?}"),
    }
    // Elementwise ops still promote, as in PyTorch.
    assert_eq!((&Tensor::ones([2]) + &x.i((0, ..2))).dtype(), DType::F64);
}
