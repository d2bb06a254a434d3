//! Three-operand elementwise kernels (`where`, fused updates): the same
//! contiguous fast path and strided walk as `zip`.

use super::*;

/// `out[i] <- f(c[lc(i)], a[la(i)], b[lb(i)])`, all layouts of the output's
/// shape: contiguous operands run as one tight loop, others walk their strides.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub(crate) fn zip3_into<C, A, B, U, S>(
    op: &'static str,
    out: Dst<'_, U, S>,
    c: &[C],
    lc: &Layout,
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(C, A, B) -> U + Sync,
) where
    C: Copy + Sync,
    A: Copy + Sync,
    B: Copy + Sync,
    U: Send,
    S: Store<U>,
{
    assert_same_shape(op, &[lc, la, lb]);
    lc.assert_within(op, c.len());
    la.assert_within(op, a.len());
    lb.assert_within(op, b.len());
    let n = lc.numel();
    assert_eq!(out.len(), n, "{op}: internal error: destination size");
    if lc.is_contiguous() && la.is_contiguous() && lb.is_contiguous() {
        let (sc, sa, sb) = (
            &c[lc.offset..lc.offset + n],
            &a[la.offset..la.offset + n],
            &b[lb.offset..lb.offset + n],
        );
        return out.par_chunks(|start, part| {
            let end = start + part.len();
            let (sc, sa, sb) = (&sc[start..end], &sa[start..end], &sb[start..end]);
            part.fill_from(sc.iter().zip(sa).zip(sb).map(|((&c, &a), &b)| f(c, a, b)))
        });
    }
    out.par_chunks(|start, part| {
        let mut i = 0;
        walk(
            &lc.shape,
            [&lc.strides, &la.strides, &lb.strides],
            [lc.offset, la.offset, lb.offset],
            start,
            part.len(),
            |[oc, oa, ob]| {
                // SAFETY: `walk` calls this `part.len()` times, so i < len.
                unsafe { part.put(i, f(c[oc], a[oa], b[ob])) };
                i += 1;
            },
        );
    })
}

/// [`zip3_into`] for a [`Sink`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn zip3_to<C, A, B, U>(
    op: &'static str,
    out: Sink<'_, U>,
    c: &[C],
    lc: &Layout,
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(C, A, B) -> U + Sync,
) where
    C: Copy + Sync,
    A: Copy + Sync,
    B: Copy + Sync,
    U: Copy + Send + std::ops::Add<Output = U>,
{
    match out {
        Sink::Write(d) => zip3_into(op, d, c, lc, a, la, b, lb, f),
        Sink::Add(d) => zip3_into(op, d, c, lc, a, la, b, lb, f),
    }
}

/// `out[i] = f(c[lc(i)], a[la(i)], b[lb(i)])`, all layouts of the output's
/// shape; a result that cannot be allocated is an `Err`.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub(crate) fn zip3<C: Copy + Sync, A: Copy + Sync, B: Copy + Sync, U: Send>(
    op: &'static str,
    c: &[C],
    lc: &Layout,
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(C, A, B) -> U + Sync,
) -> Result<Vec<U>> {
    assert_same_shape(op, &[lc, la, lb]);
    try_new_vec(op, &lc.shape, lc.numel(), |out| {
        zip3_into(op, out, c, lc, a, la, b, lb, f)
    })
}
