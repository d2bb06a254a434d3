"""Writes torch_written.safetensors with PyTorch's safetensors package: the
fixture tests/io.rs reads to check deriv loads what PyTorch writes.
Run: python tests/data/make_torch_safetensors.py (needs torch and safetensors)."""
import torch
from safetensors.torch import save_file

torch.manual_seed(0)
tensors = {
    "fc1.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,
    "fc1.bias": torch.tensor([-1.5, 2.25]),
    "table": torch.arange(4, dtype=torch.float64).reshape(2, 2) * 0.1,
    "labels": torch.tensor([3, -7, 2**40], dtype=torch.int64),
    "mask": torch.tensor([True, False, True]),
    "half": torch.tensor([1.0, -2.0, 0.333251953125], dtype=torch.float16),
    "bf": torch.tensor([1.0, -0.5, 3.0], dtype=torch.bfloat16),
    "i32": torch.tensor([1, -2], dtype=torch.int32),
    "u8": torch.tensor([0, 255], dtype=torch.uint8),
}
save_file(tensors, "torch_written.safetensors", metadata={"format": "pt", "note": "deriv fixture"})
