"""From a diffusers pipeline (or UNet + scheduler) to a denoiser, and from samples back to images.

    from dmcmc_fast import api, from_diffusers, to_images
    denoiser = from_diffusers(pipe)                     # DDPMPipeline, DDIMPipeline, ...: pipe.unet + pipe.scheduler
    out = api.sample(denoiser, "dpmpp_2m", num=16, nfe=20)
    images = to_images(out.samples, pipe)               # [16, C, H, W] in [0, 1] ("np", "pil" as diffusers)

    # class-conditional UNet2DModel (num_class_embeds) / UNet2DConditionModel: inputs through model_kwargs
    denoiser = from_diffusers(unet, scheduler)
    api.sample(denoiser, "heun", num=8, nfe=35, model_kwargs={"class_labels": labels})              # [8]
    api.sample(denoiser, "heun", num=8, nfe=35, model_kwargs={"encoder_hidden_states": emb})       # [8, L, D]
    # classifier-free guidance: 2 UNet evaluations per NFE
    from_diffusers(unet, scheduler, guidance_scale=4.0, uncond_kwargs={"class_labels": torch.tensor([null])})

The denoiser is a `DiffusersUNetAdapter` (VP -> VE, `dmcmc_fast.models.adapters`): its noise range is the
scheduler's training table (`sigma_min` = sigma(t=0), `sigma_max` = sigma(t=T-1), the samplers'
default range), the UNet runs in its own dtype (`unet.to(torch.float16)`) from a float32 state, and
nothing is downloaded or moved. For a latent pipeline (with a `vae`) the samples are latents and
`to_images` decodes them.
"""
from __future__ import annotations

import numpy as np
import torch

from dmcmc_fast.models.adapters import DiffusersUNetAdapter

OUTPUT_TYPES = ("pt", "np", "pil")


def from_diffusers(pipe_or_unet, scheduler=None, *, guidance_scale: float | None = None,
                   uncond_kwargs: dict | None = None, data_range=(-1.0, 1.0)) -> DiffusersUNetAdapter:
    """A VE denoiser `D(x, sigma, **model_kwargs)` from a pipeline (its `unet` and `scheduler`) or from a
    `UNet2DModel` / `UNet2DConditionModel` and the scheduler it was trained with (`scheduler=` overrides a
    pipeline's). `guidance_scale` / `uncond_kwargs`: classifier-free guidance (module docstring);
    `data_range`: the range of clean data (pixels: (-1, 1))."""
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    scheduler = scheduler if scheduler is not None else getattr(pipe_or_unet, "scheduler", None)
    if not isinstance(unet, torch.nn.Module) or not hasattr(getattr(unet, "config", None), "in_channels"):
        raise ValueError(f"from_diffusers needs a diffusers pipeline with a .unet, or a UNet2DModel / "
                         f"UNet2DConditionModel; got {type(pipe_or_unet).__name__}")
    if scheduler is None:
        raise ValueError("from_diffusers(unet) needs scheduler=: the scheduler the UNet was trained with (e.g. "
                         "DDPMScheduler), which holds its alphas_cumprod and prediction_type")
    if getattr(scheduler, "alphas_cumprod", None) is None or not hasattr(scheduler.config, "prediction_type"):
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod / prediction_type: pass the VP "
                         "scheduler the UNet was trained with (DDPM, DDIM, Euler, DPM-Solver schedulers have both)")
    return DiffusersUNetAdapter(unet, scheduler, data_range=data_range, guidance_scale=guidance_scale,
                                uncond_kwargs=uncond_kwargs)


@torch.no_grad()
def to_images(samples: torch.Tensor, pipe=None, *, data_range=(-1.0, 1.0), output_type: str = "pt"):
    """Samples `[N, C, H, W]` as images in [0, 1]: latents decoded by `pipe.vae` (divided by its
    `scaling_factor` first) when `pipe` has one, else mapped from `data_range`. `output_type`: "pt" (a
    float tensor `[N, C, H, W]`), "np" (float `[N, H, W, C]`, as diffusers) or "pil" (a list of images)."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    if not torch.is_tensor(samples) or samples.ndim != 4:
        raise ValueError(f"samples must be a [N, C, H, W] tensor, got "
                         f"{tuple(samples.shape) if torch.is_tensor(samples) else type(samples).__name__}")
    vae = getattr(pipe, "vae", None)
    x = samples
    if vae is not None:
        scale = getattr(vae.config, "scaling_factor", 1.0) or 1.0
        weight = next(vae.parameters())
        x = vae.decode(x.to(weight.device, weight.dtype) / scale).sample
        data_range = (-1.0, 1.0)
    lo, hi = data_range
    images = ((x.float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    if output_type == "pt":
        return images
    array = images.permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return array
    from PIL import Image

    u8 = (array * 255).round().astype(np.uint8)
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in u8]
