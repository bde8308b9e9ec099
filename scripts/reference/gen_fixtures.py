#!/usr/bin/env python3
"""Reference fixture generator for the medsam2 Rust engine (format version 1).

Runs the *official* SAM 2 code (PyPI ``sam2==1.1.0``, CPU, fp32) on small
random-weight models and records inputs, intermediates and outputs so that the
Rust implementation can be checked tensor by tensor.  The output layout is the
one of ``/work/shared/fixtures/FORMAT.md`` (folder per set with ``config.yaml``,
``weights.safetensors``, ``image/video/oneprompt.safetensors`` and
``fixture.json``).

Nothing of the model is re-implemented here: the image part runs
``SAM2ImagePredictor``, the video part ``SAM2VideoPredictor`` (events of
FORMAT.md + a correction click and two more propagations), the one-prompt part Medical-SAM2's ``func_2d/function.py::
validation_sam`` loop on the official ``SAM2Base`` components.  Intermediates
are captured with forward hooks / thin wrappers around official methods.

Usage (see scripts/reference/README.md):

    scripts/reference/.venv/bin/python scripts/reference/gen_fixtures.py --out tests/fixtures
"""

import argparse
import json
import math
import os
import sys
import tempfile
from collections import OrderedDict

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported (progress bars off)

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import PIL  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from safetensors import safe_open  # noqa: E402

import sam2  # noqa: E402
from hydra import initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from sam2.build_sam import build_sam2, build_sam2_video_predictor  # noqa: E402
from sam2.modeling.memory_encoder import CXBlock  # noqa: E402
from sam2.modeling.sam2_utils import LayerNorm2d  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

FORMAT_VERSION = 1
GENERATOR = "scripts/reference/gen_fixtures.py"
SAM2_CFG_DIR = os.path.join(os.path.dirname(sam2.__file__), "configs")

# ---------------------------------------------------------------------------
# Fixture sets
# ---------------------------------------------------------------------------
# Every value not listed is the parent's.  Windows are chosen so that the
# stage-3 and stage-4 windows need padding (as at 1024); windows of stages 1-3
# are even (they are pooled at the next stage transition, as officially).
SETS = OrderedDict(
    [
        (
            "sam2.1-tiny-a",
            dict(
                parent="sam2.1/sam2.1_hiera_t.yaml",
                version="SAM 2.1",
                seed=11,
                image_size=96,
                trunk=dict(
                    embed_dim=8,
                    num_heads=1,
                    stages=[1, 2, 5, 2],
                    global_att_blocks=[5, 7],
                    window_pos_embed_bkg_spatial_size=[5, 5],
                    window_spec=[8, 10, 4, 5],
                ),
                d_model=16,
                mem_dim=8,
                ma_layers=2,
                ma_heads=1,
                ffn=32,
                num_maskmem=3,
                orig_hw=[88, 140],
                video_hw=[40, 112],
                oneprompt=False,
                note="SAM 2.1 flags; image 96; Hiera embed 8, heads 1 (head dim 8), stages "
                "[1,2,5,2], global [5,7], window_spec [8,10,4,5] (stage 2 pads 12->20, "
                "stage 3 6->8 in 2x2 windows, stage 4 3->5 in one window), bkg 5x5; "
                "d_model 16, mem_dim 8 (object pointers split in 2 tokens), "
                "num_maskmem 3 (the memory window saturates during propagation).",
            ),
        ),
        (
            "sam2.0-small-b",
            dict(
                parent="sam2/sam2_hiera_s.yaml",
                version="SAM 2.0",
                seed=23,
                image_size=96,
                trunk=dict(
                    embed_dim=8,
                    num_heads=2,
                    stages=[1, 2, 4, 2],
                    global_att_blocks=[4, 6],
                    window_pos_embed_bkg_spatial_size=[7, 7],
                    window_spec=[6, 8, 8, 2],
                ),
                d_model=16,
                mem_dim=4,
                ma_layers=2,
                ma_heads=1,
                ffn=32,
                num_maskmem=7,
                orig_hw=[130, 84],
                video_hw=[104, 40],
                oneprompt=False,
                note="SAM 2.0 flags (add_tpos_enc_to_obj_ptrs false, no "
                "no_obj_embed_spatial, no tpos projection), as Medical-SAM2's "
                "sam2_hiera_s; image 96; Hiera embed 8, heads 2 (2/4/8/16 per stage, "
                "head dim 4), stages [1,2,4,2], global [4,6], window_spec [6,8,8,2] "
                "(stage 2 pads 12->16, stage 3 6->8 in one window, stage 4 3->4 in 2x2 "
                "windows); d_model 16, mem_dim 4 (pointers split in 4 tokens, as "
                "256/64), num_maskmem 7.",
            ),
        ),
        (
            "sam2.1-heads-c",
            dict(
                parent="sam2.1/sam2.1_hiera_b+.yaml",
                version="SAM 2.1",
                seed=37,
                image_size=64,
                trunk=dict(
                    embed_dim=8,
                    num_heads=2,
                    stages=[2, 3, 3, 2],
                    global_att_blocks=[6, 7],
                    window_pos_embed_bkg_spatial_size=[14, 14],
                    window_spec=[8, 6, 6, 3],
                ),
                d_model=16,
                mem_dim=8,
                ma_layers=2,
                ma_heads=2,
                ffn=48,
                num_maskmem=5,
                orig_hw=[72, 100],
                video_hw=[48, 80],
                oneprompt=True,
                note="SAM 2.1 flags (all official configs keep iou_prediction_use_sigmoid "
                "and pred_obj_scores_mlp true, so those are unchanged); Hiera from b+ "
                "(heads 2, 2 blocks in stage 1), embed 8, stages [2,3,3,2], global "
                "[6,7], window_spec [8,6,6,3] (stage 2 pads 8->12, stage 3 4->6 and "
                "stage 4 2->3: single padded windows), bkg 14x14 interpolated to 16; "
                "memory attention with 2 heads (RoPE per head dim 8); image 64; "
                "d_model 16, mem_dim 8, num_maskmem 5.",
            ),
        ),
        # ---- optional variants (not generated by default: --sets NAME) ----
        # The brief asked for set a at image size 128 and set b with Hiera
        # embed 16; with the fixed-size parts of the model (~1.5 MB of weights
        # per set) that exceeds the 12 MB budget, so the defaults above use
        # 96 / embed 8.  These are the as-asked variants.
        (
            "sam2.1-tiny-a128",
            dict(
                default=False,
                parent="sam2.1/sam2.1_hiera_t.yaml",
                version="SAM 2.1",
                seed=11,
                image_size=128,
                trunk=dict(
                    embed_dim=8,
                    num_heads=1,
                    stages=[1, 2, 5, 2],
                    global_att_blocks=[5, 7],
                    window_pos_embed_bkg_spatial_size=[5, 5],
                    window_spec=[4, 6, 6, 5],
                ),
                d_model=16,
                mem_dim=8,
                ma_layers=2,
                ma_heads=1,
                ffn=32,
                num_maskmem=3,
                orig_hw=[120, 168],
                video_hw=[64, 144],
                oneprompt=True,
                note="Variant of sam2.1-tiny-a at image size 128: window_spec [4,6,6,5] "
                "(stage 2 pads 16->18, stage 3 8->12, stage 4 4->5).",
            ),
        ),
        (
            "sam2.0-small-b16",
            dict(
                default=False,
                parent="sam2/sam2_hiera_s.yaml",
                version="SAM 2.0",
                seed=23,
                image_size=96,
                trunk=dict(
                    embed_dim=16,
                    num_heads=2,
                    stages=[1, 2, 4, 2],
                    global_att_blocks=[4, 6],
                    window_pos_embed_bkg_spatial_size=[7, 7],
                    window_spec=[6, 8, 8, 2],
                ),
                d_model=16,
                mem_dim=4,
                ma_layers=2,
                ma_heads=1,
                ffn=32,
                num_maskmem=7,
                orig_hw=[130, 84],
                video_hw=[104, 40],
                oneprompt=True,
                note="Variant of sam2.0-small-b with Hiera embed 16 (head dim 8; ~4 MB "
                "of weights).",
            ),
        ),
    ]
)

# The video part of sam2.1-tiny-a again (same seed, so the same weights: the
# set points at that set's file) with the official hole filling applied. The
# official `fill_holes_in_mask_scores` runs unchanged; only its labeller
# `get_connected_components` (the CUDA extension sam2._C, absent on a CPU) is
# replaced by scipy's 8-connected `ndimage.label` (see
# `cpu_connected_components`).
SETS["sam2.1-tiny-a-fill"] = dict(
    SETS["sam2.1-tiny-a"],
    fill_holes=True,
    image_postprocess=dict(max_hole_area=8.0, max_sprinkle_area=8.0),
    weights_from="sam2.1-tiny-a",
    parts=["image", "video"],
    note=SETS["sam2.1-tiny-a"]["note"]
    + " With fill_hole_area=8 applied in the video part and max_hole_area=max_sprinkle_area=8 in the image"
    " predictor (CPU labeller in place of sam2._C).",
)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def tl(t):
    """tensor -> nested python list of floats"""
    return t.detach().to(torch.float32).cpu().tolist()


def fl(x):
    return float(x)


def versions():
    return {
        "torch": torch.__version__,
        "sam2": "1.1.0",
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "torchvision": torchvision.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
    }


def shrunk_config_yaml(spec):
    """The official config ``spec["parent"]`` with the sizes of ``spec`` (every
    flag unchanged), as YAML text without a header. Also used by
    scripts/train_demo/train.py for the demo model's config."""
    parent = OmegaConf.load(os.path.join(SAM2_CFG_DIR, spec["parent"]))
    m = parent.model
    S = spec["image_size"]
    C = spec["d_model"]
    Cm = spec["mem_dim"]
    t = spec["trunk"]
    for k, v in t.items():
        m.image_encoder.trunk[k] = v
    e = t["embed_dim"]
    m.image_encoder.neck.position_encoding.num_pos_feats = C
    m.image_encoder.neck.d_model = C
    m.image_encoder.neck.backbone_channel_list = [8 * e, 4 * e, 2 * e, e]
    ma = m.memory_attention
    ma.d_model = C
    ma.num_layers = spec["ma_layers"]
    ma.layer.d_model = C
    ma.layer.dim_feedforward = spec["ffn"]
    for att in ("self_attention", "cross_attention"):
        ma.layer[att].embedding_dim = C
        ma.layer[att].num_heads = spec["ma_heads"]
        ma.layer[att].feat_sizes = [S // 16, S // 16]
    ma.layer.cross_attention.kv_in_dim = Cm
    me = m.memory_encoder
    me.out_dim = Cm
    # not in the official YAML (code default 256): must be explicit here
    OmegaConf.set_struct(me, False)
    me.in_dim = C
    me.position_encoding.num_pos_feats = Cm
    me.mask_downsampler.embed_dim = C
    me.fuser.layer.dim = C
    m.num_maskmem = spec["num_maskmem"]
    m.image_size = S
    # flow style for short lists (as in the official files); same keys/values
    return yaml.dump(OmegaConf.to_container(parent), Dumper=_FlowListDumper, sort_keys=False, width=100)


def write_config(spec, path):
    body = shrunk_config_yaml(spec)
    header = (
        "# @package _global_\n\n"
        f"# medsam2 reference fixture `{spec['name']}`: tiny random-weight model with the\n"
        f"# exact structure and flags of sam2/configs/{spec['parent']} ({spec['version']}),\n"
        "# shrunk for small fixtures. Generated by scripts/reference/gen_fixtures.py.\n"
        + "".join(
            f"# {line}\n"
            for line in _wrap(spec["note"], 76)
        )
        + "# memory_encoder.in_dim and mask_downsampler.embed_dim are explicit (code\n"
        "# default 256).\n\n"
    )
    with open(path, "w") as f:
        f.write(header + body)


class _FlowListDumper(yaml.SafeDumper):
    pass


_FlowListDumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def _wrap(text, width):
    words, lines, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width:
            lines.append(cur)
            cur = w
        else:
            cur = (cur + " " + w).strip()
    if cur:
        lines.append(cur)
    return lines


def cpu_connected_components(mask):
    """What ``sam2._C.get_connected_componnets`` returns for binary masks
    ``(N, 1, H, W)``: 8-connected component labels (0 = background) and each
    pixel's component area (0 on background), by ``scipy.ndimage.label``.
    ``fill_holes_in_mask_scores`` uses only ``labels > 0`` and the areas, so
    any correct 8-connected labelling gives the official result."""
    from scipy import ndimage

    m = mask.to(torch.uint8).cpu().numpy()
    labels = np.zeros(m.shape, np.int32)
    counts = np.zeros(m.shape, np.int32)
    for i in range(m.shape[0]):
        lab, n = ndimage.label(m[i, 0], structure=np.ones((3, 3), dtype=int))
        area = np.bincount(lab.ravel(), minlength=n + 1)
        area[0] = 0
        labels[i, 0] = lab
        counts[i, 0] = area[lab]
    return torch.from_numpy(labels), torch.from_numpy(counts)


def enable_cpu_hole_filling(stats):
    """Makes the official ``fill_holes_in_mask_scores`` run on a CPU (its
    labeller replaced by ``cpu_connected_components``) and counts in
    ``stats`` the calls and the pixels it changes; returns the function that
    undoes it."""
    import sam2.sam2_video_predictor as svp
    import sam2.utils.misc as misc

    saved = (misc.get_connected_components, svp.fill_holes_in_mask_scores)
    def labeller(mask):
        stats["labeller_calls"] += 1
        return cpu_connected_components(mask)

    misc.get_connected_components = labeller
    official = misc.fill_holes_in_mask_scores

    def counted(mask, max_area):
        out = official(mask, max_area)
        stats["calls"] += 1
        stats["pixels_filled"] += int((out != mask).sum())
        return out

    svp.fill_holes_in_mask_scores = counted

    def restore():
        misc.get_connected_components, svp.fill_holes_in_mask_scores = saved

    return restore


def hydra_build(cfg_dir, video):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=os.path.abspath(cfg_dir), version_base="1.2"):
        if video:
            model = build_sam2_video_predictor("config", None, device="cpu")
        else:
            model = build_sam2("config", None, device="cpu")
    return model


def hydra_overrides():
    # what sam2.build_sam adds (apply_postprocessing=True), recorded for the runner
    dyn = [
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    ]
    return {
        "image_model": dyn,
        "video_model": ["++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor"]
        + dyn
        + [
            "++model.binarize_mask_from_pts_for_mem_enc=true",
            "++model.fill_hole_area=8",
        ],
    }


def fixture_init(model, seed, obj_bias=1.0):
    """Re-draw every parameter with visible, well-conditioned random values."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, mean, std):
        return torch.randn(shape, generator=g) * std + mean

    done = set()
    with torch.no_grad():
        for mname, mod in model.named_modules():
            for pname, p in mod.named_parameters(recurse=False):
                full = f"{mname}.{pname}" if mname else pname
                if full in done:
                    continue
                done.add(full)
                if isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                    if pname == "weight":
                        fan_in = p[0].numel()
                        if isinstance(mod, nn.Linear):
                            fan_in = p.shape[1]
                        v = normal(p.shape, 0.0, 1.0 / math.sqrt(fan_in))
                    else:
                        v = normal(p.shape, 0.0, 0.1)
                elif isinstance(mod, (nn.LayerNorm, LayerNorm2d)):
                    v = normal(p.shape, 1.0, 0.1) if pname == "weight" else normal(p.shape, 0.0, 0.1)
                elif isinstance(mod, CXBlock) and pname == "gamma":
                    v = normal(p.shape, 0.5, 0.1)
                elif isinstance(mod, nn.Embedding):
                    v = normal(p.shape, 0.0, 1.0)
                else:
                    # pos_embed, pos_embed_window, no_mem_embed, no_mem_pos_enc,
                    # maskmem_tpos_enc, no_obj_ptr, no_obj_embed_spatial
                    v = normal(p.shape, 0.0, 0.5)
                p.copy_(v)
        # objects predicted present (otherwise every video mask is -1024)
        head = model.sam_mask_decoder.pred_obj_score_head
        last = head.layers[-1] if hasattr(head, "layers") else head
        last.bias.add_(obj_bias)


_ST_DTYPES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(tensors, path, metadata):
    """Byte-deterministic safetensors writer (sorted names, fixed header
    order), so that regenerating gives identical files.  Read back with the
    official `safetensors` loader in check_set()."""
    header = OrderedDict()
    header["__metadata__"] = OrderedDict(sorted(metadata.items()))
    blobs, off = [], 0
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        if t.dtype == torch.bool:
            raw = t.to(torch.uint8).numpy().tobytes()
        elif t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[k] = OrderedDict(
            [("dtype", _ST_DTYPES[t.dtype]), ("shape", list(t.shape)), ("data_offsets", [off, off + len(raw)])]
        )
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def save_st(tensors, path, name):
    write_safetensors(tensors, path, {"format_version": str(FORMAT_VERSION), "fixture": name})


# ---------------------------------------------------------------------------
# synthetic images
# ---------------------------------------------------------------------------


def _grid(h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return yy, xx


def ellipse_mask(h, w, cy, cx, ry, rx, angle=0.0):
    yy, xx = _grid(h, w)
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = xx - cx, yy - cy
    u = (ca * dx + sa * dy) / rx
    v = (-sa * dx + ca * dy) / ry
    return (u * u + v * v) <= 1.0


def smooth_noise(rng, h, w, cells=6):
    base = rng.rand(cells + 1, cells + 1)
    t = torch.tensor(base, dtype=torch.float64)[None, None]
    up = F.interpolate(t, size=(h, w), mode="bicubic", align_corners=True)[0, 0].numpy()
    return up


def make_still_image(h, w, seed):
    """Non-square RGB still for the image part: textured background, a shaded
    ellipse (the object the prompts point at) and two distractors."""
    rng = np.random.RandomState(seed)
    yy, xx = _grid(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        img[..., c] = 60 + 70 * smooth_noise(rng, h, w, 5) + 30 * (xx / w) * (c + 1) / 3
    img += rng.randn(h, w, 3) * 6
    obj = ellipse_mask(h, w, 0.45 * h, 0.5 * w, 0.22 * h, 0.28 * w, 0.4)
    shade = 170 + 50 * np.cos(xx / w * 6.0)[..., None] * np.array([1.0, 0.6, 0.2])
    img = np.where(obj[..., None], shade, img)
    d1 = ellipse_mask(h, w, 0.78 * h, 0.22 * w, 0.1 * h, 0.12 * w, 0.0)
    img = np.where(d1[..., None], np.array([40, 150, 210.0]), img)
    d2 = (np.abs(yy - 0.2 * h) < 0.07 * h) & (np.abs(xx - 0.82 * w) < 0.1 * w)
    img = np.where(d2[..., None], np.array([220, 220, 90.0]), img)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def video_object_layout(h, w, t):
    """Object centres/radii per frame t (0..7) in video pixels."""
    return {
        1: (0.40 * h + 1.2 * t, 0.35 * w + 1.5 * t, 0.20 * h, 0.20 * w),  # box object
        2: (0.72 * h - 0.8 * t, 0.30 * w + 0.6 * t, 0.12 * h, 0.14 * w),  # clicked
        3: (0.35 * h + 0.5 * t, 0.72 * w - 1.0 * t, 0.16 * h, 0.13 * w),  # mask prompt
    }


def make_video_frames(h, w, n, seed):
    rng = np.random.RandomState(seed)
    yy, xx = _grid(h, w)
    bg = np.zeros((h, w, 3))
    for c in range(3):
        bg[..., c] = 50 + 80 * smooth_noise(rng, h, w, 4) + 20 * (yy / h)
    colors = {1: np.array([200, 80, 60.0]), 2: np.array([70, 200, 90.0]), 3: np.array([90, 90, 220.0])}
    frames = []
    for t in range(n):
        img = bg + rng.randn(h, w, 3) * 4
        for oid, (cy, cx, ry, rx) in video_object_layout(h, w, t).items():
            m = ellipse_mask(h, w, cy, cx, ry, rx, 0.3 * oid + 0.05 * t)
            tex = colors[oid] + 25 * np.sin((xx + 2 * t) / 5.0 + oid)[..., None]
            img = np.where(m[..., None], tex, img)
        frames.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return frames


# ---------------------------------------------------------------------------
# image part
# ---------------------------------------------------------------------------


def image_cases(H, W):
    p_pos = [round(0.5 * W, 2), round(0.42 * H, 2)]
    p_neg = [round(0.22 * W, 2), round(0.78 * H, 2)]
    box = [round(0.2 * W, 2), round(0.2 * H, 2), round(0.78 * W, 2), round(0.68 * H, 2)]
    return [
        dict(name="point_pos_multi", multimask_output=True, point_coords=[p_pos], point_labels=[1]),
        dict(name="point_pos_single", multimask_output=False, point_coords=[p_pos], point_labels=[1]),
        dict(name="points_pos_neg", multimask_output=False, point_coords=[p_pos, p_neg], point_labels=[1, 0]),
        dict(name="points_pos_neg_multi", multimask_output=True, point_coords=[p_pos, p_neg], point_labels=[1, 0]),
        dict(name="box", multimask_output=False, box=box),
        dict(name="box_point", multimask_output=False, point_coords=[p_neg], point_labels=[0], box=box),
        dict(name="points_mask_input", multimask_output=False, point_coords=[p_pos, p_neg], point_labels=[1, 0]),
    ]


def run_image_part(model, spec, margins, raw=None, cases=None):
    """`raw`/`cases` override the synthetic image and prompts (cross-checks only)."""
    S = spec["image_size"]
    H, W = spec["orig_hw"]
    pred = SAM2ImagePredictor(model, **spec.get("image_postprocess", {}))
    # Deviation 1: _bb_feat_sizes is hard-coded for 1024 inputs.
    pred._bb_feat_sizes = [(S // 4, S // 4), (S // 8, S // 8), (S // 16, S // 16)]
    cap = {}
    T = {}

    hooks = [
        model.image_encoder.trunk.register_forward_hook(
            lambda m, i, o: cap.__setitem__("trunk", [f32(x) for x in o])
        ),
        model.sam_prompt_encoder.register_forward_hook(
            lambda m, a, kw, o: cap.__setitem__("pe", (kw, [f32(x) for x in o])), with_kwargs=True
        ),
        model.sam_mask_decoder.register_forward_hook(
            lambda m, a, kw, o: cap.__setitem__("md", [f32(x) for x in o]), with_kwargs=True
        ),
    ]
    orig_fi = model.forward_image

    def forward_image(img):
        cap["pixels"] = f32(img)
        out = orig_fi(img)
        cap["fpn"] = [f32(x) for x in out["backbone_fpn"]]
        cap["pos"] = [f32(x) for x in out["vision_pos_enc"]]
        return out

    model.forward_image = forward_image
    orig_pm = model.sam_mask_decoder.predict_masks

    def predict_masks(**kw):
        r = orig_pm(**kw)
        cap["pm"] = [f32(x) for x in r]
        return r

    model.sam_mask_decoder.predict_masks = predict_masks

    if raw is None:
        raw = make_still_image(H, W, spec["seed"] * 100 + 1)
    pred.set_image(raw)
    T["image/raw_rgb"] = torch.from_numpy(raw.copy())
    T["image/pixels"] = cap["pixels"]
    for i in range(4):
        T[f"image/trunk.{i}"] = cap["trunk"][i]
    for i in range(3):
        T[f"image/backbone_fpn.{i}"] = cap["fpn"][i]
    T["image/vision_pos_enc.2"] = cap["pos"][2]
    T["image/image_embed"] = f32(pred._features["image_embed"])
    for i in range(2):
        T[f"image/high_res_feats.{i}"] = f32(pred._features["high_res_feats"][i])
    T["image/dense_pe"] = f32(model.sam_prompt_encoder.get_dense_pe())
    tensors = OrderedDict(
        (k, "image/" + k)
        for k in [
            "raw_rgb", "pixels", "trunk.0", "trunk.1", "trunk.2", "trunk.3",
            "vision_pos_enc.2", "backbone_fpn.0", "backbone_fpn.1", "backbone_fpn.2",
            "image_embed", "high_res_feats.0", "high_res_feats.1", "dense_pe",
        ]
    )
    # sanity: predictor state equals what we documented
    assert torch.equal(T["image/high_res_feats.0"], T["image/backbone_fpn.0"])
    assert torch.allclose(
        T["image/image_embed"],
        T["image/backbone_fpn.2"] + model.no_mem_embed.detach().reshape(1, -1, 1, 1),
    )

    dec = model.sam_mask_decoder
    cases_json = []
    best_multi_lowres = None
    for case in cases if cases is not None else image_cases(H, W):
        name = case["name"]
        kw = dict(multimask_output=case["multimask_output"])
        if "point_coords" in case:
            kw["point_coords"] = np.array(case["point_coords"], dtype=np.float32)
            kw["point_labels"] = np.array(case["point_labels"], dtype=np.int32)
        if "box" in case:
            kw["box"] = np.array(case["box"], dtype=np.float32)
        mask_in = None
        if name == "points_mask_input":
            mask_in = best_multi_lowres
            kw["mask_input"] = mask_in.numpy()
        kw["return_logits"] = name == "box"
        cap.clear()
        masks, ious, low_res = pred.predict(**kw)
        pe_kw, (sparse, dense) = cap["pe"]
        coords, labels = pe_kw["points"]
        pm_masks, pm_ious, pm_tokens, pm_obj = cap["pm"]
        md_out = cap["md"]
        p = f"image/{name}/"
        ct = OrderedDict()
        if mask_in is not None:
            T[p + "mask_input"] = f32(mask_in)
            ct["mask_input"] = p + "mask_input"
        T[p + "model_point_coords"] = f32(coords)
        T[p + "model_point_labels"] = labels.detach().to(torch.int32).contiguous()
        T[p + "sparse_embeddings"] = sparse
        T[p + "dense_embeddings"] = dense
        T[p + "decoder_all_masks"] = pm_masks
        T[p + "decoder_all_ious"] = pm_ious
        T[p + "object_score_logits"] = pm_obj
        T[p + "sam_tokens_out"] = md_out[2]
        T[p + "low_res_masks"] = torch.from_numpy(np.ascontiguousarray(low_res)).float()
        T[p + "iou_predictions"] = torch.from_numpy(np.ascontiguousarray(ious)).float()
        for k in [
            "model_point_coords", "model_point_labels", "sparse_embeddings", "dense_embeddings",
            "decoder_all_masks", "decoder_all_ious", "object_score_logits", "sam_tokens_out",
            "low_res_masks", "iou_predictions",
        ]:
            ct[k] = p + k
        if name == "box":
            T[p + "masks"] = torch.from_numpy(np.ascontiguousarray(masks)).float()
            ct["masks"] = p + "masks"
        stab = fl(dec._get_stability_scores(pm_masks[:, 0:1])[0, 0])
        j = OrderedDict(name=name, multimask_output=case["multimask_output"], tensors=ct)
        for k in ("point_coords", "point_labels", "box"):
            if k in case:
                j[k] = case[k]
        if name == "points_mask_input":
            j["mask_input_from"] = (
                "point_pos_multi: low_res_masks[argmax(iou_predictions)], shape [1, S/4, S/4]"
            )
        j["stability_score_token0"] = stab
        j["iou_predictions"] = [fl(x) for x in np.asarray(ious).reshape(-1)]
        j["object_score_logit"] = fl(pm_obj.reshape(-1)[0])
        multi = pm_ious[0, 1:]
        srt = torch.sort(multi, descending=True).values
        if case["multimask_output"]:
            chosen = None
        else:
            chosen = 0 if stab >= dec.dynamic_multimask_stability_thresh else 1 + int(torch.argmax(multi))
            j["chosen_token"] = chosen
            margins.append((f"image/{name}/stability_vs_0.98", abs(stab - 0.98)))
        if case["multimask_output"] or chosen != 0:
            margins.append((f"image/{name}/multimask_iou_gap", fl(srt[0] - srt[1])))
        cases_json.append(j)
        if name == "point_pos_multi":
            best = int(np.argmax(ious))
            best_multi_lowres = torch.from_numpy(np.ascontiguousarray(low_res[best : best + 1])).float()

    for h in hooks:
        h.remove()
    model.forward_image = orig_fi
    model.sam_mask_decoder.predict_masks = orig_pm
    js = OrderedDict(
        file="image.safetensors", orig_hw=[H, W], tensors=tensors, cases=cases_json
    )
    return js, T


# ---------------------------------------------------------------------------
# video part
# ---------------------------------------------------------------------------


CORR_FRAME = 5  # frame of the correction click (event 6)


def video_events(Hv, Wv, S):
    lay3 = video_object_layout(Hv, Wv, 3)[1]
    cy, cx, ry, rx = lay3
    box = [round(cx - 1.05 * rx, 2), round(cy - 1.05 * ry, 2), round(cx + 1.05 * rx, 2), round(cy + 1.05 * ry, 2)]
    cy2, cx2, _, _ = video_object_layout(Hv, Wv, 5)[2]
    pt = [float(round(cx2)), float(round(cy2))]
    cy3, cx3, ry3, rx3 = video_object_layout(Hv, Wv, 6)[3]
    mask3 = ellipse_mask(Hv, Wv, cy3, cx3, ry3, rx3, 0.9 + 0.3)
    mask4 = np.zeros((Hv, Wv), dtype=bool)
    # correction: a negative click on the centre of object 1 on frame 5, a
    # frame object 1 was tracked on (non-conditioning; official default
    # add_all_frames_to_correct_as_cond=False), then propagation again
    cy5, cx5, _, _ = video_object_layout(Hv, Wv, CORR_FRAME)[1]
    neg = [float(round(cx5)), float(round(cy5))]
    return [
        dict(type="add_new_points_or_box", frame_idx=3, obj_id=1, box=box, clear_old_points=True),
        dict(type="add_new_points_or_box", frame_idx=5, obj_id=2, points=[pt], labels=[1], clear_old_points=True),
        dict(type="add_new_mask", frame_idx=6, obj_id=3, mask=mask3),
        dict(type="add_new_mask", frame_idx=1, obj_id=4, mask=mask4),
        dict(type="propagate_in_video", start_frame_idx=3, reverse=False),
        dict(type="propagate_in_video", start_frame_idx=3, reverse=True),
        dict(type="add_new_points_or_box", frame_idx=CORR_FRAME, obj_id=1, points=[neg], labels=[0],
             clear_old_points=False),
        dict(type="propagate_in_video", start_frame_idx=CORR_FRAME, reverse=False),
        dict(type="propagate_in_video", start_frame_idx=CORR_FRAME, reverse=True),
    ]


def stats(t):
    t = t.float()
    return OrderedDict(
        [("min", fl(t.min())), ("max", fl(t.max())), ("num_abs_below_1e-3", int((t.abs() < 1e-3).sum()))]
    )


def run_video_part(pred, spec, margins, workdir, frames_override=None, events=None):
    """`frames_override` ([8,3,S,S] model input) and `events` replace the
    synthetic video (cross-checks only)."""
    S = spec["image_size"]
    Hv, Wv = spec["video_hw"]
    n = 8
    frames = make_video_frames(Hv, Wv, n, spec["seed"] * 100 + 2)
    vdir = os.path.join(workdir, "frames")
    os.makedirs(vdir, exist_ok=True)
    for i, fr in enumerate(frames):
        Image.fromarray(fr).save(os.path.join(vdir, f"{i:05d}.jpg"), quality=95)
    T = {}
    st = {"event": None, "call": None, "upcasts": 0}
    calls, ma_records, outputs = [], {}, []

    # --- wrappers around official methods (record only, except the bf16 upcast)
    orig_rsfi = pred._run_single_frame_inference
    orig_fsh = pred._forward_sam_heads
    orig_ma_forward = pred.memory_attention.forward
    orig_orig_res = pred._get_orig_video_res_output

    def run_single_frame_inference(**kw):
        state = kw["inference_state"]
        obj_idx = [i for i, d in state["output_dict_per_obj"].items() if d is kw["output_dict"]][0]
        rec = OrderedDict(
            index=len(calls),
            event=st["event"],
            obj_idx=obj_idx,
            frame_idx=kw["frame_idx"],
            is_init_cond_frame=bool(kw["is_init_cond_frame"]),
            reverse=bool(kw["reverse"]),
            run_mem_encoder=bool(kw["run_mem_encoder"]),
            point_inputs=None
            if kw["point_inputs"] is None
            else OrderedDict(
                point_coords=tl(kw["point_inputs"]["point_coords"]),
                point_labels=kw["point_inputs"]["point_labels"].tolist(),
            ),
            mask_inputs=kw["mask_inputs"] is not None,
            prev_sam_mask_logits=kw.get("prev_sam_mask_logits") is not None,
            sam_heads=[],
            memory_attention=None,
        )
        st["call"] = rec
        calls.append(rec)
        out, gpu_masks = orig_rsfi(**kw)
        st["call"] = None
        p = f"video/call.{rec['index']}/"
        ct = OrderedDict()
        T[p + "pred_masks"] = f32(out["pred_masks"])
        T[p + "object_score_logits"] = f32(out["object_score_logits"])
        T[p + "obj_ptr"] = f32(out["obj_ptr"])
        ct["pred_masks"] = p + "pred_masks"
        ct["object_score_logits"] = p + "object_score_logits"
        ct["obj_ptr"] = p + "obj_ptr"
        if out["maskmem_features"] is not None:
            assert out["maskmem_features"].dtype == torch.bfloat16
            T[p + "maskmem_features"] = out["maskmem_features"].detach().clone()
            ct["maskmem_features"] = p + "maskmem_features"
        rec["tensors"] = ct
        rec["pred_masks_stats"] = stats(out["pred_masks"])
        return out, gpu_masks

    def forward_sam_heads(*a, **kw):
        r = orig_fsh(*a, **kw)
        ious, obj_score = r[2], r[6]
        mm = bool(kw.get("multimask_output", False))
        h = OrderedDict(
            multimask_output=mm,
            ious=tl(ious),
            best=int(torch.argmax(ious[0])) if mm else 0,
            object_score_logit=fl(obj_score.reshape(-1)[0]),
            mask_inputs=kw.get("mask_inputs") is not None,
        )
        rec = st["call"]
        if rec is not None:
            rec["sam_heads"].append(h)
            # the sign decides -1024 masks and the object pointer (also for the
            # inner call of a mask prompt)
            margins.append((f"video/call.{rec['index']}/object_score", abs(h["object_score_logit"])))
            if mm:
                s = torch.sort(ious[0], descending=True).values
                margins.append((f"video/call.{rec['index']}/iou_argmax_gap", fl(s[0] - s[1])))
        return r

    def ma_forward(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        # Deviation 2: fp32 crash of the official code when no object pointer
        # is concatenated (bf16 memory meets an fp32 projection): upcast.
        if memory.dtype == torch.bfloat16:
            memory = memory.float()
            st["upcasts"] += 1
        out = orig_ma_forward(
            curr=curr, memory=memory, curr_pos=curr_pos, memory_pos=memory_pos,
            num_obj_ptr_tokens=num_obj_ptr_tokens,
        )
        rec = st["call"]
        if rec is not None:
            rec["memory_attention"] = OrderedDict(
                call=rec["index"],
                num_obj_ptr_tokens=int(num_obj_ptr_tokens),
                num_memory_tokens=int(memory.shape[0]),
            )
            c = curr[0] if isinstance(curr, list) else curr
            cp = curr_pos[0] if isinstance(curr_pos, list) else curr_pos
            ma_records[rec["index"]] = dict(
                curr=f32(c), curr_pos=f32(cp), memory=f32(memory), memory_pos=f32(memory_pos), output=f32(out)
            )
        return out

    def get_orig_video_res_output(inference_state, any_res_masks):
        r = orig_orig_res(inference_state, any_res_masks)
        st["last_in"] = f32(any_res_masks)
        return r

    pred._run_single_frame_inference = run_single_frame_inference
    pred._forward_sam_heads = forward_sam_heads
    pred.memory_attention.forward = ma_forward
    pred._get_orig_video_res_output = get_orig_video_res_output

    state = pred.init_state(vdir)
    if frames_override is not None:
        state["images"] = frames_override.clone()
        state["cached_features"] = {}
    T["video/frames"] = f32(state["images"])
    raw_frames = [0, 7]
    T["video/raw_rgb"] = torch.from_numpy(
        np.stack([np.array(Image.open(os.path.join(vdir, f"{i:05d}.jpg")).convert("RGB")) for i in raw_frames])
    )
    assert [state["video_height"], state["video_width"]] == [Hv, Wv]

    events_json = []

    def record_output(ev, frame_idx, obj_ids, video_res_masks, propagate):
        p = f"video/event.{ev}/frame.{frame_idx}/"
        ct = OrderedDict()
        if propagate:
            T[p + "masks_in"] = st["last_in"]
            ct["masks_in"] = p + "masks_in"
        T[p + "video_res_binary"] = (video_res_masks > 0).contiguous()
        ct["video_res_binary"] = p + "video_res_binary"
        if (ev, frame_idx) in ((0, 3), (4, 7), (6, CORR_FRAME)):
            T[p + "video_res_masks"] = f32(video_res_masks)
            ct["video_res_masks"] = p + "video_res_masks"
        outputs.append(OrderedDict(event=ev, frame_idx=frame_idx, obj_ids=list(obj_ids), tensors=ct))

    for ev_i, ev in enumerate(events if events is not None else video_events(Hv, Wv, S)):
        st["event"] = ev_i
        j = OrderedDict(index=ev_i, type=ev["type"])
        if ev["type"] == "add_new_points_or_box":
            j["frame_idx"], j["obj_id"] = ev["frame_idx"], ev["obj_id"]
            kw = {}
            if "box" in ev:
                kw["box"] = ev["box"]
                j["box"] = ev["box"]
            if "points" in ev:
                kw["points"], kw["labels"] = ev["points"], ev["labels"]
                j["points"], j["labels"] = ev["points"], ev["labels"]
            if "clear_old_points" in ev:
                kw["clear_old_points"] = bool(ev["clear_old_points"])
                j["clear_old_points"] = kw["clear_old_points"]
            j["normalize_coords"] = True
            fi, obj_ids, vrm = pred.add_new_points_or_box(
                state, frame_idx=ev["frame_idx"], obj_id=ev["obj_id"], normalize_coords=True, **kw
            )
            obj_idx = state["obj_id_to_idx"][ev["obj_id"]]
            pi = state["point_inputs_per_obj"][obj_idx][ev["frame_idx"]]
            j["model_point_coords"] = tl(pi["point_coords"])
            j["model_point_labels"] = pi["point_labels"].tolist()
            record_output(ev_i, fi, obj_ids, vrm, False)
        elif ev["type"] == "add_new_mask":
            j["frame_idx"], j["obj_id"] = ev["frame_idx"], ev["obj_id"]
            name = f"video/event.{ev_i}/mask"
            T[name] = torch.from_numpy(ev["mask"].copy())
            j["mask"] = name
            fi, obj_ids, vrm = pred.add_new_mask(state, frame_idx=ev["frame_idx"], obj_id=ev["obj_id"], mask=ev["mask"])
            record_output(ev_i, fi, obj_ids, vrm, False)
        else:
            j["start_frame_idx"], j["reverse"] = ev["start_frame_idx"], ev["reverse"]
            visited = []
            for fi, obj_ids, vrm in pred.propagate_in_video(
                state, start_frame_idx=ev["start_frame_idx"], reverse=ev["reverse"]
            ):
                visited.append(fi)
                record_output(ev_i, fi, obj_ids, vrm, True)
            j["frames_visited"] = visited
        events_json.append(j)

    # conditioning entries after propagation (memories encoded in the preflight)
    cond_json = []
    for obj_idx in range(len(state["obj_ids"])):
        for fi, out in sorted(state["output_dict_per_obj"][obj_idx]["cond_frame_outputs"].items()):
            p = f"video/cond.obj{obj_idx}.frame{fi}/"
            T[p + "maskmem_features"] = out["maskmem_features"].detach().clone()
            T[p + "pred_masks"] = f32(out["pred_masks"])
            T[p + "obj_ptr"] = f32(out["obj_ptr"])
            T[p + "object_score_logits"] = f32(out["object_score_logits"])
            cond_json.append(
                OrderedDict(
                    obj_idx=obj_idx,
                    frame_idx=fi,
                    tensors=OrderedDict(
                        (k, p + k) for k in ["maskmem_features", "pred_masks", "obj_ptr", "object_score_logits"]
                    ),
                )
            )
    T["video/maskmem_pos_enc"] = f32(state["constants"]["maskmem_pos_enc"][0])

    # memory-attention calls to store (as in the shared sets): the first one
    # (object 2 on frame 3: only a future conditioning frame, no pointer), the
    # first call of the empty-mask object 4, the first call of object 1 with
    # pointers, and object 2 on frame 0 in reverse (most pointers).
    with_ma = [c for c in calls if c["memory_attention"] is not None]
    sel = [with_ma[0]["index"]]
    c_empty = [c for c in with_ma if c["obj_idx"] == 3]
    if c_empty:
        sel.append(c_empty[0]["index"])
    c_ptr = [c for c in with_ma if c["obj_idx"] == 0 and c["memory_attention"]["num_obj_ptr_tokens"] > 0]
    if c_ptr:
        sel.append(c_ptr[0]["index"])
    c_rev = [c for c in with_ma if c["obj_idx"] == 1 and c["reverse"] and c["frame_idx"] == 0]
    if c_rev:
        sel.append(c_rev[-1]["index"])
    # the correction click (memory + previous logits as mask input) and the
    # first call of the propagation after it (object 1 re-tracked on frame 5)
    c_corr = [c for c in with_ma if c["event"] == 6]
    if c_corr:
        sel.append(c_corr[0]["index"])
    c_after = [c for c in with_ma if c["event"] == 7]
    if c_after:
        sel.append(c_after[0]["index"])
    sel = sorted(set(sel))
    ma_json = []
    for ci in sel:
        r = ma_records[ci]
        p = f"video/memory_attention.call{ci}/"
        ct = OrderedDict()
        for k in ["curr", "curr_pos", "memory", "memory_pos", "output"]:
            T[p + k] = r[k]
            ct[k] = p + k
        info = calls[ci]["memory_attention"]
        ma_json.append(
            OrderedDict(
                call=ci,
                obj_idx=calls[ci]["obj_idx"],
                frame_idx=calls[ci]["frame_idx"],
                reverse=calls[ci]["reverse"],
                num_obj_ptr_tokens=info["num_obj_ptr_tokens"],
                num_memory_tokens=info["num_memory_tokens"],
                tensors=ct,
            )
        )

    pred._run_single_frame_inference = orig_rsfi
    pred._forward_sam_heads = orig_fsh
    pred.memory_attention.forward = orig_ma_forward
    pred._get_orig_video_res_output = orig_orig_res

    js = OrderedDict(
        file="video.safetensors",
        video_hw=[Hv, Wv],
        num_frames=n,
        jpeg_quality=95,
        tensors=OrderedDict(raw_rgb="video/raw_rgb", frames="video/frames", maskmem_pos_enc="video/maskmem_pos_enc"),
        raw_rgb_frames=raw_frames,
        memory_bf16_upcast_calls=st["upcasts"],
        obj_ids=list(state["obj_ids"]),
        events=events_json,
        calls=calls,
        cond_outputs=cond_json,
        outputs=outputs,
        memory_attention=ma_json,
    )
    return js, T


# ---------------------------------------------------------------------------
# one-prompt part (Medical-SAM2 func_2d/function.py::validation_sam)
# ---------------------------------------------------------------------------

OP_STYLES = ["gray-blotches", "rgb-waves", "rgb-checker", "gray-checker", "gray-waves", "rgb-blotches"]


def make_op_image(S, idx, rng):
    style = OP_STYLES[int(rng.randint(len(OP_STYLES)))]
    yy, xx = _grid(S, S)
    kind = style.split("-")[1]
    chans = 3 if style.startswith("rgb") else 1
    img = np.zeros((S, S, chans))
    for c in range(chans):
        if kind == "blotches":
            img[..., c] = 40 + 120 * smooth_noise(rng, S, S, int(rng.randint(3, 8)))
        elif kind == "waves":
            f1, f2, ph = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 6.3)
            img[..., c] = 90 + 60 * np.sin(f1 * xx + f2 * yy + ph)
        else:
            k = int(rng.randint(4, 12))
            img[..., c] = 60 + 100 * (((xx // k) + (yy // k)) % 2) * rng.uniform(0.4, 1.0)
    img += rng.randn(S, S, chans) * 5
    for _ in range(int(rng.randint(1, 4))):
        m = ellipse_mask(S, S, rng.uniform(0.1, 0.9) * S, rng.uniform(0.1, 0.9) * S,
                         rng.uniform(0.05, 0.15) * S, rng.uniform(0.05, 0.15) * S, rng.uniform(0, 3.14))
        img = np.where(m[..., None], rng.uniform(0, 255, size=chans), img)
    cy, cx = rng.uniform(0.3, 0.7) * S, rng.uniform(0.3, 0.7) * S
    ry, rx = rng.uniform(0.12, 0.25) * S, rng.uniform(0.12, 0.25) * S
    ang = rng.uniform(0, 3.14)
    gt = ellipse_mask(S, S, cy, cx, ry, rx, ang)
    shade = rng.uniform(150, 240) - 60 * ((yy - cy) / S)
    img = np.where(gt[..., None], shade[..., None] * np.ones(chans), img)
    if chans == 1:
        img = np.repeat(img, 3, axis=2)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    click = (int(round(cx)), int(round(cy)))
    if not gt[click[1], click[0]]:
        ys, xs = np.nonzero(gt)
        k = len(ys) // 2
        click = (int(xs[k]), int(ys[k]))
    return img, gt, style, click


def run_oneprompt_once(net, spec, image_seed, K=4, N=16, iou_margin=0.1, prompt_every=5, mn_seed=9, images=None,
                       forced_picks=None):
    """One pass of validation_sam over N images.  `images` (list of (raw, gt,
    style, click)) replaces the synthetic stream and `forced_picks` (image
    index -> bank index) replaces the multinomial draw; both are only used to
    cross-check this implementation against other fixture sets."""
    S = spec["image_size"]
    h = S // 16
    feat_sizes = [(S // 4, S // 4), (S // 8, S // 8), (S // 16, S // 16)]
    rng = np.random.RandomState(image_seed)
    gen = torch.Generator().manual_seed(mn_seed)
    dec = net.sam_mask_decoder
    cap = {}
    orig_pm = dec.predict_masks

    def predict_masks(**kw):
        r = orig_pm(**kw)
        cap["pm"] = [f32(x) for x in r]
        return r

    dec.predict_masks = predict_masks
    T = {}
    imgs_json = []
    bank = []  # [F bf16, P bf16, iou (0-d f32), E (C*h*w), src]
    raws, gts = [], []
    counts = OrderedDict(append=0, replace=0, keep_similarity=0, keep_iou=0)
    margins_all = []
    pos_enc_saved = None
    with torch.no_grad():
        for ind in range(N):
            raw, gt, style, click = images[ind] if images is not None else make_op_image(S, ind, rng)
            raws.append(raw)
            gts.append(gt)
            imgs = torch.from_numpy(raw).permute(2, 0, 1)[None].float() / 255.0
            B = 1
            flag = ind % prompt_every == 0
            # ---- validation_sam, batch size 1 ----
            backbone_out = net.forward_image(imgs)
            _, vision_feats, vision_pos_embeds, _ = net._prepare_backbone_features(backbone_out)
            raw_feats = f32(vision_feats[-1].permute(1, 2, 0).reshape(B, -1, h, h))
            pickup = None
            bank_before = [e[4] for e in bank]
            if len(bank) == 0:
                vision_feats[-1] = vision_feats[-1] + torch.zeros(1, B, net.hidden_dim)
                vision_pos_embeds[-1] = vision_pos_embeds[-1] + torch.zeros(1, B, net.hidden_dim)
            else:
                to_cat_memory = [e[0].flatten(2).permute(2, 0, 1) for e in bank]
                to_cat_memory_pos = [e[1].flatten(2).permute(2, 0, 1) for e in bank]
                to_cat_image_embed = [e[3] for e in bank]
                memory_stack_ori = torch.stack(to_cat_memory, dim=0)
                memory_pos_stack_ori = torch.stack(to_cat_memory_pos, dim=0)
                image_embed_stack_ori = torch.stack(to_cat_image_embed, dim=0)
                vision_feats_temp = vision_feats[-1].permute(1, 0, 2).reshape(B, -1, h, h)
                vision_feats_temp = vision_feats_temp.reshape(B, -1)
                image_embed_stack_ori = F.normalize(image_embed_stack_ori, p=2, dim=1)
                vision_feats_temp = F.normalize(vision_feats_temp, p=2, dim=1)
                cos = torch.mm(image_embed_stack_ori, vision_feats_temp.t()).t()
                probs = F.softmax(cos, dim=1)
                sampled_indices = torch.multinomial(probs, num_samples=B, replacement=True, generator=gen).squeeze(1)
                if forced_picks is not None:
                    sampled_indices = torch.tensor([forced_picks[ind]])
                memory_stack_ori_new = memory_stack_ori[sampled_indices].squeeze(3).permute(1, 2, 0, 3)
                memory = memory_stack_ori_new.reshape(-1, memory_stack_ori_new.size(2), memory_stack_ori_new.size(3))
                memory_pos_stack_new = memory_pos_stack_ori[sampled_indices].squeeze(3).permute(1, 2, 0, 3)
                memory_pos = memory_pos_stack_new.reshape(-1, memory_stack_ori_new.size(2), memory_stack_ori_new.size(3))
                k = int(sampled_indices[0])
                pickup = OrderedDict(
                    cosine_similarity=[fl(x) for x in cos[0]],
                    probabilities=[fl(x) for x in probs[0]],
                    sampled_bank_index=k,
                    sampled_source_image=bank[k][4],
                )
                # fp32 instead of bf16 autocast: upcast the bf16 memory (exact)
                vision_feats[-1] = net.memory_attention(
                    curr=[vision_feats[-1]],
                    curr_pos=[vision_pos_embeds[-1]],
                    memory=memory.float(),
                    memory_pos=memory_pos.float(),
                    num_obj_ptr_tokens=0,
                )
            feats = [
                feat.permute(1, 2, 0).reshape(B, -1, *fs) for feat, fs in zip(vision_feats[::-1], feat_sizes[::-1])
            ][::-1]
            image_embed = feats[-1]
            high_res_feats = feats[:-1]
            if flag:
                coords_torch = torch.tensor([[[float(click[0]), float(click[1])]]], dtype=torch.float)
                labels_torch = torch.tensor([[1]], dtype=torch.int)
                points = (coords_torch, labels_torch)
            else:
                points = None
            se, de = net.sam_prompt_encoder(points=points, boxes=None, masks=None)
            low_res_multimasks, iou_predictions, sam_output_tokens, object_score_logits = net.sam_mask_decoder(
                image_embeddings=image_embed,
                image_pe=net.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=se,
                dense_prompt_embeddings=de,
                multimask_output=False,
                repeat_image=False,
                high_res_features=high_res_feats,
            )
            pm_masks, pm_ious = cap["pm"][0], cap["pm"][1]
            high_res_multimasks = F.interpolate(low_res_multimasks, size=(S, S), mode="bilinear", align_corners=False)
            maskmem_features, maskmem_pos_enc = net._encode_new_memory(
                current_vision_feats=vision_feats,
                feat_sizes=feat_sizes,
                pred_masks_high_res=high_res_multimasks,
                object_score_logits=object_score_logits,
                is_mask_from_pts=flag,
            )
            maskmem_features = maskmem_features.to(torch.bfloat16)
            maskmem_pos_enc = maskmem_pos_enc[0].to(torch.bfloat16)
            if pos_enc_saved is None:
                pos_enc_saved = maskmem_pos_enc.clone()
            else:
                assert torch.equal(pos_enc_saved, maskmem_pos_enc)
            iou_new = iou_predictions[0, 0]
            entry = [maskmem_features[0].unsqueeze(0), maskmem_pos_enc[0].unsqueeze(0), iou_new,
                     image_embed[0].reshape(-1).detach(), ind]
            upd = OrderedDict()
            replaced = False
            if len(bank) < K:
                bank.append(entry)
                upd["action"] = "append"
                counts["append"] += 1
            else:
                flat = torch.stack([e[0].reshape(-1) for e in bank]).float()
                Bn = F.normalize(flat, p=2, dim=1)
                Mfull = torch.mm(Bn, Bn.t())
                M = Mfull.clone()
                di = torch.arange(M.size(0))
                M[di, di] = float("-inf")
                q = F.normalize(maskmem_features[0].reshape(-1).float(), p=2, dim=0).unsqueeze(1)
                s = torch.mm(Bn, q).squeeze()
                a = int(torch.argmin(s))
                b = int(torch.argmax(M[a]))
                sim_cond = bool(s[a] < M[a, b])
                thr = bank[b][2] - iou_margin
                iou_cond = bool(iou_new > thr)
                ss = torch.sort(s).values
                mrow = torch.sort(M[a][torch.arange(K) != a], descending=True).values
                mg = OrderedDict(
                    argmin_gap=fl(ss[1] - ss[0]),
                    argmax_gap=fl(mrow[0] - mrow[1]) if K > 2 else None,
                    similarity=fl(M[a, b] - s[a]),
                    iou=fl(iou_new - thr),
                )
                # bf16 autocast simulation (informative)
                Bb = Bn.to(torch.bfloat16)
                Mb = torch.mm(Bb.float(), Bb.float().t()).to(torch.bfloat16).float()
                Mb[di, di] = float("-inf")
                sb = torch.mm(Bb.float(), q.to(torch.bfloat16).float()).squeeze().to(torch.bfloat16).float()
                ab = int(torch.argmin(sb))
                bb = int(torch.argmax(Mb[ab]))
                same = (ab == a) and (bb == b) and (bool(sb[ab] < Mb[ab, bb]) == sim_cond)
                upd.update(
                    similarity_new_to_bank=[fl(x) for x in s],
                    similarity_matrix=tl(Mfull),
                    min_similarity_index=a,
                    max_similarity_index=b,
                    sim_new_to_min=fl(s[a]),
                    sim_min_to_max=fl(M[a, b]),
                    similarity_condition=sim_cond,
                    iou_threshold=fl(thr),
                    iou_condition=iou_cond,
                    margins=mg,
                    bf16_autocast_sim_same_decision=bool(same),
                )
                margins_all += [abs(mg["argmin_gap"]), abs(mg["similarity"])]
                if mg["argmax_gap"] is not None:
                    margins_all.append(abs(mg["argmax_gap"]))
                if sim_cond:
                    margins_all.append(abs(mg["iou"]))
                if sim_cond and iou_cond:
                    upd["action"] = "replace"
                    upd["dropped_bank_index"] = b
                    upd["dropped_source_image"] = bank[b][4]
                    bank.pop(b)
                    bank.append(entry)
                    replaced = True
                    counts["replace"] += 1
                elif not sim_cond:
                    upd["action"] = "keep_similarity"
                    counts["keep_similarity"] += 1
                else:
                    upd["action"] = "keep_iou"
                    counts["keep_iou"] += 1
            # ---- records ----
            stab = fl(dec._get_stability_scores(pm_masks[:, 0:1])[0, 0])
            chosen = 0 if stab >= dec.dynamic_multimask_stability_thresh else 1 + int(torch.argmax(pm_ious[0, 1:]))
            lr = low_res_multimasks
            pred_hr = (high_res_multimasks[0, 0] > 0).numpy()
            inter = float((pred_hr & gt).sum())
            dice = 2 * inter / float(pred_hr.sum() + gt.sum()) if (pred_hr.sum() + gt.sum()) > 0 else 1.0
            p = f"oneprompt/img.{ind}/"
            ct = OrderedDict()
            T[p + "vision_feats"] = raw_feats
            T[p + "conditioned_feats"] = f32(image_embed)
            ct["vision_feats"] = p + "vision_feats"
            ct["conditioned_feats"] = p + "conditioned_feats"
            if flag:
                T[p + "point_coords"] = f32(coords_torch)
                T[p + "point_labels"] = labels_torch.to(torch.int32).contiguous()
                T[p + "sparse_embeddings"] = f32(se)
                ct["point_coords"] = p + "point_coords"
                ct["point_labels"] = p + "point_labels"
                ct["sparse_embeddings"] = p + "sparse_embeddings"
            T[p + "low_res_masks"] = f32(lr)
            T[p + "iou_predictions"] = f32(iou_predictions)
            T[p + "object_score_logits"] = f32(object_score_logits)
            T[p + "maskmem_features"] = maskmem_features.detach().clone().contiguous()
            for k in ["low_res_masks", "iou_predictions", "object_score_logits", "maskmem_features"]:
                ct[k] = p + k
            j = OrderedDict(
                index=ind,
                style=style,
                bank_before=bank_before,
                pickup=pickup,
                prompt=flag,
                gt_click_xy=[click[0], click[1]],
                point_coords=tl(coords_torch) if flag else None,
                point_labels=labels_torch.tolist() if flag else None,
                decoder=OrderedDict(all_ious=[fl(x) for x in pm_ious[0]], stability_score_token0=stab, chosen_token=chosen),
                iou_prediction=fl(iou_new),
                object_score_logit=fl(object_score_logits.reshape(-1)[0]),
                low_res_stats=OrderedDict(
                    [("min", fl(lr.min())), ("max", fl(lr.max())), ("num_positive", int((lr > 0).sum())),
                     ("num_abs_below_1e-3", int((lr.abs() < 1e-3).sum()))]
                ),
                dice_vs_gt_at_S=dice,
                bank_update=upd,
                replaced=replaced,
                bank_after=[OrderedDict(source_image=e[4], iou=fl(e[2])) for e in bank],
                tensors=ct,
            )
            imgs_json.append(j)
    dec.predict_masks = orig_pm
    T["oneprompt/raw_rgb"] = torch.from_numpy(np.stack(raws))
    T["oneprompt/gt_masks"] = torch.from_numpy(np.stack(gts))
    T["oneprompt/maskmem_pos_enc"] = pos_enc_saved.contiguous()
    smallest = min(margins_all) if margins_all else None
    return imgs_json, T, counts, smallest


def run_oneprompt_part(net, spec, K=4, N=16, iou_margin=0.1, prompt_every=5, mn_seed=9):
    acc = OrderedDict(min_replacements=2, min_keeps=1, min_decision_margin=5e-4)
    tries = []
    base = spec["seed"] * 100
    for image_seed in range(base, base + 60):
        imgs_json, T, counts, smallest = run_oneprompt_once(net, spec, image_seed, K, N, iou_margin, prompt_every, mn_seed)
        tries.append(OrderedDict(image_seed=image_seed, replacements=counts["replace"], decision_counts=counts,
                                 smallest_decision_margin=smallest))
        keeps = counts["keep_similarity"] + counts["keep_iou"]
        if counts["replace"] >= acc["min_replacements"] and keeps >= acc["min_keeps"] and smallest is not None \
                and smallest >= acc["min_decision_margin"]:
            break
    else:
        raise RuntimeError("no image seed met the one-prompt acceptance criteria")
    S = spec["image_size"]
    js = OrderedDict(
        file="oneprompt.safetensors",
        generator=GENERATOR,
        procedure="Medical-SAM2 func_2d/function.py validation_sam, batch size 1 (see FORMAT.md)",
        model="sam2.build_sam.build_sam2(config.yaml) + weights.safetensors (strict); hydra_overrides.image_model",
        reference=OrderedDict((k, v) for k, v in versions().items() if k in ("torch", "sam2", "torchvision", "threads")),
        seed=spec["seed"],
        image_seed=image_seed,
        image_seed_tries=tries,
        acceptance=acc,
        multinomial_generator_seed=mn_seed,
        num_images=N,
        image_hw=[S, S],
        bank_size=K,
        iou_margin=iou_margin,
        prompt_every=prompt_every,
        prompted_images=[i for i in range(N) if i % prompt_every == 0],
        replacements=counts["replace"],
        decision_counts=counts,
        smallest_decision_margin=smallest,
        adaptations=ONEPROMPT_ADAPTATIONS,
        tensors=OrderedDict(raw_rgb="oneprompt/raw_rgb", gt_masks="oneprompt/gt_masks", maskmem_pos_enc="oneprompt/maskmem_pos_enc"),
        images=imgs_json,
    )
    return js, T


ONEPROMPT_ADAPTATIONS = [
    "PyPI sam2 (SAM 2.1 code) instead of Medical-SAM2's sam2_train (SAM 2.0 code): _encode_new_memory also gets the "
    "decoder's object_score_logits (adds no_obj_embed_spatial where logit <= 0 when the config has no_obj_embed_spatial); "
    "the prompt encoder has no batch_size argument (B = 1 inferred).",
    "CPU fp32 instead of CUDA bf16 autocast; the BF16-stored maskmem_features and maskmem_pos_enc are upcast exactly "
    "to F32 for memory attention.",
    "Replacement-rule similarities are computed in F32 on the BF16-stored features (under CUDA autocast Medical-SAM2's "
    "torch.mm rounds them to bf16); bank_update.bf16_autocast_sim_same_decision reports whether a bf16-rounded "
    "similarity would decide the same.",
    "torch.multinomial draws from a seeded torch.Generator (multinomial_generator_seed) instead of the global RNG; the "
    "drawn index is recorded per image (pickup.sampled_bank_index) for replay.",
    "Bank capacity 4 (validation_sam hard-codes 16) so that replacements happen.",
    "feat_sizes [(S/4)^2, (S/8)^2, (S/16)^2] instead of the hard-coded 1024-input sizes; view(B,-1,64,64) replaced by "
    "reshape (same element order).",
    "Inputs: synthetic S x S uint8 images through transform_test (Resize((S,S)) = identity, ToTensor: /255, no mean/std "
    "normalisation, as Medical-SAM2 2D). The click is the (x, y) centre pixel of the target; Medical-SAM2's random_click "
    "returns a random GT pixel as (row, col) and feeds it as (x, y).",
]

DEVIATIONS = [
    "SAM2ImagePredictor._bb_feat_sizes is hard-coded for 1024 inputs; set to [(S/4,S/4),(S/8,S/8),(S/16,S/16)] for "
    "image_size S.",
    "Video: memory-attention `memory` is cast bf16->fp32 when no object pointer is concatenated (the official code "
    "raises a dtype error in fp32 there; with a pointer present torch.cat does the same promotion). Count: "
    "video.memory_bf16_upcast_calls.",
    "fill_hole_area=8 is configured but not applied (no CUDA extension on CPU).",
    "Weights: fixture_init() re-draws parameters and adds 1.0 to the last bias of the object-score head so that objects "
    "are predicted present.",
]


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------


def check_set(d, fx):
    """Every tensor named in fixture.json exists; weights load strictly."""
    names = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "tensors" and isinstance(v, dict):
                    names.extend(v.values())
                elif k == "mask" and isinstance(v, str):
                    names.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(fx)
    have = {}
    for part in ("image", "video", "oneprompt"):
        p = os.path.join(d, part + ".safetensors")
        if os.path.exists(p):
            with safe_open(p, "pt") as f:
                for k in f.keys():
                    have[k] = p
    missing = [n for n in names if n not in have]
    assert not missing, f"tensors named in fixture.json but missing: {missing[:5]}"
    unused = sorted(set(have) - set(names))
    assert not unused, f"tensors not referenced by fixture.json: {unused[:5]}"
    return len(names)


def generate(name, spec, out_root, parts):
    spec = dict(spec, name=name)
    parts = [p for p in parts if p in spec.get("parts", parts)]
    fill = spec.get("fill_holes", False)
    fill_stats = dict(calls=0, pixels_filled=0, labeller_calls=0)
    restore = enable_cpu_hole_filling(fill_stats) if fill else None
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "config.yaml")
    write_config(spec, cfg)
    margins = []

    # weights: build the official image model, seed, re-initialise
    torch.manual_seed(spec["seed"])
    model = hydra_build(d, video=False)
    fixture_init(model, spec["seed"] + 1, spec.get("obj_bias", 1.0))
    sd = OrderedDict((k, v.detach().to(torch.float32).contiguous().clone()) for k, v in model.state_dict().items())
    weights = "weights.safetensors"
    write_safetensors(sd, os.path.join(d, weights), {"config": "config.yaml", "format": "pt"})
    if spec.get("weights_from"):
        # Same seed and sizes as that set: the same bytes; point at its file.
        import filecmp

        sibling = os.path.join("..", spec["weights_from"], "weights.safetensors")
        same = filecmp.cmp(os.path.join(d, weights), os.path.join(d, sibling), shallow=False)
        assert same, f"weights differ from {sibling}"
        os.remove(os.path.join(d, weights))
        weights = sibling
    # reload from disk (strict) into fresh official models
    from safetensors.torch import load_file

    wsd = load_file(os.path.join(d, weights))
    model = hydra_build(d, video=False)
    model.load_state_dict(wsd, strict=True)
    model.eval()
    fx = OrderedDict(
        format_version=FORMAT_VERSION,
        name=name,
        seed=spec["seed"],
        generator=GENERATOR,
        reference=versions(),
        config="config.yaml",
        weights=weights,
        derived_from=f"sam2/configs/{spec['parent']}",
        sam2_version_flags=spec["version"],
        description=spec["note"],
        hydra_overrides=hydra_overrides(),
        model=OrderedDict(
            image_size=spec["image_size"],
            backbone_stride=model.backbone_stride,
            hidden_dim=model.hidden_dim,
            mem_dim=model.mem_dim,
            num_maskmem=model.num_maskmem,
            max_obj_ptrs_in_encoder=model.max_obj_ptrs_in_encoder,
            trunk=spec["trunk"],
            memory_attention=OrderedDict(num_layers=spec["ma_layers"], num_heads=spec["ma_heads"], dim_feedforward=spec["ffn"]),
            num_parameters=sum(p.numel() for p in model.parameters()),
            num_state_dict_keys=len(wsd),
        ),
        postprocessing=OrderedDict(
            fill_hole_area=8,
            fill_hole_applied=fill,
            note=(
                "fill_holes_in_mask_scores applied as officially, its labeller sam2._C.get_connected_componnets "
                "replaced by scipy.ndimage.label with 8-connectivity (gen_fixtures.cpu_connected_components)."
                if fill
                else "fill_holes_in_mask_scores needs the CUDA extension sam2._C; without it the official code warns "
                "and returns the masks unchanged, so these fixtures have no hole filling."
            ),
            image_predictor=OrderedDict(
                mask_threshold=0.0,
                **spec.get("image_postprocess", dict(max_hole_area=0.0, max_sprinkle_area=0.0)),
            ),
        ),
        deviations_from_plain_official_calls=[
            "fill_hole_area=8 applied with a CPU labeller in place of sam2._C (scipy.ndimage.label, 8-connectivity)."
            if fill and dev.startswith("fill_hole_area")
            else dev
            for dev in DEVIATIONS
        ],
    )
    with torch.no_grad():
        if "image" in parts:
            calls_before = fill_stats["labeller_calls"]
            js, T = run_image_part(model, spec, margins)
            save_st(T, os.path.join(d, "image.safetensors"), name)
            fx["image"] = js
            print(f"[{name}] image part: {len(T)} tensors", flush=True)
            if "image_postprocess" in spec:
                n = fill_stats["labeller_calls"] - calls_before
                fx["postprocessing"]["image_labeller_calls"] = n
                assert n > 0, "the image predictor's clean-up never ran"
    if "video" in parts:
        vp = hydra_build(d, video=True)
        vp.load_state_dict(wsd, strict=True)
        vp.eval()
        with tempfile.TemporaryDirectory() as td:
            js, T = run_video_part(vp, spec, margins, td)
        save_st(T, os.path.join(d, "video.safetensors"), name)
        fx["video"] = js
        print(f"[{name}] video part: {len(T)} tensors, {len(js['calls'])} calls", flush=True)
        if fill:
            fx["postprocessing"]["fill_hole_calls"] = fill_stats["calls"]
            fx["postprocessing"]["fill_hole_pixels_filled"] = fill_stats["pixels_filled"]
            print(f"[{name}] hole filling: {fill_stats}", flush=True)
            assert fill_stats["pixels_filled"] > 0, "hole filling changed nothing: the set would not test it"
    if restore:
        restore()
    if "oneprompt" in parts and spec.get("oneprompt", True):
        net = hydra_build(d, video=False)
        net.load_state_dict(wsd, strict=True)
        net.eval()
        js, T = run_oneprompt_part(net, spec)
        save_st(T, os.path.join(d, "oneprompt.safetensors"), name)
        fx["one_prompt"] = js
        print(f"[{name}] one-prompt part: image seed {js['image_seed']}, {js['decision_counts']}, "
              f"smallest margin {js['smallest_decision_margin']:.2e}", flush=True)
    margins.sort(key=lambda x: x[1])
    fx["smallest_margins"] = [OrderedDict(what=w, margin=m) for w, m in margins[:8]]
    with open(os.path.join(d, "fixture.json"), "w") as f:
        json.dump(fx, f, indent=None, separators=(",", ":"))
        f.write("\n")
    n = check_set(d, fx)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"[{name}] {n} tensors referenced, {size / 1e6:.2f} MB; smallest margins: "
          + ", ".join(f"{w}={m:.2e}" for w, m in margins[:4]), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--sets", nargs="*", default=[k for k, v in SETS.items() if v.get("default", True)],
                    help="fixture sets to generate (default: the committed ones); optional: "
                    + ", ".join(k for k, v in SETS.items() if not v.get("default", True)))
    ap.add_argument("--parts", nargs="*", default=["image", "video", "oneprompt"])
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    for name in args.sets:
        generate(name, SETS[name], args.out, args.parts)


if __name__ == "__main__":
    main()
