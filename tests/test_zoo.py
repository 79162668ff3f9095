"""The released models by name: their inputs, their weights fetched from a (local, test) hub into the cache."""

from __future__ import annotations

import hashlib
import http.server
import sys
import threading
import types
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import typer
from typer.testing import CliRunner

from flairkit.cli.models import models_command
from flairkit.config import load_config, preset_dict, preset_names
from flairkit.config.schema import FLAIR_MEANS
from flairkit.errors import CheckpointError
from flairkit.models import zoo
from flairkit.models.build import build_model
from flairkit.models.checkpoints import load_model

RGBIE = "FLAIR-INC_rgbie_15cl_resnet34-unet"
RGB = "FLAIR-INC_rgb_15cl_resnet34-unet"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, above all on a busy machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Hub(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (URL path -> bytes); ``truncate`` paths announce more bytes than they send."""

    files: ClassVar[dict[str, bytes]] = {}
    truncate: ClassVar[set[str]] = set()
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        self.requests.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (10 if self.path in self.truncate else 0)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A model hub on 127.0.0.1 (never the internet) and an empty flairkit home."""
    _Hub.files, _Hub.truncate, _Hub.requests = {}, set(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(zoo.HUB_URL_ENV, f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv(zoo.HOME_ENV, str(tmp_path / "home"))
    for variable in zoo.OFFLINE_ENVS:
        monkeypatch.delenv(variable, raising=False)
    yield _Hub
    server.shutdown()
    server.server_close()


def hub_path(name: str) -> str:
    release = load_config(name).release
    return f"/{release.hub_repo}/resolve/main/{release.filename}"


def test_released_models_are_the_flair_inc_presets():
    released = zoo.released_models()
    assert released == sorted(name for name in preset_names() if preset_dict(name).get("release"))
    assert RGBIE in released
    assert all(name.startswith("FLAIR-INC_") for name in released)
    assert "demo" not in released


def test_model_info_gives_inputs_normalisation_and_published_metrics(hub):
    info = zoo.model_info(RGBIE)
    assert info["modalities"] == "rgbie"
    assert info["channels"] == [1, 2, 3, 4, 5]
    assert info["band_names"][-1] == "elevation"
    assert info["normalization"]["mode"] == "custom"
    assert info["normalization"]["means"] == list(FLAIR_MEANS)
    assert (info["nomenclature"], info["n_classes"], info["architecture"], info["encoder"]) == (
        "15cl",
        19,
        "unet",
        "resnet34",
    )
    assert info["published"]["miou"] == pytest.approx(54.7168)
    assert info["published"]["per_class_iou"]["building"] == pytest.approx(82.6313)
    assert info["release"]["url"].endswith(hub_path(RGBIE))
    assert info["release"]["url"].startswith("http://127.0.0.1:")
    assert info["release"]["cached"] is False
    assert zoo.modalities([1, 2, 3]) == "rgb"
    assert zoo.modalities([1, 2, 3, 4]) == "rgbi"


def test_weights_are_downloaded_once_into_the_cache_and_load_by_name(hub, tmp_path):
    config = load_config(RGB)
    torch.manual_seed(0)
    released = build_model(config, pretrained_encoder=False).eval()
    raw_smp = {key.removeprefix("seg_model."): value for key, value in released.state_dict().items()}
    payload = tmp_path / "upload.pth"
    torch.save(raw_smp, payload)
    hub.files[hub_path(RGB)] = payload.read_bytes()

    model = load_model(config, RGB)
    cached = zoo.cached_path(RGB)
    assert cached.is_file()
    assert cached.parent == zoo.default_cache_dir() / RGB
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(image), released(image))
    assert zoo.resolve_weights(RGB) == cached
    assert hub.requests == [hub_path(RGB)]


def test_offline_without_cache_says_which_file_to_fetch_and_where(hub):
    with pytest.raises(CheckpointError) as error:
        zoo.resolve_weights(RGBIE, offline=True)
    message = str(error.value)
    assert zoo.weights_url(RGBIE) in message
    assert str(zoo.cached_path(RGBIE)) in message
    assert hub.requests == []


def test_offline_environment_variable_disables_downloads(hub, monkeypatch):
    monkeypatch.setenv("FLAIRKIT_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="offline"):
        zoo.resolve_weights(RGBIE)
    assert hub.requests == []


def test_failed_downloads_leave_nothing_in_the_cache(hub):
    with pytest.raises(CheckpointError) as error:
        zoo.resolve_weights(RGBIE)
    assert "404" in str(error.value)
    assert zoo.weights_url(RGBIE) in str(error.value)
    hub.files[hub_path(RGBIE)] = b"partial content"
    hub.truncate.add(hub_path(RGBIE))
    with pytest.raises(CheckpointError, match=r"could not download|stopped after"):
        zoo.resolve_weights(RGBIE)
    folder = zoo.cached_path(RGBIE).parent
    assert not folder.exists() or list(folder.iterdir()) == []


def test_published_sha256_is_checked(hub, monkeypatch):
    content = b"pretend weights"
    hub.files[hub_path(RGBIE)] = content

    def with_hash(digest):
        def fake_load_config(name, overrides=()):
            config = load_config(name, overrides)
            config.release.sha256 = digest
            return config

        monkeypatch.setattr(zoo, "load_config", fake_load_config)

    with_hash("0" * 64)
    with pytest.raises(CheckpointError, match="sha256"):
        zoo.resolve_weights(RGBIE)
    assert not zoo.cached_path(RGBIE).exists()
    with_hash(hashlib.sha256(content).hexdigest())
    assert zoo.resolve_weights(RGBIE).read_bytes() == content


def test_huggingface_hub_is_used_when_installed_and_no_mirror_is_set(hub, monkeypatch):
    monkeypatch.delenv(zoo.HUB_URL_ENV)
    calls = []

    def fake_download(repo_id, filename, local_dir):
        calls.append((repo_id, filename))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"weights")
        return str(target)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=fake_download))
    path = zoo.resolve_weights(RGBIE)
    release = load_config(RGBIE).release
    assert calls == [(release.hub_repo, release.filename)]
    assert path == zoo.cached_path(RGBIE)
    assert path.read_bytes() == b"weights"


def test_unknown_names_and_presets_without_release_are_refused(hub):
    with pytest.raises(CheckpointError, match="not a released model"):
        zoo.resolve_weights("demo")
    with pytest.raises(CheckpointError, match="neither an existing weights file"):
        load_model(load_config("demo", ["model.encoder_weights=null"]), "no-such-model")


@pytest.fixture
def cli():
    app = typer.Typer()
    app.command("models")(models_command)
    app.command("other")(lambda: None)  # two commands, so that "models" is a subcommand as in `flair models`
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["models", *map(str, args)], env={"COLUMNS": "250"})


def test_models_command_lists_every_preset_with_inputs_and_metrics(cli, hub):
    result = cli()
    assert result.exit_code == 0, result.output
    for name in preset_names():
        assert name in result.output
    assert "rgbie 1,2,3,4,5" in result.output
    assert "flair" in result.output
    assert "54.72" in result.output
    assert "deeplabv3/resnet34" in result.output


def test_models_command_shows_one_model_with_per_class_metrics_and_release(cli, hub):
    result = cli(RGBIE)
    assert result.exit_code == 0, result.output
    assert "swimming pool" in result.output
    assert "82.63" in result.output
    assert load_config(RGBIE).release.filename in result.output
    assert "not downloaded yet" in result.output


def test_models_command_inspects_a_weights_file(cli, hub, tmp_path):
    config = load_config("demo")
    path = tmp_path / "model.bin"
    torch.save(build_model(config, pretrained_encoder=False).state_dict(), path)
    result = cli("--inspect", path)
    assert result.exit_code == 0, result.output
    assert "resnet18" in result.output
    assert "demo" in result.output
    assert "19" in result.output


def test_models_command_errors_go_to_stderr_with_the_error_exit_code(cli, hub, tmp_path):
    result = cli("no-such-preset")
    assert result.exit_code == 2
    assert "unknown preset" in result.stderr
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"<html>")
    result = cli("--inspect", evil)
    assert result.exit_code == 2
    assert "HTML" in result.stderr
