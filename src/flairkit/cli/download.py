"""``flair data download``: fetch a FLAIR dataset (resumable), verify it, extract it and check it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flairkit.cli.common import OverwriteOption, console, error_console, guarded
from flairkit.data.download import MIRROR_ENV, available_datasets, download_dataset

_SHOWN_PROBLEMS = 20


@guarded
def download_command(
    name: Annotated[str | None, typer.Argument(help="Dataset to download, e.g. flair1-toy (see --list).")] = None,
    to: Annotated[Path | None, typer.Option("--to", help="Folder that receives the dataset.")] = None,
    mirror: Annotated[
        str | None,
        typer.Option("--mirror", help=f"Base URL or folder to download from instead of IGN's (or ${MIRROR_ENV})."),
    ] = None,
    overwrite: OverwriteOption = False,
    list_only: Annotated[bool, typer.Option("--list", help="List the datasets that can be downloaded.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the dataset check after extraction.")] = False,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries per file on network errors.")] = 5,
    keep_archives: Annotated[
        bool, typer.Option("--keep-archives", help="Keep the zip files after extraction.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Download a FLAIR dataset into a folder; run it again to resume an interrupted download."""
    if list_only:
        _print_datasets()
        return
    if name is None:
        raise typer.BadParameter("name the dataset to download (see --list)", param_hint="NAME")
    if to is None:
        raise typer.BadParameter("choose the folder that receives the dataset", param_hint="--to")
    result = download_dataset(
        name,
        to,
        mirror=mirror,
        overwrite=overwrite,
        retries=retries,
        progress=progress,
        check=not no_check,
        keep_archives=keep_archives,
    )
    fetched = f"{len(result.downloaded)} file(s) downloaded"
    if result.skipped:
        fetched += f", {len(result.skipped)} already present"
    console.print(f"{name}: {fetched}; dataset in {result.root}", highlight=False)
    report = result.check
    if report is None:
        return
    fatal = [problem for problem in report.problems if problem.fatal]
    warnings = len(report.problems) - len(fatal)
    if not fatal:
        details = f" ({warnings} warning(s); see `flair data check {result.root}`)" if warnings else ""
        console.print(f"check: ok{details}", highlight=False)
        return
    error_console.print(f"[bold red]check found {len(fatal)} problem(s) in {result.root}:[/]", highlight=False)
    for problem in fatal[:_SHOWN_PROBLEMS]:
        error_console.print(f"  {problem.path}: {problem.message}", markup=False, highlight=False)
    if len(fatal) > _SHOWN_PROBLEMS:
        error_console.print(f"  ... and {len(fatal) - _SHOWN_PROBLEMS} more (see `flair data check`)", highlight=False)
    raise typer.Exit(1)


def _print_datasets() -> None:
    table = Table("name", "approx. download", "files", "description")
    for spec in available_datasets():
        gigabytes = spec.approx_size / 1e9
        size = "?" if not spec.approx_size else f"{gigabytes:.1f} GB" if gigabytes >= 1 else f"{gigabytes * 1e3:.0f} MB"
        table.add_row(spec.name, size, str(len(spec.files)), spec.description)
    console.print(table)
