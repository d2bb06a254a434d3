"""PyTorch's values for tests/nn.rs's layer tests: F.embedding with
padding_idx and max_norm, F.layer_norm over one and two trailing dims (the
gradients of a weighted sum of the output, for every input).

Run: python3 tests/data/make_layer_reference.py
and paste its output over the `EMB_*`, `LN_*`, `CONV*`, `POOL_*`, `BN_*` and `GN_*`
constants in tests/nn.rs.
"""
import torch
import torch.nn.functional as F

torch.set_printoptions(precision=10)


def weight():
    # 5 x 3, deterministic, with rows of norm above and below 1.
    return torch.tensor(
        [[((i * 3 + j) * 7 + 3) % 11 / 4.0 - 1.25 for j in range(3)] for i in range(5)],
        dtype=torch.float64,
    )


def rust(name, t):
    vals = ", ".join(repr(float(v)) for v in t.flatten().tolist())
    print(f"const {name}: &[f64] = &[{vals}];")


idx = torch.tensor([[1, 3, 3], [0, 4, 1]])
coef = torch.arange(18, dtype=torch.float64).reshape(2, 3, 3) / 10.0 - 0.8

# Gradient with padding_idx = 1: row 1 gets none, row 3 twice.
w = weight().requires_grad_(True)
y = F.embedding(idx, w, padding_idx=1)
(y * coef).sum().backward()
rust("EMB_OUT", y.detach())
rust("EMB_GRAD_PAD1", w.grad)

# max_norm = 1.0: the rows looked up ([1, 3]) are rescaled in place first;
# row 0, longer too, is not looked up and stays.
w = weight()
y = F.embedding(torch.tensor([1, 3]), w, max_norm=1.0)
rust("EMB_RENORMED_WEIGHT", w)
rust("EMB_RENORMED_OUT", y)

# layer_norm: x [2, 3, 4], deterministic; weight and bias of the normalised
# shape; eps 1e-5.
x0 = torch.tensor([((k * 5 + 2) % 13) / 3.0 - 2.0 for k in range(24)], dtype=torch.float64).reshape(2, 3, 4)
c0 = torch.tensor([((k * 11 + 4) % 17) / 8.0 - 1.0 for k in range(24)], dtype=torch.float64).reshape(2, 3, 4)
for tag, shape in [("1", [4]), ("2", [3, 4])]:
    n = 1
    for d in shape:
        n *= d
    x = x0.clone().requires_grad_(True)
    w = (torch.arange(n, dtype=torch.float64) / n + 0.5).reshape(shape).requires_grad_(True)
    b = (torch.arange(n, dtype=torch.float64) / n - 0.25).reshape(shape).requires_grad_(True)
    y = F.layer_norm(x, shape, w, b, 1e-5)
    (y * c0).sum().backward()
    rust(f"LN{tag}_OUT", y.detach())
    rust(f"LN{tag}_DX", x.grad)
    rust(f"LN{tag}_DW", w.grad)
    rust(f"LN{tag}_DB", b.grad)

# conv2d: deterministic inputs; A with stride, padding, dilation and groups;
# B with padding='same' and an even kernel (the extra zero goes after).
def det(shape, a, b, m, scale, shift):
    n = 1
    for d in shape:
        n *= d
    return torch.tensor([((k * a + b) % m) / scale - shift for k in range(n)], dtype=torch.float64).reshape(shape)


for tag, xs, ws, kw in [
    ("A", [2, 4, 7, 6], [6, 2, 3, 2], dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    ("B", [1, 2, 5, 4], [3, 2, 2, 3], dict(padding="same")),
]:
    x = det(xs, 7, 3, 19, 6.0, 1.5).requires_grad_(True)
    w = det(ws, 5, 1, 13, 8.0, 0.75).requires_grad_(True)
    b = det([ws[0]], 3, 2, 7, 4.0, 0.5).requires_grad_(True)
    y = F.conv2d(x, w, b, **kw)
    c = det(list(y.shape), 11, 4, 17, 8.0, 1.0)
    (y * c).sum().backward()
    print(f"// {tag}: output shape {list(y.shape)}")
    rust(f"CONV{tag}_OUT", y.detach())
    rust(f"CONV{tag}_DX", x.grad)
    rust(f"CONV{tag}_DW", w.grad)
    rust(f"CONV{tag}_DB", b.grad)

# pooling: an input with ties (few distinct values).
xp0 = torch.tensor([((k * 7 + 3) % 5) - 2.0 for k in range(252)], dtype=torch.float64).reshape(2, 3, 7, 6)
for tag, f in [
    ("MAX", lambda t: F.max_pool2d(t, (3, 2), stride=2, padding=1)),
    ("AVG", lambda t: F.avg_pool2d(t, 3, stride=(2, 1), padding=1)),
    ("AVG_NOPAD", lambda t: F.avg_pool2d(t, (2, 3), stride=(1, 2), padding=1, count_include_pad=False)),
    ("ADAPTIVE", lambda t: F.adaptive_avg_pool2d(t, (3, 4))),
]:
    x = xp0.clone().requires_grad_(True)
    y = f(x)
    c = det(list(y.shape), 11, 4, 17, 8.0, 1.0)
    (y * c).sum().backward()
    print(f"// {tag}: output shape {list(y.shape)}")
    rust(f"POOL_{tag}_OUT", y.detach())
    rust(f"POOL_{tag}_DX", x.grad)

# conv1d: C with stride, padding, dilation and groups; D with padding='same'
# and an even kernel.
for tag, xs, ws, kw in [
    ("C", [2, 4, 9], [6, 2, 3], dict(stride=2, padding=1, dilation=2, groups=2)),
    ("D", [1, 2, 7], [3, 2, 4], dict(padding="same")),
]:
    x = det(xs, 7, 3, 19, 6.0, 1.5).requires_grad_(True)
    w = det(ws, 5, 1, 13, 8.0, 0.75).requires_grad_(True)
    b = det([ws[0]], 3, 2, 7, 4.0, 0.5).requires_grad_(True)
    y = F.conv1d(x, w, b, **kw)
    c = det(list(y.shape), 11, 4, 17, 8.0, 1.0)
    (y * c).sum().backward()
    print(f"// {tag}: output shape {list(y.shape)}")
    rust(f"CONV{tag}_OUT", y.detach())
    rust(f"CONV{tag}_DX", x.grad)
    rust(f"CONV{tag}_DW", w.grad)
    rust(f"CONV{tag}_DB", b.grad)

# batch_norm and group_norm (paste over the `BN_*` and `GN_*` constants).
# BN_TRAIN: BatchNorm2d(4) in training mode on x [3, 4, 2, 3], parameters
# and running statistics away from their initial values; the gradients of
# (y * c).sum(), and the running statistics after the step.
xb = det([3, 4, 2, 3], 7, 3, 19, 6.0, 1.5)
cb = det([3, 4, 2, 3], 11, 4, 17, 8.0, 1.0)
bn = torch.nn.BatchNorm2d(4).double()
with torch.no_grad():
    bn.weight.copy_(det([4], 5, 1, 13, 8.0, 0.75) + 1.0)
    bn.bias.copy_(det([4], 3, 2, 7, 4.0, 0.5))
    bn.running_mean.copy_(det([4], 3, 1, 5, 4.0, 0.25))
    bn.running_var.copy_(det([4], 2, 1, 5, 2.0, -0.5))
x = xb.clone().requires_grad_(True)
y = bn(x)
(y * cb).sum().backward()
rust("BN_TRAIN_OUT", y.detach())
rust("BN_TRAIN_DX", x.grad)
rust("BN_TRAIN_DW", bn.weight.grad)
rust("BN_TRAIN_DB", bn.bias.grad)
rust("BN_TRAIN_RUNNING_MEAN", bn.running_mean)
rust("BN_TRAIN_RUNNING_VAR", bn.running_var)
# BN_EVAL: the same layer (running statistics now updated) in eval mode.
bn.eval()
bn.weight.grad = None
bn.bias.grad = None
x = xb.clone().requires_grad_(True)
y = bn(x)
(y * cb).sum().backward()
rust("BN_EVAL_OUT", y.detach())
rust("BN_EVAL_DX", x.grad)
rust("BN_EVAL_DW", bn.weight.grad)
rust("BN_EVAL_DB", bn.bias.grad)
# BN_CMA: BatchNorm1d(3, momentum=None) over [4, 3, 2], two training steps
# (cumulative average), then its running statistics and batch count.
bn = torch.nn.BatchNorm1d(3, momentum=None).double()
bn(det([4, 3, 2], 7, 3, 19, 6.0, 1.5))
bn(det([4, 3, 2], 5, 2, 11, 3.0, 1.0))
rust("BN_CMA_RUNNING_MEAN", bn.running_mean)
rust("BN_CMA_RUNNING_VAR", bn.running_var)
print(f"// num_batches_tracked = {int(bn.num_batches_tracked)}")
# GN: F.group_norm with 3 groups on x [2, 6, 2, 2].
x = det([2, 6, 2, 2], 7, 3, 19, 6.0, 1.5).requires_grad_(True)
w = (det([6], 5, 1, 13, 8.0, 0.75) + 1.0).requires_grad_(True)
b = det([6], 3, 2, 7, 4.0, 0.5).requires_grad_(True)
y = F.group_norm(x, 3, w, b, 1e-5)
(y * det([2, 6, 2, 2], 11, 4, 17, 8.0, 1.0)).sum().backward()
rust("GN_OUT", y.detach())
rust("GN_DX", x.grad)
rust("GN_DW", w.grad)
rust("GN_DB", b.grad)

# conv_transpose2d (paste over the `CONVT*` constants): E with stride,
# padding, output padding and groups; F with dilation and a non-square kernel;
# G with an output padding at or above the stride but below the dilation.
for tag, xs, ws, kw in [
    ("E", [2, 4, 3, 4], [4, 3, 3, 3], dict(stride=2, padding=1, output_padding=1, groups=2)),
    ("F", [1, 2, 4, 3], [2, 3, 2, 3], dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1))),
    ("G", [1, 2, 3, 4], [2, 2, 2, 3],
     dict(stride=(1, 2), padding=(0, 1), output_padding=(2, 1), dilation=(3, 1))),
]:
    x = det(xs, 7, 3, 19, 6.0, 1.5).requires_grad_(True)
    w = det(ws, 5, 1, 13, 8.0, 0.75).requires_grad_(True)
    cout = ws[1] * kw.get("groups", 1)
    b = det([cout], 3, 2, 7, 4.0, 0.5).requires_grad_(True)
    y = F.conv_transpose2d(x, w, b, **kw)
    c = det(list(y.shape), 11, 4, 17, 8.0, 1.0)
    (y * c).sum().backward()
    print(f"// {tag}: output shape {list(y.shape)}")
    rust(f"CONVT{tag}_OUT", y.detach())
    rust(f"CONVT{tag}_DX", x.grad)
    rust(f"CONVT{tag}_DW", w.grad)
    rust(f"CONVT{tag}_DB", b.grad)

# max_pool2d's return_indices on the tied input (paste over `POOL_MAX_IDX`).
_, idx = F.max_pool2d(xp0, (3, 2), stride=2, padding=1, return_indices=True)
print(f"const POOL_MAX_IDX: &[i64] = &[{', '.join(str(int(v)) for v in idx.flatten().tolist())}];")
