//! Collectives on tensors: all-reduce, broadcast, all-gather,
//! reduce-scatter, blocking and not (`torch.distributed`'s functions).
//!
//! Where the data goes: a contiguous CPU tensor is handed to MPI straight
//! from its storage. MPI's reductions need distinct send and receive
//! buffers (rsmpi has no `MPI_IN_PLACE`), so an all-reduce receives into a
//! spare buffer and, when the tensor owns its whole storage, exchanges the
//! two buffers (no copy; the old one is kept as the next spare); a view
//! into a larger storage gets the result copied in. A non-contiguous
//! tensor is first gathered into a contiguous copy, and the result copied
//! back. A GPU tensor is staged through host memory the same way (copied
//! to the host, reduced there, copied back): no GPU-direct transport yet.

use std::sync::Mutex;

use mpi::collective::SystemOperation;
use mpi::traits::*;

use super::env::{issue_lock, require, watched, Group};
use super::work::{run_blocking, Deliver, Kind, Plan, Work};
use crate::autograd::no_grad;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor, TensorOptions};

/// How [`all_reduce`] and [`reduce_scatter`] combine the ranks' values
/// (`torch.distributed.ReduceOp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum.
    Sum,
    /// The mean over ranks (the sum divided by the world size; float dtypes).
    Avg,
    /// The product.
    Product,
    /// The minimum.
    Min,
    /// The maximum.
    Max,
}

impl ReduceOp {
    fn system(self) -> SystemOperation {
        match self {
            ReduceOp::Sum | ReduceOp::Avg => SystemOperation::sum(),
            ReduceOp::Product => SystemOperation::product(),
            ReduceOp::Min => SystemOperation::min(),
            ReduceOp::Max => SystemOperation::max(),
        }
    }

    fn check(self, op: &'static str, t: &Tensor) -> Result<()> {
        match t.dtype() {
            DType::Bool => Err(Error::dtype(
                op,
                format!(
                    "cannot reduce a bool tensor with {self:?}; convert it with \
                     .to_dtype(DType::I64) first"
                ),
            )),
            DType::I64 if self == ReduceOp::Avg => Err(Error::dtype(
                op,
                "ReduceOp::Avg needs a float tensor (an integer mean would truncate); use \
                 ReduceOp::Sum and divide, or convert with .to_dtype(DType::F64)",
            )),
            _ => Ok(()),
        }
    }
}

/// Spare receive buffers, flat CPU tensors, reused by later collectives of
/// the same dtype and length (most recent last).
static SPARES: Mutex<Vec<Tensor>> = Mutex::new(Vec::new());
/// How many spare buffers are kept.
const MAX_SPARES: usize = 4;

fn spares() -> std::sync::MutexGuard<'static, Vec<Tensor>> {
    SPARES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A flat CPU tensor of `n` elements to receive into.
fn spare(dtype: DType, n: usize) -> Tensor {
    let mut s = spares();
    match s.iter().rposition(|t| t.dtype() == dtype && t.numel() == n) {
        Some(i) => s.remove(i),
        None => {
            drop(s);
            Tensor::zeros_opts([n], &TensorOptions::new().dtype(dtype))
        }
    }
}

/// Keeps a receive buffer for reuse.
pub(crate) fn recycle(t: Tensor) {
    let mut s = spares();
    s.push(t);
    if s.len() > MAX_SPARES {
        s.remove(0);
    }
}

/// Frees the spare buffers the collectives keep for reuse (up to four, each
/// the size of a recent all-reduced tensor).
pub fn empty_cache() {
    spares().clear();
}

fn check_count(op: &'static str, n: usize) -> Result<()> {
    if n > i32::MAX as usize {
        return Err(Error::Invalid(format!(
            "{op}: {n} elements is more than MPI's count limit (2^31 - 1) for one call; \
             split the tensor and reduce the parts"
        )));
    }
    Ok(())
}

fn is_host_contiguous(t: &Tensor) -> bool {
    t.device().is_cpu() && t.is_contiguous()
}

/// A contiguous host copy of `t` (flattened), detached, in fresh storage.
fn host_copy(t: &Tensor) -> Tensor {
    no_grad(|| {
        let h = t.to(&Device::Cpu).contiguous();
        let h = if h.shares_storage(t) {
            h.clone_data()
        } else {
            h
        };
        h.reshape([-1])
    })
    .detach()
}

/// `t`'s elements as a flat contiguous CPU tensor sharing its storage
/// (when it is a contiguous CPU tensor), else a flat host copy.
fn as_send(t: &Tensor) -> Tensor {
    if is_host_contiguous(t) {
        t.detach()
    } else {
        host_copy(t)
    }
}

/// Whether `t` is all of its storage, in order (an all-reduce can then
/// exchange buffers with it instead of copying).
fn owns_storage(t: &Tensor) -> bool {
    is_host_contiguous(t) && t.layout().offset == 0 && t.storage().read().len() == t.numel()
}

fn all_reduce_plan(g: &Group, t: &Tensor, op: ReduceOp) -> Result<Plan> {
    op.check("all_reduce", t)?;
    check_count("all_reduce", t.numel())?;
    let recv = spare(t.dtype(), t.numel());
    let send = as_send(t);
    let copied = !is_host_contiguous(t);
    let deliver = if owns_storage(t) {
        Deliver::Swap(t.clone())
    } else {
        Deliver::Copy(t.clone())
    };
    Ok(Plan {
        name: "all_reduce",
        kind: Kind::AllReduce(op.system()),
        send: Some(send),
        recv,
        scale: (op == ReduceOp::Avg && g.size > 1).then(|| 1.0 / g.size as f64),
        deliver,
        recycle: true,
        // A strided or GPU tensor is reduced from a copy: keep it untouched too.
        guard: if copied && t.device().is_cpu() {
            vec![t.clone()]
        } else {
            vec![]
        },
    })
}

/// Combines `tensor` over all ranks with `op`, in place: afterwards every
/// rank holds the same result (`torch.distributed.all_reduce`).
///
/// Any dtype but bool (and `Avg` needs floats). Not recorded by autograd:
/// it acts on the data, as PyTorch's collectives do. Every rank must call
/// it, in the same order relative to the other collectives, with a tensor
/// of the same shape and dtype.
///
/// ```no_run
/// # #[cfg(feature = "mpi")] {
/// use deriv_runtime::distributed::{self, ReduceOp};
/// use deriv_runtime::Tensor;
/// distributed::init()?;
/// let t = Tensor::full([2], distributed::rank() as f64);
/// distributed::all_reduce(&t, ReduceOp::Max)?;
/// assert_eq!(t.to_vec::<f32>()[0], (distributed::world_size() - 1) as f32);
/// # }
/// # Ok::<(), deriv_runtime::Error>(())
/// ```
pub fn all_reduce(tensor: &Tensor, op: ReduceOp) -> Result<()> {
    let g = require("all_reduce")?;
    run_blocking(g, all_reduce_plan(g, tensor, op)?);
    Ok(())
}

/// Non-blocking [`all_reduce`]: the result is in `tensor` once the
/// returned [`Work`] completes; until then the tensor may not be used.
pub fn all_reduce_async(tensor: &Tensor, op: ReduceOp) -> Result<Work> {
    let g = require("all_reduce_async")?;
    Ok(Work::start(g, all_reduce_plan(g, tensor, op)?))
}

fn broadcast_plan(g: &Group, t: &Tensor, src: usize) -> Result<Plan> {
    if src >= g.size {
        return Err(Error::Invalid(format!(
            "broadcast: source rank {src} does not exist: the ranks are 0..{}",
            g.size
        )));
    }
    check_count("broadcast", t.numel())?;
    let direct = is_host_contiguous(t);
    let (recv, deliver) = if direct {
        (t.detach(), Deliver::Nothing)
    } else if g.rank == src {
        (host_copy(t), Deliver::Nothing)
    } else {
        (host_copy(t), Deliver::Copy(t.clone()))
    };
    Ok(Plan {
        name: "broadcast",
        kind: Kind::Broadcast(src),
        send: None,
        recv,
        scale: None,
        deliver,
        recycle: false,
        guard: if !direct && g.rank != src && t.device().is_cpu() {
            vec![t.clone()]
        } else {
            vec![]
        },
    })
}

/// Copies rank `src`'s `tensor` into `tensor` on every other rank
/// (`torch.distributed.broadcast`). Any dtype; a contiguous CPU tensor is
/// written in place by MPI.
pub fn broadcast(tensor: &Tensor, src: usize) -> Result<()> {
    let g = require("broadcast")?;
    run_blocking(g, broadcast_plan(g, tensor, src)?);
    Ok(())
}

/// Non-blocking [`broadcast`].
pub fn broadcast_async(tensor: &Tensor, src: usize) -> Result<Work> {
    let g = require("broadcast_async")?;
    Ok(Work::start(g, broadcast_plan(g, tensor, src)?))
}

/// An output of `shape` for a collective over `t`: a CPU tensor MPI writes
/// (`recv`) and, when `t` lives on a GPU, the GPU tensor it is copied to.
fn output(t: &Tensor, shape: &[usize]) -> (Tensor, Tensor, Deliver) {
    let host = Tensor::zeros_opts(shape, &TensorOptions::new().dtype(t.dtype()));
    if t.device().is_cpu() {
        (host.clone(), host, Deliver::Nothing)
    } else {
        let dev = Tensor::zeros_opts(
            shape,
            &TensorOptions::new().dtype(t.dtype()).device(&t.device()),
        );
        (host, dev.clone(), Deliver::Copy(dev))
    }
}

fn all_gather_plan(g: &Group, t: &Tensor) -> Result<(Tensor, Plan)> {
    check_count("all_gather", t.numel() * g.size)?;
    let mut shape = vec![g.size];
    shape.extend_from_slice(t.shape());
    let (recv, result, deliver) = output(t, &shape);
    let plan = Plan {
        name: "all_gather",
        kind: Kind::AllGather,
        send: Some(as_send(t)),
        recv,
        scale: None,
        deliver,
        recycle: false,
        guard: vec![],
    };
    Ok((result, plan))
}

/// Every rank's `tensor`, stacked along a new first dimension: shape
/// `[world_size, ..tensor.shape()]`, rank `r`'s at index `r`
/// (`torch.distributed.all_gather`; `.select(0, r)` is rank `r`'s entry of
/// PyTorch's list).
/// Every rank must pass the same shape and dtype.
pub fn all_gather(tensor: &Tensor) -> Result<Tensor> {
    let g = require("all_gather")?;
    let (out, plan) = all_gather_plan(g, tensor)?;
    run_blocking(g, plan);
    Ok(out)
}

/// Non-blocking [`all_gather`]: the output is usable once the [`Work`] completes.
pub fn all_gather_async(tensor: &Tensor) -> Result<(Tensor, Work)> {
    let g = require("all_gather_async")?;
    let (out, plan) = all_gather_plan(g, tensor)?;
    Ok((out, Work::start(g, plan)))
}

fn reduce_scatter_plan(g: &Group, t: &Tensor, op: ReduceOp) -> Result<(Tensor, Plan)> {
    op.check("reduce_scatter", t)?;
    check_count("reduce_scatter", t.numel())?;
    let rows = t.shape().first().copied();
    let Some(rows) = rows.filter(|r| r % g.size == 0) else {
        return Err(Error::shape(
            "reduce_scatter",
            format!(
                "the input's first dimension must split evenly over the {} ranks, but the \
                 input has shape {:?}; pad it to a multiple of the world size",
                g.size,
                t.shape()
            ),
        ));
    };
    let mut shape = t.shape().to_vec();
    shape[0] = rows / g.size;
    let (recv, result, deliver) = output(t, &shape);
    let plan = Plan {
        name: "reduce_scatter",
        kind: Kind::ReduceScatter(op.system()),
        send: Some(as_send(t)),
        recv,
        scale: (op == ReduceOp::Avg && g.size > 1).then(|| 1.0 / g.size as f64),
        deliver,
        recycle: false,
        guard: vec![],
    };
    Ok((result, plan))
}

/// Reduces `tensor` over all ranks with `op` and gives rank `r` block `r`
/// of the result, split along the first dimension
/// (`torch.distributed.reduce_scatter_tensor`): an input of shape
/// `[world_size · k, ..]` gives `[k, ..]`.
pub fn reduce_scatter(tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
    let g = require("reduce_scatter")?;
    let (out, plan) = reduce_scatter_plan(g, tensor, op)?;
    run_blocking(g, plan);
    Ok(out)
}

/// Non-blocking [`reduce_scatter`].
pub fn reduce_scatter_async(tensor: &Tensor, op: ReduceOp) -> Result<(Tensor, Work)> {
    let g = require("reduce_scatter_async")?;
    let (out, plan) = reduce_scatter_plan(g, tensor, op)?;
    Ok((out, Work::start(g, plan)))
}

// ----- plain values, for the Trainer and DDP's checks.

fn group_or_panic() -> &'static Group {
    super::env::group().expect("a process group runs whenever world_size() > 1")
}

/// Element-wise sums over all ranks, in place.
pub(crate) fn all_reduce_f64s(values: &mut [f64]) {
    reduce_f64s(values, SystemOperation::sum());
}

/// Element-wise minima over all ranks, in place.
pub(crate) fn all_reduce_min_f64s(values: &mut [f64]) {
    reduce_f64s(values, SystemOperation::min());
}

fn reduce_f64s(values: &mut [f64], op: SystemOperation) {
    let g = group_or_panic();
    let send = values.to_vec();
    let _issue = issue_lock();
    watched("all_reduce", || {
        g.comm.all_reduce_into(&send[..], values, op)
    });
}

/// Rank 0's value on every rank.
pub(crate) fn broadcast_u64(value: u64) -> u64 {
    let g = group_or_panic();
    let mut v = value;
    let _issue = issue_lock();
    watched("broadcast", || {
        g.comm.process_at_rank(0).broadcast_into(&mut v)
    });
    v
}

/// Every rank's bytes, by rank.
pub(crate) fn all_gather_bytes(bytes: &[u8]) -> Vec<Vec<u8>> {
    let g = group_or_panic();
    let _issue = issue_lock();
    let len = bytes.len() as u64;
    let mut lens = vec![0u64; g.size];
    watched("all_gather", || g.comm.all_gather_into(&len, &mut lens[..]));
    let max = lens.iter().copied().max().unwrap_or(0) as usize;
    if max == 0 {
        return vec![Vec::new(); g.size];
    }
    let mut padded = bytes.to_vec();
    padded.resize(max, 0);
    let mut all = vec![0u8; max * g.size];
    watched("all_gather", || {
        g.comm.all_gather_into(&padded[..], &mut all[..])
    });
    all.chunks(max)
        .zip(&lens)
        .map(|(c, &n)| c[..n as usize].to_vec())
        .collect()
}
