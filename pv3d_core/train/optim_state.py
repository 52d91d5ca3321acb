"""Optimiser state as flat tensors (for safetensors checkpoints) and back."""
from __future__ import annotations

import torch


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, list]:
    """(name -> tensor, param_groups) of an optimiser; names are ``prefix.<param index>.<state key>``."""
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{idx}.{k}"] = torch.as_tensor(v)
    return tensors, sd["param_groups"]


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict, prefix: str, groups) -> None:
    """Restore what :func:`optimizer_tensors` gave, read back from a checkpoint's ``extra.`` tensors."""
    state: dict = {}
    pre = f"extra.{prefix}."
    for k, v in tensors.items():
        if k.startswith(pre):
            idx, name = k[len(pre):].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})
