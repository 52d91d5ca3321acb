"""pv3d_core.host_memory: freed large blocks are reused (no fresh page faults), in a process of their own
(mallopt is process-wide)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Allocate and touch a 96 MB tensor, free it, then count the minor page faults of a second one.
PROBE = """
import json, resource, sys
import torch
from pv3d_core import host_memory
from pv3d_core.pipeline import FrameRenderer
if sys.argv[1] == "renderer":
    from pv3d_core.config import preset
    from pv3d_core.io import build_generator
    FrameRenderer(build_generator(preset("tiny")))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = torch.ones(24 << 20)
del a
before = faults()
b = torch.ones(24 << 20)
print(json.dumps({"faults": faults() - before, "status": host_memory.status()}))
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")


def probe(mode: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_a_cpu_renderer_makes_freed_large_blocks_reused():
    pages = (96 << 20) // 4096
    plain = probe("plain")
    kept = probe("renderer")
    assert plain["status"] == "not asked yet" and plain["faults"] > pages // 2      # fresh pages each time
    assert kept["status"] == "in force" and kept["faults"] < pages // 20            # the freed block again


@glibc
def test_the_environment_turns_it_off():
    off = probe("renderer", PV3D_KEEP_FREED_MEMORY="0")
    assert off["status"] == "off by PV3D_KEEP_FREED_MEMORY" and off["faults"] > (96 << 20) // 4096 // 2
