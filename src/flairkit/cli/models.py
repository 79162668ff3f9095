"""``flair models``: the presets and released models, one model's details, or what a weights file holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flairkit.cli.common import console, error_console, guarded
from flairkit.config.schema import FLAIR_MEANS
from flairkit.errors import ConfigError


def _numbers(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]" if values else "-"


def _normalization(norm: dict[str, Any]) -> str:
    if norm["mode"] != "custom":
        return norm["mode"]
    return f"custom\nmeans {_numbers(norm['means'])}\nstds {_numbers(norm['stds'])}"


def _miou(info: dict[str, Any]) -> str:
    published = info["published"]
    return f"{published['miou']:.2f}" if published else "-"


PRESET_TABLE_WIDTH = 124
"""The preset table needs this many columns; narrower terminals wrap its lines rather than hide columns."""


def _short_normalization(norm: dict[str, Any]) -> str:
    if norm["mode"] != "custom":
        return norm["mode"]
    flair = [FLAIR_MEANS[c] for c in range(5)]
    return "flair" if all(m in flair for m in norm["means"] or []) else "custom"


def _presets_table(verbose: bool) -> Table:
    from flairkit.config import preset_names
    from flairkit.models.zoo import model_info

    table = Table(title="flairkit presets (`flair models NAME` for details)", show_lines=False)
    table.add_column("name", no_wrap=True, overflow="fold")
    for column in ("bands", "norm.", "classes", "architecture", "S2", "hub", "mIoU"):
        table.add_column(column, justify="right" if column == "mIoU" else "left", no_wrap=column == "architecture")
    if verbose:
        table.add_column("description")
    for name in preset_names():
        info = model_info(name)
        row = [
            name,
            f"{info['modalities']} {','.join(str(c) for c in info['channels'])}",
            _short_normalization(info["normalization"]),
            info["nomenclature"],
            f"{info['architecture']}/{info['encoder']}",
            "yes" if info["multimodal"] else "",
            "yes" if info["release"] else "",
            _miou(info),
        ]
        table.add_row(*row, *([info["description"]] if verbose else []))
    return table


def _details(name: str) -> list[Any]:
    from flairkit.models.zoo import model_info

    info = model_info(name)
    summary = Table(title=name, show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value", overflow="fold")  # URLs and hashes are shown whole
    summary.add_row("description", info["description"] or "-")
    summary.add_row("modalities", f"{info['modalities']} ({', '.join(info['band_names'])})")
    summary.add_row("channels (data.channels)", str(info["channels"]))
    summary.add_row("normalisation", _normalization(info["normalization"]))
    summary.add_row("nomenclature", f"{info['nomenclature']} ({info['n_classes']} logits)")
    summary.add_row("architecture", f"{info['architecture']} / {info['encoder']}")
    summary.add_row("multimodal (U-T&T)", "yes" if info["multimodal"] else "no")
    summary.add_row("aerial metadata", "yes" if info["metadata"] else "no")
    release = info["release"]
    if release:
        summary.add_row("hub repository", release["hub_repo"])
        summary.add_row("weights file", release["filename"])
        summary.add_row("revision", release["revision"])
        summary.add_row("sha256", release["sha256"] or "not published: checked against the hub's ETag")
        summary.add_row("size", f"{release['size']:,} bytes" if release["size"] is not None else "not published")
        summary.add_row("download URL", release["url"])
        cached = release["cache_path"] or f"not downloaded yet (`flair models {name} --download`)"
        summary.add_row("hub cache", cached)
    else:
        summary.add_row("released weights", "none (train with `flair train`)")
    parts: list[Any] = [summary]
    published = info["published"]
    if published:
        source = escape(f"{published['source']} ({published['protocol']} protocol)")
        parts.append(f"\n[bold]published metrics[/]: {source}")
        metrics = Table()
        metrics.add_column("class")
        metrics.add_column("IoU %", justify="right")
        for cls, iou in published["per_class_iou"].items():
            metrics.add_row(cls, f"{iou:.2f}")
        metrics.add_row("[bold]mIoU[/]", f"[bold]{published['miou']:.2f}[/]")
        if published["overall_accuracy"] is not None:
            metrics.add_row("overall accuracy", f"{published['overall_accuracy']:.2f}")
        parts.append(metrics)
    return parts


def _inspection(path: Path, verbose: bool) -> Table:
    from flairkit.models.weights import inspect_checkpoint

    info = inspect_checkpoint(path)
    table = Table(title=f"weights file {info['path']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in info.items():
        if key == "path" or (key == "sha256" and not verbose):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        elif value is None:
            value = "unknown"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), str(value))
    return table


def _download(name: str | None) -> None:
    from flairkit.cli.download import transfer_progress
    from flairkit.models.zoo import resolve_weights

    if name is None:
        raise ConfigError("--download needs the name of a released model (see `flair models`)")
    with transfer_progress(error_console.is_terminal) as report:
        path = resolve_weights(name, progress=report)
    console.print(f"weights of {name}: {path}", highlight=False)


@guarded
def models_command(
    name: Annotated[str | None, typer.Argument(help="A preset or released model name: show its details.")] = None,
    inspect: Annotated[
        Path | None,
        typer.Option("--inspect", help="Describe a weights file or bundle folder (format, channels, classes...)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="More detail: descriptions in the list, sha256 when inspecting.")
    ] = False,
    download: Annotated[
        bool, typer.Option("--download", help="Download the named released model's weights into the hub cache.")
    ] = False,
) -> None:
    """List the presets and released models, show one in detail, or inspect a weights file."""
    if download:
        _download(name)
    elif inspect is not None:
        console.print(_inspection(inspect, verbose))
    elif name is not None:
        for part in _details(name):
            console.print(part)
    else:
        wide = Console(width=max(console.width, PRESET_TABLE_WIDTH), file=console.file)
        wide.print(_presets_table(verbose))
