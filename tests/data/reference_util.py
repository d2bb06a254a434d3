"""Helpers of the reference scripts: deterministic inputs, Rust constants,
and a safetensors writer (an 8-byte little-endian header length, the JSON
header, the raw little-endian data, as the `safetensors` package writes it,
so only torch is needed)."""
import json
import struct

import torch


def det(shape, a, b, m, scale, shift):
    n = 1
    for d in shape:
        n *= d
    return torch.tensor([((k * a + b) % m) / scale - shift for k in range(n)], dtype=torch.float64).reshape(shape)


def rust(name, t):
    vals = ", ".join(repr(float(v)) for v in t.detach().flatten().tolist())
    print(f"const {name}: &[f64] = &[{vals}];")


def save_safetensors(tensors, path):
    names = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        data = bytes(t.reshape(-1).view(torch.uint8).tolist())
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
