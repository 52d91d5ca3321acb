"""Time of one portrait fit (latent + pivotal tuning, InversionConfig's defaults) on a device.

    python benchmarks/bench_fit.py [--device cuda] [--models default,pv3d-vox512] [--w-steps N] [--pti-steps N]

The fit itself (pv3d_core.invert.invert), without face detection: the target is a frame the model
rendered (seed 7, yaw 0.25, t = 0), already in the training framing, with its camera. The face
pipeline in front of it (dlib detection, landmarks, crop, PnP: about 1-3 s on a CPU) is timed by
benchmarks/bench_portrait.py, which needs dlib-bin and face-recognition-models. ``default`` is the
embedded model (with its image discriminator for the perceptual term, as `pv3d animate` uses it);
``pv3d-vox512`` is the released configuration with random weights at 512² (time does not depend on
the weights). Prints seconds per fit, steps per second and the PSNR reached.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pv3d_core.invert import InversionConfig, invert  # noqa: E402
from pv3d_core.pipeline import FrameRenderer, RenderSettings  # noqa: E402


def model(name: str, dev: torch.device):
    if name == "default":
        from pv3d_core.io import CheckpointError, load_discriminators, load_generator
        from pv3d_core.paths import default_checkpoint

        G = load_generator(default_checkpoint(), device=dev)
        try:
            d_img = load_discriminators(default_checkpoint())[0].to(dev)
        except CheckpointError:
            d_img = None
        return G, d_img
    from pv3d_core.config import preset
    from pv3d_core.io import build_generator

    torch.manual_seed(1234)
    return build_generator(preset(name)).to(dev).eval().requires_grad_(False), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="default,pv3d-vox512")
    ap.add_argument("--w-steps", type=int, default=None)
    ap.add_argument("--pti-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = InversionConfig()
    if args.w_steps is not None:
        cfg.w_steps = args.w_steps
    if args.pti_steps is not None:
        cfg.pti_steps = args.pti_steps
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {dev} ({name}); {cfg.w_steps} w + {cfg.pti_steps} PTI steps")
    for m in args.models.split(","):
        G, d_img = model(m, dev)
        s = RenderSettings(seed=7, motion_seed=0, t=0.0, yaw=0.25)
        target = FrameRenderer(G, dev).render(s).image.permute(2, 0, 1)[None].float().div(127.5).sub(1).to(dev)
        camera = s.camera(tuple(G.rendering_kwargs.get("avg_camera_pivot", (0, 0, 0.2))))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        res = invert(G, target, camera, cfg, d_img=d_img)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        sec = time.perf_counter() - t0
        steps = cfg.w_steps + cfg.pti_steps
        print(f"{m}: {G.img_resolution}² fit in {sec:.1f} s ({steps / sec:.1f} steps/s), "
              f"PSNR {res.metrics['psnr']:.2f} dB")
        del G, d_img, res
        if dev.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
