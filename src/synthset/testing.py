"""Builders of tiny offline models for tests: seeded random weights, real on-disk formats.

Everything is saved with ``save_pretrained`` and meant to be loaded back through the same
``from_pretrained`` code users run, so tests exercise the real loading path without downloads.
Heavy libraries are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from synthset.adapt.tiny_tokenizer import (  # noqa: F401 - re-exported for tests
    TINY_TEXT_VOCAB_SIZE,
    build_tiny_clip_tokenizer,
    tiny_clip_vocab,
)


def _tiny_sd_components(
    tokenizer: Any, seed: int, time_cond_proj_dim: int | None = None
) -> dict[str, Any]:
    """Seeded tiny UNet, VAE and CLIP text encoder plus a DDIM scheduler (diffusers' test sizes)."""
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            time_cond_proj_dim=time_cond_proj_dim,
        )
        torch.manual_seed(seed + 1)
        vae = _tiny_vae()
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(_tiny_clip_config(tokenizer))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def build_tiny_sd_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny random Stable Diffusion 1.x pipeline (latent 4×, VAE factor 2, default 64 px)
    to ``out_dir`` as safetensors and return ``out_dir``. Same ``seed`` → same weights."""
    from diffusers import StableDiffusionPipeline

    return _save_tiny_pipeline(
        StableDiffusionPipeline, _tiny_sd_components(_tokenizer(), seed), out_dir
    )


def build_tiny_lcm_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """Like :func:`build_tiny_sd_pipeline` but a Latent Consistency Model pipeline (guidance as a
    UNet embedding, ``LCMScheduler``, no ``negative_prompt`` argument): a second pipeline family
    with different ``__call__`` arguments."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    components = _tiny_sd_components(_tokenizer(), seed, time_cond_proj_dim=32)
    components["scheduler"] = LCMScheduler.from_config(components["scheduler"].config)
    return _save_tiny_pipeline(LatentConsistencyModelPipeline, components, out_dir)


def _tiny_clip_config(tokenizer: Any, projection_dim: int | None = None) -> Any:
    """A 5-layer, 32-wide CLIP text config over the tiny vocabulary."""
    from transformers import CLIPTextConfig

    extra = {"projection_dim": projection_dim} if projection_dim else {}
    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=TINY_TEXT_VOCAB_SIZE,
        **extra,
    )


def build_tiny_sdxl_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random SDXL pipeline: two CLIP text encoders (the second with a projection, whose
    pooled output feeds the UNet's ``text_time`` embedding), Euler scheduler, default 64 px."""
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = _tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + pooled text
            cross_attention_dim=64,  # both encoders' hidden states side by side
            norm_num_groups=1,
        )
        torch.manual_seed(seed + 1)
        vae = _tiny_vae()
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(_tiny_clip_config(tokenizer, projection_dim=32))
        torch.manual_seed(seed + 3)
        text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_config(tokenizer, 32))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def build_tiny_sd3_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random Stable Diffusion 3 pipeline: an MMDiT transformer (``SD3Transformer2DModel``)
    over two CLIP encoders with projections, flow-matching Euler scheduler; the optional T5
    encoder is left out (``text_encoder_3=None``), as SD3 allows."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    tokenizer = _tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=32,
            patch_size=1,
            in_channels=16,  # SD3's 16 latent channels (its inpainting pipeline requires them)
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=64,  # the two CLIP encoders' hidden states side by side
            pooled_projection_dim=64,
            out_channels=16,
        )
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModelWithProjection(_tiny_clip_config(tokenizer, 32))
        torch.manual_seed(seed + 3)
        text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_config(tokenizer, 32))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def _tiny_vae() -> Any:
    """The tiny SD-style KL autoencoder (4 latent channels, downsampling factor 2)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
    )


def build_tiny_taesd(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random ``AutoencoderTiny`` (the TAESD architecture, 4 latent channels, factor 2),
    saved with ``save_pretrained``: a stand-in for ``madebyollin/taesd``."""
    import torch
    from diffusers import AutoencoderTiny

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderTiny(
            encoder_block_out_channels=(16, 16),
            decoder_block_out_channels=(16, 16),
            num_encoder_blocks=(1, 1),
            num_decoder_blocks=(1, 1),
            latent_channels=4,
        )
    vae.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def write_tiny_lora(pipeline_dir: Path, out_dir: Path, rank: int = 4, seed: int = 0) -> Path:
    """LoRA weights for the UNet of the tiny SD pipeline at ``pipeline_dir`` (random, non-zero
    up-projections so they change the images), saved by diffusers' ``save_lora_weights`` as
    ``pytorch_lora_weights.safetensors`` in ``out_dir``."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(pipeline_dir, subfolder="unet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(
            LoraConfig(
                r=rank,
                lora_alpha=rank,
                target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                init_lora_weights=False,
            )
        )
    StableDiffusionPipeline.save_lora_weights(
        out_dir, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True
    )
    return Path(out_dir) / "pytorch_lora_weights.safetensors"


def write_tiny_textual_inversion(out_file: Path, token: str, seed: int = 0) -> Path:
    """A textual-inversion embedding for the tiny CLIP text encoder (width 32), in the
    ``{token: tensor}`` safetensors layout that ``load_textual_inversion`` reads."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({token: torch.randn(1, 32, generator=generator) * 2.0}, str(out_file))
    return out_file


def build_trained_tiny_clip(out: Path) -> Path:
    """A tiny CLIP trained for a few steps to pair bright images with 'white' and dark ones
    with 'black', saved with save_pretrained (model + processor)."""
    import torch
    from PIL import Image
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPVisionConfig,
    )

    tok = build_tiny_clip_tokenizer(out / "tok")
    text = CLIPTextConfig(
        vocab_size=TINY_TEXT_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=16,
        patch_size=8,
    )
    config = CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size=16),
        tokenizer=tok,
    )
    images = [Image.new("RGB", (16, 16), (v, v, v)) for v in (250, 5, 230, 25)]
    batch = processor(
        text=["white", "black", "white", "black"], images=images, return_tensors="pt", padding=True
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        loss = model(**batch, return_loss=True).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = out / "tiny-clip"
    model.eval().save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def build_trained_tiny_open_clip(out: Path) -> str:
    """A tiny open_clip CLIP (its own model config .json, open_clip's bundled tokenizer)
    trained for a few steps to pair bright images with 'white' and dark ones with 'black',
    saved as safetensors. Returns the ``open_clip:<config>@<checkpoint>`` model string."""
    import json

    import open_clip
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    config = out / "tiny-open-clip.json"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 16,
                "vision_cfg": {
                    "image_size": 16,
                    "layers": 2,
                    "width": 32,
                    "patch_size": 8,
                    "head_width": 8,
                },
                "text_cfg": {
                    "context_length": 16,
                    "vocab_size": 49408,
                    "width": 32,
                    "heads": 4,
                    "layers": 2,
                },
            }
        )
    )
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(config.stem)
    tokenizer = open_clip.get_tokenizer(config.stem)
    images = torch.stack(
        [preprocess(Image.new("RGB", (16, 16), (v, v, v))) for v in (250, 5, 230, 25)]
    )
    texts = tokenizer(["white", "black", "white", "black"])
    pairs = torch.tensor([0, 1, 0, 1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(texts[:2]), dim=-1)
        loss = F.cross_entropy(model.logit_scale.exp() * img @ txt.T, pairs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    checkpoint = out / "tiny-open-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
    return f"open_clip:{config}@{checkpoint}"


def _tokenizer() -> Any:
    """The tiny CLIP tokenizer, built in a throw-away folder."""
    with tempfile.TemporaryDirectory() as tmp:
        return build_tiny_clip_tokenizer(Path(tmp))


def _save_tiny_pipeline(pipeline_cls: Any, components: dict[str, Any], out_dir: Path) -> Path:
    """Assemble an SD-family pipeline without a safety checker and save it as safetensors."""
    pipe = pipeline_cls(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


#: Sentences the tiny causal LM's tokenizer is trained on (byte-level BPE: any text encodes).
_TINY_LM_CORPUS = (
    "a photo of a cat on a sofa in the living room",
    "a photo of a dog running on the beach at sunset",
    "a red car parked in a quiet street at night",
    "write five captions for the class airplane in json",
    "system user assistant prompts captions background style lighting",
)
_TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_causal_lm(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random Llama causal LM and a byte-level BPE tokenizer (trained offline on a few
    sentences; eos/pad tokens, a simple chat template), saved with ``save_pretrained``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<pad>", "<|end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(_TINY_LM_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<pad>", padding_side="left"
    )
    tokenizer.chat_template = _TINY_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
