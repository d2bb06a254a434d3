//! The gradient reducer behind `DistributedDataParallel` and the Trainer's
//! DDP strategy: parameters grouped into buckets, each bucket all-reduced
//! (averaged) without blocking as soon as all of its gradients are
//! complete, while the rest of the backward runs.
//!
//! - Buckets follow PyTorch: parameters in reverse order (about the order
//!   backward completes them), one dtype per bucket, a bucket closed once it
//!   holds `bucket_cap` bytes; the first one is capped at 1 MiB so
//!   communication starts early.
//! - A post-accumulate-grad hook on every parameter reports it ready; the
//!   hook copies its gradient into the bucket's send buffer. Buckets start
//!   strictly in order (a bucket that fills early waits for the ones
//!   before it), so every rank issues the same collectives in the same order.
//! - Each hook also tests the requests in flight, which is when MPI moves
//!   data (Open MPI progresses non-blocking collectives inside MPI calls).
//! - The last bucket runs as a blocking all-reduce (it would be waited for
//!   at once anyway); then the reducer waits for the others and copies the
//!   averages into the `.grad()`s. A tape backward queues the
//!   same step as an end-of-backward callback, which also covers parameters
//!   that got no gradient: their part of the bucket is their current
//!   gradient or zeros, so every rank takes part in every bucket and all
//!   replicas end with the same `.grad()`.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::collectives::all_gather_bytes;
use super::env::{require, Group};
use super::work::{run_blocking, Deliver, Kind, Plan, Work};
use crate::autograd::{no_grad, queue_callback, HookHandle};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor, TensorOptions};
use mpi::collective::SystemOperation;

/// One bucket: which parameters, where each sits, and its buffers.
struct Bucket {
    /// Parameter indices, in the order they were assigned.
    params: Vec<usize>,
    numel: usize,
    dtype: DType,
}

/// Per parameter: its bucket and its span in the bucket's buffers.
#[derive(Clone, Copy)]
struct Slot {
    bucket: usize,
    offset: usize,
    numel: usize,
}

struct State {
    /// False inside `no_sync`: gradients only accumulate locally.
    sync: bool,
    /// Whether a hook fired since the last completed reduction.
    started: bool,
    callback_queued: bool,
    ready: Vec<bool>,
    /// Per bucket: parameters not yet ready.
    pending: Vec<usize>,
    /// The next bucket to start (buckets start in order).
    next: usize,
    send: Vec<Tensor>,
    recv: Vec<Tensor>,
    works: Vec<Option<Work>>,
}

struct Inner {
    params: Vec<Tensor>,
    names: Vec<String>,
    slots: Vec<Option<Slot>>,
    buckets: Vec<Bucket>,
    group: &'static Group,
    state: Mutex<State>,
}

/// Averages a set of parameters' gradients over the ranks, bucket by
/// bucket, during backward.
pub(crate) struct Reducer {
    inner: Arc<Inner>,
    hooks: Vec<HookHandle>,
}

/// "name dtype [shape]" per parameter, one line each: what every rank's
/// model must agree on.
fn signature(named: &[(String, Tensor)]) -> String {
    named
        .iter()
        .map(|(n, t)| format!("{n} {} {:?}\n", t.dtype(), t.shape()))
        .collect()
}

/// Compares the ranks' signatures; the error names the first difference.
fn check_same_model(named: &[(String, Tensor)]) -> Result<()> {
    let mine = signature(named);
    let all = all_gather_bytes(mine.as_bytes());
    let reference = String::from_utf8_lossy(&all[0]).into_owned();
    let mut problems = Vec::new();
    for (rank, sig) in all.iter().enumerate().skip(1) {
        let sig = String::from_utf8_lossy(sig);
        if sig == reference {
            continue;
        }
        let (a, b): (Vec<&str>, Vec<&str>) = (reference.lines().collect(), sig.lines().collect());
        let detail = match a.iter().zip(&b).find(|(x, y)| x != y) {
            Some((x, y)) => format!("rank 0 has `{x}` where rank {rank} has `{y}`"),
            None if a.len() > b.len() => format!(
                "rank 0 has {} parameters, rank {rank} {}; the first missing on rank {rank} \
                 is `{}`",
                a.len(),
                b.len(),
                a[b.len()]
            ),
            None => format!(
                "rank 0 has {} parameters, rank {rank} {}; the first extra on rank {rank} is \
                 `{}`",
                a.len(),
                b.len(),
                b[a.len()]
            ),
        };
        problems.push(detail);
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Distributed(format!(
        "DistributedDataParallel: the model differs across ranks: {}. Every rank must build \
         the same model (same layers, sizes and dtypes, in the same order)",
        problems.join("; ")
    )))
}

/// Buckets over `params` (by index): reverse order, one dtype each, closed
/// at `cap` bytes (`first_cap` for the first).
fn assign_buckets(
    params: &[Tensor],
    cap: usize,
    first_cap: usize,
) -> (Vec<Bucket>, Vec<Option<Slot>>) {
    let mut buckets: Vec<Bucket> = Vec::new();
    let mut slots = vec![None; params.len()];
    // The open bucket of each dtype.
    let mut open: Vec<(DType, usize)> = Vec::new();
    for i in (0..params.len()).rev() {
        let p = &params[i];
        if !p.requires_grad() || !p.dtype().is_float() {
            continue;
        }
        let b = match open.iter().find(|(d, _)| *d == p.dtype()) {
            Some(&(_, b)) => b,
            None => {
                buckets.push(Bucket {
                    params: Vec::new(),
                    numel: 0,
                    dtype: p.dtype(),
                });
                open.push((p.dtype(), buckets.len() - 1));
                buckets.len() - 1
            }
        };
        let bucket = &mut buckets[b];
        slots[i] = Some(Slot {
            bucket: b,
            offset: bucket.numel,
            numel: p.numel(),
        });
        bucket.params.push(i);
        bucket.numel += p.numel();
        let limit = if b == 0 { first_cap.min(cap) } else { cap };
        if bucket.numel * p.dtype().size_in_bytes() >= limit {
            open.retain(|(d, _)| *d != p.dtype());
        }
    }
    (buckets, slots)
}

impl Reducer {
    /// Checks the model is the same on every rank, copies rank 0's values
    /// into every rank's parameters, and hooks each parameter.
    pub(crate) fn new(
        named: Vec<(String, Tensor)>,
        bucket_cap_bytes: usize,
        first_bucket_bytes: usize,
    ) -> Result<Reducer> {
        let group = require("DistributedDataParallel")?;
        check_same_model(&named)?;
        for (_, p) in &named {
            super::broadcast(p, 0)?;
        }
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let (buckets, slots) =
            assign_buckets(&params, bucket_cap_bytes.max(1), first_bucket_bytes.max(1));
        let buffer =
            |b: &Bucket| Tensor::zeros_opts([b.numel], &TensorOptions::new().dtype(b.dtype));
        let state = State {
            sync: true,
            started: false,
            callback_queued: false,
            ready: vec![false; params.len()],
            pending: buckets.iter().map(|b| b.params.len()).collect(),
            next: 0,
            send: buckets.iter().map(buffer).collect(),
            recv: buckets.iter().map(buffer).collect(),
            works: buckets.iter().map(|_| None).collect(),
        };
        let inner = Arc::new(Inner {
            params,
            names,
            slots,
            buckets,
            group,
            state: Mutex::new(state),
        });
        let hooks = (0..inner.params.len())
            .filter(|&i| inner.slots[i].is_some())
            .map(|i| {
                let weak: Weak<Inner> = Arc::downgrade(&inner);
                inner.params[i].register_post_accumulate_grad_hook(move |_| {
                    if let Some(inner) = weak.upgrade() {
                        Inner::on_ready(&inner, i);
                    }
                })
            })
            .collect();
        Ok(Reducer { inner, hooks })
    }

    /// The parameter names in each bucket, in the order buckets start.
    pub(crate) fn bucket_names(&self) -> Vec<Vec<String>> {
        let inner = &self.inner;
        inner
            .buckets
            .iter()
            .map(|b| b.params.iter().map(|&i| inner.names[i].clone()).collect())
            .collect()
    }

    /// Whether `params` are still the tensors this reducer hooked.
    pub(crate) fn tracks(&self, mut params: impl Iterator<Item = Tensor>) -> bool {
        let ok = self
            .inner
            .params
            .iter()
            .all(|p| params.next().is_some_and(|q| Arc::ptr_eq(&p.0, &q.0)));
        ok && params.next().is_none()
    }

    /// Before a forward: refuses to start an iteration while the last one's
    /// reduction is unfinished (its gradients would be half averaged).
    #[track_caller]
    pub(crate) fn prepare(&self) {
        let st = self.inner.lock();
        if st.started {
            let missing: Vec<&str> = (0..self.inner.params.len())
                .filter(|&i| self.inner.slots[i].is_some() && !st.ready[i])
                .map(|i| self.inner.names[i].as_str())
                .collect();
            panic!(
                "DistributedDataParallel: the previous backward's gradients were not all \
                 reduced ({} got no gradient: {}); call finish() after backward and before \
                 optimizer.step() when some parameters are unused",
                missing.len(),
                missing.join(", ")
            );
        }
    }

    /// Runs `f` with gradient reduction off: gradients accumulate locally,
    /// and the next backward outside reduces the accumulated sums.
    pub(crate) fn no_sync<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a Inner, bool);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.lock().sync = self.1;
            }
        }
        let previous = std::mem::replace(&mut self.inner.lock().sync, false);
        let _restore = Restore(&self.inner, previous);
        f()
    }

    /// Completes this iteration's reduction: starts the buckets whose
    /// gradients never all arrived (unused parameters count as their current
    /// gradient, or zeros), waits for every bucket, and writes the averages
    /// into the `.grad()`s. A no-op when no gradient arrived since the last
    /// reduction.
    pub(crate) fn finish(&self) {
        self.inner.finish();
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        for h in &self.hooks {
            h.remove();
        }
        // Outstanding requests complete (and their results land) in Work's drop.
        self.inner.lock().works.clear();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parameter `i`'s gradient is complete.
    fn on_ready(this: &Arc<Inner>, i: usize) {
        let mut st = this.lock();
        if !st.sync {
            return;
        }
        let Some(slot) = this.slots[i] else {
            return;
        };
        // Let MPI move the buckets already in flight.
        for w in st.works.iter_mut().flatten() {
            w.is_completed();
        }
        st.started = true;
        if !st.callback_queued {
            let weak = Arc::downgrade(this);
            st.callback_queued = queue_callback(Box::new(move || {
                if let Some(inner) = weak.upgrade() {
                    inner.finish();
                }
            }));
        }
        if st.ready[i] {
            assert!(
                slot.bucket >= st.next,
                "DistributedDataParallel: {} received a second gradient in one backward after \
                 its bucket was already being reduced (a layer called twice in a compile-time \
                 backward?); use the tape for such a model, or one bucket for all parameters \
                 (bucket_cap_mb large enough)",
                this.names[i]
            );
        } else {
            st.ready[i] = true;
            st.pending[slot.bucket] -= 1;
        }
        this.fill(&st, i);
        this.start_ready_buckets(&mut st);
        if st.next == this.buckets.len() {
            this.complete(&mut st);
        }
    }

    /// Copies parameter `i`'s gradient (zeros when it has none) into its
    /// bucket's send buffer.
    fn fill(&self, st: &State, i: usize) {
        let Some(slot) = self.slots[i] else {
            return;
        };
        let dst = st.send[slot.bucket].narrow(0, slot.offset, slot.numel);
        no_grad(|| match self.params[i].grad() {
            Some(g) => {
                dst.copy_(&g.reshape([-1]));
            }
            None => {
                dst.fill_(0.0);
            }
        });
    }

    /// Starts every bucket that is full, in order.
    fn start_ready_buckets(&self, st: &mut State) {
        while st.next < self.buckets.len() && st.pending[st.next] == 0 {
            let b = st.next;
            let size = self.group.size;
            let plan = Plan {
                name: "all_reduce (DistributedDataParallel bucket)",
                kind: Kind::AllReduce(SystemOperation::sum()),
                send: Some(st.send[b].clone()),
                recv: st.recv[b].clone(),
                scale: (size > 1).then(|| 1.0 / size as f64),
                deliver: Deliver::Nothing,
                recycle: false,
                guard: Vec::new(),
            };
            if b + 1 == self.buckets.len() {
                // Every bucket is out once this one is: `complete` waits at
                // once, so it runs blocking (Open MPI's tuned all-reduce; the
                // non-blocking ones are libnbc's), which also progresses the
                // others.
                run_blocking(self.group, plan);
            } else {
                st.works[b] = Some(Work::start(self.group, plan));
            }
            st.next += 1;
        }
    }

    /// Waits for every bucket, writes the averages into the gradients, and
    /// resets for the next iteration.
    fn complete(&self, st: &mut State) {
        for (b, bucket) in self.buckets.iter().enumerate() {
            if let Some(w) = st.works[b].take() {
                w.wait();
            }
            let recv = &st.recv[b];
            no_grad(|| {
                for &i in &bucket.params {
                    let slot = self.slots[i].expect("bucketed parameters have a slot");
                    let avg = recv
                        .narrow(0, slot.offset, slot.numel)
                        .reshape(self.params[i].shape());
                    match self.params[i].grad() {
                        Some(g) => {
                            g.copy_(&avg);
                        }
                        None => self.params[i]
                            .set_grad(Some(avg.to(&self.params[i].device()).clone_data())),
                    }
                }
            });
        }
        st.started = false;
        st.callback_queued = false;
        st.next = 0;
        st.ready.iter_mut().for_each(|r| *r = false);
        for (p, b) in st.pending.iter_mut().zip(&self.buckets) {
            *p = b.params.len();
        }
    }

    fn finish(&self) {
        let mut st = self.lock();
        if !st.started {
            return;
        }
        for i in 0..self.params.len() {
            if let (Some(slot), false) = (self.slots[i], st.ready[i]) {
                st.ready[i] = true;
                st.pending[slot.bucket] -= 1;
                self.fill(&st, i);
            }
        }
        self.start_ready_buckets(&mut st);
        self.complete(&mut st);
    }
}
