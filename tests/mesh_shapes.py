"""A tri-plane model with known geometry, for mesh tests and the mesh benchmark."""
import copy
import math

import torch

from pv3d_core.render import cameras

# ---------------------------------------------------------------------------- a model with known geometry
#
# The random tiny model's density is a smooth blob with no meaningful surface, so the checks below
# use the tiny generator's architecture with hand-set tri-planes and decoder whose density is an
# off-centre ellipsoid with a sharp wall (known in closed form). Plane channel 0 holds
# K (rho² − |uv − centre|²) on each plane; the decoder's first hidden unit reads only that channel
# (averaged over the planes), so sigma = A·softplus(avg − A0) + B is monotonic in it and crosses the
# default iso-level 10 where avg = A0: the ellipsoid 3(x−cx)² + (y−cy)² + 2(z−cz)² = Q (normalised
# coordinates; the weights in (x, y, z) follow from the planes (x, y), (x, z) and (z, x)). The other
# channels hold smooth noise that drives the colour features, so vertex colours vary.

K, A0, SHARP, Q = 20.0, 2.0, 200.0, 0.49
CENTRE_N = (0.16, 0.2, 0.1)            # normalised (x, y, z); world = normalised * box_warp / 2


def shape_model(tiny_generator):
    """(G, planes, ws): a deep copy of ``tiny_generator`` whose density is the ellipsoid above."""
    G = copy.deepcopy(tiny_generator)
    P, C = G.config.plane_resolution, G.plane_channels
    g = torch.Generator().manual_seed(0)
    u = (torch.arange(P, dtype=torch.float32) * 2 + 1) / P - 1      # pixel centres (align_corners False)
    vv, uu = torch.meshgrid(u, u, indexing="ij")                    # grid_sample: u along W, v along H
    cx, cy, cz = CENTRE_N
    rho2 = Q / 3 + A0 / K
    planes = torch.zeros(1, 3, C, P, P)
    for p, (cu, cv) in enumerate([(cx, cy), (cx, cz), (cz, cx)]):
        planes[0, p, 0] = K * (rho2 - (uu - cu) ** 2 - (vv - cv) ** 2)
    planes[0, :, 1:] = torch.nn.functional.avg_pool2d(torch.randn(3, C - 1, P, P, generator=g), 9, 1, 4) * 3
    l1, l2 = G.decoder.net[0], G.decoder.net[2]
    with torch.no_grad():
        w1 = torch.randn(l1.out_features, C, generator=g) * 0.5
        w1[0], w1[:, 0] = 0, 0
        w1[0, 0] = 1.0
        l1.weight.copy_(w1 / l1.weight_gain)
        l1.bias.zero_()
        l1.bias[0] = -A0 / l1.bias_gain
        w2 = torch.randn(l2.out_features, l1.out_features, generator=g) * 2
        w2[0], w2[1:, 0] = 0, 0
        w2[0, 0] = SHARP
        l2.weight.copy_(w2 / l2.weight_gain)
        l2.bias.zero_()
        l2.bias[0] = (10.0 - SHARP * math.log(2)) / l2.bias_gain
    ws = G.mapping(torch.randn(1, G.z_dim, generator=g), torch.from_numpy(cameras.frontal())[None])
    return G, planes, ws
