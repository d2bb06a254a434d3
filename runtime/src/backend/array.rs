//! [`Array`]: what the backend sees of a tensor.

use std::sync::Arc;

use super::{Device, Storage};
use crate::tensor::{checked_numel, DType, Layout};

/// A typed view of a storage: the storage, the layout that views it and the
/// element type: a tensor's data without its autograd metadata. The
/// device kernels take and return arrays, so the backend never sees
/// autograd.
#[derive(Clone)]
pub(crate) struct Array {
    storage: Arc<Storage>,
    layout: Layout,
    dtype: DType,
}

impl Array {
    /// `storage` viewed through `layout`. Every tensor's array is made here,
    /// so here the invariant the kernels rely on is asserted (in release
    /// builds too; O(ndim)): the layout's element count is checked and its
    /// extent lies inside the storage. Ops check user-supplied shapes before
    /// this point and report them as `Error::Shape`; a failure here is a bug
    /// in deriv.
    #[track_caller]
    pub(crate) fn new(storage: Arc<Storage>, layout: Layout, dtype: DType) -> Array {
        if let Err(e) = checked_numel("tensor", &layout.shape) {
            panic!("internal error: {e}; this is a bug in deriv, please report it");
        }
        layout.assert_within("tensor", storage.len());
        Array {
            storage,
            layout,
            dtype,
        }
    }

    /// All of `storage`, row-major in `shape`: the common case of
    /// [`new`](Self::new) (every fresh tensor), whose checks reduce to the
    /// shape's checked count being the storage's length.
    #[track_caller]
    pub(crate) fn whole(storage: Arc<Storage>, shape: &[usize], dtype: DType) -> Array {
        Array::whole_len_check(storage.len(), shape);
        Array {
            storage,
            layout: Layout::contiguous_of_checked(shape),
            dtype,
        }
    }

    /// Panics unless `shape`'s count is checked and is `len`.
    #[track_caller]
    pub(crate) fn whole_len_check(len: usize, shape: &[usize]) {
        match checked_numel("tensor", shape) {
            Ok(n) if n == len => {}
            Ok(n) => panic!(
                "internal error: a buffer of {len} elements for a tensor of shape {shape:?} \
                 ({n} elements); this is a bug in deriv, please report it"
            ),
            Err(e) => panic!("internal error: {e}; this is a bug in deriv, please report it"),
        }
    }

    /// The same storage through another layout.
    #[track_caller]
    pub(crate) fn with_layout(&self, layout: Layout) -> Array {
        Array::new(self.storage.clone(), layout, self.dtype)
    }

    pub(crate) fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }
    pub(crate) fn device(&self) -> Device {
        self.storage.device()
    }
    pub(crate) fn shape(&self) -> &[usize] {
        &self.layout.shape
    }
    pub(crate) fn ndim(&self) -> usize {
        self.layout.ndim()
    }
    pub(crate) fn numel(&self) -> usize {
        self.layout.numel()
    }
    pub(crate) fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }
}
