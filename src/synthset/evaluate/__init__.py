"""Evaluation: CAS (train on real / synthetic / mixed images, test on held-out real images)."""

from synthset.evaluate.cas import run_cas
from synthset.evaluate.classifiers import build_classifier
from synthset.evaluate.tensors import TensorSet, load_tensors, samples_from_imagefolder

__all__ = [
    "TensorSet",
    "build_classifier",
    "load_tensors",
    "run_cas",
    "samples_from_imagefolder",
]
