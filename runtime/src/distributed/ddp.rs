//! `DistributedDataParallel`: a model replica per rank whose gradients are
//! averaged over the ranks during backward.

use super::reducer::Reducer;
use crate::error::Result;
use crate::nn::{join_name, Differentiable, Forward, Module, TrainStep};
use crate::tensor::Tensor;

/// How [`DistributedDataParallel`] groups gradients for reduction.
///
/// ```
/// use deriv_runtime::distributed::DdpOptions;
/// let opts = DdpOptions::new().bucket_cap_mb(4.0);
/// assert_eq!(opts.bucket_cap_bytes(), 4 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct DdpOptions {
    bucket_cap_mb: f64,
    first_bucket_mb: f64,
    broadcast_buffers: bool,
}

impl Default for DdpOptions {
    fn default() -> Self {
        DdpOptions {
            bucket_cap_mb: 25.0,
            first_bucket_mb: 1.0,
            broadcast_buffers: true,
        }
    }
}

impl DdpOptions {
    /// PyTorch's defaults: 25 MiB buckets, the first one 1 MiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// The size at which a bucket is closed, in MiB (PyTorch's
    /// `bucket_cap_mb`, default 25): smaller buckets start communicating
    /// earlier, larger ones pay the per-message latency fewer times.
    pub fn bucket_cap_mb(mut self, mb: f64) -> Self {
        self.bucket_cap_mb = mb;
        self
    }

    /// The first bucket's size limit in MiB (default 1, as PyTorch), so the
    /// gradients of the last layers go out before the rest of the backward.
    pub fn first_bucket_mb(mut self, mb: f64) -> Self {
        self.first_bucket_mb = mb;
        self
    }

    /// Whether every forward first copies rank 0's buffers (BatchNorm's
    /// running statistics) into every rank (PyTorch's `broadcast_buffers`,
    /// default true), so the replicas' buffers agree.
    pub fn broadcast_buffers(mut self, on: bool) -> Self {
        self.broadcast_buffers = on;
        self
    }

    /// The bucket cap in bytes.
    pub fn bucket_cap_bytes(&self) -> usize {
        (self.bucket_cap_mb * (1u64 << 20) as f64) as usize
    }

    pub(crate) fn first_bucket_bytes(&self) -> usize {
        (self.first_bucket_mb * (1u64 << 20) as f64) as usize
    }
}

/// Data-parallel training (`torch.nn.parallel.DistributedDataParallel`):
/// each rank runs the same model on its own share of every batch, and
/// backward leaves every rank with the gradients averaged over all ranks,
/// so the optimizers take the same step everywhere.
///
/// - On construction, every rank's model is checked to have the same
///   parameters (names, dtypes, shapes: a difference is an `Err` naming it,
///   on every rank) and rank 0's values are copied into every rank, buffers
///   (BatchNorm's running statistics) included; before each forward rank
///   0's buffers are copied again ([`DdpOptions::broadcast_buffers`]).
/// - During backward, gradients are averaged in buckets (25 MiB, the first
///   1 MiB: [`DdpOptions`]) in reverse parameter order, each bucket's
///   all-reduce starting, without blocking, as soon as its gradients are
///   complete, so communication overlaps the rest of the backward. This
///   works on the tape (`loss.backward()`), on the compile-time path
///   (`forward_train` / `backward`) and with `TrainStep`. When backward
///   returns, the averages are in `.grad()`: call `optimizer.step()`.
/// - [`no_sync`](Self::no_sync) accumulates gradients locally (gradient
///   accumulation); the next backward outside it averages the sums.
/// - Parameters the backward did not reach count as their current
///   gradient, or zero, in the average (PyTorch's `find_unused_parameters`
///   without the extra pass): every rank ends with the same gradients.
///
/// The wrapper is a [`Module`] whose parameters are the model's under
/// `module.` (as PyTorch names them), and a [`Forward`],
/// [`Differentiable`] and [`TrainStep`] when the model is. Move or convert
/// the model before wrapping it: replacing its parameters afterwards is
/// refused at the next forward.
///
/// ```no_run
/// # #[cfg(feature = "mpi")] {
/// use deriv_runtime::distributed::{self, DistributedDataParallel};
/// use deriv_runtime::nn::{Forward, Linear, Module};
/// use deriv_runtime::optim::{Optimizer, SGD};
/// use deriv_runtime::{Device, Tensor};
/// distributed::init()?;
/// let model = DistributedDataParallel::new(Linear::new(4, 1, &Device::Cpu))?;
/// let mut opt = SGD::new(model.parameters(), 0.1);
/// let x = Tensor::randn([16, 4]); // this rank's share of the batch
/// model.forward(&x).pow(2.0).mean().backward(); // gradients averaged over ranks
/// opt.step();
/// # }
/// # Ok::<(), deriv_runtime::Error>(())
/// ```
pub struct DistributedDataParallel<M> {
    module: M,
    reducer: Reducer,
    broadcast_buffers: bool,
}

impl<M: Module> DistributedDataParallel<M> {
    /// Wraps `module` with the default [`DdpOptions`]. Every rank must call
    /// it, after [`init`](super::init).
    pub fn new(module: M) -> Result<Self> {
        Self::with_options(module, DdpOptions::default())
    }

    /// Wraps `module` with `options`.
    pub fn with_options(module: M, options: DdpOptions) -> Result<Self> {
        let reducer = Reducer::new(
            module.named_parameters(),
            options.bucket_cap_bytes(),
            options.first_bucket_bytes(),
        )?;
        // Every replica starts from rank 0's buffers too, as from its parameters.
        for b in module.buffers() {
            super::broadcast(&b, 0)?;
        }
        Ok(DistributedDataParallel {
            module,
            reducer,
            broadcast_buffers: options.broadcast_buffers,
        })
    }

    /// The wrapped model (`ddp.module`).
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The wrapped model, mutably. Keep its parameter tensors: replacing
    /// them (`Module::to`, `to_dtype`) unhooks them from the reducer.
    pub fn module_mut(&mut self) -> &mut M {
        &mut self.module
    }

    /// Unwraps the model.
    pub fn into_inner(self) -> M {
        self.module
    }

    /// Runs `f` without averaging gradients (PyTorch's `with
    /// ddp.no_sync():`): backward passes inside only accumulate locally,
    /// and the first backward after it averages the accumulated sums.
    pub fn no_sync<R>(&self, f: impl FnOnce() -> R) -> R {
        self.reducer.no_sync(f)
    }

    /// Waits for the gradient reduction of the last backward and writes the
    /// averages. Backward already does this when it returns; call it
    /// yourself only after running the wrapped model's own backward.
    pub fn finish(&self) {
        self.reducer.finish();
    }

    /// The parameter names in each bucket, in the order buckets are reduced.
    pub fn bucket_names(&self) -> Vec<Vec<String>> {
        self.reducer.bucket_names()
    }

    #[track_caller]
    fn prepare(&self) {
        let mut params = Vec::new();
        self.module
            .visit_parameters("", &mut |_, t| params.push(t.clone()));
        assert!(
            self.reducer.tracks(params.into_iter()),
            "DistributedDataParallel: the model's parameters were replaced after it was \
             wrapped (Module::to, to_dtype, or a new tensor assigned); move or convert the \
             model before wrapping it"
        );
        self.reducer.prepare();
        if self.broadcast_buffers {
            for b in self.module.buffers() {
                crate::error::OrPanic::or_panic(super::broadcast(&b, 0));
            }
        }
    }
}

impl<M: Module> Module for DistributedDataParallel<M> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        self.module
            .visit_parameters(&join_name(prefix, "module"), f)
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.module
            .visit_parameters_mut(&join_name(prefix, "module"), f)
    }

    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        self.module.visit_buffers(&join_name(prefix, "module"), f)
    }

    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.module
            .visit_buffers_mut(&join_name(prefix, "module"), f)
    }

    fn set_training(&mut self, training: bool) {
        self.module.set_training(training)
    }

    fn visit_training(&self, f: &mut dyn FnMut(bool)) {
        self.module.visit_training(f)
    }
}

impl<M: Module + Forward> Forward for DistributedDataParallel<M> {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.prepare();
        self.module.forward(x)
    }
}

impl<M: Differentiable> Differentiable for DistributedDataParallel<M> {
    type Saved = M::Saved;

    fn forward_train(&self, x: &Tensor) -> (Tensor, M::Saved) {
        self.prepare();
        self.module.forward_train(x)
    }

    fn backward(&self, saved: M::Saved, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
        let dx = self.module.backward(saved, grad_out, input_grad);
        self.reducer.finish();
        dx
    }
}

impl<M: TrainStep> TrainStep for DistributedDataParallel<M> {
    type Workspace = M::Workspace;

    fn workspace(&self) -> M::Workspace {
        self.module.workspace()
    }

    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut M::Workspace) -> &'w Tensor {
        self.prepare();
        self.module.forward_train_ws(x, ws)
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut M::Workspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        let dx = self.module.backward_ws(ws, grad_out, input_grad);
        self.reducer.finish();
        dx
    }
}
