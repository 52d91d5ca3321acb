"""What a file dropped on the window (or opened) is: a checkpoint, an image, a camera path, or something
we reject; and whether an "image" really is one."""
from __future__ import annotations

from pathlib import Path

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
PATH_SUFFIXES = (".json",)


def classify(path) -> tuple[str, str]:
    """("checkpoint" | "image" | "path" | "reject", reason). Looks at the name and existence only."""
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
    if suffix in PATH_SUFFIXES:
        return "path", ""
    return "reject", (f"{p.name} is neither a checkpoint (.safetensors, .ckpt) nor a portrait image "
                      f"({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES[:4])}) nor a camera path (.json)")


def image_problem(path) -> str | None:
    """None if ``path`` opens as an image, else why not (checked before a fit starts, so that a file
    merely named .png is refused at once, like every other bad drop)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            im.verify()
    except (UnidentifiedImageError, SyntaxError, ValueError) as e:
        return f"{p.name} is not an image ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else 'unreadable'})"
    except OSError as e:
        return f"cannot read {p.name}: {e.strerror or e}"
    except Exception as e:  # noqa: BLE001 - any decoder failure means "not a usable image"
        return f"{p.name} is not an image ({type(e).__name__})"
    return None
