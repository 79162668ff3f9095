"""Dataset download: resume, retries, verification and safe extraction, against a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import stat
import sys
import threading
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flairkit.data import download as dl
from flairkit.data.download import (
    MIRROR_ENV,
    STATE_DIR,
    DownloadError,
    ExistingDataError,
    UnsafeArchiveError,
    available_datasets,
    download_dataset,
    load_manifest,
)
from flairkit.errors import DataError, OutputExistsError

ZIP_PATH = "data/toy.zip"
ROOT = "toy_dataset"
IMG = f"{ROOT}/train/toy_aerial_train/D012_2019/Z13_AA/img/IMG_000001.tif"
MSK = f"{ROOT}/train/toy_labels_train/D012_2019/Z13_AA/msk/MSK_000001.tif"
# Incompressible content, large enough for several read chunks, so that a connection can drop mid-file.
IMG_BYTES = hashlib.sha256(b"img").digest() * 12_000
MSK_BYTES = bytes(range(256)) * 64


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


TOY_ZIP = _zip([(f"{ROOT}/", b""), (IMG, IMG_BYTES), (MSK, MSK_BYTES)])


@dataclass
class FakeServer:
    """What the handler serves, how it misbehaves, and what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    if_range: list[str | None] = field(default_factory=list)
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # per path, bytes sent before dropping
    corrupt: dict[str, int] = field(default_factory=dict)  # per path, how many answers get a flipped byte
    corrupt_at: int = 5000  # inside the stored image data of TOY_ZIP
    statuses: dict[str, list[int]] = field(default_factory=dict)  # per path, error statuses answered first
    ignore_range: bool = False
    url: str = ""

    def range_requests(self) -> list[str]:
        return [r for _, r in self.requests if r is not None]


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # socket timeout: a stuck client cannot keep a thread alive

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.lstrip("/")
            server.requests.append((path, self.headers.get("Range")))
            server.if_range.append(self.headers.get("If-Range"))
            if server.statuses.get(path):
                self.send_error(server.statuses[path].pop(0))
                return
            if path not in server.files:
                self.send_error(404)
                return
            data = server.files[path]
            if server.corrupt.get(path, 0) > 0:
                server.corrupt[path] -= 1
                at = server.corrupt_at
                data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
            start, status = 0, 200
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and not server.ignore_range:
                start, status = int(match.group(1)), 206
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"v1"')
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            drops = server.drop_after.get(path)
            if drops:
                self.wfile.write(body[: drops.pop(0)])  # then close: the client sees a short body
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer(files={ZIP_PATH: TOY_ZIP})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _manifest(server: FakeServer, *, sha256: str | None = None, size: int | None = None, **extra: object) -> dict:
    file = {"url": ZIP_PATH, "archive": "zip", "size": size, "sha256": sha256, "approx_size": len(TOY_ZIP)}
    file.update(extra)
    return {"base_url": server.url, "datasets": {"toy": {"description": "test", "root": ROOT, "files": [file]}}}


def _download(server: FakeServer, to: Path, manifest: dict | None = None, **kwargs: object) -> dl.DownloadResult:
    options: dict = {"progress": False, "check": False, "backoff": 0.01, "manifest": manifest or _manifest(server)}
    options.update(kwargs)
    return download_dataset("toy", to, **options)


def _assert_toy_extracted(to: Path) -> None:
    assert (to / IMG).read_bytes() == IMG_BYTES
    assert (to / MSK).read_bytes() == MSK_BYTES


def test_download_extracts_the_archive_and_skips_it_next_time(server: FakeServer, tmp_path: Path) -> None:
    to = tmp_path / "data"
    result = _download(server, to, progress=True)
    _assert_toy_extracted(to)
    assert result.root == to / ROOT
    assert result.downloaded == [ZIP_PATH]
    assert result.extracted == [to / ROOT]
    assert server.requests == [(ZIP_PATH, None)]
    assert sorted(p.name for p in (to / STATE_DIR / "data").iterdir()) == ["toy.zip.done.json"]
    assert sorted(p.name for p in to.iterdir()) == sorted([ROOT, STATE_DIR])

    again = _download(server, to)
    assert again.skipped == [ZIP_PATH] and again.downloaded == []
    assert len(server.requests) == 1


def test_dropped_connection_resumes_with_a_range_request(server: FakeServer, tmp_path: Path) -> None:
    server.drop_after[ZIP_PATH] = [100_000]
    _download(server, tmp_path, manifest=_manifest(server, sha256=hashlib.sha256(TOY_ZIP).hexdigest()))
    assert server.range_requests() == ["bytes=100000-"] and len(server.requests) == 2
    _assert_toy_extracted(tmp_path)


def test_interrupted_run_resumes_on_the_next_call(server: FakeServer, tmp_path: Path) -> None:
    server.drop_after[ZIP_PATH] = [50_000]
    with pytest.raises(DownloadError, match=r"toy\.zip.*resume"):
        _download(server, tmp_path, retries=0)
    assert (tmp_path / STATE_DIR / "data" / "toy.zip.part").stat().st_size == 50_000
    _download(server, tmp_path, retries=0)
    assert server.range_requests() == ["bytes=50000-"] and len(server.requests) == 2
    assert server.if_range == [None, '"v1"']  # the ETag seen first guards the splice
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
    server.drop_after[ZIP_PATH] = [70_000]
    _download(server, tmp_path, manifest=_manifest(server, size=len(TOY_ZIP)))
    assert server.range_requests() == ["bytes=70000-"]  # asked, got a full 200 answer, rewrote from 0
    assert len(server.requests) == 2
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
        _download(server, tmp_path, manifest=_manifest(server, url="nothing.zip"))
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
        download_dataset("flair9", tmp_path, progress=False)


def test_mirror_argument_and_environment_replace_the_base_url(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _manifest(server)
    manifest["base_url"] = "http://127.0.0.1:9/unreachable"
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


def test_checker_runs_on_the_dataset_root(server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []
    report = types.SimpleNamespace(ok=True, problems=[])

    def check_dataset(source: Path, **options: object) -> types.SimpleNamespace:
        seen.append(source)
        return report

    monkeypatch.setitem(sys.modules, "flairkit.data.check", types.SimpleNamespace(check_dataset=check_dataset))
    result = _download(server, tmp_path, check=True)
    assert seen == [tmp_path / ROOT] and result.check is report


def test_packaged_manifest_lists_the_flair_datasets() -> None:
    names = [spec.name for spec in available_datasets()]
    assert names == ["flair1-toy", "flair1", "flair2-toy", "flair2"]
    manifest = load_manifest()
    assert manifest.base_url.startswith("https://")
    toy = manifest.datasets["flair1-toy"]
    assert toy.files[0].filename == "flair_1_toy_dataset.zip" and toy.root == "flair_1_toy_dataset"
    assert manifest.datasets["flair2-toy"].files[0].filename == "flair_2_toy_dataset.zip"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "../x.zip"}, r"'url' must be a path relative"),
        ({"sha256": "abc"}, r"64 hexadecimal"),
        ({"archive": "tar"}, r"only 'zip'"),
        ({"size": -1}, r"'size' must be a byte count"),
    ],
)
def test_malformed_manifest_is_reported(server: FakeServer, change: dict, message: str) -> None:
    manifest = _manifest(server)
    manifest["datasets"]["toy"]["files"][0].update(change)
    with pytest.raises(DataError, match=message):
        load_manifest(manifest)


def test_cli_lists_downloads_and_reports_errors(server: FakeServer, tmp_path: Path) -> None:
    import typer

    from flairkit.cli.download import download_command

    app = typer.Typer()
    app.command()(download_command)
    runner = CliRunner()

    listed = runner.invoke(app, ["--list"])
    assert listed.exit_code == 0 and "flair2-toy" in listed.stdout

    server.files["flair_data_1/flair_1_toy_dataset.zip"] = _zip([("flair_1_toy_dataset/train/x.tif", b"x")])
    to = tmp_path / "data"
    ok = runner.invoke(app, ["flair1-toy", "--to", str(to), "--mirror", server.url, "--no-check", "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert (to / "flair_1_toy_dataset" / "train" / "x.tif").read_bytes() == b"x"

    unknown = runner.invoke(app, ["nope", "--to", str(to)])
    assert unknown.exit_code != 0 and "unknown dataset 'nope'" in unknown.stderr


def test_cli_fails_when_the_check_finds_fatal_problems(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    from flairkit.cli.download import download_command

    def check_dataset(source: Path, **options: object) -> types.SimpleNamespace:
        problems = [types.SimpleNamespace(path=source / "x.tif", message="has 3 band(s)", fatal=True)]
        return types.SimpleNamespace(ok=False, problems=problems)

    monkeypatch.setitem(sys.modules, "flairkit.data.check", types.SimpleNamespace(check_dataset=check_dataset))
    server.files["flair_data_1/flair_1_toy_dataset.zip"] = _zip([("flair_1_toy_dataset/train/x.tif", b"x")])
    app = typer.Typer()
    app.command()(download_command)
    failed = CliRunner().invoke(app, ["flair1-toy", "--to", str(tmp_path), "--mirror", server.url, "--progress"])
    assert failed.exit_code == 1
    assert "x.tif: has 3 band(s)" in failed.stderr
