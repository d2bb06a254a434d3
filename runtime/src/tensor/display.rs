//! PyTorch-style printing: `tensor([[1., 2.], [3., 4.]], requires_grad=True)`.

use std::fmt;

use super::{DType, Tensor};

/// Tensors with more elements than this print summarised, as in PyTorch.
const SUMMARIZE_THRESHOLD: usize = 1000;
/// Items shown at each end of a summarised dimension.
const EDGE_ITEMS: usize = 3;
/// Rows of elements (and the suffixes) wrap at this many columns, as in PyTorch.
const LINE_WIDTH: usize = 80;

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
    let abs: Vec<f64> = finite
        .iter()
        .map(|v| v.abs())
        .filter(|&v| v != 0.0)
        .collect();
    let max = abs.iter().cloned().fold(0.0, f64::max);
    let min = abs.iter().cloned().fold(f64::INFINITY, f64::min);
    if finite.iter().all(|v| v.fract() == 0.0) {
        // PyTorch switches integral floats to scientific on the same range test.
        if max > 1e8 || (!abs.is_empty() && max / min > 1000.0) {
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
        if dim == nd - 1 {
            // PyTorch's `_vector_str`: " ..." is one more item, and rows wrap
            // at LINE_WIDTH columns, continuing under the first element.
            let per_line = (LINE_WIDTH.saturating_sub(indent) / (self.width + 2)).max(1);
            let mut pos = 0;
            for (k, i) in idx.iter().enumerate() {
                if k > 0 && k % per_line == 0 {
                    out.push_str(",\n");
                    out.push_str(&" ".repeat(indent + 1));
                } else if k > 0 {
                    out.push_str(", ");
                }
                match i {
                    None => out.push_str(" ..."),
                    Some(_) => {
                        let s = format_value(&self.style, self.values[base + pos]);
                        out.push_str(&format!("{s:>w$}", w = self.width));
                        pos += 1;
                    }
                }
            }
            out.push(']');
            return;
        }
        let mut pos = 0;
        for (k, i) in idx.iter().enumerate() {
            if k > 0 {
                out.push(',');
                out.push_str(&"\n".repeat(nd - 1 - dim));
                out.push_str(&" ".repeat(indent + 1));
            }
            match i {
                None => out.push_str("..."),
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
        // Width over the shown elements only (all of them when not summarised);
        // for floats only the finite nonzero ones count, as in PyTorch.
        let is_float = self.dtype().is_float();
        let width = values
            .iter()
            .filter(|v| !is_float || (v.is_finite() && **v != 0.0))
            .map(|&v| format_value(&style, v).len())
            .max()
            .unwrap_or(1)
            .max(1);
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

    fn suffixes(&self, with_shape: bool) -> Vec<String> {
        let mut s = Vec::new();
        if !with_shape && !self.device().is_cpu() {
            // PyTorch names a non-CPU device first: `device='cuda:0'`.
            s.push(format!("device='{}'", self.device()));
        }
        if with_shape {
            s.push(format!("size={:?}", self.shape()));
            s.push(format!("dtype={}", self.dtype()));
            s.push(format!("device={}", self.device()));
        } else if self.numel() == 0 {
            // PyTorch names the shape unless it is (0,), and any non-default
            // dtype, since there are no elements to tell it by.
            if self.ndim() != 1 {
                let dims: Vec<String> = self.shape().iter().map(|d| d.to_string()).collect();
                s.push(format!("size=({})", dims.join(", ")));
            }
            if self.dtype() != DType::F32 {
                s.push(format!("dtype={}", self.dtype()));
            }
        } else if !matches!(self.dtype(), DType::F32 | DType::I64 | DType::Bool) {
            s.push(format!("dtype={}", self.dtype()));
        }
        if let Some(name) = self.grad_fn() {
            s.push(format!("grad_fn=<{name}>"));
        } else if self.requires_grad() {
            s.push("requires_grad=True".into());
        }
        s
    }
}

impl fmt::Display for Tensor {
    /// Prints like PyTorch: `tensor([1., 2.], requires_grad=True)`; non-default
    /// dtypes are named (`dtype=f64`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // PyTorch's `_add_suffixes`: a suffix that would pass LINE_WIDTH goes
        // on its own line, indented under the first bracket.
        let mut out = format!("tensor({}", self.format_body(7));
        let mut last_line = match out.rfind('\n') {
            Some(i) => out.len() - i + 1,
            None => out.len() + 2,
        };
        for suffix in self.suffixes(false) {
            if last_line + suffix.len() + 2 > LINE_WIDTH {
                out.push_str(",\n       ");
                last_line = 7 + suffix.len();
            } else {
                out.push_str(", ");
                last_line += suffix.len() + 2;
            }
            out.push_str(&suffix);
        }
        out.push(')');
        f.write_str(&out)
    }
}

impl fmt::Debug for Tensor {
    /// Like `Display`, always naming the size, dtype and device.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffixes: String = self
            .suffixes(true)
            .iter()
            .map(|s| format!(", {s}"))
            .collect();
        write!(f, "tensor({}{suffixes})", self.format_body(7))
    }
}
