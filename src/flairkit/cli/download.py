"""``flair data download``: fetch a FLAIR dataset (verified, resumable), extract it and check it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from flairkit.cli.common import OverwriteOption, console, error_console, guarded
from flairkit.data.check import CheckReport
from flairkit.data.download import (
    MIRROR_ENV,
    DownloadResult,
    available_datasets,
    check_download,
    download_dataset,
    load_manifest,
)
from flairkit.errors import ConfigError
from flairkit.fetch import ProgressCallback

_SHOWN_PROBLEMS = 20


@contextlib.contextmanager
def transfer_progress(enabled: bool) -> Iterator[ProgressCallback | None]:
    """Rich progress bars on stderr, one per label the library reports (bytes done out of total)."""
    if not enabled:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=error_console) as bar:
        tasks: dict[str, TaskID] = {}

        def report(label: str, done: int, total: int | None) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield report


def _check(result: DownloadResult, progress: bool) -> CheckReport:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=error_console, disable=not progress) as bar:
        task = bar.add_task(f"checking {result.root}", total=None)
        return check_download(result, progress=lambda done, total: bar.update(task, completed=done, total=total))


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


@guarded
def download_command(
    name: Annotated[str | None, typer.Argument(help="Dataset to download, e.g. flair1-toy (see --list).")] = None,
    to: Annotated[Path | None, typer.Option("--to", help="Folder that receives the dataset.")] = None,
    modalities: Annotated[
        str | None,
        typer.Option(
            "--modalities",
            help="FLAIR-HUB only: modalities to fetch, comma-separated (e.g. AERIAL_RGBI,SENTINEL2_TS); "
            "AERIAL_LABEL-COSIA is added unless a label is named, SENTINEL2_MSK-SC with SENTINEL2_TS.",
        ),
    ] = None,
    domains: Annotated[
        str | None,
        typer.Option(
            "--domains",
            help="FLAIR-HUB only: domain-years (D006-2020) or domains (D006) to fetch, comma-separated; default all.",
        ),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror",
            help="A folder holding the files under their manifest paths, or a URL replacing the dataset's source "
            f"(a copy of IGN's storage, or a Hugging Face mirror for files on the Hub); or ${MIRROR_ENV}.",
        ),
    ] = None,
    overwrite: OverwriteOption = False,
    list_only: Annotated[bool, typer.Option("--list", help="List the datasets that can be downloaded.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the dataset check after extraction.")] = False,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries per file on network errors.")] = 5,
    keep_archives: Annotated[
        bool, typer.Option("--keep-archives", help="Keep the zip files after extraction.")
    ] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Use local files only (as HF_HUB_OFFLINE=1 does).")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Download a FLAIR dataset into a folder; run it again to resume an interrupted download."""
    if list_only:
        _print_datasets()
        return
    if name is None:
        raise ConfigError("name the dataset to download (see `flair data download --list`)")
    if to is None:
        raise ConfigError("--to is missing: choose the folder that receives the dataset")
    with transfer_progress(progress) as report:
        result = download_dataset(
            name,
            to,
            modalities=_names(modalities),
            domains=_names(domains),
            mirror=mirror,
            overwrite=overwrite,
            retries=retries,
            check=False,
            keep_archives=keep_archives,
            offline=True if offline else None,
            progress=report,
        )
    fetched = f"{len(result.downloaded)} file(s) downloaded"
    if result.skipped:
        fetched += f", {len(result.skipped)} already present"
    console.print(f"{name}: {fetched}; dataset in {result.root}", highlight=False)
    if no_check or not load_manifest().datasets[name].check or not result.root.is_dir():
        return
    report = _check(result, progress)
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
    table = Table("name", "approx. download", "files", "source", "description")
    for spec in available_datasets():
        gigabytes = spec.approx_size / 1e9
        size = "?" if not spec.approx_size else f"{gigabytes:.1f} GB" if gigabytes >= 1 else f"{gigabytes * 1e3:.0f} MB"
        sources = sorted({f.source.repo_id or "IGN storage" for f in spec.files})
        files = f"{len(spec.files)} + 1 per folder" if spec.archives is not None else str(len(spec.files))
        table.add_row(spec.name, size, files, ", ".join(sources), spec.description)
    console.print(table)
