//! `Embedding`: a lookup table of learned vectors.

use super::linear::grad_buffer;
use super::module::{accumulate_grad, grad_accumulated, join_name};
use super::{Differentiable, Forward, Module, TrainStep};
use crate::autograd::{forward_into, forward_saving, no_grad, GradSlot, NoGradGuard, Op};
use crate::backend::Device;
use crate::error::{OrPanic, Result};
use crate::ops::{self, EmbeddingOptions};
use crate::tensor::{Tensor, TensorOptions};

/// A table of `num_embeddings` vectors of size `embedding_dim` looked up by
/// i64 indices (`nn.Embedding`): the input has any shape, the output that
/// shape plus `[embedding_dim]`. The weight is initialised from N(0, 1),
/// with the `padding_idx` row (if any) zeroed, and that row gets no
/// gradient, as in PyTorch. In `network!`, `Embedding(n, d)` produces size
/// `d`.
///
/// ```
/// use deriv_runtime::nn::{Embedding, EmbeddingOptions, Forward};
/// use deriv_runtime::{Device, Tensor};
/// let emb = Embedding::with_options(10, 3, &EmbeddingOptions::new().padding_idx(0), &Device::Cpu);
/// let y = emb.forward(&Tensor::from_vec(vec![0i64, 4, 4, 9], [2, 2]));
/// assert_eq!(y.shape(), &[2, 2, 3]);
/// assert_eq!(y.to_vec::<f32>()[..3], [0.0, 0.0, 0.0]); // the padding row
/// ```
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
    /// `padding_idx`, `max_norm` and `norm_type`.
    pub options: EmbeddingOptions,
    /// `padding_idx` resolved to a row.
    padding_row: Option<usize>,
}

impl Embedding {
    /// A table with PyTorch's default options, created on `device`.
    pub fn new(num_embeddings: usize, embedding_dim: usize, device: &Device) -> Self {
        Self::with_options(
            num_embeddings,
            embedding_dim,
            &EmbeddingOptions::new(),
            device,
        )
    }

    /// A table with `padding_idx`, `max_norm` or `norm_type`. Panics with
    /// PyTorch's message when `padding_idx` lies outside the table.
    #[track_caller]
    pub fn with_options(
        num_embeddings: usize,
        embedding_dim: usize,
        options: &EmbeddingOptions,
        device: &Device,
    ) -> Self {
        let weight = Tensor::zeros_opts(
            [num_embeddings, embedding_dim],
            &TensorOptions::new().device(device),
        );
        super::init::normal_(&weight, 0.0, 1.0);
        Self::from_weight(weight, options, true).or_panic()
    }

    /// A table holding `embeddings` (`nn.Embedding.from_pretrained`): frozen
    /// (no gradient) unless `freeze` is false. The padding row is kept as
    /// given.
    pub fn from_pretrained(
        embeddings: &Tensor,
        freeze: bool,
        options: &EmbeddingOptions,
    ) -> Result<Self> {
        let emb = Self::from_weight(embeddings.detach().clone_data(), options, false)?;
        emb.weight.set_requires_grad(!freeze);
        Ok(emb)
    }

    fn from_weight(weight: Tensor, options: &EmbeddingOptions, zero_pad: bool) -> Result<Self> {
        ops::shape::check_embedding_weight("Embedding", &weight)?;
        let padding_row = options.padding_row(weight.shape()[0])?;
        if let (Some(p), true) = (padding_row, zero_pad) {
            no_grad(|| {
                weight.select(0, p as isize).fill_(0.0);
            });
        }
        Ok(Embedding {
            weight: weight.requires_grad_(true),
            options: *options,
            padding_row,
        })
    }

    /// The number of vectors.
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The size of each vector.
    pub fn embedding_dim(&self) -> usize {
        self.weight.shape()[1]
    }

    fn op(&self) -> ops::Embedding {
        ops::Embedding {
            padding_idx: self.padding_row,
        }
    }

    /// Rescales the rows `x` names when `max_norm` is set (PyTorch does it
    /// in the forward, in place, on every path).
    fn renorm(&self, x: &Tensor) -> Result<()> {
        ops::shape::renorm_for_lookup(&self.op(), x, &self.weight, &self.options)
    }

    /// The forward pass, or the error of an input that does not fit: not
    /// i64, an index out of range, another device.
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::shape::try_embedding(x, &self.weight, &self.options)
    }
}

impl Module for Embedding {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        f(&join_name(prefix, "weight"), &self.weight);
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        f(&join_name(prefix, "weight"), &mut self.weight);
    }
}

impl Forward for Embedding {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        self.try_forward(x).or_panic()
    }
}

impl Differentiable for Embedding {
    /// The table's row count and the indices.
    type Saved = <ops::Embedding as Op>::Saved;
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Produces { output: 1 };

    #[track_caller]
    fn forward_train(&self, x: &Tensor) -> (Tensor, Self::Saved) {
        self.renorm(x).or_panic();
        no_grad(|| forward_saving(&self.op(), &[&self.weight, x], &[true, false]))
    }

    /// Adds into the weight's gradient; the indices have none (`None`).
    fn backward(&self, saved: Self::Saved, grad_out: &Tensor, _input_grad: bool) -> Option<Tensor> {
        no_grad(|| {
            let (mut dw, mut dx) = (None, None);
            let mut slots = [GradSlot::new(&mut dw, true), GradSlot::new(&mut dx, false)];
            self.op().backward(&saved, grad_out, &mut slots);
            if let Some(dw) = dw {
                accumulate_grad(&self.weight, dw);
            }
        });
        None
    }
}

/// The buffers an [`Embedding`] keeps between [`TrainStep`] steps: its
/// output and what its op saved.
#[derive(Default)]
pub struct EmbeddingWorkspace {
    out: Option<Tensor>,
    saved: Option<<ops::Embedding as Op>::Saved>,
}

impl TrainStep for Embedding {
    type Workspace = EmbeddingWorkspace;

    #[track_caller]
    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut EmbeddingWorkspace) -> &'w Tensor {
        self.renorm(x).or_panic();
        let _guard = NoGradGuard::new();
        ws.saved = None;
        forward_into(
            &self.op(),
            &[&self.weight, x],
            &[true, false],
            &mut ws.out,
            Some(&mut ws.saved),
        )
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut EmbeddingWorkspace,
        grad_out: &Tensor,
        _input_grad: bool,
    ) -> Option<&'w Tensor> {
        let _guard = NoGradGuard::new();
        let saved = super::dsl::get_saved(&ws.saved);
        // Added straight into the weight's `.grad()` buffer when it has one.
        let mut dw = grad_buffer(&self.weight);
        let mut wbuf = dw.clone();
        let in_place = dw.is_some();
        let mut dx = None;
        {
            let mut slots = [
                GradSlot::with_buffer(&mut dw, &mut wbuf, true),
                GradSlot::new(&mut dx, false),
            ];
            self.op().backward(saved, grad_out, &mut slots);
        }
        match (in_place, dw) {
            (true, _) => grad_accumulated(&self.weight),
            (false, Some(g)) => accumulate_grad(&self.weight, g),
            (false, None) => {}
        }
        None
    }
}
