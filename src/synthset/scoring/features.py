"""Pluggable image feature extractors (the fidelity metrics use them).

An :class:`Extractor` maps uint8 images ``N×C×H×W`` (decoded at its ``image_size`` and
``channels``) to float features ``N×d``. Choices (``evaluate.fidelity.extractor``):

- ``inception``: Inception-v3 from a local weights file: torch-fidelity's FID weights
  (``pt_inception-2015-12-05-*.pth``, 1008 logits; the standard FID network, needs
  torch-fidelity) or torchvision's ImageNet weights (1000 logits). Features: 2048-d pool.
- ``classifier``: a classifier trained on the real train split (penultimate layer, through
  :func:`penultimate`); built by ``evaluate/fidelity.py``, which owns the training.
- ``torchscript:<file>``: a TorchScript module taking float images in [0, 1], ``N×3×S×S``.
- ``torchvision:<arch>`` / ``timm:<arch>`` with ``weights`` (a .safetensors state dict):
  ImageNet-normalised inputs, features = the input of the model's last linear layer.

Weights load only through safetensors or ``torch.load(weights_only=True)`` (:func:`load_state_dict`,
the one weight reader, also behind ``evaluate.classifier_weights``); nothing downloads.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from synthset.errors import SynthsetError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_SIZE = 299


@dataclass
class Extractor:
    """A named feature function of uint8 images decoded at ``image_size`` / ``channels``."""

    name: str
    image_size: int
    channels: int
    fn: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    work_size: int = 0  # the size the network runs at (0: image_size)
    #: the classifier's last layer (features → class logits) when the extractor is a classifier
    head: nn.Linear | None = None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Features (float64, on the CPU) of uint8 ``images``, computed in batches."""
        out = [
            self.fn(images[i : i + batch_size].to(self.device)).flatten(1).double().cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, 0, dtype=torch.float64)


# ----------------------------------------------------------------------------- weights


def load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a PyTorch file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise SynthsetError(f"{what}: weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        raise SynthsetError(
            f"{what}: cannot load weights from {path} ({first_line(exc)})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SynthsetError(f"{what}: {path} is not a state dict of tensors")
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise SynthsetError(
            f"{what}: the weights do not fit the model ({first_line(exc)})"
        ) from None


def _to_rgb_float(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``N×C×H×W`` → float ``N×3×size×size`` in [0, 1] (gray repeated, antialiased)."""
    x = x.float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x


def _imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def last_linear(model: nn.Module, what: str) -> nn.Linear:
    """The last ``nn.Linear`` layer of ``model`` (a classifier's head)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise SynthsetError(f"{what}: the model has no linear layer to take features before")
    return linears[-1]


def penultimate(model: nn.Module, what: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running ``model`` and returning the input of its last ``nn.Linear`` layer
    (the penultimate features of a classifier)."""
    captured: list[torch.Tensor] = []

    def keep_latest(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        # only the latest input: a hook left by an earlier call must not grow with every forward
        captured[:] = [args[0]]

    last_linear(model, what).register_forward_pre_hook(keep_latest)

    def features(x: torch.Tensor) -> torch.Tensor:
        captured.clear()
        model(x)
        return captured[-1]

    return features


# ----------------------------------------------------------------------------- builders


def inception_extractor(weights: Path | None, image_size: int, device: torch.device) -> Extractor:
    """Inception-v3 pool features (2048-d) from a local weights file."""
    what = "evaluate.fidelity.inception_weights"
    if weights is None:
        raise SynthsetError(
            f"{what} is not set: give a local Inception-v3 weights file (torch-fidelity's "
            "pt_inception-2015-12-05 .pth or torchvision's inception_v3 weights), or set "
            "evaluate.fidelity.extractor: classifier"
        )
    state = load_state_dict(weights, what)
    fc = state.get("fc.weight")
    if fc is None or fc.shape[1] != 2048:
        raise SynthsetError(f"{what}: {weights} does not hold Inception-v3 weights (no 2048-d fc)")
    if fc.shape[0] == 1008:
        return _fidelity_inception(state, image_size, device)
    import torchvision

    model = torchvision.models.inception_v3(
        weights=None,
        aux_logits="AuxLogits.fc.weight" in state,
        init_weights=False,
        num_classes=fc.shape[0],
        transform_input=True,
    )
    _load_into(model, state, what)
    model.fc = nn.Identity()
    model.eval().to(device)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return model(_imagenet_normalize(_to_rgb_float(x, INCEPTION_SIZE)))

    return Extractor("inception-v3-torchvision", image_size, 3, fn, device, INCEPTION_SIZE)


def _fidelity_inception(
    state: dict[str, torch.Tensor], image_size: int, device: torch.device
) -> Extractor:
    """The TF-ported FID Inception network of torch-fidelity (through torchmetrics)."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError:  # pragma: no cover - torchmetrics is a core dependency
        _TORCH_FIDELITY_AVAILABLE = False
    if not _TORCH_FIDELITY_AVAILABLE:
        raise SynthsetError(
            "evaluate.fidelity.inception_weights holds torch-fidelity's FID Inception weights: "
            "pip install torch-fidelity (or: pip install 'synthset[fidelity]')"
        )
    # torch-fidelity reads the file with weights_only=False: hand it our own re-serialisation
    # of the tensors loaded safely above, never the user's file itself
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    try:
        net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=buf
        )
    except RuntimeError as exc:
        raise SynthsetError(
            f"evaluate.fidelity.inception_weights: the weights do not fit ({first_line(exc)})"
        ) from None
    net.to(device)

    def fn(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return net(x.contiguous())

    return Extractor("inception-v3-fid", image_size, 3, fn, device, INCEPTION_SIZE)


def user_extractor(
    spec: str, weights: Path | None, image_size: int, device: torch.device
) -> Extractor:
    """``torchscript:<file>``, ``torchvision:<arch>`` or ``timm:<arch>`` (with ``weights``)."""
    source, _, target = spec.partition(":")
    what = f"evaluate.fidelity.extractor {spec!r}"
    if source == "torchscript":
        path = Path(target)
        if not path.is_file():
            raise SynthsetError(f"{what}: TorchScript file not found: {path}")
        try:
            module = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as exc:
            raise SynthsetError(f"{what}: not a TorchScript file ({first_line(exc)})") from None

        def ts(x: torch.Tensor) -> torch.Tensor:
            return module(_to_rgb_float(x, image_size))

        return Extractor(f"user:{path.name}", image_size, 3, ts, device)
    if source not in ("torchvision", "timm") or not target:
        raise SynthsetError(
            f"evaluate.fidelity.extractor: unknown extractor {spec!r}; use auto, inception, "
            "classifier, torchscript:<file>, torchvision:<arch> or timm:<arch>"
        )
    if weights is None:
        raise SynthsetError(
            f"{what} needs evaluate.fidelity.weights: a .safetensors file of the model's weights"
        )
    model = _build_arch(source, target, what)
    _load_into(model, load_state_dict(weights, "evaluate.fidelity.weights"), what)
    model.eval().to(device)
    feats = penultimate(model, what)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return feats(_imagenet_normalize(_to_rgb_float(x, image_size)))

    return Extractor(f"user:{source}:{target}", image_size, 3, fn, device)


def _build_arch(source: str, name: str, what: str) -> nn.Module:
    try:
        if source == "timm":
            import timm

            return timm.create_model(name, pretrained=False)
        import torchvision

        return torchvision.models.get_model(name, weights=None)
    except ImportError:
        raise SynthsetError(f"{what} needs timm: pip install timm") from None
    except (RuntimeError, ValueError, KeyError) as exc:
        raise SynthsetError(f"{what}: cannot build {name!r} ({first_line(exc)})") from None
