"""synthset: synthetic labeled image datasets from diffusion models, scored by CAS."""

__version__ = "0.1.0"
