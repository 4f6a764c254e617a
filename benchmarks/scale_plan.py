"""The numbers behind docs/scale.md: what 10^8 images cost on a 64-GPU cluster, from the model
configs (no weights: the models are built on PyTorch's meta device and their FLOPs counted by
``torch.utils.flop_counter``), and what worker failures cost with static shards against a lease
queue (a seeded simulation).

    python benchmarks/scale_plan.py [--json benchmarks/results/scale_plan.json]

Stated assumptions (edit them here, rerun, and the plan follows): an H100 SXM's dense BF16 peak
of 989 TFLOP/s at 40 % model FLOPs utilisation; 64 GPUs; 1 % of workers fail per hour; a failed
SLURM task waits 10 minutes to be requeued and 1 minute to load the model; a lease expires 2
minutes after its worker died.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PEAK_TFLOPS = 989.0  # H100 SXM, dense BF16
MFU = 0.40
GPUS = 64
IMAGES = 10**8
FAIL_PER_HOUR = 0.01
REQUEUE_S, LOAD_S, LEASE_S = 600.0, 60.0, 120.0

SD_UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
SD21_UNET = {
    **SD_UNET,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}
SDXL_UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 2048,
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SD_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
}


def unet_tflops(
    config: dict[str, Any], latent: int, context: int, sdxl: bool
) -> tuple[float, float]:
    """(TFLOPs of one UNet forward for one image, billions of parameters)."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    params = sum(p.numel() for p in unet.parameters()) / 1e9
    kwargs: dict[str, Any] = {}
    if sdxl:
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.zeros(1, 1280, device="meta"),
            "time_ids": torch.zeros(1, 6, device="meta"),
        }
    x = torch.zeros(1, 4, latent, latent, device="meta")
    c = torch.zeros(1, 77, context, device="meta")
    with FlopCounterMode(display=False) as counter:
        unet(x, torch.zeros(1, device="meta"), encoder_hidden_states=c, **kwargs)
    return counter.get_total_flops() / 1e12, params


def vae_decode_tflops(latent: int) -> float:
    import torch
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        vae = AutoencoderKL(**SD_VAE)
    with FlopCounterMode(display=False) as counter:
        vae.decode(torch.zeros(1, 4, latent, latent, device="meta"))
    return counter.get_total_flops() / 1e12


def static_makespan(hours_of_work: float, rng: random.Random) -> float:
    """Hours until the slowest of GPUS static shards is done, each failure costing the requeue
    wait and a model load (the shard resumes from its manifest: finished images are kept)."""
    lam = FAIL_PER_HOUR
    ends = []
    for _ in range(GPUS):
        t, left = 0.0, hours_of_work
        while True:
            to_fail = rng.expovariate(lam)
            if to_fail >= left:
                ends.append(t + left)
                break
            t += to_fail + (REQUEUE_S + LOAD_S) / 3600
            left -= to_fail
    return max(ends)


def unrequeued_makespan(hours_of_work: float, rng: random.Random) -> float:
    """Hours until done when a failed shard is not requeued (a hand-launched array): its
    remainder waits for the array to end, then one rerun of that shard finishes it."""
    lam, ends, rerun = FAIL_PER_HOUR, [], [0.0]
    for _ in range(GPUS):
        to_fail = rng.expovariate(lam)
        if to_fail >= hours_of_work:
            ends.append(hours_of_work)
        else:
            ends.append(to_fail)
            rerun.append(hours_of_work - to_fail + LOAD_S / 3600)
    return max(ends) + max(rerun)


def lease_makespan(hours_of_work: float, batch_hours: float, rng: random.Random) -> float:
    """Hours until GPUS workers sharing one lease queue finish; a failure loses the batch in
    flight, and the worker is back after the requeue wait and a model load."""
    step = 1 / 60  # one-minute steps
    total = hours_of_work * GPUS
    done, t = 0.0, 0.0
    down_until = [0.0] * GPUS
    while done < total:
        for w in range(GPUS):
            if down_until[w] > t:
                continue
            if rng.random() < FAIL_PER_HOUR * step:
                down_until[w] = t + (REQUEUE_S + LOAD_S) / 3600
                done -= batch_hours  # the batch in flight is made again (after its lease expires)
                continue
            done += step
        t += step
    return t + LEASE_S / 3600


def plan(name: str, tflops_per_image: float, batch: int, seeds: int = 5) -> dict[str, Any]:
    rate = PEAK_TFLOPS * MFU / tflops_per_image  # images/s per GPU
    hours = IMAGES / (rate * GPUS) / 3600
    batch_hours = batch / rate / 3600
    static = [static_makespan(hours, random.Random(s)) for s in range(seeds)]
    unrequeued = [unrequeued_makespan(hours, random.Random(s)) for s in range(seeds)]
    leased = [lease_makespan(hours, batch_hours, random.Random(s)) for s in range(seeds)]
    return {
        "tflops_per_image": round(tflops_per_image, 2),
        "images_per_s_per_gpu": round(rate, 2),
        "cluster_images_per_s": round(rate * GPUS, 1),
        "hours_without_failures": round(hours, 2),
        "gpu_hours": round(hours * GPUS, 1),
        "static_shards_requeued_hours": round(statistics.mean(static), 2),
        "static_shards_not_requeued_hours": round(statistics.mean(unrequeued), 2),
        "lease_queue_hours": round(statistics.mean(leased), 2),
        # one GPU 30 % slower than the rest: static shards wait for it, a queue does not
        "one_slow_gpu_static_hours": round(hours / 0.7, 2),
        "one_slow_gpu_queue_hours": round(hours * GPUS / (GPUS - 1 + 0.7), 2),
        "failures_expected": round(FAIL_PER_HOUR * hours * GPUS, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=RESULTS / "scale_plan.json")
    args = parser.parse_args()
    sd21, sd21_params = unet_tflops({**SD21_UNET, "sample_size": 64}, 64, 1024, False)
    sdxl, sdxl_params = unet_tflops({**SDXL_UNET, "sample_size": 128}, 128, 2048, True)
    vae512, vae1024 = vae_decode_tflops(64), vae_decode_tflops(128)
    turbo = sd21 + vae512  # SD-Turbo: one step, no guidance, full VAE decoder
    xl = 30 * 2 * sdxl + vae1024  # SDXL: 30 steps with classifier-free guidance (2 passes)
    result = {
        "benchmark": "scale_plan",
        "command": "python benchmarks/scale_plan.py",
        "assumptions": {
            "gpu": "H100 SXM",
            "peak_tflops_bf16_dense": PEAK_TFLOPS,
            "mfu": MFU,
            "gpus": GPUS,
            "images": IMAGES,
            "worker_failures_per_hour": FAIL_PER_HOUR,
            "requeue_wait_s": REQUEUE_S,
            "model_load_s": LOAD_S,
            "lease_s": LEASE_S,
        },
        "models": {
            "sd21_unet": {"params_b": round(sd21_params, 3), "tflops_forward_512": round(sd21, 3)},
            "sdxl_unet": {"params_b": round(sdxl_params, 3), "tflops_forward_1024": round(sdxl, 3)},
            "sd_vae_decoder": {"tflops_512": round(vae512, 3), "tflops_1024": round(vae1024, 3)},
        },
        "plans": {
            "sd-turbo 512px, 1 step, saved at 32px": plan("turbo", turbo, batch=64),
            "sdxl 1024px, 30 steps, cfg": plan("sdxl", xl, batch=8),
        },
        "storage": {
            "png_32px_bytes_each": 2500,
            "jpeg_1024px_q95_bytes_each": 350_000,
            # measured 252 (manifest) and 175 (plan) bytes per row with 21-character prompts;
            # a 150-character LLM prompt adds about 130 to each
            "manifest_bytes_per_row": 380,
            "plan_bytes_per_row": 305,
        },
    }
    s = result["storage"]
    s["turbo_images_gb"] = round(IMAGES * s["png_32px_bytes_each"] / 1e9)
    s["sdxl_images_tb"] = round(IMAGES * s["jpeg_1024px_q95_bytes_each"] / 1e12, 1)
    s["manifest_gb"] = round(IMAGES * s["manifest_bytes_per_row"] / 1e9)
    s["plan_gb"] = round(IMAGES * s["plan_bytes_per_row"] / 1e9)
    s["webdataset_shards_of_10000"] = math.ceil(IMAGES / 10_000)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
