"""Hostile files for the tests: decompression bombs, checkpoints with a config of one's choosing."""
from __future__ import annotations

import json


def write_ours(path, config: dict, tensors: dict, meta: dict | None = None, raw_config: str | None = None):
    """Our checkpoint format with any config JSON (or raw metadata text), as a hostile writer would make it."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"format": "pv3d-studio/1", "pv3d_config": raw_config or json.dumps(config),
                        "pv3d_meta": json.dumps(meta or {})})
    return path


def bomb_png(path, w, h):
    """A valid all-black grayscale PNG of w x h pixels in a few hundred KB (a decompression bomb)."""
    import struct
    import zlib

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    c = zlib.compressobj(9)
    row = b"\0" * (w + 1)
    body = b"".join(c.compress(row) for _ in range(h)) + c.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path
