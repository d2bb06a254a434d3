//! PyTorch-style printing: `tensor([[1., 2.], [3., 4.]], requires_grad=True)`.

use std::fmt;

use super::{DType, Tensor};

/// Tensors with more elements than this print summarised, as in PyTorch.
const SUMMARIZE_THRESHOLD: usize = 1000;
/// Items shown at each end of a summarised dimension.
const EDGE_ITEMS: usize = 3;

/// How the elements of one tensor are written (PyTorch's `_Formatter`).
enum Style {
    Int,
    Bool,
    /// Integral floats: `1.`
    FloatInt,
    Fixed,
    Sci,
}

fn choose_style(dtype: DType, values: &[f64]) -> Style {
    match dtype {
        DType::I64 => return Style::Int,
        DType::Bool => return Style::Bool,
        _ => {}
    }
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return Style::Fixed;
    }
    let abs: Vec<f64> = finite.iter().map(|v| v.abs()).filter(|&v| v != 0.0).collect();
    let max = abs.iter().cloned().fold(0.0, f64::max);
    let min = abs.iter().cloned().fold(f64::INFINITY, f64::min);
    if finite.iter().all(|v| v.fract() == 0.0) {
        if max > 1e8 {
            Style::Sci
        } else {
            Style::FloatInt
        }
    } else if !abs.is_empty() && (max / min > 1000.0 || max > 1e8 || min < 1e-4) {
        Style::Sci
    } else {
        Style::Fixed
    }
}

fn format_value(style: &Style, v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    match style {
        Style::Int => format!("{}", v as i64),
        Style::Bool => if v != 0.0 { "True" } else { "False" }.into(),
        Style::FloatInt => format!("{v:.0}."),
        Style::Fixed => format!("{v:.4}"),
        Style::Sci => {
            // Rust prints 1.2345e5; PyTorch prints 1.2345e+05.
            let s = format!("{v:.4e}");
            match s.split_once('e') {
                Some((m, e)) => {
                    let (sign, digits) = match e.strip_prefix('-') {
                        Some(d) => ('-', d),
                        None => ('+', e),
                    };
                    format!("{m}e{sign}{digits:0>2}")
                }
                None => s,
            }
        }
    }
}

/// The indices shown along a dimension of size `n`; `None` marks the `...`.
fn shown(n: usize, summarize: bool) -> Vec<Option<usize>> {
    if summarize && n > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE_ITEMS..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    }
}

struct Printer<'a> {
    shape: &'a [usize],
    values: &'a [f64],
    style: Style,
    width: usize,
    summarize: bool,
}

impl Printer<'_> {
    fn write(&self, out: &mut String, dim: usize, base: usize, indent: usize) {
        let nd = self.shape.len();
        // `values` holds only the shown elements, so strides count shown items.
        let stride: usize = self.shape[dim + 1..]
            .iter()
            .map(|&n| shown(n, self.summarize).iter().flatten().count())
            .product();
        out.push('[');
        let idx = shown(self.shape[dim], self.summarize);
        let mut pos = 0;
        for (k, i) in idx.iter().enumerate() {
            if k > 0 {
                if dim == nd - 1 {
                    out.push_str(", ");
                } else {
                    out.push(',');
                    out.push_str(&"\n".repeat(nd - 1 - dim));
                    out.push_str(&" ".repeat(indent + 1));
                }
            }
            match i {
                None => out.push_str("..."),
                Some(_) if dim == nd - 1 => {
                    let s = format_value(&self.style, self.values[base + pos]);
                    out.push_str(&format!("{s:>w$}", w = self.width));
                    pos += 1;
                }
                Some(_) => {
                    self.write(out, dim + 1, base + pos * stride, indent + 1);
                    pos += 1;
                }
            }
        }
        out.push(']');
    }
}

impl Tensor {
    /// The text `Display` prints, without the `tensor(` wrapper's suffixes.
    fn format_body(&self, indent: usize) -> String {
        let summarize = self.numel() > SUMMARIZE_THRESHOLD;
        let values: Vec<f64> = if summarize {
            // Gather only what is printed: a 96M-element tensor prints instantly.
            let mut t = self.detach();
            for d in 0..self.ndim() {
                let keep: Vec<i64> = shown(self.shape()[d], true)
                    .into_iter()
                    .flatten()
                    .map(|i| i as i64)
                    .collect();
                let n = keep.len();
                t = t.index_select(d as isize, &Tensor::from_vec(keep, [n]));
            }
            t.to_vec::<f64>()
        } else {
            self.to_vec::<f64>()
        };
        let style = choose_style(self.dtype(), &values);
        if self.ndim() == 0 {
            return format_value(&style, values[0]);
        }
        if self.numel() == 0 {
            return "[]".into();
        }
        // Width over the shown elements only (all of them when not summarised).
        let width = values
            .iter()
            .map(|&v| format_value(&style, v).len())
            .max()
            .unwrap_or(0);
        let p = Printer {
            shape: self.shape(),
            values: &values,
            style,
            width,
            summarize,
        };
        let mut out = String::new();
        p.write(&mut out, 0, 0, indent);
        out
    }

    fn suffixes(&self, with_shape: bool) -> String {
        let mut s = String::new();
        if self.numel() == 0 || with_shape {
            s.push_str(&format!(", size={:?}", self.shape()));
        }
        if !matches!(self.dtype(), DType::F32 | DType::I64 | DType::Bool) || with_shape {
            s.push_str(&format!(", dtype={}", self.dtype()));
        }
        if with_shape {
            s.push_str(&format!(", device={}", self.device()));
        }
        if let Some(name) = self.grad_fn() {
            s.push_str(&format!(", grad_fn=<{name}>"));
        } else if self.requires_grad() {
            s.push_str(", requires_grad=True");
        }
        s
    }
}

impl fmt::Display for Tensor {
    /// Prints like PyTorch: `tensor([1., 2.], requires_grad=True)`; non-default
    /// dtypes are named (`dtype=f64`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor({}{})", self.format_body(7), self.suffixes(false))
    }
}

impl fmt::Debug for Tensor {
    /// Like `Display`, always naming the size, dtype and device.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor({}{})", self.format_body(7), self.suffixes(true))
    }
}
