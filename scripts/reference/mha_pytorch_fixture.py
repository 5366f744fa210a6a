"""Writes tests/fixtures/mha_pytorch.json: PyTorch's nn.MultiheadAttention (batch_first, self-attention,
dropout 0) on a random [2, 5, 6] input with 3 heads, without and with the causal mask, its
state_dict, the outputs, and the gradient of sum(output * r) with respect to every parameter and the
input. tests/reference_transformer.rs loads the parameters into a compiled model by name and checks
its outputs and per-example gradients against these values.

Run: python3 scripts/reference/mha_pytorch_fixture.py (PyTorch only; seeded, so reproducible)."""

import json
import torch

torch.manual_seed(0)
T, D, H, B = 5, 6, 3, 2
out = {"steps": T, "dim": D, "heads": H, "batch": B, "cases": []}
for causal in (False, True):
    attn = torch.nn.MultiheadAttention(D, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for p in attn.parameters():
            p.uniform_(-0.5, 0.5)
    x = (torch.rand(B, T, D, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    r = torch.rand(B, T, D, dtype=torch.float64) * 2 - 1
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1) if causal else None
    y, _ = attn(x, x, x, attn_mask=mask, need_weights=False)
    case = {
        "causal": causal,
        "params": {k: v.flatten().tolist() for k, v in attn.state_dict().items()},
        "input": x.detach().flatten().tolist(),
        "output": y.detach().flatten().tolist(),
        "r": r.flatten().tolist(),
        "grads": [],
    }
    for i in range(B):
        attn.zero_grad()
        xi = x.detach()[i : i + 1].clone().requires_grad_(True)
        yi, _ = attn(xi, xi, xi, attn_mask=mask, need_weights=False)
        (yi * r[i : i + 1]).sum().backward()
        case["grads"].append({k: p.grad.flatten().tolist() for k, p in attn.named_parameters()})
    out["cases"].append(case)

with open("tests/fixtures/mha_pytorch.json", "w") as f:
    json.dump(out, f)
print("wrote tests/fixtures/mha_pytorch.json")
