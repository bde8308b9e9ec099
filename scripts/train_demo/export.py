#!/usr/bin/env python3
"""Export trained weights as safetensors under the official SAM 2 key names.

    scripts/reference/.venv/bin/python scripts/train_demo/export.py RUN/last.pt models/demo/weights.safetensors

The keys are ``SAM2Base.state_dict()``'s (what the official checkpoints hold
under ``"model"``), stored as fp32 (the file stays under 20 MB); the writer
sorts the names so the file is byte-deterministic.
"""

import json
import sys
from collections import OrderedDict

import torch

_DT = {torch.float32: "F32", torch.bfloat16: "BF16"}


def export(state_dict, path, args=None, dtype=torch.float32):
    meta = {"format": "pt", "model": "medsam2 demo (synthetic CT phantoms; not for clinical use)"}
    if args is not None:
        a = args if isinstance(args, dict) else vars(args)
        meta["recipe"] = json.dumps({k: a[k] for k in ("steps", "batch", "frames", "lr", "seed") if k in a})
    header = OrderedDict([("__metadata__", OrderedDict(sorted(meta.items())))])
    blobs, off = [], 0
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().to(dtype).contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[k] = OrderedDict([("dtype", _DT[t.dtype]), ("shape", list(t.shape)),
                                 ("data_offsets", [off, off + len(raw)])])
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


if __name__ == "__main__":
    st = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
    export(st["model"], sys.argv[2], st.get("args"))
    print(f"wrote {sys.argv[2]}")
