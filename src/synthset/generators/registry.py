"""Generators by ``generate.generator.kind``, one line each, imported only when used."""

from __future__ import annotations

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


def build_generator(spec: GeneratorSpec, root: Path | None = None) -> Generator:
    """The generator ``spec`` asks for, with its model loaded."""
    return GENERATORS.load(spec.kind)(spec, root)
