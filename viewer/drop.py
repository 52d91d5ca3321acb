"""What a file dropped on the window is: a checkpoint, an image, or something we reject."""
from __future__ import annotations

from pathlib import Path

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def classify(path) -> tuple[str, str]:
    """("checkpoint" | "image" | "reject", reason). Looks at the name and existence only."""
    p = Path(path)
    if not p.exists():
        return "reject", f"{p} does not exist"
    if p.is_dir():
        return "reject", f"{p.name} is a folder: drop a checkpoint (.safetensors or .ckpt) or a portrait image"
    suffix = p.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint", ""
    if suffix in IMAGE_SUFFIXES:
        return "image", ""
    return "reject", (f"{p.name} is neither a checkpoint (.safetensors, .ckpt) nor a portrait image "
                      f"({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES[:4])})")
