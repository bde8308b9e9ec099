#!/usr/bin/env python3
"""Independent sanity check of reference fixture sets (format version 1).

For every set folder under --root (default tests/fixtures):
  * every tensor named in fixture.json opens with the official `safetensors`
    loader, no tensor is unreferenced, dtypes/shapes follow FORMAT.md;
  * weights.safetensors loads with load_state_dict(strict=True) into the
    official image model and video predictor built from config.yaml;
  * image part: the official SAM2ImagePredictor is re-run from raw_rgb and
    every stored tensor is compared (must be bit-identical on the generating
    machine, close elsewhere);
  * preprocessing is recomputed independently (torchvision / PIL);
  * video / one-prompt invariants and the one-prompt bank decisions are
    replayed from the stored tensors (no model needed).

    scripts/reference/.venv/bin/python scripts/reference/check_fixtures.py --root tests/fixtures
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fixtures as G  # noqa: E402  (hydra_build, image-case replay helpers)

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
DT = {"F32": torch.float32, "BF16": torch.bfloat16, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}


class Checker:
    def __init__(self, name):
        self.name, self.fail, self.n = name, [], 0

    def ok(self, cond, what):
        self.n += 1
        if not cond:
            self.fail.append(what)

    def close(self, a, b, tol, what):
        d = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
        self.ok(a.shape == b.shape and d <= tol, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}, max|d|={d:.3g}")
        return d


def names_in(o, out):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "tensors" and isinstance(v, dict):
                out.extend(v.values())
            elif k == "mask" and isinstance(v, str):
                out.append(v)
            else:
                names_in(v, out)
    elif isinstance(o, list):
        for v in o:
            names_in(v, out)
    return out


def check_set(d):
    name = os.path.basename(d.rstrip("/"))
    c = Checker(name)
    fx = json.load(open(os.path.join(d, "fixture.json")))
    c.ok(fx["format_version"] == 1 and fx["name"] == name, "header")
    T = {}
    for part in ("image", "video", "oneprompt"):
        p = os.path.join(d, part + ".safetensors")
        if os.path.exists(p):
            with safe_open(p, "pt") as f:
                c.ok(f.metadata().get("format_version") == "1", f"{part} metadata")
                for k in f.keys():
                    c.ok(k.startswith(part + "/"), f"{k} prefix")
                    T[k] = f.get_tensor(k)
    refs = names_in(fx, [])
    c.ok(not [r for r in refs if r not in T], "missing tensors: %s" % [r for r in refs if r not in T][:5])
    c.ok(not sorted(set(T) - set(refs)), "unreferenced tensors: %s" % sorted(set(T) - set(refs))[:5])
    for k, t in T.items():
        want = torch.float32
        if k.endswith(("raw_rgb",)):
            want = torch.uint8
        elif k.endswith(("model_point_labels", "point_labels")):
            want = torch.int32
        elif k.endswith(("video_res_binary", "/mask", "gt_masks")):
            want = torch.bool
        elif k.endswith("maskmem_features") or k == "oneprompt/maskmem_pos_enc":
            want = torch.bfloat16
        c.ok(t.dtype == want, f"{k} dtype {t.dtype} (want {want})")

    # --- weights: strict load into official models
    wsd = load_file(os.path.join(d, fx.get("weights", "weights.safetensors")))
    c.ok(all(v.dtype == torch.float32 for v in wsd.values()), "weights F32")
    model = G.hydra_build(d, video=False)
    model.load_state_dict(wsd, strict=True)
    model.eval()
    vp = G.hydra_build(d, video=True)
    vp.load_state_dict(wsd, strict=True)
    c.ok(len(wsd) == fx["model"]["num_state_dict_keys"], "num_state_dict_keys")
    S = model.image_size
    C, Cm = model.hidden_dim, model.mem_dim
    c.ok([S, C, Cm] == [fx["model"]["image_size"], fx["model"]["hidden_dim"], fx["model"]["mem_dim"]], "model summary")
    h = S // 16

    # --- image part
    if "image" in fx:
        im = fx["image"]
        raw = T["image/raw_rgb"]
        c.ok(list(raw.shape) == im["orig_hw"] + [3], "image raw shape")
        x = torch.from_numpy(raw.numpy()).permute(2, 0, 1).float() / 255.0
        import torchvision.transforms.functional as TF

        px = (TF.resize(x, [S, S], antialias=True) - MEAN) / STD
        c.close(px[None], T["image/pixels"], 1e-6, "image pixels (independent torchvision)")
        c.ok(list(T["image/image_embed"].shape) == [1, C, h, h], "image_embed shape")
        c.close(T["image/image_embed"], T["image/backbone_fpn.2"] + wsd["no_mem_embed"].reshape(1, -1, 1, 1), 1e-6,
                "image_embed = fpn2 + no_mem_embed")
        for i in range(2):
            c.ok(torch.equal(T[f"image/high_res_feats.{i}"], T[f"image/backbone_fpn.{i}"]), "high_res == fpn")
        for i in range(4):
            e = wsd["image_encoder.trunk.patch_embed.proj.weight"].shape[0]
            c.ok(list(T[f"image/trunk.{i}"].shape) == [1, e * 2 ** i, S // 4 // 2 ** i, S // 4 // 2 ** i], f"trunk.{i} shape")
        # full replay through the official predictor (our own sets only: the
        # synthetic image is regenerated from the seed)
        if fx["generator"] == G.GENERATOR:
            with torch.no_grad():
                ip = fx.get("postprocessing", {}).get("image_predictor", {})
                pp = {k: ip[k] for k in ("max_hole_area", "max_sprinkle_area") if ip.get(k, 0) > 0}
                restore = G.enable_cpu_hole_filling(dict(calls=0, pixels_filled=0, labeller_calls=0)) if pp else None
                spec = dict(image_size=S, orig_hw=im["orig_hw"], seed=fx["seed"], image_postprocess=pp)
                _, T2 = G.run_image_part(model, spec, [])
                if restore:
                    restore()
            for k, v in T2.items():
                tol = 1e-4 * max(1.0, T[k].float().abs().max().item()) if T[k].dtype == torch.float32 else 0
                c.close(v, T[k], tol, f"replay {k}")
        for case in im["cases"]:
            t = case["tensors"]
            P = T[t["model_point_coords"]].shape[1]
            c.ok(T[t["sparse_embeddings"]].shape[1] == P + 1, f"{case['name']}: padding point")
            M = 3 if case["multimask_output"] else 1
            c.ok(list(T[t["low_res_masks"]].shape) == [M, S // 4, S // 4], f"{case['name']}: low_res shape")
            c.ok(T[t["low_res_masks"]].abs().max() <= 32.0, f"{case['name']}: clamp")
            if "box" in case:
                c.ok(T[t["model_point_labels"]][0, :2].tolist() == [2, 3], f"{case['name']}: box first")

    # --- video part
    if "video" in fx:
        v = fx["video"]
        Hv, Wv = v["video_hw"]
        fr = T["video/frames"]
        c.ok(list(fr.shape) == [v["num_frames"], 3, S, S], "frames shape")
        for j, fi in enumerate(v["raw_rgb_frames"]):
            r = T["video/raw_rgb"][j].numpy()
            c.ok(list(r.shape) == [Hv, Wv, 3], "video raw shape")
            ref = np.array(Image.fromarray(r).resize((S, S))) / 255.0
            ref = (torch.from_numpy(ref).permute(2, 0, 1).float() - MEAN) / STD
            c.close(ref, fr[fi], 1e-5, f"video frame {fi} (independent PIL bicubic)")
        c.ok(list(T["video/maskmem_pos_enc"].shape) == [1, Cm, h, h], "maskmem_pos_enc shape")
        for call in v["calls"]:
            t = call["tensors"]
            pm, sc = T[t["pred_masks"]], T[t["object_score_logits"]]
            c.ok(list(pm.shape) == [1, 1, S // 4, S // 4], "pred_masks shape")
            if not call["mask_inputs"] and sc.item() <= 0:
                c.ok(bool((pm == -1024).all()), f"call {call['index']}: -1024 when absent")
            if call["mask_inputs"]:
                c.ok(abs(abs(sc.item()) - 10.0) < 1e-6, "mask prompt score +-10")
            c.ok(("maskmem_features" in t) == call["run_mem_encoder"], "maskmem iff run_mem_encoder")
            pp = fx.get("postprocessing", {})
            if pp.get("fill_hole_applied"):
                # After filling, no background component of at most
                # fill_hole_area pixels is left (labelled independently here).
                from scipy import ndimage

                lab, n = ndimage.label((pm[0, 0] <= 0).numpy(), structure=np.ones((3, 3), dtype=int))
                small = [a for a in np.bincount(lab.ravel())[1:] if a <= pp["fill_hole_area"]]
                c.ok(not small, f"call {call['index']}: unfilled holes of {small} pixels")
        for o in v["outputs"]:
            t = o["tensors"]
            if "video_res_masks" in t:
                c.ok(torch.equal(T[t["video_res_binary"]], T[t["video_res_masks"]] > 0), "binary = masks > 0")
                if "masks_in" in t:
                    up = F.interpolate(T[t["masks_in"]], size=(Hv, Wv), mode="bilinear", align_corners=False)
                    c.close(up, T[t["video_res_masks"]], 1e-5, "video_res_masks = bilinear(masks_in)")
        for m in v["memory_attention"]:
            t = m["tensors"]
            c.ok(T[t["memory"]].shape[0] == m["num_memory_tokens"] and T[t["memory"]].shape[2] == Cm, "memory tokens")
            c.ok(list(T[t["curr"]].shape) == [h * h, 1, C], "curr shape")
            # recompute with the official module (teacher-forced from the stored inputs)
            with torch.no_grad():
                out = vp.memory_attention(curr=[T[t["curr"]]], curr_pos=[T[t["curr_pos"]]], memory=T[t["memory"]],
                                          memory_pos=T[t["memory_pos"]], num_obj_ptr_tokens=m["num_obj_ptr_tokens"])
            c.close(out, T[t["output"]], 1e-4 * max(1.0, T[t["output"]].abs().max().item()), f"memory_attention call {m['call']}")

    # --- one-prompt part: replay the bank bookkeeping from the stored tensors
    if "one_prompt" in fx:
        op = fx["one_prompt"]
        bank = []  # (src, F, iou, E)
        for img in op["images"]:
            t = img["tensors"]
            c.ok([b[0] for b in bank] == img["bank_before"], f"img {img['index']}: bank_before")
            if bank:
                x = T[t["vision_feats"]][0].permute(1, 2, 0).reshape(-1)  # (HW, C) order
                E = torch.stack([b[3] for b in bank])
                cos = F.normalize(E, dim=1) @ F.normalize(x, dim=0)
                p = F.softmax(cos, dim=0)
                c.close(p, torch.tensor(img["pickup"]["probabilities"]), 1e-5, f"img {img['index']}: probabilities")
            else:
                c.close(T[t["conditioned_feats"]], T[t["vision_feats"]], 0.0, "image 0 unconditioned")
            Fn = T[t["maskmem_features"]]
            iou = T[t["iou_predictions"]][0, 0]
            entry = (img["index"], Fn, iou, T[t["conditioned_feats"]][0].reshape(-1))
            K = op["bank_size"]
            if len(bank) < K:
                bank.append(entry)
                act = "append"
            else:
                B = F.normalize(torch.stack([b[1].reshape(-1).float() for b in bank]), dim=1)
                M = B @ B.t()
                M.fill_diagonal_(float("-inf"))
                s = B @ F.normalize(Fn.reshape(-1).float(), dim=0)
                a = int(torch.argmin(s))
                bi = int(torch.argmax(M[a]))
                if s[a] < M[a, bi]:
                    if iou > bank[bi][2] - op["iou_margin"]:
                        bank.pop(bi)
                        bank.append(entry)
                        act = "replace"
                    else:
                        act = "keep_iou"
                else:
                    act = "keep_similarity"
            c.ok(act == img["bank_update"]["action"], f"img {img['index']}: action {act} vs {img['bank_update']['action']}")
            c.ok([b[0] for b in bank] == [e["source_image"] for e in img["bank_after"]], f"img {img['index']}: bank_after")
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="tests/fixtures")
    ap.add_argument("sets", nargs="*")
    a = ap.parse_args()
    sets = a.sets or sorted(x for x in os.listdir(a.root) if os.path.isfile(os.path.join(a.root, x, "fixture.json")))
    bad = 0
    for s in sets:
        c = check_set(os.path.join(a.root, s))
        print(f"{s}: {c.n} checks, {len(c.fail)} failed")
        for f in c.fail[:20]:
            print("   FAIL", f)
        bad += len(c.fail)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
