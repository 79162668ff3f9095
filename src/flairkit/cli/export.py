"""``flair export``: turn any supported checkpoint into a self-contained bundle (safetensors + config [+ ONNX])."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flairkit.cli.common import ConfigOption, OverwriteOption, SetOption, console, guarded, resolve_config
from flairkit.cli.predict import refuse_hub_network
from flairkit.errors import ConfigError


@guarded
def export_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="Weights: a .ckpt/.pth/.safetensors file, a bundle folder or a released model name.")
    ],
    out: Annotated[Path, typer.Argument(help="Bundle folder to write.")],
    config: ConfigOption = None,
    overrides: SetOption = None,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Also write model.onnx (aerial models; tiles of detect.tile_size).")
    ] = False,
    overwrite: OverwriteOption = False,
    private: Annotated[
        bool, typer.Option("--private", help="Make the bundle readable by its owner only (0700/0600).")
    ] = False,
) -> None:
    """Load weights strictly with their config and write a bundle that any flairkit command accepts."""
    from flairkit.models.export import export_bundle
    from flairkit.models.loader import load_model
    from flairkit.models.weights import config_from_checkpoint, weights_config_overrides, weights_config_source

    source = config or weights_config_source(checkpoint)
    restored = [] if config else weights_config_overrides(checkpoint)
    if source is not None:
        cfg = resolve_config(source, [*restored, *(overrides or [])])
    else:
        saved = config_from_checkpoint(checkpoint, overrides or []) if checkpoint.is_file() else None
        if saved is None:
            raise ConfigError(
                f"{checkpoint} does not say which config it was trained with: give it with --config PRESET_OR_YAML"
            )
        cfg = saved
    refuse_hub_network(
        cfg,
        "flair export",
        "use the checkpoint as it is: `flair evaluate` and flairkit.models.hub.load_hub_weights read it",
    )
    model = load_model(cfg, checkpoint)
    folder = export_bundle(
        cfg, model, out, overwrite=overwrite, onnx=onnx, tile_size=cfg.detect.tile_size, private=private
    )
    files = ", ".join(sorted(p.name for p in folder.iterdir()))
    console.print(f"bundle written to {folder} ({files})")
