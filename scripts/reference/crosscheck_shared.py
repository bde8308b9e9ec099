#!/usr/bin/env python3
"""Cross-check gen_fixtures.py against independently generated fixture sets
(e.g. /work/shared/fixtures/tiny-sam2.{0,1}).

Replays each set's own inputs through this generator's capture code and
compares every tensor and JSON record:
  * image part: its raw_rgb and prompts through run_image_part;
  * video part: its model-input frames and events through run_video_part;
  * one-prompt part: its images, clicks and recorded bank picks through
    run_oneprompt_once (the raw multinomial draw is not portable across torch
    builds; FORMAT.md replays the recorded index).

    scripts/reference/.venv/bin/python scripts/reference/crosscheck_shared.py /work/shared/fixtures/tiny-sam2.1 ...
"""

import json
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_fixtures as G  # noqa: E402


def rounded(o):
    return json.loads(json.dumps(o), parse_float=lambda x: round(float(x), 3))


def worst_per_role(mine, ref, skip=()):
    worst = {}
    for k in set(mine) & set(ref):
        if k in skip:
            continue
        a, b = mine[k], ref[k]
        if a.shape != b.shape:
            worst[k] = float("inf")
            continue
        d = (a != b).float().mean().item() if a.dtype == torch.bool else (a.float() - b.float()).abs().max().item()
        role = k.split("/")[-1]
        worst[role] = max(worst.get(role, 0.0), d)
    return {k: float(f"{v:.2e}") for k, v in sorted(worst.items())}


def compare_json(mine, ref, keys, label):
    bad = []
    for key in keys:
        a, b = rounded(mine[key]), rounded(ref[key])
        if isinstance(a, list):
            for x in a + b:
                if isinstance(x, dict):
                    for extra in ("pred_masks_stats", "obj_idx", "frame_idx", "reverse", "chosen_token"):
                        if key in ("memory_attention", "cases") or extra == "pred_masks_stats":
                            x.pop(extra, None)
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            bad.append(key)
    print(f"  {label} JSON records differing (3-digit rounding): {bad or 'none'}")
    return bad


def main(dirs):
    for d in dirs:
        fx = json.load(open(os.path.join(d, "fixture.json")))
        wsd = load_file(os.path.join(d, "weights.safetensors"))
        S = fx["model"]["image_size"]
        print(d)
        if "image" in fx:
            T = load_file(os.path.join(d, "image.safetensors"))
            m = G.hydra_build(d, video=False)
            m.load_state_dict(wsd, strict=True)
            m.eval()
            keep = ("name", "multimask_output", "point_coords", "point_labels", "box")
            cases = [{k: v for k, v in c.items() if k in keep} for c in fx["image"]["cases"]]
            with torch.no_grad():
                js, T2 = G.run_image_part(m, dict(image_size=S, orig_hw=fx["image"]["orig_hw"], seed=0), [],
                                          raw=T["image/raw_rgb"].numpy(), cases=cases)
            print("  image: same tensor names", sorted(T2) == sorted(T), "worst |diff| per role", worst_per_role(T2, T))
            compare_json({"cases": js["cases"]}, fx["image"], ["cases"], "image")
        if "video" in fx:
            V = load_file(os.path.join(d, "video.safetensors"))
            v = fx["video"]
            vp = G.hydra_build(d, video=True)
            vp.load_state_dict(wsd, strict=True)
            vp.eval()
            evs = []
            for e in v["events"]:
                e2 = {k: e[k] for k in e if k in ("type", "frame_idx", "obj_id", "box", "points", "labels",
                                                  "start_frame_idx", "reverse", "clear_old_points")}
                if e["type"] == "add_new_mask":
                    e2["mask"] = V[e["mask"]].numpy()
                evs.append(e2)
            with tempfile.TemporaryDirectory() as td:
                js, T2 = G.run_video_part(vp, dict(image_size=S, video_hw=v["video_hw"], seed=1), [], td,
                                          frames_override=V["video/frames"], events=evs)
            names = (set(T2) ^ set(V)) - {"video/raw_rgb"}
            print("  video: tensor names differing", sorted(names)[:6] or "none",
                  "worst |diff| per role (bool: fraction)", worst_per_role(T2, V, skip=("video/raw_rgb",)))
            compare_json(js, v, ["events", "calls", "cond_outputs", "outputs", "memory_attention",
                                 "memory_bf16_upcast_calls", "obj_ids"], "video")
        if "one_prompt" in fx:
            op = fx["one_prompt"]
            T = load_file(os.path.join(d, "oneprompt.safetensors"))
            net = G.hydra_build(d, video=False)
            net.load_state_dict(wsd, strict=True)
            net.eval()
            imgs = [(T["oneprompt/raw_rgb"][i].numpy(), T["oneprompt/gt_masks"][i].numpy(), im["style"],
                     tuple(im["gt_click_xy"])) for i, im in enumerate(op["images"])]
            picks = {im["index"]: im["pickup"]["sampled_bank_index"] for im in op["images"] if im["pickup"]}
            js, T2, counts, sm = G.run_oneprompt_once(
                net, dict(image_size=S), 0, op["bank_size"], op["num_images"], op["iou_margin"], op["prompt_every"],
                op["multinomial_generator_seed"], images=imgs, forced_picks=picks)
            print("  one-prompt: decisions", dict(counts), "(ref", op["decision_counts"], ")",
                  "worst |diff| per role", worst_per_role(T2, T))
            trail = [(i["bank_update"]["action"], [e["source_image"] for e in i["bank_after"]]) for i in js]
            ref_trail = [(i["bank_update"]["action"], [e["source_image"] for e in i["bank_after"]]) for i in op["images"]]
            print("  one-prompt: decision trail identical", trail == ref_trail)


if __name__ == "__main__":
    main(sys.argv[1:] or ["/work/shared/fixtures/tiny-sam2.1", "/work/shared/fixtures/tiny-sam2.0"])
