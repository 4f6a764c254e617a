"""Record where each class word of a prompt attends while a diffusers UNet generates
(DAAM-style heat maps), without changing a single pixel of the images.

Every attention processor of the UNet is wrapped: the wrapped processor computes the layer's
output exactly as before (so images stay byte-identical), and for cross-attention calls the
wrapper also computes the softmax attention of the conditional half of the batch, keeps the
columns of the traced words' tokens, sums them over heads, upsamples each map bicubically to
the latent grid (negative overshoot clamped) and adds it up over layers and steps. After the
call each image has one heat map per class word its prompt names; they are stored beside the
image (``attention/<class>/<item>.npz``) for the labels stage to threshold.

With ``labels.attention.heat: guidance`` the map is instead where the prompt changes the
UNet's prediction: |conditional - unconditional| of every UNet call under classifier-free
guidance, summed over channels and steps (DiffEdit's mask, free since guidance computes both
halves anyway). A prompt naming one class gives that class the map; one naming several shares
it, each pixel going to the class whose (max-scaled) attention is highest there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from synthset.errors import SynthsetError
from synthset.generators.base import Generator, SideFile
from synthset.store.labels import ATTENTION_FOLDER, heat_maps_npz

if TYPE_CHECKING:
    import torch

    from synthset.plan import WorkItem
    from synthset.recipe import LabelsSpec


def token_positions(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Indices of ``word``'s tokens in ``prompt``'s token sequence (every occurrence, within
    the tokenizer's length limit); empty when the prompt does not contain the word."""
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    word_ids = tokenizer(word, add_special_tokens=False).input_ids
    n = len(word_ids)
    if n == 0:
        return []
    found: list[int] = []
    for start in range(len(ids) - n + 1):
        if ids[start : start + n] == word_ids:
            found.extend(range(start, start + n))
    return found


def named_classes(prompt: str, words: dict[int, str]) -> list[int]:
    """The classes whose word appears in ``prompt`` as a whole word (case-insensitive)."""
    return [
        cid
        for cid, word in words.items()
        if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", prompt, flags=re.IGNORECASE)
    ]


class _Traces:
    """The heat maps of one pipeline call, filled by every wrapped processor."""

    def __init__(self) -> None:
        self.active = False
        self.latent_hw = (0, 0)
        self.min_side = 0
        # per image: (class ids, token positions per class) and the running sums
        self.targets: list[list[tuple[int, list[int]]]] = []
        self.maps: list[dict[int, torch.Tensor]] = []
        self.layers_seen = 0
        self.guidance: torch.Tensor | None = None  # (images, h, w): heat "guidance" only

    def start(self, targets: list[list[tuple[int, list[int]]]], latent_hw: tuple[int, int]) -> None:
        self.targets, self.latent_hw, self.active = targets, latent_hw, True
        self.maps = [{} for _ in targets]
        self.layers_seen = 0
        self.guidance = None

    def add_guidance(self, prediction: torch.Tensor) -> None:
        """``prediction``: a UNet output under classifier-free guidance (unconditional half
        first, as diffusers' pipelines batch it)."""
        import torch.nn.functional as F

        n = len(self.targets)
        if prediction.shape[0] != 2 * n:
            raise SynthsetError(
                "labels.attention.heat guidance: the UNet ran without classifier-free guidance "
                f"({prediction.shape[0]} rows for {n} images); set "
                "generate.generator.guidance_scale above 1 or use heat: attention"
            )
        diff = (prediction[n:] - prediction[:n]).abs().sum(1, keepdim=True).float()
        if tuple(diff.shape[-2:]) != self.latent_hw:
            diff = F.interpolate(diff, size=self.latent_hw, mode="bilinear", align_corners=False)
        # each step counts alike: scaled to its own maximum per image (the early, noisy steps'
        # differences are the largest and would otherwise drown out where the later ones draw)
        diff = diff[:, 0]
        diff = diff / diff.amax((1, 2), keepdim=True).clamp_min(1e-12)
        self.guidance = diff if self.guidance is None else self.guidance + diff

    def shared_guidance(self) -> list[dict[int, torch.Tensor]]:
        """Per image, the guidance map given to its one named class, or shared among several
        by their attention (each pixel to the class whose max-scaled attention is highest)."""
        import torch

        assert self.guidance is not None
        out = []
        for heat, maps in zip(self.guidance, self.maps, strict=True):
            cids = list(maps)
            if len(cids) == 1:
                out.append({cids[0]: heat})
                continue
            scaled = torch.stack([maps[c] / maps[c].max().clamp_min(1e-12) for c in cids])
            owner = scaled.argmax(0)
            out.append({c: heat * (owner == k) for k, c in enumerate(cids)})
        return out

    def add(self, probs: torch.Tensor) -> None:
        """``probs``: (images, heads, HW, tokens) softmax attention of the conditional half."""
        import torch.nn.functional as F

        h, w = self.latent_hw
        hw = probs.shape[2]
        factor = math.sqrt(h * w / hw)
        side_h, side_w = round(h / factor), round(w / factor)
        if side_h * side_w != hw or min(side_h, side_w) < self.min_side:
            return
        self.layers_seen += 1
        summed = probs.sum(1)  # over heads: (images, HW, tokens)
        for i, targets in enumerate(self.targets):
            for cid, positions in targets:
                grid = summed[i, :, positions].sum(-1).reshape(1, 1, side_h, side_w).float()
                up = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
                up = up.clamp_min(0)[0, 0]
                self.maps[i][cid] = self.maps[i][cid] + up if cid in self.maps[i] else up


class _RecordingProcessor:
    """Computes the wrapped processor's output unchanged; on cross-attention calls, also hands
    the conditional half's attention probabilities to the traces."""

    def __init__(self, inner: Any, traces: _Traces) -> None:
        self.inner = inner
        self.traces = traces

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        out = self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        if encoder_hidden_states is not None and self.traces.active:
            n = len(self.traces.targets)
            self.traces.add(_attention_probs(attn, hidden_states, encoder_hidden_states, n))
        return out


def _attention_probs(
    attn: Any, hidden_states: torch.Tensor, context: torch.Tensor, n: int
) -> torch.Tensor:
    """(images, heads, HW, tokens): the softmax attention the layer computed, for the last
    ``n_images`` batch rows (the conditional half under classifier-free guidance)."""
    x = hidden_states
    if x.ndim == 4:
        b, c, h, w = x.shape
        x = x.view(b, c, h * w).transpose(1, 2)
    x, context = x[-n:], context[-n:]
    if getattr(attn, "group_norm", None) is not None:
        x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
    if getattr(attn, "norm_cross", None):
        context = attn.norm_encoder_hidden_states(context)
    query = attn.head_to_batch_dim(attn.to_q(x))
    key = attn.head_to_batch_dim(attn.to_k(context))
    probs = attn.get_attention_scores(query, key, None)  # (images * heads, HW, tokens)
    return probs.view(n, attn.heads, probs.shape[1], probs.shape[2])


class AttentionRecordingGenerator:
    """Wraps a diffusers generator (``text2image``, ``img2img``, ``inpaint``): the same images,
    plus one heat map per class word each prompt names (see the module docstring)."""

    def __init__(self, inner: Generator, labels: LabelsSpec, class_names: Sequence[str]) -> None:
        pipe = getattr(inner, "pipe", None)
        unet = getattr(pipe, "unet", None)
        if unet is None or getattr(pipe, "tokenizer", None) is None:
            raise SynthsetError(
                f"labels.method cross_attention: {inner.name} has no UNet with a tokenizer "
                "(SD3, Flux and PixArt use joint attention); use an SD 1.x/2.x or SDXL model"
            )
        assert labels.attention is not None
        unknown = sorted(set(labels.attention.words) - set(class_names))
        if unknown:
            raise SynthsetError(
                f"labels.attention.words: {', '.join(map(repr, unknown))} is not one of the "
                "run's classes (classes.json); name classes exactly as the run does"
            )
        self.inner = inner
        self.name = inner.name
        self.pipe = pipe
        self.class_names = list(class_names)
        self.words = {i: labels.word_of(c) for i, c in enumerate(self.class_names)}
        self.traces = _Traces()
        self.traces.min_side = labels.attention.min_resolution
        self.heat = labels.attention.heat
        self._side: dict[str, bytes] = {}
        unet.set_attn_processor(
            {name: _RecordingProcessor(p, self.traces) for name, p in unet.attn_processors.items()}
        )
        if self.heat == "guidance":
            unet.register_forward_hook(self._on_unet_output)

    def _on_unet_output(self, _module: Any, _args: Any, output: Any) -> None:
        if self.traces.active:
            prediction = output.sample if hasattr(output, "sample") else output[0]
            self.traces.add_guidance(prediction.detach())

    def __getattr__(self, name: str) -> Any:  # name_of, prompt_of, spec, ... of the wrapped one
        return getattr(self.inner, name)

    def _latent_hw(self) -> tuple[int, int]:
        spec = getattr(self.inner, "spec", None)
        scale = getattr(self.pipe, "vae_scale_factor", 8)
        side = self.pipe.unet.config.sample_size * scale
        height = getattr(spec, "height", None) or side
        width = getattr(spec, "width", None) or side
        return height // scale, width // scale

    def _targets(self, items: Sequence[WorkItem]) -> list[list[tuple[int, list[int]]]]:
        tokenizer = self.pipe.tokenizer
        prompt_of = getattr(self.inner, "prompt_of", lambda it: it.prompt)
        targets = []
        for it in items:
            prompt = prompt_of(it)
            words = dict(self.words)
            learned = getattr(getattr(self.inner, "spec", None), "class_tokens", None) or {}
            for cid, name in enumerate(self.class_names):
                if name in learned and learned[name] in prompt:
                    words[cid] = learned[name]
            named = set(named_classes(prompt, words)) | {it.class_id}
            mine = []
            for cid in sorted(named):
                positions = token_positions(tokenizer, prompt, words[cid])
                if not positions and cid == it.class_id:
                    raise SynthsetError(
                        f"labels.attention.words: the word {words[cid]!r} of class "
                        f"{it.class_name!r} is not among the tokens of item {it.item_id}'s "
                        f"prompt ({prompt!r}); name the class in every prompt or set "
                        f"labels.attention.words.{it.class_name} to a word the prompts use"
                    )
                if positions:
                    mine.append((cid, positions))
            targets.append(mine)
        return targets

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        """The wrapped generator's images; the heat maps wait in :meth:`side_files`."""
        if not items:
            return []
        self.traces.start(self._targets(items), self._latent_hw())
        try:
            images = self.inner.generate(items)
        finally:
            self.traces.active = False
        if self.traces.layers_seen == 0:
            raise SynthsetError(
                f"labels.attention.min_resolution: no cross-attention layer of {self.name} "
                f"has maps of side >= {self.traces.min_side}; lower it"
            )
        self._side = {}
        per_image = self.traces.maps if self.heat == "attention" else self.traces.shared_guidance()
        for it, maps in zip(items, per_image, strict=True):
            self._side[it.item_id] = heat_maps_npz({c: m.cpu().numpy() for c, m in maps.items()})
        return images

    def side_files(self, item: WorkItem) -> list[SideFile]:
        """The heat maps of ``item`` from the last :meth:`generate` call."""
        return [SideFile(ATTENTION_FOLDER, ".npz", self._side.pop(item.item_id))]
