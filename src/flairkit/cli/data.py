"""``flair data``: check a dataset, synthesise a small FLAIR-like one, cut your own data into patches, or measure
its band statistics."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from flairkit.atomic import check_writable, write_text_atomic
from flairkit.cli.common import (
    ConfigOption,
    OverwriteOption,
    SetOption,
    console,
    guarded,
    resolve_config,
    stdout_is_terminal,
)
from flairkit.data.check import CheckReport, check_dataset
from flairkit.data.hub.check import check_hub_dataset
from flairkit.data.hub.layout import is_hub_folder
from flairkit.errors import ConfigError

data_app = typer.Typer(
    help="Check FLAIR datasets, generate synthetic ones, cut your own, measure band statistics.", no_args_is_help=True
)


class SynthLayout(str, Enum):
    """The release whose layout ``flair data synth`` writes."""

    flair2 = "flair2"
    hub = "hub"


def _facts_table(title: str) -> Table:
    """A two-column table of facts (what, value) without a header."""
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    return table


def _print_report(report: CheckReport) -> None:
    table = _facts_table("dataset check")
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
    source: Annotated[
        Path, typer.Argument(help="A FLAIR #2 dataset folder, a folder of areas, a CSV list, or a FLAIR-HUB folder.")
    ],
    nomenclature: Annotated[
        str, typer.Option(help="Nomenclature whose classes mask values must belong to: a name or a YAML path.")
    ] = "15cl",
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
    modalities: Annotated[
        str | None,
        typer.Option(help="FLAIR-HUB: comma-separated modalities every patch must have (default: those present)."),
    ] = None,
) -> None:
    """Read every file of a dataset and list every problem; exit code 1 when one would break training."""
    columns = (TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not stdout_is_terminal()) as bar:
        task = bar.add_task("check", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if is_hub_folder(source):
            chosen = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
            report = check_hub_dataset(
                source, modalities=chosen, expected_size=size, max_workers=workers, progress=progress
            )
        else:
            report = check_dataset(
                source,
                sentinel=sentinel,
                nomenclature=nomenclature,
                expected_size=size,
                sat_patch_size=sat_patch_size,
                max_workers=workers,
                progress=progress,
            )
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _products_crs(crs: str | None, products: bool) -> str | None:
    """``--products-crs`` checked: a CRS, given with --products."""
    if crs is None:
        return None
    if not products:
        raise ConfigError("--products-crs applies with --products; add --products or leave it out")
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        CRS.from_user_input(crs)
    except CRSError as error:
        raise ConfigError(f"--products-crs {crs!r} is not a CRS ({error}); give e.g. EPSG:3857") from None
    return crs


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
    products: Annotated[
        bool,
        typer.Option(
            "--products",
            help="Also write each orthophoto as separate products: RVB, IRC (NIR, R, G), DSM and DTM in metres, "
            "and (with Sentinel-2) its series as dated GeoTIFFs listed in <stem>_S2/acquisitions.json.",
        ),
    ] = False,
    products_crs: Annotated[
        str | None,
        typer.Option(help="CRS of the --products (default the orthophoto's, EPSG:2154), e.g. EPSG:3857."),
    ] = None,
    products_resolution: Annotated[
        float | None,
        typer.Option(help="Pixel size of the RVB, IRC and DSM --products in their CRS's units (default 0.2).", min=0),
    ] = None,
    sat_patch_size: Annotated[
        int | None, typer.Option(help="Sentinel-2 super-patch side the super-areas must hold around every patch.")
    ] = None,
    layout: Annotated[
        SynthLayout,
        typer.Option(help="flair2: the FLAIR #2 release; hub: FLAIR-HUB, every modality in IGN's layout."),
    ] = SynthLayout.flair2,
    country: Annotated[
        bool,
        typer.Option(
            "--country",
            help="Write another country instead: RGB orthophotos of another sensor and CRS, 6 classes as polygons "
            "(labels.gpkg), a mapping table, the nomenclature YAML and areas (uses --orthos, --ortho-size, --seed).",
        ),
    ] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Write a small FLAIR-like world (patches, masks, metadata, Sentinel-2, orthophotos) for demos and tests, or,
    with --country, another country's orthophotos and polygons to cut with `flair data patches`."""
    from flairkit.synth.world import SynthOptions, synthesize_world

    if country:
        others = {
            "--domains": domains,
            "--areas": areas,
            "--patches": patches,
            "--patch-size": patch_size,
            "--sentinel": sentinel,
            "--sat-patch-size": sat_patch_size,
            "--products": products or None,
            "--products-crs": products_crs,
            "--products-resolution": products_resolution,
            "--layout": None if layout is SynthLayout.flair2 else layout,
        }
        for name, value in others.items():
            if value is not None:
                raise ConfigError(f"{name} does not apply to --country; leave it out")
        _synth_country(out, {"n_orthos": orthos, "ortho_size": ortho_size, "seed": seed}, overwrite)
        return
    shared = {
        "n_domains": domains,
        "areas_per_domain": areas,
        "patches_per_area": patches,
        "patch_size": patch_size,
        "seed": seed,
    }
    if layout is SynthLayout.hub:
        flair2_only = {
            "--sentinel": sentinel,
            "--orthos": orthos,
            "--ortho-size": ortho_size,
            "--sat-patch-size": sat_patch_size,
            "--products": products or None,
            "--products-crs": products_crs,
            "--products-resolution": products_resolution,
        }
        for name, value in flair2_only.items():
            if value is not None:
                raise ConfigError(f"{name} applies to --layout flair2 only; leave it out")
        _synth_hub(out, shared, overwrite)
        return
    given = {
        **shared,
        "sentinel": sentinel,
        "n_orthos": orthos,
        "ortho_size": ortho_size,
        "sat_patch_size": sat_patch_size,
        "products": products or None,
        "products_crs": _products_crs(products_crs, products),
        "products_resolution": products_resolution,
    }
    if products_resolution is not None and not products:
        raise ConfigError("--products-resolution applies with --products; add --products or leave it out")
    options = SynthOptions(**{key: value for key, value in given.items() if value is not None})
    summary = synthesize_world(out, options, overwrite)
    table = _facts_table(f"synthetic dataset in {summary.root}")
    for split, count in summary.counts.items():
        names = ", ".join(summary.domains.get(split, []))
        table.add_row(f"{split} patches", f"{count} in {names}" if names else str(count))
    for split, csv_path in summary.csv.items():
        table.add_row(f"{split} list", str(csv_path))
    table.add_row("aerial metadata", str(summary.metadata))
    table.add_row("Sentinel-2 centroids", str(summary.centroids) if summary.centroids else "none")
    for index, (image, labels) in enumerate(summary.orthos):
        table.add_row("orthophoto", f"{image} (labels {labels.name})")
        if options.products and options.sentinel:
            from flairkit.synth.sentinel import write_ortho_series

            buffer = options.sat_patch_size // 2 + 2
            table.add_row("Sentinel-2 series", str(write_ortho_series(image, labels, options.seed, index, buffer)))
    console.print(table)
    console.print(f"check it with: flair data check {summary.root}", highlight=False)


def _synth_hub(out: Path, given: dict[str, Any], overwrite: bool) -> None:
    from flairkit.synth.hub import HubSynthOptions, synthesize_hub_world

    options = HubSynthOptions(**{key: value for key, value in given.items() if value is not None})
    summary = synthesize_hub_world(out, options, overwrite)
    table = _facts_table(f"synthetic FLAIR-HUB world in {summary.root}")
    for split, count in summary.counts.items():
        table.add_row(f"{split} patches (split_1)", f"{count} in {', '.join(summary.domains[split])}")
    for split, csv_path in summary.csv.items():
        table.add_row(f"{split} CSV", str(csv_path))
    table.add_row("dates and splits", str(summary.metadata_dir))
    console.print(table)
    console.print(f"check it with: flair data check {summary.root}", highlight=False)


def _synth_country(out: Path, given: dict[str, Any], overwrite: bool) -> None:
    from flairkit.synth.country import CLASS_FIELD, CountryOptions, synthesize_country

    options = CountryOptions(**{key: value for key, value in given.items() if value is not None})
    summary = synthesize_country(out, options, overwrite)
    table = _facts_table(f"another country in {summary.root}")
    for image in summary.orthos:
        table.add_row("orthophoto (RGB)", str(image))
    table.add_row("vector labels", f"{summary.labels} ({summary.polygons} polygons, class field {CLASS_FIELD})")
    table.add_row("mapping table", str(summary.mapping))
    table.add_row("nomenclature", str(summary.nomenclature))
    table.add_row("areas", f"{summary.areas} (fields name, split)")
    total = max(sum(summary.pixels.values()), 1)
    table.add_row("pixels", ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in summary.pixels.items()))
    console.print(table)
    root = summary.root
    console.print(
        f"cut it into patches with: flair data patches {root}/orthophotos -l {summary.labels} "
        f"--class-field {CLASS_FIELD} --mapping {summary.mapping} --nomenclature {summary.nomenclature} "
        f"--areas {summary.areas} --area-field name --split-field split -o <dataset>",
        highlight=False,
        soft_wrap=True,
    )


class Sampling(str, Enum):
    """How ``flair data patches`` chooses patches."""

    grid = "grid"
    balanced = "balanced"


def _numbers(text: str | None, kind: type, option: str) -> list[Any] | None:
    if text is None:
        return None
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} expects comma-separated numbers, got {text!r}") from None


@data_app.command("patches")
@guarded
def patches(
    images: Annotated[list[Path], typer.Argument(help="Orthophotos (GeoTIFF/VRT, 8-bit bands) or folders of them.")],
    labels: Annotated[
        Path, typer.Option("--labels", "-l", help="A label raster, or polygons (GeoPackage, Shapefile, ...).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the dataset in.")],
    nomenclature: Annotated[
        str, typer.Option(help="Built-in nomenclature or the path of a nomenclature YAML: the classes of the masks.")
    ] = "15cl",
    class_field: Annotated[str | None, typer.Option(help="Polygons: the attribute holding the class.")] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(help="Table from label values to class codes or names (CSV 'value,class', or YAML/JSON)."),
    ] = None,
    layer: Annotated[str | None, typer.Option(help="Polygons: the layer to read.")] = None,
    labels_start_at: Annotated[
        int | None, typer.Option(help="0 or 1: where label values start (default: detected and stated).")
    ] = None,
    background: Annotated[
        str | None, typer.Option(help="Polygons: class of the pixels no polygon covers (default: unlabelled).")
    ] = None,
    areas: Annotated[
        Path | None, typer.Option(help="Polygons of the areas (zones), split as wholes (default: a grid).")
    ] = None,
    area_field: Annotated[str | None, typer.Option(help="The attribute naming each area.")] = None,
    split_field: Annotated[
        str | None, typer.Option(help="An attribute of the areas holding train, val or test (empty: drawn).")
    ] = None,
    areas_layer: Annotated[str | None, typer.Option(help="The layer of the areas file to read.")] = None,
    grid_km: Annotated[float, typer.Option(help="Side in km of the grid cells used as areas without --areas.")] = 1.0,
    split: Annotated[str, typer.Option(help="Shares of patches for train,val,test, drawn by area.")] = "0.7,0.15,0.15",
    patch_size: Annotated[int, typer.Option(help="Patch side in pixels.")] = 512,
    stride: Annotated[int | None, typer.Option(help="Pixels between patch origins (default: the patch size).")] = None,
    sampling: Annotated[
        Sampling, typer.Option(help="grid: every patch with labels; balanced: --max-patches, rarest class first.")
    ] = Sampling.grid,
    max_patches: Annotated[int | None, typer.Option(help="At most this many patches in all.")] = None,
    min_labelled: Annotated[
        float, typer.Option(help="Share of a patch that must be labelled (patches with no label are left out).")
    ] = 0.0,
    bands: Annotated[str | None, typer.Option(help="1-based bands to write, e.g. 1,2,3 (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split (and of the sampling).")] = 2022,
    year: Annotated[int | None, typer.Option(help="Acquisition year in the domain names (default: --date's).")] = None,
    camera: Annotated[str | None, typer.Option(help="Aerial metadata: the camera.")] = None,
    date: Annotated[str | None, typer.Option(help="Aerial metadata: acquisition date YYYY-MM-DD.")] = None,
    time: Annotated[str | None, typer.Option(help="Aerial metadata: acquisition time HHhMM.")] = None,
    altitude: Annotated[float | None, typer.Option(help="Aerial metadata: mean ground altitude (m).")] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Cut your orthophotos and labels into a FLAIR-layout dataset: patches, masks, CSV lists split by area."""
    from flairkit.data.patches import PatchOptions, make_patches

    shares = _numbers(split, float, "--split")
    if shares is None or len(shares) != 3:
        raise ConfigError(f"--split expects 3 shares train,val,test (e.g. 0.7,0.15,0.15), got {split!r}")
    options = PatchOptions(
        nomenclature=nomenclature,
        patch_size=patch_size,
        stride=stride,
        sampling=sampling.value,
        max_patches=max_patches,
        min_labelled=min_labelled,
        bands=_numbers(bands, int, "--bands"),
        class_field=class_field,
        layer=layer,
        mapping=mapping,
        labels_start_at=labels_start_at,
        background=background,
        areas=areas,
        area_field=area_field,
        split_field=split_field,
        areas_layer=areas_layer,
        grid_km=grid_km,
        split=(shares[0], shares[1], shares[2]),
        seed=seed,
        year=year,
        camera=camera,
        date=date,
        time=time,
        altitude=altitude,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not stdout_is_terminal()) as bar:
        task = bar.add_task("scanning", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        summary = make_patches(images, labels, output, options, overwrite=overwrite, progress=progress)
    splits = list(summary.counts)
    table = Table(title=f"class frequencies in {summary.root} (% of each split's pixels)")
    table.add_column("code", justify="right")
    table.add_column("class")
    for name in splits:
        table.add_column(f"{name} %", justify="right")
    for row in summary.frequencies:
        code = "" if row["code"] is None else str(row["code"])
        table.add_row(code, row["class"], *(f"{row['percent'][name]:.2f}" for name in splits))
    table.add_section()
    table.add_row("", "patches", *(str(summary.counts[name]) for name in splits))
    table.add_row("", "areas", *(str(len(summary.areas[name])) for name in splits))
    console.print(table)
    for text in summary.notes:
        console.print(f"[yellow]note:[/] {escape(text)}", highlight=False, soft_wrap=True)
    console.print(f"report: {summary.report_markdown} and {summary.report.name}", highlight=False, soft_wrap=True)
    settings = [f"data.{name}_csv={path}" for name, path in summary.csv.items()]
    settings += [f"data.nomenclature={summary.nomenclature}", f"data.channels=[{','.join(map(str, summary.channels))}]"]
    console.print(
        "train on it with: flair train -c <preset or config> " + " ".join(f"--set '{s}'" for s in settings),
        highlight=False,
        soft_wrap=True,
    )


@data_app.command("stats")
@guarded
def stats(
    config: ConfigOption = None,
    overrides: SetOption = None,
    sample: Annotated[
        int | None, typer.Option(help="Read only this many train patches, drawn at random (default: all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --sample draw.")] = 0,
    quantiles: Annotated[
        int | None,
        typer.Option(
            help="Also write the values at this many evenly spaced quantiles (0 to 1) of each band, as "
            "data.radiometric.histogram_reference."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="YAML file to write the data.normalization snippet in.")
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Per-band mean and std of data.channels over the train split, as a data.normalization config snippet (and
    with --quantiles the per-band quantiles, as data.radiometric.histogram_reference)."""
    from flairkit.data.datamodule import split_records
    from flairkit.data.stats import band_statistics

    cfg = resolve_config(config, overrides)
    if output is not None:
        check_writable(output, overwrite=overwrite)
    origin = cfg.data.train_csv or cfg.data.root
    result = band_statistics(
        split_records(cfg, "train"), cfg.data.channels, sample=sample, seed=seed, quantiles=quantiles
    )
    text = result.to_yaml(f"the train split of {origin}")
    if output is None:
        console.print(text, highlight=False, soft_wrap=True, markup=False)
    else:
        write_text_atomic(output, text, overwrite=overwrite)
        console.print(f"written {output}", highlight=False, soft_wrap=True)
    norm = result.normalization()
    settings = [f"data.normalization.means={norm['means']}", f"data.normalization.stds={norm['stds']}"]
    console.print(
        "use them with: " + " ".join(f"--set '{s.replace(' ', '')}'" for s in settings),
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
