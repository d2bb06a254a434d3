//! Elementwise kernel bodies written by running an op's formula on a tracing
//! type: [`Reg`] implements [`Math`], and each operation appends its PTX to
//! a per-thread builder and returns the register holding the result. This is
//! how an op's GPU kernel comes from the same generic function as its CPU
//! kernel (`ops/unary`, `ops/binary`).
//!
//! Transcendental functions are written out of PTX's approximate primitives
//! (`ex2.approx`, `lg2.approx`) with range reduction and short polynomials
//! where those lose accuracy (expm1, log1p, tanh and erf near 0), to about
//! f32 precision. f64 has no such primitives: a formula that needs one on f64
//! makes [`body`] return `None`, and the op reports "not yet on CUDA" for f64.

use std::cell::RefCell;
use std::fmt::Write;
use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::tensor::{DType, Math};

/// A value register (`%v<n>`) of the kernel's float type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reg(u32);

/// A predicate register (`%m<n>`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pred(u32);

struct Builder {
    dtype: DType,
    code: String,
    regs: u32,
    preds: u32,
    /// The first operation this dtype cannot do (f64 transcendentals).
    unsupported: Option<&'static str>,
}

thread_local! {
    static BUILDER: RefCell<Option<Builder>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&mut Builder) -> R) -> R {
    BUILDER.with(|b| {
        f(b.borrow_mut()
            .as_mut()
            .expect("a Reg is used only inside trace::body"))
    })
}

impl Builder {
    fn t(&self) -> &'static str {
        match self.dtype {
            DType::F64 => "f64",
            _ => "f32",
        }
    }
    fn reg(&mut self) -> Reg {
        self.regs += 1;
        Reg(self.regs - 1)
    }
    fn pred(&mut self) -> Pred {
        self.preds += 1;
        Pred(self.preds - 1)
    }
    fn line(&mut self, s: String) {
        self.code.push_str(&s);
        self.code.push('\n');
    }
    fn konst(&self, v: f64) -> String {
        match self.dtype {
            DType::F64 => format!("0d{:016X}", v.to_bits()),
            _ => format!("0f{:08X}", (v as f32).to_bits()),
        }
    }
    /// `op.rn.T d, a, b` style instruction with a fresh destination.
    fn op2(&mut self, op: &str, a: Reg, b: Reg) -> Reg {
        let d = self.reg();
        let t = self.t();
        self.line(format!("{op}.{t} %v{}, %v{}, %v{};", d.0, a.0, b.0));
        d
    }
    fn op1(&mut self, op: &str, a: Reg) -> Reg {
        let d = self.reg();
        let t = self.t();
        self.line(format!("{op}.{t} %v{}, %v{};", d.0, a.0));
        d
    }
    fn cmp(&mut self, c: &str, a: Reg, b: Reg) -> Pred {
        let p = self.pred();
        let t = self.t();
        self.line(format!("setp.{c}.{t} %m{}, %v{}, %v{};", p.0, a.0, b.0));
        p
    }
    fn need_f32(&mut self, what: &'static str) -> bool {
        if self.dtype == DType::F64 {
            self.unsupported.get_or_insert(what);
            false
        } else {
            true
        }
    }
}

/// The PTX computing `%y` from the kernel's inputs `%x0..` (all of dtype
/// `d`) and parameters (`%pfa, %pfb` as f32, `%pa, %pb` as f64), by running
/// `f` on tracing registers; `None` when `f` needs math this dtype has no
/// PTX for yet.
pub(crate) fn body<const N: usize>(
    d: DType,
    f: impl FnOnce([Reg; N], [Reg; 2]) -> Reg,
) -> Option<String> {
    assert!(d.is_float(), "traced kernels compute in f32 or f64");
    let prev = BUILDER.with(|b| {
        b.borrow_mut().replace(Builder {
            dtype: d,
            code: String::new(),
            regs: 0,
            preds: 0,
            unsupported: None,
        })
    });
    assert!(prev.is_none(), "trace::body does not nest");
    let (t, params) = match d {
        DType::F64 => ("f64", ["%pa", "%pb"]),
        _ => ("f32", ["%pfa", "%pfb"]),
    };
    let mut ins = [Reg(0); N];
    for (i, r) in ins.iter_mut().enumerate() {
        *r = with(|b| {
            let r = b.reg();
            b.line(format!("mov.{t} %v{}, %x{i};", r.0));
            r
        });
    }
    let p = params.map(|name| {
        with(|b| {
            let r = b.reg();
            b.line(format!("mov.{t} %v{}, {name};", r.0));
            r
        })
    });
    let y = f(ins, p);
    let b = BUILDER
        .with(|b| b.borrow_mut().take())
        .expect("the builder set above");
    if b.unsupported.is_some() {
        return None;
    }
    let mut s = String::new();
    let _ = writeln!(s, "{{");
    let _ = writeln!(s, ".reg .{t} %v<{}>;", b.regs.max(1));
    let _ = writeln!(s, ".reg .pred %m<{}>;", b.preds.max(1));
    s.push_str(&b.code);
    let _ = writeln!(s, "mov.{t} %y, %v{};", y.0);
    let _ = writeln!(s, "}}");
    Some(s)
}

impl Add for Reg {
    type Output = Reg;
    fn add(self, o: Reg) -> Reg {
        with(|b| b.op2("add.rn", self, o))
    }
}
impl Sub for Reg {
    type Output = Reg;
    fn sub(self, o: Reg) -> Reg {
        with(|b| b.op2("sub.rn", self, o))
    }
}
impl Mul for Reg {
    type Output = Reg;
    fn mul(self, o: Reg) -> Reg {
        with(|b| b.op2("mul.rn", self, o))
    }
}
impl Div for Reg {
    type Output = Reg;
    fn div(self, o: Reg) -> Reg {
        with(|b| b.op2("div.rn", self, o))
    }
}
impl Neg for Reg {
    type Output = Reg;
    fn neg(self) -> Reg {
        with(|b| b.op1("neg", self))
    }
}

/// `a·x + b` evaluated by Horner's rule for coefficients from the highest power down.
fn poly(x: Reg, coeffs: &[f64]) -> Reg {
    let mut acc = Reg::k(coeffs[0]);
    for &c in &coeffs[1..] {
        acc = with(|b| {
            let d = b.reg();
            let k = b.konst(c);
            let t = b.t();
            b.line(format!(
                "fma.rn.{t} %v{}, %v{}, %v{}, {k};",
                d.0, acc.0, x.0
            ));
            d
        });
    }
    acc
}

/// `e^x` in f32: range reduction by a two-part log2(e), then `ex2` of the
/// fraction and of the integer part (inputs clamped to where f32 e^x is finite
/// or zero; NaN passes through).
fn exp_f32(x: Reg) -> Reg {
    with(|b| {
        let c = b.reg();
        let (r1, r2, r3, r4, r5, r6, y) = (
            b.reg(),
            b.reg(),
            b.reg(),
            b.reg(),
            b.reg(),
            b.reg(),
            b.reg(),
        );
        let q = b.pred();
        b.line(format!(
            "max.f32 %v{c}, %v{x}, 0fC2D00000;\nmin.f32 %v{c}, %v{c}, 0f42B20000;\n\
             mul.f32 %v{r1}, %v{c}, 0f3FB8AA3B;\ncvt.rni.f32.f32 %v{r2}, %v{r1};\nneg.f32 %v{r3}, %v{r2};\n\
             fma.rn.f32 %v{r4}, %v{c}, 0f3FB8AA3B, %v{r3};\nfma.rn.f32 %v{r4}, %v{c}, 0f32A57060, %v{r4};\n\
             ex2.approx.ftz.f32 %v{r5}, %v{r4};\nex2.approx.ftz.f32 %v{r6}, %v{r2};\nmul.rn.f32 %v{y}, %v{r5}, %v{r6};\n\
             setp.nan.f32 %m{q}, %v{x}, %v{x};\nselp.f32 %v{y}, %v{x}, %v{y}, %m{q};",
            c = c.0, x = x.0, r1 = r1.0, r2 = r2.0, r3 = r3.0, r4 = r4.0, r5 = r5.0, r6 = r6.0,
            y = y.0, q = q.0
        ));
        y
    })
}

/// `x` rounded toward zero to a whole number (f32).
fn trunc(x: Reg) -> Reg {
    with(|b| {
        let y = b.reg();
        b.line(format!("cvt.rzi.f32.f32 %v{}, %v{};", y.0, x.0));
        y
    })
}

/// `ln x` in f32: `lg2.approx` times ln 2.
fn ln_f32(x: Reg) -> Reg {
    with(|b| {
        let (l, y) = (b.reg(), b.reg());
        b.line(format!(
            "lg2.approx.f32 %v{}, %v{};\nmul.rn.f32 %v{}, %v{}, 0f3F317218;",
            l.0, x.0, y.0, l.0
        ));
        y
    })
}

impl Math for Reg {
    type Mask = Pred;

    fn k(v: f64) -> Reg {
        with(|b| {
            let r = b.reg();
            let (t, k) = (b.t(), b.konst(v));
            b.line(format!("mov.{t} %v{}, {k};", r.0));
            r
        })
    }

    fn exp(self) -> Reg {
        if !with(|b| b.need_f32("exp")) {
            return self;
        }
        exp_f32(self)
    }

    /// Taylor series to x⁸/8! where |x| < 1/2 (relative error below 1e-8),
    /// e^x - 1 elsewhere.
    fn exp_m1(self) -> Reg {
        if !with(|b| b.need_f32("expm1")) {
            return self;
        }
        let inv_fact: Vec<f64> = (1..=8)
            .rev()
            .map(|n| 1.0 / (1..=n).map(|i| i as f64).product::<f64>())
            .collect();
        let series = poly(self, &inv_fact) * self;
        let direct = exp_f32(self) - Reg::k(1.0);
        Reg::select(self.abs().lt(Reg::k(0.5)), series, direct)
    }

    fn ln(self) -> Reg {
        if !with(|b| b.need_f32("log")) {
            return self;
        }
        ln_f32(self)
    }

    /// Goldberg's `ln(u)·x / (u - 1)` with `u = 1 + x`, exact where `u` rounds to 1.
    fn ln_1p(self) -> Reg {
        if !with(|b| b.need_f32("log1p")) {
            return self;
        }
        let u = self + Reg::k(1.0);
        let one = Reg::k(1.0);
        let ratio = ln_f32(u) * self / (u - one);
        let exact = with(|b| b.cmp("eq", u, one));
        // u = +inf (x = inf): ln(u) itself.
        let inf = with(|b| {
            let k = b.konst(f64::INFINITY);
            let p = b.pred();
            b.line(format!("setp.eq.f32 %m{}, %v{}, {k};", p.0, u.0));
            p
        });
        Reg::select(exact, self, Reg::select(inf, u, ratio))
    }

    fn sqrt(self) -> Reg {
        with(|b| b.op1("sqrt.rn", self))
    }

    /// `2^(p·log2|x|)`, then powf's rules for the sign and the special
    /// cases: a negative base keeps the sign for odd integer `p` and gives
    /// NaN for a fractional one; `x^0` and `1^p` are 1.
    fn powf(self, p: Reg) -> Reg {
        if !with(|b| b.need_f32("pow")) {
            return self;
        }
        let x = self;
        let magnitude = with(|b| {
            let (a, l, e, y) = (b.reg(), b.reg(), b.reg(), b.reg());
            b.line(format!(
                "abs.f32 %v{a}, %v{x};\nlg2.approx.f32 %v{l}, %v{a};\n\
                 mul.rn.f32 %v{e}, %v{l}, %v{p};\nex2.approx.f32 %v{y}, %v{e};",
                a = a.0,
                x = x.0,
                l = l.0,
                e = e.0,
                p = p.0,
                y = y.0
            ));
            y
        });
        let whole = trunc(p);
        let half = whole * Reg::k(0.5);
        let is_int = with(|b| b.cmp("eq", whole, p));
        let half_whole = trunc(half);
        let odd = Reg::and(is_int, with(|b| b.cmp("neu", half, half_whole)));
        let negative = Reg::select(
            is_int,
            Reg::select(odd, -magnitude, magnitude),
            Reg::k(f64::NAN),
        );
        let y = Reg::select(x.lt(Reg::k(0.0)), negative, magnitude);
        let (zero, one) = (Reg::k(0.0), Reg::k(1.0));
        let unit = Reg::or(
            with(|b| b.cmp("eq", p, zero)),
            with(|b| b.cmp("eq", x, one)),
        );
        Reg::select(unit, one, y)
    }

    fn abs(self) -> Reg {
        with(|b| b.op1("abs", self))
    }

    /// `expm1(2x) / (expm1(2x) + 2)`, ±1 beyond |x| > 9 (where f32 tanh rounds to ±1).
    fn tanh(self) -> Reg {
        if !with(|b| b.need_f32("tanh")) {
            return self;
        }
        let e = (self + self).exp_m1();
        let t = e / (e + Reg::k(2.0));
        let one = with(|b| {
            let r = b.reg();
            b.line(format!(
                "mov.f32 %v{r}, 0f3F800000;\ncopysign.f32 %v{r}, %v{x}, %v{r};",
                r = r.0,
                x = self.0
            ));
            r
        });
        Reg::select(self.abs().gt(Reg::k(9.0)), one, t)
    }

    /// Taylor series where |x| < 1/2, Abramowitz & Stegun 7.1.26 elsewhere
    /// (absolute error below 1.5e-7).
    fn erf(self) -> Reg {
        if !with(|b| b.need_f32("erf")) {
            return self;
        }
        let x2 = self * self;
        // 2/√π (x - x³/3 + x⁵/10 - x⁷/42 + x⁹/216 - x¹¹/1320)
        let s = poly(
            x2,
            &[
                -1.0 / 1320.0,
                1.0 / 216.0,
                -1.0 / 42.0,
                1.0 / 10.0,
                -1.0 / 3.0,
                1.0,
            ],
        ) * self
            * Reg::k(std::f64::consts::FRAC_2_SQRT_PI);
        let a = self.abs();
        let t = Reg::k(1.0) / (Reg::k(1.0) + Reg::k(0.327_591_1) * a);
        let p = poly(
            t,
            &[
                1.061_405_429,
                -1.453_152_027,
                1.421_413_741,
                -0.284_496_736,
                0.254_829_592,
                0.0,
            ],
        );
        let far = Reg::k(1.0) - p * exp_f32(-x2);
        let signed = with(|b| {
            let r = b.reg();
            b.line(format!(
                "copysign.f32 %v{}, %v{}, %v{};",
                r.0, self.0, far.0
            ));
            r
        });
        Reg::select(a.lt(Reg::k(0.5)), s, signed)
    }

    fn max_nan(self, o: Reg) -> Reg {
        let nan = Reg::or(self.is_nan(), o.is_nan());
        Reg::select(nan, self + o, Reg::select(self.ge(o), self, o))
    }

    fn min_nan(self, o: Reg) -> Reg {
        let nan = Reg::or(self.is_nan(), o.is_nan());
        Reg::select(nan, self + o, Reg::select(self.le(o), self, o))
    }

    fn gt(self, o: Reg) -> Pred {
        with(|b| b.cmp("gt", self, o))
    }
    fn ge(self, o: Reg) -> Pred {
        with(|b| b.cmp("ge", self, o))
    }
    fn lt(self, o: Reg) -> Pred {
        with(|b| b.cmp("lt", self, o))
    }
    fn le(self, o: Reg) -> Pred {
        with(|b| b.cmp("le", self, o))
    }
    fn is_nan(self) -> Pred {
        with(|b| b.cmp("nan", self, self))
    }
    fn and(a: Pred, c: Pred) -> Pred {
        with(|b| {
            let p = b.pred();
            b.line(format!("and.pred %m{}, %m{}, %m{};", p.0, a.0, c.0));
            p
        })
    }
    fn or(a: Pred, c: Pred) -> Pred {
        with(|b| {
            let p = b.pred();
            b.line(format!("or.pred %m{}, %m{}, %m{};", p.0, a.0, c.0));
            p
        })
    }
    fn select(m: Pred, x: Reg, y: Reg) -> Reg {
        with(|b| {
            let r = b.reg();
            let t = b.t();
            b.line(format!(
                "selp.{t} %v{}, %v{}, %v{}, %m{};",
                r.0, x.0, y.0, m.0
            ));
            r
        })
    }
}

/// Runs a traced f32 body on the CPU: a small interpreter of exactly the
/// instructions the tracer writes, so the GPU formulas (the range
/// reductions, series and approximations above) are checked against the CPU
/// kernels without a GPU. `ex2.approx`/`lg2.approx` are taken as exact (the
/// hardware's are within 2 ulp).
#[cfg(test)]
pub(crate) fn interpret_f32(body: &str, x: &[f32], p: [f32; 2]) -> f32 {
    use std::collections::HashMap;
    let mut v: HashMap<String, f32> = HashMap::new();
    let mut m: HashMap<String, bool> = HashMap::new();
    for (i, &xi) in x.iter().enumerate() {
        v.insert(format!("%x{i}"), xi);
    }
    v.insert("%pfa".into(), p[0]);
    v.insert("%pfb".into(), p[1]);
    let val = |v: &HashMap<String, f32>, s: &str| -> f32 {
        match s.strip_prefix("0f") {
            Some(hex) => f32::from_bits(u32::from_str_radix(hex, 16).expect("hex constant")),
            None => *v.get(s).unwrap_or_else(|| panic!("unset register {s}")),
        }
    };
    for line in body.lines() {
        let line = line.trim().trim_end_matches(';');
        if line.is_empty()
            || line.starts_with('{')
            || line.starts_with('}')
            || line.starts_with(".reg")
        {
            continue;
        }
        let (op, rest) = line.split_once(' ').expect("an instruction");
        let a: Vec<&str> = rest.split(',').map(str::trim).collect();
        let f = |i: usize| val(&v, a[i]);
        let r = match op {
            "mov.f32" => Some(f(1)),
            "add.rn.f32" => Some(f(1) + f(2)),
            "sub.rn.f32" => Some(f(1) - f(2)),
            "mul.rn.f32" | "mul.f32" => Some(f(1) * f(2)),
            "div.rn.f32" => Some(f(1) / f(2)),
            "neg.f32" => Some(-f(1)),
            "abs.f32" => Some(f(1).abs()),
            "sqrt.rn.f32" => Some(f(1).sqrt()),
            "fma.rn.f32" => Some(f(1).mul_add(f(2), f(3))),
            // PTX max/min return the other operand when one is NaN.
            "max.f32" => Some(f(1).max(f(2))),
            "min.f32" => Some(f(1).min(f(2))),
            "cvt.rni.f32.f32" => Some(f(1).round_ties_even()),
            "cvt.rzi.f32.f32" => Some(f(1).trunc()),
            "ex2.approx.ftz.f32" | "ex2.approx.f32" => Some(f(1).exp2()),
            "lg2.approx.f32" => Some(f(1).log2()),
            "copysign.f32" => Some(f(2).copysign(f(1))),
            "selp.f32" => Some(if m[a[3]] { f(1) } else { f(2) }),
            _ => None,
        };
        if let Some(r) = r {
            v.insert(a[0].to_string(), r);
            continue;
        }
        let b = match op {
            "setp.gt.f32" => f(1) > f(2),
            "setp.ge.f32" => f(1) >= f(2),
            "setp.lt.f32" => f(1) < f(2),
            "setp.le.f32" => f(1) <= f(2),
            "setp.eq.f32" => f(1) == f(2),
            "setp.neu.f32" => f(1) != f(2),
            "setp.nan.f32" => f(1).is_nan() || f(2).is_nan(),
            "and.pred" => m[a[1]] && m[a[2]],
            "or.pred" => m[a[1]] || m[a[2]],
            other => panic!("the interpreter does not know `{other}`"),
        };
        m.insert(a[0].to_string(), b);
    }
    v["%y"]
}

/// Asserts that `traced` (a traced f32 body) computes `cpu` at every point of
/// `grid`, to `tol` (absolute + relative); NaN must match NaN.
#[cfg(test)]
pub(crate) fn assert_traced_matches<const N: usize>(
    what: &str,
    traced: &str,
    p: [f32; 2],
    grid: &[[f32; N]],
    tol: f32,
    cpu: impl Fn([f32; N]) -> f32,
) {
    for x in grid {
        let (want, got) = (cpu(*x), interpret_f32(traced, x, p));
        let ok = (want.is_nan() && got.is_nan())
            || want == got
            || (want - got).abs() <= tol * (1.0 + want.abs());
        assert!(ok, "{what} at {x:?}: CPU {want}, traced PTX {got}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traced_bodies_name_their_inputs_and_output() {
        let s = body::<2>(DType::F32, |[a, b], p| (a + b) * p[0]).expect("f32 is supported");
        assert!(
            s.contains("%x0") && s.contains("%x1") && s.contains("%pfa"),
            "{s}"
        );
        assert!(s.contains("add.rn.f32") && s.contains("mul.rn.f32"), "{s}");
        assert!(
            s.trim_end().ends_with('}') && s.contains("mov.f32 %y"),
            "{s}"
        );
    }

    #[test]
    fn f64_transcendentals_are_reported_unsupported() {
        assert!(body::<1>(DType::F64, |[x], _| x.exp()).is_none());
        assert!(body::<1>(DType::F64, |[x], _| x.abs() * Reg::k(2.0)).is_some());
    }
}
