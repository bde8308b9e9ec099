"""Writes PyTorch checkpoints (torch.save({'model': state_dict})) of a fixture's
weights in fp32 and bf16, to test loading official-style `.pt` files.

    scripts/reference/.venv/bin/python scripts/reference/make_pt.py tests/fixtures/sam2.1-heads-c
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

d = Path(sys.argv[1])
sd = load_file(str(d / "weights.safetensors"))
torch.save({"model": sd}, d / "weights_fp32.pt")
torch.save({"model": {k: v.to(torch.bfloat16) for k, v in sd.items()}}, d / "weights_bf16.pt")
print("wrote", d / "weights_fp32.pt", d / "weights_bf16.pt")
