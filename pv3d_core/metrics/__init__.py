"""The paper's evaluation metrics, computed as the official evaluation scripts compute them.

- :mod:`.fvd`: Fréchet distance and the Kinetics-400 I3D feature network (user-supplied weights).
- :mod:`.identity`: multi-view identity consistency (ArcFace IR-SE50 with user weights; dlib offline).
- :mod:`.chamfer`: Chamfer distance between the depth point clouds of two renders.
- :mod:`.warping`: multi-view warping error (side view splatted into the frontal view through depth).
- :mod:`.geometry`: depth error against the ground truth of synthetic talking heads.
- :mod:`.evaluate`: the renders of the official protocol, all metrics, ``pv3d eval``.

Heavy imports (torch models, dlib, scipy) happen inside the functions that need them, so importing
this package (every ``pv3d`` command does, to register ``pv3d eval``) stays cheap.
"""

from ..errors import MetricError

__all__ = ["MetricError"]
