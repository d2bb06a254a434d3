"""PyTorch's values for tests/nn.rs's embedding tests (F.embedding with
padding_idx and max_norm; the gradient of a weighted sum).

Run: python3 tests/data/make_embedding_reference.py
and paste its output over the `EMB_*` constants in tests/nn.rs.
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
