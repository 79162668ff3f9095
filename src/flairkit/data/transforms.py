"""Normalisation and geometric augmentation of batches, applied on the device after a uint8 transfer.

Loaders hand over raw uint8 patches; these functions turn them into float inputs where the model runs,
so a batch crosses the host-device link at a quarter of its float32 size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from flairkit.config.schema import BAND_NAMES, NormalizationConfig, RadiometricConfig

PER_PATCH_MIN_STD = 1e-3
"""Floor of a band's standard deviation (0..255 scale) in per-patch standardisation."""
ELEVATION_BAND = BAND_NAMES.index("elevation") + 1
"""The 1-based aerial band left out of radiometric jitter: a height, not a colour."""


class Normalizer(torch.nn.Module):
    """Turn a uint8 (B, C, H, W) batch into model inputs according to a normalisation mode."""

    def __init__(self, mode: str, means: Sequence[float] | None = None, stds: Sequence[float] | None = None):
        super().__init__()
        self.mode = mode
        if mode == "custom":
            if means is None or stds is None or len(means) != len(stds):
                raise ValueError("custom normalisation needs one mean and one std per channel")
            scale = 1.0 / torch.tensor(stds, dtype=torch.float32)
            shift = -torch.tensor(means, dtype=torch.float32) * scale
        elif mode == "scaling":
            scale = torch.full((1,), 1.0 / 255.0)
            shift = torch.zeros(1)
        elif mode in ("without", "per_patch"):
            scale, shift = torch.ones(1), torch.zeros(1)
        else:
            raise ValueError(f"unknown normalisation mode {mode!r}; use custom, scaling, without or per_patch")
        self.register_buffer("scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, config: NormalizationConfig) -> Normalizer:
        """Build from the ``data.normalization`` section."""
        return cls(config.mode, config.means, config.stds)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.mode == "per_patch":
            values = batch.float()
            std, mean = torch.std_mean(values, dim=(-2, -1), keepdim=True)
            # A constant band (std 0) becomes zeros instead of NaN.
            return (values - mean) / std.clamp_min(PER_PATCH_MIN_STD)
        return torch.addcmul(self.shift, batch.float(), self.scale)


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, probability: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random hflip, vflip and rot90 per sample, each with ``probability``, applied alike to images and labels.

    ``images`` is (B, C, H, W); ``labels`` is (B, H, W) or (B, K, H, W). Square patches are required for rot90.
    """
    out_images, out_labels = augment_arrays([images, labels], probability, generator)
    return out_images, out_labels


def augment_arrays(
    arrays: Sequence[torch.Tensor], probability: float, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Random hflip, vflip and rot90 per sample, each with ``probability``, the same for every array of ``arrays``.

    Each array is (B, ..., H, W) with the same B (its own H and W: modalities of different resolutions over the
    same square footprint stay aligned); the transform acts on the last two axes only, so every date and channel
    of a sample turns alike. Square arrays are required for rot90.
    """
    if probability <= 0:
        return list(arrays)
    batch = arrays[0].shape[0]
    draws = torch.rand((3, batch), generator=generator, device="cpu") < probability
    out: list[list[torch.Tensor]] = [[] for _ in arrays]
    for i in range(batch):
        for array, samples in zip(arrays, out, strict=True):
            sample = array[i]
            if draws[0, i]:
                sample = sample.flip(-1)
            if draws[1, i]:
                sample = sample.flip(-2)
            if draws[2, i]:
                sample = sample.rot90(1, (-2, -1))
            samples.append(sample)
    return [torch.stack(samples) for samples in out]


class RadiometricJitter(torch.nn.Module):
    """Random per-patch radiometric changes of a (B, C, H, W) batch on the 0..255 scale, before normalisation.

    In order: histogram matching to a reference domain, gamma, gain and offset (per band and patch), Gaussian
    blur (per patch), Gaussian noise (per pixel); values are clipped to 0..255. Only the colour bands of
    ``channels`` change, never elevation. Random numbers come from ``generator`` (per-patch draws) and from a
    device generator seeded from it, so that a run is reproducible and resumes exactly.
    """

    def __init__(self, config: RadiometricConfig, channels: Sequence[int]):
        super().__init__()
        self.config = config
        colour = torch.tensor([c != ELEVATION_BAND for c in channels])
        self.register_buffer("colour", colour.view(1, -1, 1, 1), persistent=False)
        reference = config.histogram_reference
        if reference is not None:
            # Every band resampled at the same evenly spaced quantile levels as the longest list.
            levels = max(len(band) for band in reference)
            grid = torch.linspace(0, 1, levels)
            rows = [_interp_even(grid, torch.tensor(band, dtype=torch.float32)) for band in reference]
            self.register_buffer("reference", torch.stack(rows), persistent=False)
        else:
            self.reference = None

    @property
    def enabled(self) -> bool:
        """Whether any option changes the batches."""
        c = self.config
        return any(v > 0 for v in (c.gain, c.offset, c.gamma, c.blur_probability, c.noise_std, c.histogram_probability))

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.enabled:
            return images
        c = self.config
        batch, bands = images.shape[:2]
        device = images.device
        # Per patch and band: histogram draw, gamma, gain, offset; per patch: blur draw and sigma; device seed.
        draws = torch.rand((4, batch, bands), generator=generator).to(device)
        blur_draws = torch.rand((2, batch), generator=generator).to(device)
        device_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        x = images.float()
        colour = self.colour
        if c.histogram_probability > 0:
            matched = histogram_match(x, self.reference)
            chosen = (draws[0, :, :1] < c.histogram_probability).view(batch, 1, 1, 1)
            x = torch.where(chosen & colour, matched, x)
        if c.gamma > 0:
            bound = -math.log1p(-c.gamma)
            exponent = torch.exp((2 * draws[1] - 1) * bound).view(batch, bands, 1, 1)
            x = torch.where(colour, 255.0 * (x / 255.0).clamp_min(0).pow(exponent), x)
        if c.gain > 0 or c.offset > 0:
            gain = 1 + (2 * draws[2] - 1) * c.gain
            offset = (2 * draws[3] - 1) * c.offset * 255.0
            x = torch.where(colour, x * gain.view(batch, bands, 1, 1) + offset.view(batch, bands, 1, 1), x)
        if c.blur_probability > 0:
            sigma = 0.1 + blur_draws[1] * (c.blur_sigma - 0.1)
            blurred = gaussian_blur(x, sigma)
            chosen = (blur_draws[0] < c.blur_probability).view(batch, 1, 1, 1)
            x = torch.where(chosen & colour, blurred, x)
        if c.noise_std > 0:
            noise_generator = torch.Generator(device=device).manual_seed(device_seed)
            noise = torch.randn(x.shape, generator=noise_generator, device=device) * c.noise_std
            x = torch.where(colour, x + noise, x)
        return x.clamp(0, 255)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float images blurred by a separable Gaussian of standard deviation ``sigma[b]`` per patch."""
    batch, bands, height, width = images.shape
    # Three sigmas, within what reflect padding allows.
    radius = max(1, min(math.ceil(3 * float(sigma.max())), height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(-1, 1)) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(bands, dim=0)
    flat = images.reshape(1, batch * bands, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernels.view(-1, 1, 1, 2 * radius + 1), groups=batch * bands)
    flat = F.conv2d(flat, kernels.view(-1, 1, 2 * radius + 1, 1), groups=batch * bands)
    return flat.view(batch, bands, height, width)


def histogram_match(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each band of each patch mapped through its own CDF onto the reference quantile function.

    ``reference`` is (C, L): band values at L evenly spaced quantile levels from 0 to 1. Equal values map
    alike (their mean rank is used).
    """
    batch, bands, height, width = images.shape
    flat = images.reshape(batch * bands, height * width).contiguous()
    ordered = flat.sort(dim=1).values
    left = torch.searchsorted(ordered, flat, side="left")
    right = torch.searchsorted(ordered, flat, side="right")
    cdf = (left + right - 1).to(images.dtype) / (2 * max(height * width - 1, 1))
    table = reference.to(images.dtype).repeat(batch, 1)
    return _interp_even(cdf, table).view(batch, bands, height, width)


def band_quantiles(patches: Iterable[np.ndarray], levels: int = 17) -> list[list[float]]:
    """Per band, the values at ``levels`` evenly spaced quantiles (0 to 1) of uint8 (C, H, W) ``patches``: a
    ``data.radiometric.histogram_reference`` for the domain they come from. Patches are read one at a time."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    histogram: np.ndarray | None = None
    for patch in patches:
        if patch.dtype != np.uint8:
            raise ValueError(f"reference patches must be uint8, got {patch.dtype}")
        counts = np.stack([np.bincount(band.ravel(), minlength=256) for band in patch])
        histogram = counts if histogram is None else histogram + counts
    if histogram is None:
        raise ValueError("no reference patch was given")
    return histogram_quantiles(histogram, levels)


def histogram_quantiles(histogram: np.ndarray, levels: int) -> list[list[float]]:
    """Per row of a (C, 256) count ``histogram`` of uint8 values, the values at ``levels`` evenly spaced quantiles
    from 0 to 1, exactly as ``numpy.quantile`` (linear method) of the counted values: the rank scale on which
    histogram_match reads a reference."""
    cumulative = np.cumsum(histogram, axis=1)
    count = int(cumulative[0, -1])
    position = np.linspace(0, 1, levels) * (count - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, count - 1)
    frac = position - low
    # The value of 0-based rank r is the smallest whose cumulative count exceeds r.
    return [
        (
            np.searchsorted(row, low, side="right") * (1 - frac) + np.searchsorted(row, high, side="right") * frac
        ).tolist()
        for row in cumulative
    ]


def _interp_even(levels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Linear interpolation at ``levels`` in [0, 1] of ``table``'s values at evenly spaced levels from 0 to 1
    (along the last dimension; ``levels`` has ``table``'s leading dimensions or none)."""
    last = table.shape[-1] - 1
    position = levels.clamp(0, 1) * last
    low = position.floor().long().clamp(max=max(last - 1, 0))
    frac = position - low
    if table.dim() == 1:
        return table[low] * (1 - frac) + table[(low + 1).clamp(max=last)] * frac
    below = table.gather(-1, low)
    above = table.gather(-1, (low + 1).clamp(max=last))
    return below * (1 - frac) + above * frac
