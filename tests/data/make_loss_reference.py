"""PyTorch's values for tests/losses.rs's smooth_l1_loss and kl_div tests
(the other losses' scripts are in the comments there).

Run: python3 tests/data/make_loss_reference.py
and paste its output over the `SMOOTH_L1_*` and `KL_*` constants.
"""
import torch, torch.nn.functional as F
torch.set_printoptions(precision=17)
a = torch.tensor([0.5, -1.0, 2.0, 3.0, 0.0, -0.25], dtype=torch.float64).reshape(2,3)
b = torch.tensor([1.0, 1.0, 1.5, -1.0, 0.0, 0.75], dtype=torch.float64).reshape(2,3)
def show(name, t):
    v = t.detach().flatten().tolist()
    print(f"const {name}: &[f64] = &[{', '.join(repr(float(x)) for x in v)}];")
for beta in [1.0, 0.5, 0.0]:
    tag = str(beta).replace('.', '_')
    for red in ['mean','sum','none']:
        show(f"SMOOTH_L1_{tag}_{red.upper()}", F.smooth_l1_loss(a,b,reduction=red,beta=beta))
    aa = a.clone().requires_grad_()
    F.smooth_l1_loss(aa,b,beta=beta).backward()
    show(f"SMOOTH_L1_{tag}_GRAD", aa.grad)
# kl_div: input = log-probs of a's rows, target = softmax of b's rows (and as log-target).
inp = F.log_softmax(a, dim=1)
tgt = F.softmax(b, dim=1)
tgt0 = tgt.clone(); tgt0[1, 2] = 0.0  # a zero target: 0 by convention
for red in ['mean', 'batchmean', 'sum', 'none']:
    show(f"KL_{red.upper()}", F.kl_div(inp, tgt0, reduction=red))
    show(f"KL_LOGT_{red.upper()}", F.kl_div(inp, tgt.log(), reduction=red, log_target=True))
ii = inp.clone().requires_grad_(); tt = tgt0.clone().requires_grad_()
F.kl_div(ii, tt, reduction='batchmean').backward()
show("KL_BATCHMEAN_GRAD_INPUT", ii.grad); show("KL_BATCHMEAN_GRAD_TARGET", tt.grad)
ii = inp.clone().requires_grad_(); tt = tgt.log().clone().requires_grad_()
F.kl_div(ii, tt, reduction='sum', log_target=True).backward()
show("KL_LOGT_SUM_GRAD_INPUT", ii.grad); show("KL_LOGT_SUM_GRAD_TARGET", tt.grad)
show("KL_INPUT", inp); show("KL_TARGET", tgt0); show("KL_LOG_TARGET", tgt.log())
