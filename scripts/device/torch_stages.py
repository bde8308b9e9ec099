#!/usr/bin/env python3
"""Per-stage wall times of the official SAM 2.1 tiny (PyPI ``sam2`` 1.1.0,
random weights) on one device: the PyTorch side of the table that
``examples/stage_timings.rs`` prints for medsam2 (same stages, same synthetic
slices, same prompts, same statistics: the upper median of ``--runs`` timed
calls after two warm-up calls, the device synchronised before each clock read).

    python3 scripts/device/torch_stages.py --device cuda --sizes 512,1024

Stages: ``encoder`` (``SAM2ImagePredictor.set_image`` on an S x S RGB image),
``click_point`` (one point, multimask), ``click_box`` (a box, single mask),
``propagate_slice`` (``propagate_in_video`` per slice once the memory bank is
full, encoder included), ``track_step`` (``_run_single_frame_inference`` on a
slice whose features are cached: memory attention, SAM heads, memory encoder).
``--dtype bf16`` runs under ``torch.autocast(bfloat16)`` as the official
notebooks do on GPUs.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from sam2.build_sam import build_sam2, build_sam2_video_predictor  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def median(ts):
    ts = sorted(ts)
    return ts[len(ts) // 2]


def timed(dev, runs, f):
    for _ in range(2):
        f()
    sync(dev)
    ts = []
    for _ in range(max(runs, 1)):
        t = time.perf_counter()
        f()
        sync(dev)
        ts.append((time.perf_counter() - t) * 1e3)
    return median(ts)


def slices(n, size):
    y, x = np.mgrid[0:size, 0:size]
    return [((x ^ y ^ (3 * z)) & 0xFF).astype(np.uint8) for z in range(n)]


def report(stage, size, ms, runs):
    print(f"stage={stage} size={size} ms={ms:.3f} runs={runs}", flush=True)


def overrides(size):
    # Random weights (no checkpoint); the image size as MedSAM2 sets it. The
    # RoPE tables follow the token count at run time.
    return [f"++model.image_size={size}"]


def run_size(size, dev, runs, autocast, track=True, stages=None):
    want = lambda s: stages is None or s in stages
    q = size / 4.0
    model = build_sam2(CONFIG, None, device=str(dev), hydra_overrides_extra=overrides(size))
    pred = SAM2ImagePredictor(model)
    # Hard-coded for 1024 in the official predictor.
    pred._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
    rgb = np.repeat(slices(1, size)[0][:, :, None], 3, axis=2)
    with torch.inference_mode(), autocast():
        if want("encoder"):
            report("encoder", size, timed(dev, runs, lambda: pred.set_image(rgb)), runs)
        elif want("click_point") or want("click_box"):
            pred.set_image(rgb)
        pt = np.array([[2 * q, 2 * q]], dtype=np.float32)
        lab = np.array([1], dtype=np.int32)
        if want("click_point"):
            ms = timed(dev, runs, lambda: pred.predict(point_coords=pt, point_labels=lab, multimask_output=True))
            report("click_point", size, ms, runs)
        box = np.array([q, q, 3 * q, 3 * q], dtype=np.float32)
        if want("click_box"):
            ms = timed(dev, runs, lambda: pred.predict(box=box, multimask_output=False))
            report("click_box", size, ms, runs)
    del pred, model
    if not track or not (want("propagate_slice") or want("track_step")):
        return

    vp = build_sam2_video_predictor(CONFIG, None, device=str(dev), hydra_overrides_extra=overrides(size))
    frames = 8 + max(runs, 1) + 2
    with tempfile.TemporaryDirectory() as d:
        for z, s in enumerate(slices(frames, size)):
            Image.fromarray(np.repeat(s[:, :, None], 3, axis=2)).save(os.path.join(d, f"{z:05d}.jpg"), quality=95)
        with torch.inference_mode(), autocast():
            state = vp.init_state(video_path=d)
            vp.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=[q, q, 3 * q, 3 * q])
            per_slice = []
            sync(dev)
            last = time.perf_counter()
            for frame_idx, _, _ in vp.propagate_in_video(state, start_frame_idx=0):
                sync(dev)
                now = time.perf_counter()
                if frame_idx >= 8:
                    per_slice.append((now - last) * 1e3)
                last = now
            if want("propagate_slice"):
                report("propagate_slice", size, median(per_slice), len(per_slice))
            if not want("track_step"):
                return

            frame = frames - 1
            vp._get_image_feature(state, frame, 1)  # caches this slice's features

            def step():
                vp._run_single_frame_inference(
                    inference_state=state,
                    output_dict=state["output_dict_per_obj"][0],
                    frame_idx=frame,
                    batch_size=1,
                    is_init_cond_frame=False,
                    point_inputs=None,
                    mask_inputs=None,
                    reverse=False,
                    run_mem_encoder=True,
                )

            report("track_step", size, timed(dev, runs, step), runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--track-sizes", default=None, help="sizes of the tracking stages (default: all sizes)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    ap.add_argument("--stages", default=None, help="only these stages, comma separated (default: all)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: CUDA is not available to PyTorch here")
    if a.dtype == "bf16":
        def autocast():
            return torch.autocast(dev.type, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext
    print(f"# pytorch {torch.__version__} stage timings: device {a.device} dtype {a.dtype}", flush=True)
    track = None if a.track_sizes is None else {int(s) for s in a.track_sizes.split(",") if s}
    for size in [int(s) for s in a.sizes.split(",") if s]:
        stages = None if a.stages is None else set(a.stages.split(","))
        run_size(size, dev, a.runs, autocast, track is None or size in track, stages)


if __name__ == "__main__":
    main()
