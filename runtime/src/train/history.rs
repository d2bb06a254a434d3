//! Per-epoch metrics, their CSV form (kept in checkpoints) and an SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

/// The metrics of every completed epoch, in order (`train_loss`,
/// `train_acc`, `val_loss`, `val_acc`, ...).
///
/// ```
/// use deriv_runtime::train::History;
/// let mut h = History::default();
/// h.push(vec![("train_loss".into(), 0.9), ("val_acc".into(), 0.5)]);
/// h.push(vec![("train_loss".into(), 0.4), ("val_acc".into(), 0.8)]);
/// assert_eq!(h.get("train_loss"), vec![0.9, 0.4]);
/// assert_eq!(h.last("val_acc"), Some(0.8));
/// assert_eq!(History::from_csv(&h.to_csv()).unwrap(), h);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    epochs: Vec<Vec<(String, f64)>>,
}

impl History {
    /// Appends one epoch's metrics.
    pub fn push(&mut self, metrics: Vec<(String, f64)>) {
        self.epochs.push(metrics);
    }

    /// The number of epochs recorded.
    pub fn len(&self) -> usize {
        self.epochs.len()
    }

    /// Whether no epoch was recorded.
    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }

    /// The metrics of epoch `i` (0-based).
    pub fn epoch(&self, i: usize) -> &[(String, f64)] {
        &self.epochs[i]
    }

    /// One metric across epochs (epochs without it are skipped).
    pub fn get(&self, name: &str) -> Vec<f64> {
        self.epochs
            .iter()
            .filter_map(|e| e.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
            .collect()
    }

    /// The metric's value in the last epoch that has it.
    pub fn last(&self, name: &str) -> Option<f64> {
        self.get(name).last().copied()
    }

    /// Every metric name, in first-seen order.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (n, _) in self.epochs.iter().flatten() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    /// CSV with a header `epoch,<names>` and one row per epoch (empty cells
    /// where an epoch lacks a metric). Values print exactly (they parse back
    /// to the same bits).
    pub fn to_csv(&self) -> String {
        let names = self.names();
        let mut s = String::from("epoch");
        for n in &names {
            s.push(',');
            s.push_str(n);
        }
        s.push('\n');
        for (i, e) in self.epochs.iter().enumerate() {
            let _ = write!(s, "{}", i + 1);
            for n in &names {
                s.push(',');
                if let Some((_, v)) = e.iter().find(|(m, _)| m == n) {
                    let _ = write!(s, "{v}");
                }
            }
            s.push('\n');
        }
        s
    }

    /// Parses [`to_csv`](Self::to_csv)'s output.
    pub fn from_csv(text: &str) -> Result<History> {
        let bad = |msg: String| Error::Format {
            path: "<history>".into(),
            msg,
        };
        let mut lines = text.lines();
        let header: Vec<&str> = match lines.next() {
            Some(h) => h.split(',').collect(),
            None => return Ok(History::default()),
        };
        if header.first() != Some(&"epoch") {
            return Err(bad("history CSV must start with an `epoch` column".into()));
        }
        let mut h = History::default();
        for (ln, line) in lines.enumerate() {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != header.len() {
                return Err(bad(format!(
                    "line {}: {} fields, the header has {}",
                    ln + 2,
                    cells.len(),
                    header.len()
                )));
            }
            let mut metrics = Vec::new();
            for (name, cell) in header.iter().zip(&cells).skip(1) {
                if cell.is_empty() {
                    continue;
                }
                let v: f64 = cell.parse().map_err(|_| {
                    bad(format!(
                        "line {}: {name} = {cell:?} is not a number",
                        ln + 2
                    ))
                })?;
                metrics.push((name.to_string(), v));
            }
            h.push(metrics);
        }
        Ok(h)
    }

    /// Draws the training curves as an SVG: losses on the left, every other
    /// metric (accuracy) but the learning rate on the right, one line per
    /// series, against the epoch.
    pub fn to_svg(&self) -> String {
        let names = self.names();
        // The learning rate stays in the history but off the plot: its scale
        // would flatten the accuracy curves.
        let (losses, others): (Vec<&String>, Vec<&String>) = names
            .iter()
            .filter(|n| n.as_str() != "lr")
            .partition(|n| n.contains("loss"));
        let (w, h) = (900.0, 360.0);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        self.panel(&mut svg, "loss", &losses, 0.0);
        self.panel(&mut svg, "metrics", &others, w / 2.0);
        svg.push_str("</svg>\n");
        svg
    }

    fn panel(&self, svg: &mut String, title: &str, series: &[&String], x0: f64) {
        const COLORS: [&str; 6] = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
        ];
        let (left, top, pw, ph) = (x0 + 55.0, 30.0, 370.0, 280.0);
        let values: Vec<Vec<f64>> = series.iter().map(|n| self.get(n)).collect();
        let all = values.iter().flatten().copied().filter(|v| v.is_finite());
        let (mut lo, mut hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-12 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let n = self.len().max(2) as f64;
        let px = |i: usize| left + pw * i as f64 / (n - 1.0);
        let py = |v: f64| top + ph * (1.0 - (v - lo) / (hi - lo));
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-weight=\"bold\">{title}</text>\n\
             <rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>",
            left + pw / 2.0
        );
        for k in 0..=4 {
            let v = lo + (hi - lo) * k as f64 / 4.0;
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.3}</text>",
                left - 4.0,
                py(v) + 4.0
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">epoch (1..{})</text>",
            left + pw / 2.0,
            top + ph + 30.0,
            self.len()
        );
        for (s, (name, vals)) in series.iter().zip(&values).enumerate() {
            let color = COLORS[s % COLORS.len()];
            let points: Vec<String> = vals
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, v)| format!("{:.1},{:.1}", px(i), py(*v)))
                .collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n\
                 <text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>",
                points.join(" "),
                // Mid-height at the right: clear of curves that start high
                // and fall (losses) or start low and rise (accuracy).
                left + pw - 110.0,
                top + ph / 2.0 + 14.0 * s as f64
            );
        }
    }

    /// Writes [`to_svg`](Self::to_svg) to `path` (atomically).
    pub fn write_svg(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path.as_ref(), self.to_svg().as_bytes())
    }
}
