"""Classifiers for CAS, picked by name: ``small_cnn``, any torchvision model, or ``timm:<name>``.

Every model is built untrained (no weight downloads), takes ``in_channels`` input channels and
returns ``num_classes`` logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from synthset.errors import SynthsetError, first_line
from synthset.scoring.features import load_state_dict

SMALL_CNN = "small_cnn"


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """A compact VGG-style CNN for 8×8 … 64×64 inputs: three conv-bn-relu stages, max-pooling
    while the feature map is at least 8 pixels, then global average pooling and a linear head.
    ``width`` is the first stage's channel count (then 2×, 4×)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 8,
        width: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, c_in = image_size, in_channels
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            layers += _conv_bn(c_in, c_out)
            if stage < 2:
                layers += _conv_bn(c_out, c_out)
                if size >= 8:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class _BasicBlock(nn.Module):
    """Two 3×3 conv-bn layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016, section 4.2): depth 6n+2, three stages of n basic
    blocks with 16, 32 and 64 channels; ``cifar_resnet20`` is n = 3 (0.27 M parameters)."""

    def __init__(self, num_classes: int, in_channels: int = 3, n: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        ]
        c_in = 16
        for stage, c_out in enumerate((16, 32, 64)):
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


CIFAR_RESNETS = {"cifar_resnet20": 3, "cifar_resnet32": 5, "cifar_resnet44": 7, "cifar_resnet56": 9}


def load_weights(model: nn.Module, path: Path) -> None:
    """Load local weights into ``model``, read by ``scoring.features.load_state_dict``
    (safetensors, or a state dict loaded with ``weights_only=True``); tensors whose shape differs
    (a new head) keep their fresh values."""
    path = Path(path)
    if not path.is_file():
        raise SynthsetError(f"evaluate.classifier_weights: no file at {path}")
    state = load_state_dict(path, "evaluate.classifier_weights")
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if 2 * len(usable) < len(own):  # a new head is fine; a different architecture is not
        raise SynthsetError(
            f"evaluate.classifier_weights: only {len(usable)} of the {len(own)} tensors of "
            f"evaluate.classifier match {path} (wrong architecture?)"
        )
    model.load_state_dict(usable, strict=False)


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d] | None:
    """(parent module, attribute name, conv) of the first Conv2d in ``model``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                return parent, name, child
    return None


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    found = _first_conv(model)
    if found is None or found[2].in_channels == in_channels:
        return
    parent, name, conv = found
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        1,
        conv.bias is not None,
        conv.padding_mode,
    )
    setattr(parent, name, new)


def _build_torchvision(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    import torchvision

    kwargs: dict[str, object] = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs |= {"aux_logits": False, "init_weights": True}
    if name.startswith("vit_"):
        kwargs["image_size"] = image_size
    try:
        model = torchvision.models.get_model(name, **kwargs)
    except (ValueError, TypeError, AssertionError) as exc:
        raise SynthsetError(f"evaluate.classifier {name!r}: cannot build it ({exc})") from None
    if hasattr(model, "conv1") and hasattr(model, "maxpool") and image_size <= 64:
        # ResNet family on tiny images: CIFAR-style stride-1 3×3 stem, no max-pool.
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    _adapt_first_conv(model, in_channels)
    return model


def _build_timm(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise SynthsetError(
            f"evaluate.classifier 'timm:{name}' needs timm: pip install timm"
        ) from None
    try:
        kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": in_channels}
        try:  # transformers (ViT, DeiT, ...) take the input size; CNNs reject the argument
            return timm.create_model(name, img_size=image_size, **kwargs)
        except TypeError:
            return timm.create_model(name, **kwargs)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise SynthsetError(f"evaluate.classifier 'timm:{name}': cannot build it ({exc})") from None


def build_classifier(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """An untrained classifier by name; checked with one forward pass at ``image_size``."""
    if num_classes < 2:
        raise SynthsetError(f"a classifier needs at least 2 classes (got {num_classes})")
    if name == SMALL_CNN:
        model: nn.Module = SmallCNN(num_classes, in_channels, image_size)
    elif name in CIFAR_RESNETS:
        model = CifarResNet(num_classes, in_channels, CIFAR_RESNETS[name])
    elif name.startswith("timm:"):
        model = _build_timm(name.removeprefix("timm:"), num_classes, in_channels, image_size)
    elif name in _torchvision_names():
        model = _build_torchvision(name, num_classes, in_channels, image_size)
    else:
        options = ", ".join(_torchvision_names()[:6])
        raise SynthsetError(
            f"evaluate.classifier: unknown classifier {name!r}; use small_cnn, cifar_resnet20, "
            "a torchvision "
            f"classification model ({options}, ...) or timm:<name>"
        )
    _check_forward(model, name, num_classes, in_channels, image_size)
    return model


def _check_forward(
    model: nn.Module, name: str, num_classes: int, in_channels: int, image_size: int
) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = logits(model(torch.zeros(1, in_channels, image_size, image_size)))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise SynthsetError(
            f"evaluate.classifier {name!r} does not run on {image_size}×{image_size} images "
            f"({first_line(exc)}); set evaluate.image_size larger or use small_cnn"
        ) from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, num_classes):
        raise SynthsetError(
            f"evaluate.classifier {name!r} returns shape {tuple(out.shape)}, "
            f"expected (batch, {num_classes})"
        )


def logits(output: object) -> torch.Tensor:
    """The logits tensor of a model output (plain tensor, or a tuple / named tuple of them)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise SynthsetError(f"classifier output of type {type(output).__name__} has no logits tensor")


# Per-channel (mean, std) of the pixels in [0, 1] that pretrained weights expect.
INPUT_STATISTICS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
Statistics = tuple[tuple[float, ...], tuple[float, ...]]


class Normalized(nn.Module):
    """``model`` fed the images (in [-1, 1]) as ``(x01 - mean) / std`` per channel, the input
    its pretrained weights were trained on. Its state dict is ``model``'s under ``model.``."""

    def __init__(self, model: nn.Module, statistics: Statistics, in_channels: int) -> None:
        super().__init__()
        mean, std = (torch.tensor(s, dtype=torch.float32) for s in statistics)
        if in_channels != len(mean):  # gray images (or another channel count): the average
            mean, std = mean.mean().repeat(in_channels), std.mean().repeat(in_channels)
        self.model = model
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(((x + 1) / 2 - self.mean) / self.std)


def input_statistics(
    model: nn.Module, name: str, choice: str, pretrained: bool
) -> Statistics | None:
    """The (mean, std) that ``evaluate.input_normalization`` asks for; None: [-1, 1] as is.
    ``auto`` is the pretrained weights' own: timm's ``pretrained_cfg`` for ``timm:`` models,
    ImageNet's for torchvision models, none from scratch or for small_cnn / cifar_resnet."""
    if choice in INPUT_STATISTICS:
        return INPUT_STATISTICS[choice]
    if choice != "auto" or not pretrained or name == SMALL_CNN or name in CIFAR_RESNETS:
        return None
    if name.startswith("timm:"):
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if cfg.get("mean") and cfg.get("std"):
            return tuple(cfg["mean"]), tuple(cfg["std"])
    return INPUT_STATISTICS["imagenet"]
