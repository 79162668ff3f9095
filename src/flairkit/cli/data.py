"""``flair data``: check a dataset, or synthesise a small FLAIR-like one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from flairkit.cli.common import OverwriteOption, console, guarded, stdout_is_terminal
from flairkit.data.check import CheckReport, check_dataset

data_app = typer.Typer(help="Check FLAIR datasets and generate synthetic ones.", no_args_is_help=True)


def _print_report(report: CheckReport) -> None:
    table = Table(title="dataset check", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for what, value in report.summary:
        table.add_row(what, value)
    console.print(table)
    for problem in report.problems:
        label = "[bold red]FATAL[/]" if problem.fatal else "[yellow]warning[/]"
        console.print(f"{label} {problem.path}: {problem.message}", markup=True, highlight=False, soft_wrap=True)
    if report.ok:
        console.print("[green]no fatal problem[/]")
    else:
        console.print(f"[bold red]{report.n_fatal} fatal problem(s)[/]: fix them before training")


@data_app.command("check")
@guarded
def check(
    source: Annotated[Path, typer.Argument(help="A FLAIR #2 dataset folder, a folder of areas, or a CSV list.")],
    nomenclature: Annotated[str, typer.Option(help="Nomenclature whose classes mask values must belong to.")] = "15cl",
    sentinel: Annotated[
        bool | None,
        typer.Option("--sentinel/--no-sentinel", help="Require / skip Sentinel-2 checks (default: when present)."),
    ] = None,
    size: Annotated[int | None, typer.Option(help="Required patch side in pixels (default: the usual one).")] = None,
    sat_patch_size: Annotated[
        int | None,
        typer.Option(
            help="Sentinel-2 super-patch side that must fit around every patch (default: 8, the "
            "smallest; the summary reports the largest side that fits)."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Threads reading files (default: a few per core).")] = None,
) -> None:
    """Read every file of a dataset and list every problem; exit code 1 when one would break training."""
    columns = (TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not stdout_is_terminal()) as bar:
        task = bar.add_task("check", total=None)
        report = check_dataset(
            source,
            sentinel=sentinel,
            nomenclature=nomenclature,
            expected_size=size,
            sat_patch_size=sat_patch_size,
            max_workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("synth")
@guarded
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to create the synthetic dataset in.")],
    domains: Annotated[int | None, typer.Option(help="Number of domains.")] = None,
    areas: Annotated[int | None, typer.Option(help="Areas per domain.")] = None,
    patches: Annotated[int | None, typer.Option(help="Patches per area.")] = None,
    patch_size: Annotated[int | None, typer.Option(help="Patch side in pixels.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    sentinel: Annotated[
        bool | None, typer.Option("--sentinel/--no-sentinel", help="Also write Sentinel-2 super-areas.")
    ] = None,
    orthos: Annotated[int | None, typer.Option(help="Number of large orthophotos for zone detection.")] = None,
    ortho_size: Annotated[int | None, typer.Option(help="Orthophoto side in pixels.")] = None,
    sat_patch_size: Annotated[
        int | None, typer.Option(help="Sentinel-2 super-patch side the super-areas must hold around every patch.")
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Write a small FLAIR-like world (patches, masks, metadata, Sentinel-2, orthophotos) for demos and tests."""
    from flairkit.data.synth import SynthOptions, synthesize_world

    given = {
        "n_domains": domains,
        "areas_per_domain": areas,
        "patches_per_area": patches,
        "patch_size": patch_size,
        "seed": seed,
        "sentinel": sentinel,
        "n_orthos": orthos,
        "ortho_size": ortho_size,
        "sat_patch_size": sat_patch_size,
    }
    options = SynthOptions(**{key: value for key, value in given.items() if value is not None})
    summary = synthesize_world(out, options, overwrite)
    table = Table(title=f"synthetic dataset in {summary.root}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for split, count in summary.counts.items():
        names = ", ".join(summary.domains.get(split, []))
        table.add_row(f"{split} patches", f"{count} in {names}" if names else str(count))
    for split, csv_path in summary.csv.items():
        table.add_row(f"{split} list", str(csv_path))
    table.add_row("aerial metadata", str(summary.metadata))
    table.add_row("Sentinel-2 centroids", str(summary.centroids) if summary.centroids else "none")
    for image, labels in summary.orthos:
        table.add_row("orthophoto", f"{image} (labels {labels.name})")
    console.print(table)
    console.print(f"check it with: flair data check {summary.root}", highlight=False)
