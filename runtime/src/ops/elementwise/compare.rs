use super::*;

// ---------------------------------------------------------------- comparisons and where

pub(super) fn compare(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: fn(std::cmp::Ordering) -> bool,
) -> Result<Tensor> {
    let dt = crate::ops::result_type(a, b);
    let (shape, a, la, b, lb) = crate::ops::broadcast_pair(op, a, b, dt)?;
    #[cfg(feature = "cuda")]
    if a.device().is_cuda() {
        let g = match op {
            "eq" => Ew::Eq,
            "ne" => Ew::Ne,
            "lt" => Ew::Lt,
            "le" => Ew::Le,
            "gt" => Ew::Gt,
            _ => Ew::Ge,
        };
        return Ok(Tensor::from_array(crate::backend::cuda::ops::ew_new(
            g,
            dt,
            &shape,
            &[(a.array(), &la), (b.array(), &lb)],
            0.0,
            0.0,
        )));
    }
    let out = crate::ops::read_pair(&a, &b, |ga, gb| {
        // NaN compares unequal and unordered: every comparison but `ne` is false.
        let cmp = |o: Option<std::cmp::Ordering>| match o {
            Some(o) => f(o),
            None => op == "ne",
        };
        match (ga, gb) {
            (Buffer::F32(x), Buffer::F32(y)) => {
                cpu::zip(op, x, &la, y, &lb, |p, q| cmp(p.partial_cmp(&q)))
            }
            (Buffer::F64(x), Buffer::F64(y)) => {
                cpu::zip(op, x, &la, y, &lb, |p, q| cmp(p.partial_cmp(&q)))
            }
            (Buffer::I64(x), Buffer::I64(y)) => {
                cpu::zip(op, x, &la, y, &lb, |p, q| cmp(p.partial_cmp(&q)))
            }
            (Buffer::Bool(x), Buffer::Bool(y)) => {
                cpu::zip(op, x, &la, y, &lb, |p, q| cmp(p.partial_cmp(&q)))
            }
            _ => unreachable!("both operands were cast to one dtype"),
        }
    })?;
    Ok(Tensor::from_buffer(Buffer::Bool(out), &shape, a.device()))
}

macro_rules! comparisons {
    ($($name:ident, $sname:ident, $doc:literal, $f:expr;)*) => {
        impl Tensor {
            $(
                #[doc = concat!("Elementwise `self ", $doc, " other` with broadcasting: a bool mask.")]
                #[track_caller]
                pub fn $name(&self, other: &Tensor) -> Tensor {
                    compare(stringify!($name), self, other, $f).or_panic()
                }
                #[doc = concat!("Elementwise `self ", $doc, " value`: a bool mask.")]
                pub fn $sname(&self, value: f64) -> Tensor {
                    // Whole numbers compare exactly with integer tensors.
                    let v = if !self.dtype().is_float() && value.fract() == 0.0 {
                        int_scalar_for(self, value as i64)
                    } else {
                        scalar_for(self, value)
                    };
                    compare(stringify!($name), self, &v, $f).or_panic()
                }
            )*
        }
    };
}

comparisons! {
    eq, eq_scalar, "==", |o| o.is_eq();
    ne, ne_scalar, "!=", |o| o.is_ne();
    lt, lt_scalar, "<", |o| o.is_lt();
    le, le_scalar, "<=", |o| o.is_le();
    gt, gt_scalar, ">", |o| o.is_gt();
    ge, ge_scalar, ">=", |o| o.is_ge();
}

impl Tensor {
    /// Elementwise `cond ? a : b` with broadcasting of all three
    /// (`torch.where(cond, a, b)`; `where` is a Rust keyword). Differentiable
    /// in `a` and `b`.
    ///
    /// ```
    /// use deriv_runtime::{tensor, Tensor};
    /// let x = tensor![-1., 2., -3.];
    /// let y = Tensor::where_cond(&x.gt_scalar(0.0), &x, &x.zeros_like());
    /// assert_eq!(y.to_vec::<f32>(), vec![0., 2., 0.]);
    /// ```
    #[track_caller]
    pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        Self::try_where(cond, a, b).or_panic()
    }

    /// The old name of [`where_cond`](Self::where_cond): a trailing `_` marks
    /// in-place ops in deriv, and this one is not.
    #[deprecated(
        since = "0.1.0",
        note = "renamed to `Tensor::where_cond` (not an in-place op)"
    )]
    #[track_caller]
    pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        Self::try_where(cond, a, b).or_panic()
    }

    /// Fallible [`where_cond`](Self::where_cond).
    pub fn try_where(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        try_apply(Where, &[cond, a, b])
    }

    /// A copy that records nothing (kernel plumbing).
    pub(crate) fn clone_data_nograd(&self) -> Tensor {
        crate::autograd::no_grad(|| self.clone_data())
    }

    /// Elementwise logical not of a mask.
    pub fn logical_not(&self) -> Tensor {
        self.eq_scalar(0.0)
    }
}
