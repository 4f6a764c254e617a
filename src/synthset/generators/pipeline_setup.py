"""What happens to a loaded diffusers pipeline before it generates: extra weights (LoRA,
textual inversion), a tiny autoencoder, device placement or CPU offload, memory format,
attention slicing, VAE tiling and ``torch.compile``, each from the generator's recipe part."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from synthset.errors import SynthsetError, first_line

if TYPE_CHECKING:
    import torch

    from synthset.recipe import GeneratorSpec

_FIELD = "generate.generator"


def denoiser_name(pipe: Any) -> str | None:
    """Which attribute holds the pipeline's denoising network: its UNet, or its transformer
    (SD3, Flux, PixArt), or a prior."""
    for name in ("unet", "transformer", "prior"):
        if getattr(pipe, name, None) is not None:
            return name
    return None


def load_extras(pipe: Any, spec: GeneratorSpec) -> None:
    """Load the recipe's textual-inversion embeddings and LoRA weights into ``pipe``; the LoRAs
    are fused into the weights with their scales, so sampling costs nothing extra."""
    for i, ti in enumerate(spec.textual_inversion):
        if not hasattr(pipe, "load_textual_inversion"):
            raise SynthsetError(
                f"{_FIELD}.textual_inversion: {type(pipe).__name__} cannot load "
                "textual-inversion embeddings; remove the entry or use an SD 1.x/2.x/XL model"
            )
        kwargs = {"token": ti.token, "weight_name": ti.weight_name}
        try:
            pipe.load_textual_inversion(ti.path, **{k: v for k, v in kwargs.items() if v})
        except (OSError, ValueError, KeyError) as exc:
            raise SynthsetError(
                f"{_FIELD}.textual_inversion[{i}].path: cannot load {ti.path!r}: {first_line(exc)}"
            ) from None
    if not spec.lora:
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise SynthsetError(
            f"{_FIELD}.lora: {type(pipe).__name__} cannot load LoRA weights; remove 'lora'"
        )
    names = []
    for i, lora in enumerate(spec.lora):
        name = f"lora{i}"
        kwargs = {"weight_name": lora.weight_name} if lora.weight_name else {}
        try:
            pipe.load_lora_weights(lora.path, adapter_name=name, **kwargs)
        except ImportError as exc:
            raise SynthsetError(f"{_FIELD}.lora: {first_line(exc)} (pip install peft)") from None
        except (OSError, ValueError, KeyError) as exc:
            raise SynthsetError(
                f"{_FIELD}.lora[{i}].path: cannot load {lora.path!r}: {first_line(exc)}"
            ) from None
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[lora.scale for lora in spec.lora])
    pipe.fuse_lora(adapter_names=names)
    pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go


def configure(pipe: Any, spec: GeneratorSpec, device: torch.device, dtype: torch.dtype) -> None:
    """Swap in the tiny autoencoder, place the pipeline on ``device`` (or set up CPU offload),
    then apply the memory-format, slicing, tiling and compile switches."""
    import torch

    if spec.tiny_vae:
        pipe.vae = load_tiny_vae(spec.tiny_vae, dtype)
    if spec.cpu_offload == "none":
        pipe.to(device)
    elif device.type != "cuda":
        raise SynthsetError(
            f"{_FIELD}.cpu_offload: offloading needs a CUDA GPU (device is {device}); "
            "set cpu_offload: none"
        )
    elif spec.cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    net_name = denoiser_name(pipe)
    net = getattr(pipe, net_name) if net_name else None
    if spec.channels_last:
        for module in (net, getattr(pipe, "vae", None)):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if spec.attention_slicing:
        pipe.enable_attention_slicing()
    if spec.vae_tiling:
        pipe.vae.enable_tiling()
    if spec.compile:
        if net_name is None:
            raise SynthsetError(f"{_FIELD}.compile: {type(pipe).__name__} has no UNet/transformer")
        setattr(pipe, net_name, torch.compile(net, fullgraph=False))


def load_tiny_vae(source: str, dtype: torch.dtype) -> Any:
    """An ``AutoencoderTiny`` (TAESD family) from a folder or hub id, with a one-line error."""
    from diffusers import AutoencoderTiny

    try:
        return AutoencoderTiny.from_pretrained(source, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise SynthsetError(
            f"{_FIELD}.tiny_vae: cannot load {source!r} as an AutoencoderTiny ({first_line(exc)});"
            " give a TAESD folder or hub id, e.g. madebyollin/taesd"
        ) from None
