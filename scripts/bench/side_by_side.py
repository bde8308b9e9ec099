#!/usr/bin/env python3
"""Side by side: the official PyTorch SAM 2 (PyPI ``sam2`` 1.1.0) and medsam2
on the same configs in one run, and a table of ratios ours / PyTorch.

    scripts/reference/.venv/bin/python scripts/bench/side_by_side.py [--full] [--runs 3] [--dtype bf16]

SAM 2.1 tiny, random weights (speed does not depend on their values), fp32,
CPU, 2 threads on both sides (``torch.set_num_threads``, ``RAYON_NUM_THREADS``).
Rows (medians of ``--runs`` timed calls after two warm-up calls unless said):

* ``encoder`` at 512 and 1024, ``click_point`` (one point, multimask) and
  ``click_box`` at 1024 (and 512): ``scripts/device/torch_stages.py`` against
  ``examples/stage_timings.rs`` (same synthetic slices and prompts);
* ``track_step`` (steady tracking step, full memory bank, slice features
  cached) and ``propagate_slice`` (per slice once the bank is full, encoder
  included) at 512 (and 1024 with ``--full``), same two programs;
* ``cold_start``: a fresh process loads a ``.pt`` of SAM 2.1 tiny at 512
  (written here from random weights) and answers a box on one slice; timed
  from before the checkpoint is opened to the mask (interpreter and library
  imports excluded) — ``examples/cold_start.rs``;
* ``peak RSS, 200 slices``: peak resident memory (MiB, ``getrusage`` / ``VmHWM``) of a
  fresh process propagating a 200-slice 512 x 512 volume both ways from a box
  on the middle slice — ``examples/propagation_memory.rs``. The official
  predictor holds every frame as float32 in memory (``init_state``); that is
  its design and is counted.

``--dtype bf16`` (or ``f16``) adds rows ``encoder bf16``, ``click_* bf16``,
``track_step bf16``, ``propagate_slice bf16``: our stages again in that CPU mode
(bf16 linear layers, ``ComputeDType::BF16``), their ratio taken against
PyTorch in fp32 (the reference stays fp32).

The Rust examples are built in release first. Takes ~10 min on 2 idle cores,
~25 on busy ones (mostly the 200-slice rows; ``--slices 0`` skips them; ``--full``
adds ~4). Absolute times move between runs and machines: compare
ratios from one run.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
GOALS = {
    "encoder": 0.5,
    "click_point": 0.5,
    "click_box": 0.5,
    "track_step": 0.85,
    "propagate_slice": 0.7,
    "cold_start": 0.5,
    "peak_rss": 0.5,
    # reduced precision (ours) against PyTorch fp32
    "track_step bf16": 0.5,
    "encoder bf16": 0.5,
    "click_point bf16": 0.5,
    "click_box bf16": 0.5,
    "propagate_slice bf16": 0.7,
}


def env2(threads):
    e = dict(os.environ)
    e.update(
        RAYON_NUM_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TQDM_DISABLE="1",
    )
    return e


def run(cmd, threads, what):
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env2(threads), capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"error: {what} failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    print(f"# {what}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    for line in p.stdout.splitlines():
        print(f"#   {line}", file=sys.stderr, flush=True)
    return p.stdout


def parse(out):
    """``stage=NAME size=S ms=T`` lines (and peak RSS lines) into a dict."""
    res = {}
    for line in out.splitlines():
        m = re.match(r"stage=(\S+) size=(\d+) ms=([\d.]+)", line)
        if m:
            res[(m.group(1), int(m.group(2)))] = float(m.group(3))
        m = re.search(r"peak RSS (\d+) MiB", line)
        if m:
            res[("peak_rss", 512)] = float(m.group(1))
        m = re.match(r"stage=peak_rss size=(\d+) mib=([\d.]+)", line)
        if m:
            res[("peak_rss", int(m.group(1)))] = float(m.group(2))
    return res


# --- PyTorch helpers, each run in a fresh interpreter -----------------------


def slices(n, size):
    import numpy as np

    y, x = np.mgrid[0:size, 0:size]
    return [((x ^ y ^ z) & 0xFF).astype(np.uint8) for z in range(n)]


def torch_make_pt(path, size):
    import torch
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2(CONFIG, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={size}"])
    torch.save({"model": model.state_dict()}, path)


def torch_cold_start(path, size, threads):
    import numpy as np
    import torch
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    torch.set_num_threads(threads)
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.repeat(((x ^ y) & 0xFF).astype(np.uint8)[:, :, None], 3, axis=2)
    q = size / 4.0
    t = time.perf_counter()
    with torch.inference_mode():
        model = build_sam2(CONFIG, path, device="cpu", hydra_overrides_extra=[f"++model.image_size={size}"])
        pred = SAM2ImagePredictor(model)
        pred._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
        pred.set_image(rgb)
        masks, _, _ = pred.predict(box=np.array([q, q, 3 * q, 3 * q], dtype=np.float32), multimask_output=False)
    ms = (time.perf_counter() - t) * 1e3
    print(f"stage=cold_start size={size} ms={ms:.3f} runs=1")
    print(f"# mask pixels {int(masks[0].sum())}")


def torch_propagation_memory(n, size, threads):
    import resource

    import numpy as np
    import torch
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor

    torch.set_num_threads(threads)
    vp = build_sam2_video_predictor(CONFIG, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={size}"])
    q = size / 4.0
    mid = n // 2
    with tempfile.TemporaryDirectory() as d:
        for z, s in enumerate(slices(n, size)):
            Image.fromarray(np.repeat(s[:, :, None], 3, axis=2)).save(os.path.join(d, f"{z:05d}.jpg"), quality=95)
        t = time.perf_counter()
        done = 0
        with torch.inference_mode():
            state = vp.init_state(video_path=d)
            vp.add_new_points_or_box(state, frame_idx=mid, obj_id=1, box=[q, q, 3 * q, 3 * q])
            for reverse in (False, True):
                for _ in vp.propagate_in_video(state, start_frame_idx=mid, reverse=reverse):
                    done += 1
        secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"stage=peak_rss size={size} mib={peak:.0f}")
    print(f"# slices {n} time {secs:.1f} s ({secs / max(done, 1):.3f} s/slice incl. encoder)")


# --- the driver ---------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="timed runs per stage (after 2 warm-ups)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="also the tracking stages at 1024")
    ap.add_argument("--sizes", default="512,1024", help="sizes of the encoder and click rows")
    ap.add_argument("--slices", type=int, default=200, help="slices of the peak-RSS propagation (0: skip it)")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--dtype", default="f32", help="also our stages in this dtype (bf16 or f16), against PyTorch fp32")
    ap.add_argument("--stages", default=None,
                    help="only these rows of the two stage programs, comma separated (e.g. click_point,click_box)")
    ap.add_argument("--helper", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.helper:
        kind, *rest = a.helper
        {"make_pt": lambda p, s: torch_make_pt(p, int(s)),
         "cold_start": lambda p, s: torch_cold_start(p, int(s), a.threads),
         "propagation_memory": lambda n, s: torch_propagation_memory(int(n), int(s), a.threads)}[kind](*rest)
        return

    py = sys.executable
    me = os.path.abspath(__file__)
    exe = os.path.join(ROOT, "target", "release", "examples")
    if not a.skip_build:
        run(["cargo", "build", "--release", "--example", "stage_timings", "--example", "cold_start",
             "--example", "propagation_memory"], a.threads, "cargo build")
    track = "512,1024" if a.full else "512"
    stages = ["--sizes", a.sizes, "--track-sizes", track, "--runs", str(a.runs)]
    if a.stages:
        stages += ["--stages", a.stages]
    ours, torch_ = {}, {}
    ours.update(parse(run([os.path.join(exe, "stage_timings"), *stages], a.threads, "medsam2 stages")))
    if a.dtype != "f32":
        low = parse(run([os.path.join(exe, "stage_timings"), *stages, "--dtype", a.dtype], a.threads,
                        f"medsam2 stages {a.dtype}"))
        for (stage, size), v in low.items():
            ours[(f"{stage} {a.dtype}", size)] = v
    torch_.update(parse(run([py, os.path.join(ROOT, "scripts", "device", "torch_stages.py"), "--device", "cpu",
                             "--threads", str(a.threads), *stages], a.threads, "pytorch stages")))
    with tempfile.TemporaryDirectory() as d:
        pt = os.path.join(d, "sam2.1_tiny_512.pt")
        run([py, me, "--helper", "make_pt", pt, "512"], a.threads, "write .pt")
        torch_.update(parse(run([py, me, "--threads", str(a.threads), "--helper", "cold_start", pt, "512"],
                                a.threads, "pytorch cold start")))
        ours.update(parse(run([os.path.join(exe, "cold_start"), pt, "--config", "medsam2", "--size", "512"],
                              a.threads, "medsam2 cold start")))
    n = str(a.slices)
    if a.slices > 0:
        torch_.update(parse(run([py, me, "--threads", str(a.threads), "--helper", "propagation_memory", n, "512"],
                                a.threads, f"pytorch {n}-slice propagation")))
        ours.update(parse(run([os.path.join(exe, "propagation_memory"), "--slices", n, "--size", "512",
                               "--side", "512"], a.threads, f"medsam2 {n}-slice propagation")))

    print(f"\n| stage | size | PyTorch | medsam2 | ratio | goal |\n|---|---|---|---|---|---|")
    order = ["encoder", "click_point", "click_box", "track_step", "propagate_slice", "cold_start", "peak_rss"]
    rank = lambda k: (order.index(k[0].split(" ")[0]) if k[0].split(" ")[0] in order else 99, k[1], k[0])
    for key in sorted(set(ours) | set(torch_), key=rank):
        unit = "MiB" if key[0] == "peak_rss" else "ms"
        t, o = torch_.get((key[0].split(" ")[0], key[1])), ours.get(key)
        fmt = lambda v: "-" if v is None else f"{v:.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}"
        ratio = f"{o / t:.2f}" if t and o else "-"
        name = f"peak RSS, {n} slices" if key[0] == "peak_rss" else key[0]
        goal = f"<= {GOALS[key[0]]}" if key[0] in GOALS else "-"
        print(f"| {name} | {key[1]} | {fmt(t)} | {fmt(o)} | {ratio} | {goal} |")


if __name__ == "__main__":
    main()
