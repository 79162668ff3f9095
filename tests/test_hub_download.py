"""FLAIR-HUB downloads by modality and domain, against a fake hub serving a synthetic world as IGN zips it."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fake_hub import FakeServer, serve, use_as_hub
from flairkit.cli.download import download_command
from flairkit.data.download import MANIFEST_PATH, ExistingDataError, download_dataset, load_manifest, select_files
from flairkit.data.hub.check import check_hub_dataset
from flairkit.data.hub.layout import METADATA_FOLDER, parse_modality_folder
from flairkit.errors import DataError
from flairkit.synth.hub import HubSynthOptions, synthesize_hub_world

HUB_REPO = "datasets/IGNF/FLAIR-HUB"
TOY_PATH = "flair_hub/FLAIR-HUB_TOY_DATASET.zip"
TOY_ROOT = "FLAIR-HUB_TOY"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic FLAIR-HUB release: three domain-years of one 256 px patch each, every modality."""
    options = HubSynthOptions(n_domains=3, areas_per_domain=1, patches_per_area=1, patch_size=256)
    return synthesize_hub_world(tmp_path_factory.mktemp("hub") / "world", options).root


def _zip_folder(folder: Path, prefix: str) -> bytes:
    """A zip of the content of ``folder``, its entries under ``prefix`` (IGN's archives hold their folder)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, f"{prefix}/{file.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def _folders(world: Path) -> list[str]:
    return sorted(p.name for p in world.iterdir() if parse_modality_folder(p.name) is not None)


def _domain_years(world: Path) -> list[str]:
    return sorted({name.split("_", 1)[0] for name in _folders(world) if "195X" not in name})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, world: Path) -> Iterator[FakeServer]:
    """IGN's FLAIR-HUB repository (one zip per release folder, GLOBAL_ALL_MTD.zip) and the toy on IGN's storage."""
    state = FakeServer(files={TOY_PATH: _zip_folder(world, TOY_ROOT)})
    for name in [*_folders(world), METADATA_FOLDER]:
        state.add_hub_file("IGNF/FLAIR-HUB", f"data/{name}.zip", _zip_folder(world / name, name), repo_type="dataset")
    with serve(state):
        use_as_hub(monkeypatch, state, tmp_path / "hf-home")
        yield state


def _manifest(server: FakeServer, world: Path) -> dict:
    """The packaged manifest, with the synthetic world's domain-years and the fake storage."""
    manifest = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    manifest["sources"]["ign-storage"]["url"] = server.url
    manifest["datasets"]["flairhub"]["modality_archives"]["domain_years"] = _domain_years(world)
    return manifest


def _fetched(server: FakeServer) -> set[str]:
    return {path.rsplit("/", 1)[1] for _, path, _ in server.gets(f"{HUB_REPO}/resolve/")}


def test_only_the_chosen_modalities_and_domains_are_fetched_and_pass_the_check(
    server: FakeServer, world: Path, tmp_path: Path
) -> None:
    manifest = _manifest(server, world)
    domain = _domain_years(world)[0]
    to = tmp_path / "hub"
    result = download_dataset(
        "flairhub", to, modalities=["AERIAL_RGBI", "SENTINEL2_TS"], domains=[domain], manifest=manifest, backoff=0.01
    )
    chosen = [f"{domain}_{m}" for m in ("AERIAL_RGBI", "SENTINEL2_TS", "SENTINEL2_MSK-SC", "AERIAL_LABEL-COSIA")]
    assert _fetched(server) == {f"{name}.zip" for name in [*chosen, METADATA_FOLDER]}
    assert sorted(p.name for p in to.iterdir() if not p.name.startswith(".")) == sorted([*chosen, METADATA_FOLDER])
    assert result.check is not None and result.check.n_fatal == 0, result.check.problems
    assert result.check.n_patches == 1

    requests = len(server.requests)
    again = download_dataset(
        "flairhub", to, modalities=["AERIAL_RGBI", "DEM_ELEV"], domains=[domain], manifest=manifest, check=False
    )
    assert again.downloaded == [f"data/{domain}_DEM_ELEV.zip"]
    assert {path.rsplit("/", 1)[1] for _, path, _ in server.requests[requests:] if "resolve" in path} == {
        f"{domain}_DEM_ELEV.zip"
    }
    report = check_hub_dataset(to, modalities=["AERIAL_RGBI", "DEM_ELEV", "AERIAL_LABEL-COSIA"])
    assert report.n_fatal == 0, report.problems


def test_a_domain_name_selects_its_domain_years_and_historical_folder(
    server: FakeServer, world: Path, tmp_path: Path
) -> None:
    domain = _domain_years(world)[1].split("-")[0]
    download_dataset(
        "flairhub",
        tmp_path,
        modalities=["AERIAL-RLT_PAN", "ALL_LABEL-LPIS"],
        domains=[domain],
        manifest=_manifest(server, world),
        check=False,
    )
    year = _domain_years(world)[1]
    expected = {f"{domain}-195X_AERIAL-RLT_PAN.zip", f"{year}_ALL_LABEL-LPIS.zip", f"{METADATA_FOLDER}.zip"}
    assert _fetched(server) == expected


def test_the_toy_archive_is_extracted_only_for_the_chosen_folders(
    server: FakeServer, world: Path, tmp_path: Path
) -> None:
    manifest = _manifest(server, world)
    result = download_dataset("flairhub-toy", tmp_path, modalities=["DEM_ELEV"], manifest=manifest)
    root = tmp_path / TOY_ROOT
    kept = sorted(p.name for p in root.iterdir() if parse_modality_folder(p.name) is not None)
    assert kept == sorted(f"{d}_{m}" for d in _domain_years(world) for m in ("AERIAL_LABEL-COSIA", "DEM_ELEV"))
    assert (root / METADATA_FOLDER / "GLOBAL_ALL_MTD_SPLIT.gpkg").is_file()
    assert result.check is not None and result.check.n_fatal == 0, result.check.problems

    with pytest.raises(ExistingDataError, match="extracted by flairkit for other modalities or domains"):
        download_dataset("flairhub-toy", tmp_path, modalities=["AERIAL_RGBI"], manifest=manifest)
    download_dataset("flairhub-toy", tmp_path, modalities=["AERIAL_RGBI"], manifest=manifest, overwrite=True)
    assert any(p.name.endswith("_AERIAL_RGBI") for p in root.iterdir())
    skipped = download_dataset("flairhub-toy", tmp_path, modalities=["AERIAL_RGBI"], manifest=manifest, check=False)
    assert skipped.skipped == [TOY_PATH] and skipped.downloaded == []


def test_packaged_flairhub_names_one_archive_per_release_folder() -> None:
    spec = load_manifest().datasets["flairhub"]
    assert spec.archives is not None and spec.archives.source.repo_id == "IGNF/FLAIR-HUB"
    files, selection = select_files(spec, ["AERIAL_RGBI", "AERIAL-RLT_PAN"], ["D033", "D006-2020"])
    assert [f.path for f in files] == [
        "data/GLOBAL_ALL_MTD.zip",
        "data/D006-195X_AERIAL-RLT_PAN.zip",
        "data/D006-2020_AERIAL_LABEL-COSIA.zip",
        "data/D006-2020_AERIAL_RGBI.zip",
        "data/D033-195X_AERIAL-RLT_PAN.zip",
        "data/D033-2018_AERIAL_LABEL-COSIA.zip",
        "data/D033-2018_AERIAL_RGBI.zip",
        "data/D033-2021_AERIAL_LABEL-COSIA.zip",
        "data/D033-2021_AERIAL_RGBI.zip",
    ]
    assert [f.extracts_to for f in files[1:3]] == [("D006-195X_AERIAL-RLT_PAN",), ("D006-2020_AERIAL_LABEL-COSIA",)]
    assert selection is not None and selection.modalities == ("AERIAL_RGBI", "AERIAL-RLT_PAN", "AERIAL_LABEL-COSIA")
    assert {f.verify for f in files} == {"hub-etag"}


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("flairhub", {}, r"flairhub is split by modality: choose them with --modalities"),
        ("flairhub", {"modalities": ["AERIAL_RGB"]}, r"unknown FLAIR-HUB modality 'AERIAL_RGB'"),
        ("flairhub", {"modalities": ["AERIAL_RGBI"], "domains": ["D999"]}, r"flairhub has no domain D999"),
        ("flairhub", {"modalities": ["AERIAL_RGBI"], "domains": ["006"]}, r"'006' is neither a domain"),
        ("flair1-toy", {"modalities": ["AERIAL_RGBI"]}, r"flair1-toy is downloaded whole"),
    ],
)
def test_bad_selections_are_refused_before_any_request(
    server: FakeServer, world: Path, tmp_path: Path, name: str, options: dict, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        download_dataset(name, tmp_path, manifest=_manifest(server, world), **options)
    assert server.requests == []


def test_cli_downloads_the_chosen_modalities_and_checks_them(
    server: FakeServer, world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(_manifest(server, world)), encoding="utf-8")
    monkeypatch.setattr("flairkit.data.download.MANIFEST_PATH", manifest)
    app = typer.Typer()
    app.command()(download_command)
    domain = _domain_years(world)[2]
    to = tmp_path / "hub"
    args = ["flairhub", "--to", str(to), "--modalities", "AERIAL_RGBI", "--domains", domain, "--no-progress"]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "check: ok" in ok.stdout
    assert (to / f"{domain}_AERIAL_RGBI").is_dir() and (to / f"{domain}_AERIAL_LABEL-COSIA").is_dir()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"path": "data/all.zip"}, r"'path' must be a relative path rule holding \{folder\}"),
        ({"path": "../{folder}.zip"}, r"'path' must be a relative path rule"),
        ({"domain_years": ["D006"]}, r"'domain_years' must list \{DOM\}-\{YEAR\} names"),
        ({"source": "ign-storage", "verify": "hub-etag"}, r"'hub-etag' needs a Hugging Face source"),
    ],
)
def test_malformed_modality_archives_are_reported(change: dict, message: str) -> None:
    manifest = json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))
    manifest["datasets"]["flairhub"]["modality_archives"].update(change)
    with pytest.raises(DataError, match=message):
        load_manifest(manifest)
    manifest["datasets"]["flairhub"]["layout"] = "flair"
    with pytest.raises(DataError, match=r"'modality_archives' needs 'layout': 'flairhub'"):
        load_manifest(manifest)
