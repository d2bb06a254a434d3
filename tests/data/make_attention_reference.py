"""PyTorch's values for tests/attention.rs: F.scaled_dot_product_attention
with a bool mask, a float mask (and its gradient) and is_causal;
nn.MultiheadAttention (batch_first, a key padding mask and an attention
mask, the averaged weights); nn.TransformerEncoderLayer post-norm (relu) and
pre-norm (gelu), dropout 0. The layers use PyTorch's own initialisation
(seed 0); their state_dict (prefixes `mha.`, `post.`, `pre.`) is written to
tests/data/torch_attention.safetensors and the outputs and gradients
(float64, from the same float32 parameters) printed as Rust constants.

Run from the repository root: python3 tests/data/make_attention_reference.py
and paste its output over the constants in tests/attention.rs.
"""
import torch
import torch.nn.functional as F
from torch import nn

from reference_util import det, rust, save_safetensors

# scaled_dot_product_attention on [2, 3, L=4, E=5] queries, S=6 keys.
q0 = det([2, 3, 4, 5], 7, 3, 19, 6.0, 1.5)
k0 = det([2, 3, 6, 5], 5, 1, 13, 4.0, 1.5)
v0 = det([2, 3, 6, 4], 3, 2, 7, 4.0, 0.5)
bool_mask = torch.tensor([[(i + 2 * j) % 3 != 0 or j == 0 for j in range(6)] for i in range(4)])
float_mask = det([4, 6], 11, 4, 17, 8.0, 1.0)
for tag, kw in [("SDPA_BOOL", dict(attn_mask=bool_mask)), ("SDPA_FLOAT", dict(attn_mask=float_mask.clone().requires_grad_(True))), ("SDPA_CAUSAL", dict(is_causal=True))]:
    q, k, v = (t.clone().requires_grad_(True) for t in (q0, k0, v0))
    y = F.scaled_dot_product_attention(q, k, v, **kw)
    (y * det(list(y.shape), 11, 4, 17, 8.0, 1.0)).sum().backward()
    rust(f"{tag}_OUT", y)
    rust(f"{tag}_DQ", q.grad)
    rust(f"{tag}_DK", k.grad)
    rust(f"{tag}_DV", v.grad)
    if tag == "SDPA_FLOAT":
        rust(f"{tag}_DMASK", kw["attn_mask"].grad)

torch.manual_seed(0)
mha = nn.MultiheadAttention(8, 2, batch_first=True)
post = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
pre = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
state = {}
for prefix, m in [("mha", mha), ("post", post), ("pre", pre)]:
    for k, v in m.state_dict().items():
        state[f"{prefix}.{k}"] = v
save_safetensors(state, "tests/data/torch_attention.safetensors")

# MHA: query [2, 3, 8] over keys/values [2, 5, 8]; key 4 of sample 1
# padded; an [L, S] bool mask hiding key 0 from query 2.
mha = mha.double()
q = det([2, 3, 8], 7, 3, 19, 6.0, 1.5).requires_grad_(True)
kv = det([2, 5, 8], 5, 1, 13, 4.0, 1.5).requires_grad_(True)
kpm = torch.tensor([[False] * 5, [False] * 4 + [True]])
am = torch.zeros(3, 5, dtype=torch.bool)
am[2, 0] = True
y, w = mha(q, kv, kv, key_padding_mask=kpm, attn_mask=am)
(y * det(list(y.shape), 11, 4, 17, 8.0, 1.0)).sum().backward()
rust("MHA_OUT", y)
rust("MHA_WEIGHTS", w)
rust("MHA_DQ", q.grad)
rust("MHA_DKV", kv.grad)
for n, p in mha.named_parameters():
    rust(f"MHA_D_{n.upper().replace('.', '_')}", p.grad)

for tag, layer in [("POST", post), ("PRE", pre)]:
    layer = layer.double()
    x = det([2, 4, 8], 7, 3, 19, 6.0, 1.5).requires_grad_(True)
    y = layer(x)
    (y * det(list(y.shape), 11, 4, 17, 8.0, 1.0)).sum().backward()
    rust(f"{tag}_OUT", y)
    rust(f"{tag}_DX", x.grad)
    for n, p in layer.named_parameters():
        rust(f"{tag}_D_{n.upper().replace('.', '_')}", p.grad)

# The post-norm layer with a causal bool src_mask and a key padding mask
# (sample 1's last token is padding).
post.zero_grad()
x = det([2, 4, 8], 7, 3, 19, 6.0, 1.5).requires_grad_(True)
causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
kpm = torch.tensor([[False] * 4, [False] * 3 + [True]])
y = post(x, src_mask=causal, src_key_padding_mask=kpm)
(y * det(list(y.shape), 11, 4, 17, 8.0, 1.0)).sum().backward()
rust("POST_MASKED_OUT", y)
rust("POST_MASKED_DX", x.grad)
