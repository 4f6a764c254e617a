"""Generators by ``generate.generator.kind``, one line each, imported only when used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from synthset.generators.base import Generator
from synthset.recipe import GeneratorSpec
from synthset.registry import Registry

#: A generator class takes ``(spec, root)``: its recipe section (an adapter has filled in what its
#: artifact supplies) and the run folder, which resolves the relative paths of real-image items.
GENERATORS: Registry[type[Generator]] = Registry(
    "generate.generator.kind",
    {
        "tiny": "synthset.generators.tiny:TinyDiffusionGenerator",
        "text2image": "synthset.generators.text2image:Text2ImageGenerator",
        "img2img": "synthset.generators.img2img:Img2ImgGenerator",
        "inpaint": "synthset.generators.inpaint:InpaintGenerator",
        "inversion": "synthset.generators.inversion:InversionGenerator",
    },
)


#: What generation records for each ``labels.method``: a recorder takes ``(generator, labels spec,
#: class names)`` and returns the generator that also hands out the labels' side files.
LABEL_RECORDERS: Registry[Callable[..., Generator]] = Registry(
    "labels.method",
    {
        "cross_attention": "synthset.generators.attention:AttentionRecordingGenerator",
        "inpaint_mask": "synthset.generators.inpaint:keep_object_masks",
    },
)


def build_generator(spec: GeneratorSpec, root: Path | None = None) -> Generator:
    """The generator ``spec`` asks for, with its model loaded."""
    return GENERATORS.load(spec.kind)(spec, root)
