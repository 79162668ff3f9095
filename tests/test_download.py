"""Dataset download: resume, retries, verification and safe extraction, against a local storage and a fake hub."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import stat
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fake_hub import COMMIT, FakeServer, git_sha1, serve, use_as_hub
from flairkit.cli import common
from flairkit.cli.download import download_command
from flairkit.data import download as dl
from flairkit.data.download import (
    MIRROR_ENV,
    STATE_DIR,
    ExistingDataError,
    UnsafeArchiveError,
    available_datasets,
    download_dataset,
    load_manifest,
)
from flairkit.errors import DataError, OutputExistsError
from flairkit.fetch import DownloadError, NotCachedError

ZIP_PATH = "data/toy.zip"
ROOT = "toy_dataset"
IMG = f"{ROOT}/train/toy_aerial_train/D012_2019/Z13_AA/img/IMG_000001.tif"
MSK = f"{ROOT}/train/toy_labels_train/D012_2019/Z13_AA/msk/MSK_000001.tif"
# Incompressible content, large enough for several read chunks, so that a connection can drop mid-file.
IMG_BYTES = hashlib.sha256(b"img").digest() * 12_000
MSK_BYTES = bytes(range(256)) * 64
HUB_REPO = "IGNF/FAKE"
META = "aux-data/meta.json"
META_BYTES = b'{"IMG_000001": {"patch_centroid_x": 1.0}}' * 2000
CENTROIDS = "aux-data/centroids.json"
CENTROIDS_BYTES = b'{"IMG_000001.tif": [20, 20]}'


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


TOY_ZIP = _zip([(f"{ROOT}/", b""), (IMG, IMG_BYTES), (MSK, MSK_BYTES)])


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeServer]:
    """IGN's storage and a hub on 127.0.0.1 (never the internet), with an empty HF_HOME."""
    state = FakeServer(files={ZIP_PATH: TOY_ZIP})
    state.add_hub_file(HUB_REPO, META, META_BYTES, repo_type="dataset")
    state.add_hub_file(HUB_REPO, CENTROIDS, CENTROIDS_BYTES, repo_type="dataset", lfs=False)
    with serve(state):
        use_as_hub(monkeypatch, state, tmp_path / "hf-home")
        yield state


def _manifest(
    server: FakeServer, *, sha256: str | None = None, size: int | None = None, verify: str | None = None, **extra
) -> dict:
    file = {
        "source": "storage",
        "path": ZIP_PATH,
        "archive": "zip",
        "size": size,
        "sha256": sha256,
        "verify": verify or ("sha256" if sha256 else "zip-crc"),
        "approx_size": len(TOY_ZIP),
    }
    file.update(extra)
    return {
        "sources": {"storage": {"url": server.url}},
        "datasets": {"toy": {"description": "test", "root": ROOT, "files": [file]}},
    }


def _hub_manifest(meta_sha256: str | None = hashlib.sha256(META_BYTES).hexdigest()) -> dict:
    def entry(path: str, sha256: str | None) -> dict:
        return {
            "source": "hub",
            "path": path,
            "archive": "none",
            "size": None,
            "sha256": sha256,
            "verify": "sha256" if sha256 else "hub-etag",
            "approx_size": 1000,
            "extracts_to": [Path(path).name],
        }

    hub = {"repo_id": HUB_REPO, "repo_type": "dataset", "revision": COMMIT}
    files = [entry(META, meta_sha256), entry(CENTROIDS, None)]
    return {"sources": {"hub": hub}, "datasets": {"aux": {"root": ".", "check": False, "files": files}}}


def _download(server: FakeServer, to: Path, manifest: dict | None = None, **kwargs: object) -> dl.DownloadResult:
    options: dict = {"check": False, "backoff": 0.01, "manifest": manifest or _manifest(server)}
    options.update(kwargs)
    return download_dataset("toy", to, **options)


def _assert_toy_extracted(to: Path) -> None:
    assert (to / IMG).read_bytes() == IMG_BYTES
    assert (to / MSK).read_bytes() == MSK_BYTES


def test_download_extracts_the_archive_and_skips_it_next_time(server: FakeServer, tmp_path: Path) -> None:
    to = tmp_path / "data"
    reports: list[tuple[str, int, int | None]] = []
    result = _download(server, to, progress=lambda *report: reports.append(report))
    _assert_toy_extracted(to)
    assert result.root == to / ROOT
    assert result.downloaded == [ZIP_PATH]
    assert result.extracted == [to / ROOT]
    assert server.requests == [("GET", ZIP_PATH, None)]
    assert sorted(p.name for p in (to / STATE_DIR / "data").iterdir()) == ["toy.zip.done.json"]
    assert sorted(p.name for p in to.iterdir()) == sorted([ROOT, STATE_DIR])
    assert ("toy.zip", len(TOY_ZIP), len(TOY_ZIP)) in reports
    assert reports[-1][0] == "extracting toy.zip" and reports[-1][1] == reports[-1][2] > 0

    again = _download(server, to)
    assert again.skipped == [ZIP_PATH] and again.downloaded == []
    assert len(server.requests) == 1


def test_dropped_connection_resumes_with_a_range_request(server: FakeServer, tmp_path: Path) -> None:
    server.drop_after[ZIP_PATH] = [100_000]
    _download(server, tmp_path, manifest=_manifest(server, sha256=hashlib.sha256(TOY_ZIP).hexdigest()))
    assert server.range_requests() == ["bytes=100000-"] and len(server.requests) == 2
    _assert_toy_extracted(tmp_path)


def test_part_left_by_an_interrupted_run_is_resumed(server: FakeServer, tmp_path: Path) -> None:
    part = tmp_path / STATE_DIR / "data" / "toy.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(TOY_ZIP[:50_000])
    _download(server, tmp_path, retries=0)
    assert server.requests == [("GET", ZIP_PATH, "bytes=50000-")]
    _assert_toy_extracted(tmp_path)


def test_complete_part_left_by_a_killed_run_is_used(server: FakeServer, tmp_path: Path) -> None:
    part = tmp_path / STATE_DIR / "data" / "toy.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(TOY_ZIP)
    _download(server, tmp_path)
    assert server.range_requests() == [f"bytes={len(TOY_ZIP)}-"]  # answered 416 with the same total
    _assert_toy_extracted(tmp_path)


def test_server_ignoring_range_restarts_cleanly(server: FakeServer, tmp_path: Path) -> None:
    server.ignore_range = True
    part = tmp_path / STATE_DIR / "data" / "toy.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale start of another file" * 1000)
    _download(server, tmp_path, manifest=_manifest(server, size=len(TOY_ZIP)))
    assert server.range_requests() == [f"bytes={27 * 1000}-"]  # asked, got a full 200 answer, rewrote from 0
    _assert_toy_extracted(tmp_path)


def test_server_errors_are_retried_then_reported(server: FakeServer, tmp_path: Path) -> None:
    server.statuses[ZIP_PATH] = [503, 500]
    _download(server, tmp_path)
    _assert_toy_extracted(tmp_path)
    assert len(server.requests) == 3

    server.statuses[ZIP_PATH] = [503] * 10
    with pytest.raises(DownloadError, match=r"HTTP 503.*2 retries"):
        _download(server, tmp_path / "other", retries=2)
    assert len(server.requests) == 3 + 3


def test_missing_file_is_not_retried(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"/nothing\.zip answered HTTP 404.*--mirror"):
        _download(server, tmp_path, manifest=_manifest(server, path="nothing.zip"))
    assert len(server.requests) == 1


def test_corrupted_byte_is_detected_and_downloaded_again(server: FakeServer, tmp_path: Path) -> None:
    server.corrupt[ZIP_PATH] = 1
    _download(server, tmp_path, manifest=_manifest(server, sha256=hashlib.sha256(TOY_ZIP).hexdigest()))
    _assert_toy_extracted(tmp_path)
    assert len(server.requests) == 2


def test_file_corrupted_twice_is_a_clear_error(server: FakeServer, tmp_path: Path) -> None:
    server.corrupt[ZIP_PATH] = 2
    with pytest.raises(DownloadError, match=r"toy\.zip is corrupted \(sha256 [0-9a-f]{64} instead of"):
        _download(server, tmp_path, manifest=_manifest(server, sha256=hashlib.sha256(TOY_ZIP).hexdigest()))
    assert not (tmp_path / ROOT).exists()
    assert not list((tmp_path / STATE_DIR).rglob("*.zip")) and not list((tmp_path / STATE_DIR).rglob("*.part"))


def test_corruption_without_checksum_is_caught_by_the_zip_crc(server: FakeServer, tmp_path: Path) -> None:
    server.corrupt[ZIP_PATH] = 1
    _download(server, tmp_path)
    _assert_toy_extracted(tmp_path)
    assert len(server.requests) == 2


def test_hub_files_are_downloaded_pinned_and_verified(server: FakeServer, tmp_path: Path) -> None:
    result = download_dataset("aux", tmp_path, manifest=_hub_manifest(), backoff=0.01)
    assert (tmp_path / "meta.json").read_bytes() == META_BYTES
    assert (tmp_path / "centroids.json").read_bytes() == CENTROIDS_BYTES
    assert result.downloaded == [META, CENTROIDS] and result.check is None
    prefix = f"datasets/{HUB_REPO}/resolve/{COMMIT}/"
    assert server.gets("/resolve/") == [("GET", prefix + META, None), ("GET", prefix + CENTROIDS, None)]
    # the centroids have no published sha256: their ETag (a git sha1, kept outside LFS) was asked for
    assert ("HEAD", prefix + CENTROIDS, None) in server.requests
    assert not (tmp_path / STATE_DIR / META).exists() and not (tmp_path / STATE_DIR / CENTROIDS).exists()

    again = download_dataset("aux", tmp_path, manifest=_hub_manifest())
    assert again.skipped == [META, CENTROIDS]


def test_hub_file_dropped_mid_file_is_resumed(server: FakeServer, tmp_path: Path) -> None:
    server.drop_after[META] = [30_000]
    download_dataset("aux", tmp_path, manifest=_hub_manifest())
    assert (tmp_path / "meta.json").read_bytes() == META_BYTES
    assert [r for _, p, r in server.gets(META)] == [None, "bytes=30000-"]


@pytest.mark.parametrize(
    ("path", "published", "expected"),
    [
        (META, True, f"sha256 [0-9a-f]{{64}} instead of {hashlib.sha256(META_BYTES).hexdigest()}"),
        (META, False, f"sha256 [0-9a-f]{{64}} instead of {hashlib.sha256(META_BYTES).hexdigest()}"),
        (CENTROIDS, False, f"git sha1 [0-9a-f]{{40}} instead of {git_sha1(CENTROIDS_BYTES)}"),
    ],
    ids=["published-sha256", "lfs-etag", "git-sha1-etag"],
)
def test_corrupted_hub_file_is_refetched_then_reported_and_never_kept(
    server: FakeServer, tmp_path: Path, path: str, published: bool, expected: str
) -> None:
    manifest = _hub_manifest(meta_sha256=hashlib.sha256(META_BYTES).hexdigest() if published else None)
    name = Path(path).name
    server.corrupt_at = 3
    server.corrupt[path] = 1
    download_dataset("aux", tmp_path / "once", manifest=manifest)
    assert (tmp_path / "once" / "meta.json").read_bytes() == META_BYTES
    assert (tmp_path / "once" / "centroids.json").read_bytes() == CENTROIDS_BYTES
    assert len(server.gets(path)) == 2

    server.corrupt[path] = 2
    with pytest.raises(DownloadError, match=rf"{re.escape(name)} downloaded from .* is corrupted \({expected}\)"):
        download_dataset("aux", tmp_path / "twice", manifest=manifest)
    assert not [p for p in (tmp_path / "twice").rglob(name) if p.is_file()]


def test_offline_uses_the_files_already_downloaded(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    download_dataset("aux", tmp_path, manifest=_hub_manifest(), keep_archives=True)
    _download(server, tmp_path, keep_archives=True)
    for extracted in (tmp_path / "meta.json", tmp_path / "centroids.json", tmp_path / ROOT):
        shutil.rmtree(extracted) if extracted.is_dir() else extracted.unlink()
    server.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    download_dataset("aux", tmp_path, manifest=_hub_manifest())
    _download(server, tmp_path)
    assert (tmp_path / "meta.json").read_bytes() == META_BYTES
    _assert_toy_extracted(tmp_path)
    assert server.requests == []


def test_offline_without_the_files_says_how_to_provide_them(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(NotCachedError, match=r"meta\.json is not in the local cache .*offline.*--mirror"):
        download_dataset("aux", tmp_path, manifest=_hub_manifest(), offline=True)
    with pytest.raises(NotCachedError, match=r"toy\.zip is not in .*offline.*data/toy\.zip.*--mirror"):
        _download(server, tmp_path, offline=True)
    assert server.requests == []


def test_a_mirror_folder_serves_files_the_user_already_has(server: FakeServer, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "aux-data").mkdir(parents=True)
    (folder / META).write_bytes(META_BYTES)
    (folder / CENTROIDS).write_bytes(CENTROIDS_BYTES)
    download_dataset("aux", tmp_path / "a", manifest=_hub_manifest(), mirror=str(folder), offline=True)
    assert (tmp_path / "a" / "meta.json").read_bytes() == META_BYTES
    assert (folder / META).is_file()  # the user's copy is left alone

    (folder / META).write_bytes(META_BYTES[:-1] + b"!")
    with pytest.raises(DownloadError, match=r"mine/aux-data/meta\.json is corrupted \(sha256"):
        download_dataset("aux", tmp_path / "b", manifest=_hub_manifest(), mirror=str(folder))
    assert server.requests == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (f"{ROOT}/../../evil.txt", r"climbs out"),
        ("/tmp/evil.txt", r"absolute path"),
        ("C:/evil.txt", r"absolute path"),
        (f"{STATE_DIR}/evil.txt", r"work folder"),
    ],
)
def test_unsafe_paths_are_refused(server: FakeServer, tmp_path: Path, entry: str, message: str) -> None:
    server.files[ZIP_PATH] = _zip([(IMG, IMG_BYTES), (entry, b"evil")])
    to = tmp_path / "data"
    with pytest.raises(UnsafeArchiveError, match=message):
        _download(server, to)
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (to / ROOT).exists()


def test_symlink_entry_is_refused(server: FakeServer, tmp_path: Path) -> None:
    link = zipfile.ZipInfo(f"{ROOT}/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    server.files[ZIP_PATH] = _zip([(IMG, IMG_BYTES), (link, b"/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match=r"symbolic link"):
        _download(server, tmp_path)
    assert not (tmp_path / ROOT).exists()


def test_zip_bomb_is_refused_before_extraction(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(IMG, bytes(10_000_000))
    server.files[ZIP_PATH] = buffer.getvalue()
    assert len(server.files[ZIP_PATH]) < 100_000
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10**9, used=0, free=100_000))
    with pytest.raises(DataError, match=r"not enough disk space.*extracting toy\.zip needs about 10\.0 MB"):
        _download(server, tmp_path, manifest=_manifest(server, approx_size=10))
    assert not (tmp_path / ROOT).exists()


def test_existing_files_are_kept_unless_overwrite(server: FakeServer, tmp_path: Path) -> None:
    mine = tmp_path / MSK
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    with pytest.raises(ExistingDataError, match=r"--overwrite") as caught:
        _download(server, tmp_path)
    assert isinstance(caught.value, DataError) and isinstance(caught.value, OutputExistsError)
    assert mine.read_bytes() == b"mine"
    assert not (tmp_path / IMG).exists()

    _download(server, tmp_path, overwrite=True, keep_archives=True)
    _assert_toy_extracted(tmp_path)
    assert (tmp_path / STATE_DIR / ZIP_PATH).read_bytes() == TOY_ZIP
    assert len(server.requests) == 1  # the archive fetched by the refused run was reused


def test_existing_top_folder_is_refused_before_downloading(server: FakeServer, tmp_path: Path) -> None:
    (tmp_path / ROOT).mkdir()
    with pytest.raises(ExistingDataError, match=ROOT):
        _download(server, tmp_path, manifest=_manifest(server, extracts_to=[ROOT]))
    assert server.requests == []


def test_not_enough_disk_space_fails_before_any_request(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10**9, used=10**9, free=1000))
    to = tmp_path / "not" / "yet"
    with pytest.raises(DataError, match=rf"not enough disk space in {re.escape(str(to))}.*needs about .*kB.*--to"):
        _download(server, to)
    assert server.requests == []
    assert not to.exists()


def test_unknown_dataset_lists_known_names(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'flair9'; known datasets: flair1-toy, flair1, flair2-toy"):
        download_dataset("flair9", tmp_path)


def test_mirror_argument_and_environment_replace_the_source(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _manifest(server)
    manifest["sources"]["storage"]["url"] = "http://127.0.0.1:9/unreachable"
    _download(server, tmp_path / "a", manifest=manifest, mirror=server.url + "/")
    monkeypatch.setenv(MIRROR_ENV, server.url)
    _download(server, tmp_path / "b", manifest=manifest)
    _assert_toy_extracted(tmp_path / "a")
    _assert_toy_extracted(tmp_path / "b")

    folder = tmp_path / "mirror"
    (folder / "data").mkdir(parents=True)
    (folder / ZIP_PATH).write_bytes(TOY_ZIP)
    _download(server, tmp_path / "c", manifest=manifest, mirror=str(folder))
    _assert_toy_extracted(tmp_path / "c")
    assert (folder / ZIP_PATH).is_file()
    with pytest.raises(DataError, match=r"neither a URL nor an existing folder"):
        _download(server, tmp_path / "d", manifest=manifest, mirror=str(tmp_path / "nowhere"))


def test_checker_runs_on_the_dataset_root(server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []
    report = types.SimpleNamespace(ok=True, problems=[])

    def check_dataset(source: Path, **options: object) -> types.SimpleNamespace:
        seen.append(source)
        return report

    monkeypatch.setitem(sys.modules, "flairkit.data.check", types.SimpleNamespace(check_dataset=check_dataset))
    result = _download(server, tmp_path, check=True)
    assert seen == [tmp_path / ROOT] and result.check is report


def test_packaged_manifest_lists_the_flair_datasets_with_their_sources() -> None:
    names = [spec.name for spec in available_datasets()]
    assert names == ["flair1-toy", "flair1", "flair2-toy", "flair2", "flair-aux", "flairhub-toy", "flairhub"]
    manifest = load_manifest()
    storage, hub = manifest.sources["ign-storage"], manifest.sources["ign-hub"]
    assert storage.url.startswith("https://") and storage.repo_id is None
    assert hub.repo_id == "IGNF/FLAIR" and hub.repo_type == "dataset" and re.fullmatch(r"[0-9a-f]{40}", hub.revision)
    toy = manifest.datasets["flair1-toy"]
    assert toy.files[0].filename == "flair_1_toy_dataset.zip" and toy.root == "flair_1_toy_dataset"
    assert manifest.datasets["flair2-toy"].files[0].filename == "flair_2_toy_dataset.zip"
    for spec in manifest.datasets.values():
        for file in spec.files:
            assert (file.verify == "sha256") == (file.sha256 is not None), file.path
    aux = manifest.datasets["flair-aux"]
    assert [(f.source.name, f.verify) for f in aux.files] == [("ign-hub", "sha256"), ("ign-hub", "hub-etag")]
    assert aux.check is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"path": "../x.zip"}, r"'path' must be a path relative"),
        ({"sha256": "abc"}, r"64 hexadecimal"),
        ({"archive": "tar"}, r"only 'zip' and 'none'"),
        ({"size": -1}, r"'size' must be a byte count"),
        ({"source": "elsewhere"}, r"'source' must be one of storage"),
        ({"verify": "sha256"}, r"'verify': 'sha256' goes with a 'sha256' value"),
        ({"verify": "hub-etag"}, r"needs a Hugging Face source"),
        ({"verify": "md5"}, r"'verify' must be one of sha256, hub-etag, zip-crc"),
        ({"archive": "none", "verify": "zip-crc"}, r"'zip-crc' needs a zip archive"),
    ],
)
def test_malformed_manifest_is_reported(server: FakeServer, change: dict, message: str) -> None:
    manifest = _manifest(server)
    manifest["datasets"]["toy"]["files"][0].update(change)
    with pytest.raises(DataError, match=message):
        load_manifest(manifest)


def test_hub_source_must_be_pinned() -> None:
    manifest = _hub_manifest()
    del manifest["sources"]["hub"]["revision"]
    with pytest.raises(DataError, match=r"source 'hub': 'revision' must pin the repository"):
        load_manifest(manifest)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(common.console, "width", 250)  # tables whole, whatever the terminal running the tests
    return CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(download_command)
    return app


def test_cli_lists_downloads_and_reports_errors(server: FakeServer, tmp_path: Path, cli: CliRunner) -> None:
    listed = cli.invoke(_app(), ["--list"])
    assert listed.exit_code == 0 and "flair2-toy" in listed.stdout and "IGNF/FLAIR" in listed.stdout

    server.files["flair_data_1/flair_1_toy_dataset.zip"] = _zip([("flair_1_toy_dataset/train/x.tif", b"x")])
    to = tmp_path / "data"
    ok = cli.invoke(_app(), ["flair1-toy", "--to", str(to), "--mirror", server.url, "--no-check", "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert (to / "flair_1_toy_dataset" / "train" / "x.tif").read_bytes() == b"x"

    unknown = cli.invoke(_app(), ["nope", "--to", str(to)])
    assert unknown.exit_code != 0 and "unknown dataset 'nope'" in unknown.stderr

    offline = cli.invoke(_app(), ["flair2-toy", "--to", str(to), "--offline"])
    assert offline.exit_code == 2 and "downloads are off (offline)" in offline.stderr


def test_cli_fails_when_the_check_finds_fatal_problems(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: CliRunner
) -> None:
    def check_download(result: dl.DownloadResult, **options: object) -> types.SimpleNamespace:
        problems = [types.SimpleNamespace(path=result.root / "x.tif", message="has 3 band(s)", fatal=True)]
        return types.SimpleNamespace(ok=False, problems=problems)

    monkeypatch.setattr("flairkit.cli.download.check_download", check_download)
    server.files["flair_data_1/flair_1_toy_dataset.zip"] = _zip([("flair_1_toy_dataset/train/x.tif", b"x")])
    failed = cli.invoke(_app(), ["flair1-toy", "--to", str(tmp_path), "--mirror", server.url, "--progress"])
    assert failed.exit_code == 1
    assert "x.tif: has 3 band(s)" in failed.stderr
