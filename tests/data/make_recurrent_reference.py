"""PyTorch's values for tests/recurrent.rs: a two-layer batch-first LSTM and a
two-layer GRU with initial states, a one-layer relu RNN without biases, and a
small CNN with BatchNorm, all with PyTorch's own initialisation (seed 0).

Also a bidirectional two-layer LSTM with initial states and a bidirectional
batch-first GRU. Writes their state_dict (prefixes `lstm.`, `gru.`, `rnn.`,
`cnn.`, `bilstm.`, `bigru.`; the CNN's
after one training-mode forward, so its running statistics have moved) to
tests/data/torch_layers.safetensors, and prints the outputs and gradients as
Rust constants (computed in float64 from the same float32 parameters).

Run from the repository root: python3 tests/data/make_recurrent_reference.py
and paste its output over the constants in tests/recurrent.rs. The file is
written in the safetensors format directly (an 8-byte little-endian header
length, the JSON header, the raw little-endian data), as the `safetensors`
package writes it, so only torch is needed.
"""
import torch
from torch import nn

from reference_util import det, rust, save_safetensors


torch.manual_seed(0)
lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)
gru = nn.GRU(3, 4, num_layers=2)
rnn = nn.RNN(3, 4, nonlinearity="relu", bias=False)
cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))
bilstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
bigru = nn.GRU(3, 4, bidirectional=True, batch_first=True)
ximg = det([2, 1, 6, 6], 7, 3, 19, 6.0, 1.5)
with torch.no_grad():
    cnn(ximg.float())  # training mode: the running statistics move once
state = {}
for prefix, m in [("lstm", lstm), ("gru", gru), ("rnn", rnn), ("cnn", cnn), ("bilstm", bilstm), ("bigru", bigru)]:
    for k, v in m.state_dict().items():
        state[f"{prefix}.{k}"] = v
save_safetensors(state, "tests/data/torch_layers.safetensors")


def run(tag, model, x, states, names):
    if model.bidirectional:
        tag = "BI" + tag
    model = model.double()
    x = x.clone().requires_grad_(True)
    states = [s.clone().requires_grad_(True) for s in states]
    if isinstance(model, nn.LSTM):
        out, (hn, cn) = model(x, tuple(states))
        finals = [hn, cn]
    elif states:
        out, hn = model(x, states[0])
        finals = [hn]
    else:
        out, hn = model(x)
        finals = [hn]
    loss = (out * det(list(out.shape), 11, 4, 17, 8.0, 1.0)).sum()
    for i, f in enumerate(finals):
        loss = loss + (f * det(list(f.shape), 5 + i, 2, 9, 4.0, 1.0)).sum()
    loss.backward()
    rust(f"{tag}_OUT", out)
    for n, f in zip(["HN", "CN"], finals):
        rust(f"{tag}_{n}", f)
    rust(f"{tag}_DX", x.grad)
    for n, s in zip(["DH0", "DC0"], states):
        rust(f"{tag}_{n}", s.grad)
    for n, p in model.named_parameters():
        rust(f"{tag}_D_{n.upper()}", p.grad)


run("LSTM", lstm, det([2, 5, 3], 7, 3, 19, 6.0, 1.5), [det([2, 2, 4], 5, 1, 13, 8.0, 0.75), det([2, 2, 4], 3, 2, 7, 4.0, 0.5)], None)
run("GRU", gru, det([5, 2, 3], 7, 3, 19, 6.0, 1.5), [det([2, 2, 4], 5, 1, 13, 8.0, 0.75)], None)
run("RNN", rnn, det([5, 2, 3], 7, 3, 19, 6.0, 1.5), [], None)
# Bidirectional: a two-layer LSTM with initial states, a batch-first GRU.
run("LSTM", bilstm, det([5, 2, 3], 7, 3, 19, 6.0, 1.5), [det([4, 2, 4], 5, 1, 13, 8.0, 0.75), det([4, 2, 4], 3, 2, 7, 4.0, 0.5)], None)
run("GRU", bigru, det([2, 5, 3], 7, 3, 19, 6.0, 1.5), [], None)

cnn = cnn.double().eval()
rust("CNN_EVAL_OUT", cnn(ximg))
