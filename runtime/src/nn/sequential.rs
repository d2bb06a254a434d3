//! `Sequential`: layers assembled at run time, applied in order.

use super::{join_name, Forward, Module};
use crate::tensor::Tensor;

/// A layer usable in a [`Sequential`]: any module with a one-input forward.
pub trait Layer: Module + Forward {}
impl<T: Module + Forward> Layer for T {}

/// Layers applied in order, assembled at run time (`nn.Sequential`). Runs on
/// the tape; for a compile-time backward, declare the model with `network!`.
///
/// ```
/// use deriv_runtime::nn::{Forward, Linear, Module, ReLU, Sequential};
/// use deriv_runtime::{Device, Tensor};
/// let dev = Device::Cpu;
/// let model = Sequential::new()
///     .add(Linear::new(2, 16, &dev))
///     .add(ReLU)
///     .add(Linear::new(16, 1, &dev));
/// assert_eq!(model.forward(&Tensor::randn([4, 2])).shape(), &[4, 1]);
/// assert_eq!(model.named_parameters()[2].0, "2.weight");
/// ```
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer.
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Layer + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit_parameters(&join_name(prefix, &i.to_string()), f);
        }
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_parameters_mut(&join_name(prefix, &i.to_string()), f);
        }
    }

    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit_buffers(&join_name(prefix, &i.to_string()), f);
        }
    }

    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_buffers_mut(&join_name(prefix, &i.to_string()), f);
        }
    }

    fn set_training(&mut self, training: bool) {
        for l in &mut self.layers {
            l.set_training(training);
        }
    }

    fn visit_training(&self, f: &mut dyn FnMut(bool)) {
        for l in &self.layers {
            l.visit_training(f);
        }
    }
}

impl Forward for Sequential {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.layers.iter().fold(x.clone(), |h, l| l.forward(&h))
    }
}
