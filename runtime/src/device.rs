//! `Device`: where data lives. A leaf of the crate (like `DType`): the
//! backend stores buffers per device, the tensor layer names them; the CUDA
//! queries (`cuda_if_available`, ...) are implemented in `backend`.

use std::fmt;

/// Where a tensor's data lives.
///
/// The same program runs on the CPU or an NVIDIA GPU by changing the device:
/// create tensors on it (`Tensor::zeros_on`, `TensorOptions::device`), or move
/// them with [`Tensor::to`](crate::Tensor::to) and modules with `Module::to`.
///
/// `Device::Cuda(i)` names GPU `i`; it works in builds with the `cuda` cargo
/// feature, and using it in other builds panics with a message saying so.
///
/// ```
/// use deriv_runtime::{Device, Tensor};
/// let dev = Device::cuda_if_available();
/// let x = Tensor::zeros_on([2, 3], &dev);
/// assert_eq!(x.device(), dev);
/// assert_eq!(Device::Cuda(0).to_string(), "cuda:0");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Main memory, computed with faer and rayon.
    #[default]
    Cpu,
    /// NVIDIA GPU number `i` (the `cuda` feature).
    Cuda(usize),
}

impl Device {
    /// Whether this is the CPU.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Whether this is a CUDA GPU.
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
