import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "official_pv3d_small"
ARTIFACTS = ROOT / "tests" / "artifacts"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# PV3D_TEST_THREADS=1 when another job (a training) holds a core: two-thread ops then wait on a
# descheduled thread and everything runs 5-20x slower
torch.set_num_threads(int(os.environ.get("PV3D_TEST_THREADS", 0)) or max(1, min(2, os.cpu_count() or 1)))


def need_fixture(*paths, shared=None):
    """Skip when ../shared is absent (a user's clone); when it is there, a missing fixture is a failure.
    ``paths``: the files needed (default: the official checkpoint of the parity fixture)."""
    shared = SHARED if shared is None else shared
    if not shared.is_dir():
        pytest.skip(f"no shared/ folder at {shared} (it is beside developer clones and in CI only)")
    for p in paths or (FIXTURE / "official_format.ckpt",):
        if not p.exists():
            pytest.fail(f"{shared} is here but the parity fixture {p} is missing")


@pytest.fixture(scope="session")
def tiny_generator():
    from pv3d_core.config import preset
    from pv3d_core.io import build_generator

    torch.manual_seed(1234)
    G = build_generator(preset("tiny"))
    # Random init gives near-empty density; perturb so that every layer matters in the checks.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
            elif name.endswith(".bias") and p.ndim == 1:
                p.normal_(0, 0.1)
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tiny_generator):
    from pv3d_core.io import save_generator

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_generator(path, tiny_generator, name="tiny")
    return path


@pytest.fixture(scope="session", autouse=True)
def _kernel_verdicts(tmp_path_factory):
    """The kernels' self-check verdicts of a test session go to a file of its own, never the user's cache
    (subprocesses of the tests inherit it)."""
    path = tmp_path_factory.mktemp("kernel-verdicts") / "selfcheck.json"
    old = os.environ.get("PV3D_KERNEL_VERDICTS")
    os.environ["PV3D_KERNEL_VERDICTS"] = str(path)
    yield path
    if old is None:
        os.environ.pop("PV3D_KERNEL_VERDICTS", None)
    else:
        os.environ["PV3D_KERNEL_VERDICTS"] = old
