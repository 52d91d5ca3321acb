"""PV3D Studio core library: model, renderer, training, data, inversion, meshes and metrics."""
from .io import CheckpointError, load_discriminators, load_generator

__all__ = ["load_generator", "load_discriminators", "CheckpointError"]
__version__ = "0.1.0"
