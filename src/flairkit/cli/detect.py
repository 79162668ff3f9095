"""``flair detect``: land-cover maps of orthophotos of any size (zone detection)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded
from flairkit.cli.predict import CheckpointOption, config_for_weights
from flairkit.errors import ConfigError


def resolve_device(device: str) -> str:
    """``auto``: this rank's GPU when there is one, else Apple MPS, else the CPU."""
    if device != "auto":
        return device
    import torch

    from flairkit.detection.distributed import env_local_rank

    if torch.cuda.is_available():
        return f"cuda:{env_local_rank() % torch.cuda.device_count()}"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@guarded
def detect_command(
    inputs: Annotated[list[Path], typer.Argument(help="Orthophotos (GeoTIFF/VRT) or folders of them.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Map file (.tif) for one input, else a folder receiving <stem>_landcover.tif."
        ),
    ],
    config: ConfigOption = None,
    overrides: SetOption = None,
    checkpoint: CheckpointOption = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="A released model's preset name: its config, and its weights by default."),
    ] = None,
    overwrite: OverwriteOption = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue interrupted maps (byte-identical result); skip finished ones.")
    ] = False,
    evaluate: Annotated[
        Path | None,
        typer.Option("--evaluate", help="Label raster (FLAIR codes) on the input's grid: write FLAIR metrics."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, mps ...")] = "auto",
    block_size: Annotated[
        int | None, typer.Option("--block-size", help="Side in pixels of the unit of work and resume (default ~2048).")
    ] = None,
    rank: Annotated[
        int | None, typer.Option("--rank", help="This process's rank (default: RANK / SLURM_PROCID, else 0).")
    ] = None,
    world_size: Annotated[
        int | None, typer.Option("--world-size", help="Number of ranks (default: WORLD_SIZE / SLURM_NTASKS, else 1).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
) -> None:
    """Map land cover over orthophotos of any size: streamed, resumable, shareable between GPUs.

    Settings (tile size, margin, margin|blend stitching, outputs) come from the config's detect section,
    e.g. --set detect.stitching=blend --set detect.confidence=true --set detect.cog=true.
    """
    from flairkit.detection.distributed import env_rank_and_world_size
    from flairkit.detection.run import detect, print_summary
    from flairkit.models.checkpoints import load_model

    if config is not None and model is not None:
        raise ConfigError("give either --config or --model (a preset), not both; add changes with --set")
    cfg = config_for_weights(config or model, overrides, checkpoint)
    weights = checkpoint or model or (str(cfg.evaluate.checkpoint) if cfg.evaluate.checkpoint else None)
    if weights is None:
        raise ConfigError("no weights given: pass --checkpoint FILE, or --model NAME for a released model")
    env_rank, env_world = env_rank_and_world_size()
    torch_device = resolve_device(device)
    network = load_model(cfg, weights, torch_device)
    rank = env_rank if rank is None else rank
    summary = detect(
        cfg,
        network,
        inputs,
        output,
        overwrite=overwrite,
        resume=resume,
        evaluate_labels=evaluate,
        device=torch_device,
        rank=rank,
        world_size=env_world if world_size is None else world_size,
        progress=progress,
        block_size=block_size,
    )
    if not progress and rank == 0:
        print_summary(summary, console)  # with a progress bar, detect has printed it already
