"""Adaptation: learning from real images before generating (here: the tiny diffusion model).

Training code lives here; the generators that load its checkpoints live in ``synthset.generators``.
"""

from synthset.adapt.tiny_diffusion import train_tiny_diffusion

__all__ = ["train_tiny_diffusion"]
