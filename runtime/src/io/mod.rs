//! Saving and loading tensors: safetensors, state dicts, checkpoints.
