//! [`Array`]: what the backend sees of a tensor.

use std::sync::Arc;

use super::{Device, Storage};
use crate::tensor::{checked_numel, DType, Layout};

/// A typed view of a storage: the storage, the layout that views it and the
/// element type. A `Tensor` is an `Array` plus its autograd metadata; the
/// device kernels take and return arrays, so the backend never sees
/// autograd (and never imports `Tensor`).
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
