"""The released models by name: their inputs, and their weights fetched from a local fake hub into the hub cache."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from fake_hub import FakeServer, serve, use_as_hub
from flairkit.cli import common
from flairkit.cli.models import models_command
from flairkit.config import load_config, preset_dict, preset_names
from flairkit.config.schema import FLAIR_MEANS
from flairkit.errors import CheckpointError, ConfigError
from flairkit.models import zoo
from flairkit.models.build import build_model
from flairkit.models.loader import load_model

RGBIE = "FLAIR-INC_rgbie_15cl_resnet34-unet"
"""A release with a published sha256, pinned to a commit."""
UNPINNED = "FLAIR-INC_rgbi_12cl_resnet34-unet"
"""A release without a known commit or sha256: main, checked against the hub's ETag."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, above all on a busy machine; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeServer]:
    """A hub on 127.0.0.1 (never the internet) that huggingface_hub uses through HF_ENDPOINT, and an empty cache."""
    with serve(FakeServer()) as state:
        use_as_hub(monkeypatch, state, tmp_path / "hf-home")
        yield state


def publish(hub: FakeServer, name: str, content: bytes) -> str:
    """Serve ``content`` as the weights of ``name``; the path the hub is asked for."""
    release = load_config(name).release
    hub.add_hub_file(release.hub_repo, release.filename, content)
    return f"{release.hub_repo}/resolve/{release.revision}/{release.filename}"


def weights_bytes(tmp_path: Path, name: str) -> tuple[torch.nn.Module, bytes]:
    """A model of preset ``name`` and its raw smp state dict as IGN publishes it."""
    torch.manual_seed(0)
    model = build_model(load_config(name), pretrained_encoder=False).eval()
    raw_smp = {key.removeprefix("seg_model."): value for key, value in model.state_dict().items()}
    path = tmp_path / "upload.pth"
    torch.save(raw_smp, path)
    return model, path.read_bytes()


def with_published_sha256(monkeypatch: pytest.MonkeyPatch, digest: str) -> None:
    """Make every release claim ``digest`` as its published sha256."""

    def fake_load_config(name, overrides=()):
        config = load_config(name, overrides)
        config.release = config.release.model_copy(update={"sha256": digest, "verify": "sha256"})
        return config

    monkeypatch.setattr(zoo, "load_config", fake_load_config)


def hub_cache_files(hub_home: Path) -> list[Path]:
    """Downloaded content in the hub cache: blobs and the snapshot links to them (refs and locks aside)."""
    return [p for p in (hub_home / "hub").rglob("*") if {"blobs", "snapshots"} & set(p.parts) and not p.is_dir()]


def test_released_models_are_the_flair_inc_presets():
    released = zoo.released_models()
    with_release = sorted(name for name in preset_names() if preset_dict(name).get("release"))
    assert sorted(released + zoo.released_hub_models()) == with_release  # FLAIR-HUB's: tests/test_hub_models.py
    assert RGBIE in released and UNPINNED in released
    assert all(name.startswith("FLAIR-INC_") for name in released)
    assert "demo" not in released


def test_every_release_is_pinned_and_says_how_it_is_verified():
    pinned = 0
    for name in zoo.released_models():
        release = load_config(name).release
        if re.fullmatch(r"[0-9a-f]{40}", release.revision):
            assert release.verify == "sha256" and re.fullmatch(r"[0-9a-f]{64}", release.sha256), name
            assert release.size > 0, name
            pinned += 1
        else:
            assert (release.revision, release.verify, release.sha256) == ("main", "hub-etag", None), name
    assert pinned >= 8
    with pytest.raises(ConfigError, match=r"release\.verify must be sha256"):
        load_config(RGBIE, ["release.verify=hub-etag"])


def test_model_info_gives_inputs_normalisation_release_and_published_metrics(hub):
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
    release = info["release"]
    assert release["url"] == f"{hub.url}/{publish(hub, RGBIE, b'')}"
    assert release["revision"] == "31b43f7d9c435ea59ba4914fbee113aaae177e12"
    assert (release["cached"], release["cache_path"]) == (False, None)
    assert zoo.modalities([1, 2, 3]) == "rgb"
    assert zoo.modalities([1, 2, 3, 4]) == "rgbi"


def test_weights_are_downloaded_once_into_the_hub_cache_verified_and_load_by_name(hub, tmp_path):
    released, content = weights_bytes(tmp_path, UNPINNED)
    path = publish(hub, UNPINNED, content)

    model = load_model(load_config(UNPINNED), UNPINNED)
    cached = zoo.cached_path(UNPINNED)
    assert cached is not None and cached.read_bytes() == content
    assert cached.is_relative_to(tmp_path / "hf-home" / "hub")
    image = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(image), released(image))
    assert zoo.resolve_weights(UNPINNED) == cached
    assert hub.gets("/resolve/") == [("GET", path, None)]  # the second resolve only asked for the ETag
    assert zoo.model_info(UNPINNED)["release"]["cached"] is True


def test_a_dropped_connection_is_resumed(hub):
    content = hashlib.sha256(b"weights").digest() * 20_000
    path = publish(hub, UNPINNED, content)
    hub.drop_after[load_config(UNPINNED).release.filename] = [100_000]
    assert zoo.resolve_weights(UNPINNED).read_bytes() == content
    assert hub.gets("/resolve/") == [("GET", path, None), ("GET", path, "bytes=100000-")]


def test_corrupted_bytes_are_detected_against_the_hub_etag_and_fetched_again(hub):
    content = hashlib.sha256(b"weights").digest() * 1000
    publish(hub, UNPINNED, content)
    hub.corrupt[load_config(UNPINNED).release.filename] = 1
    assert zoo.resolve_weights(UNPINNED).read_bytes() == content
    assert len(hub.gets("/resolve/")) == 2


def test_weights_corrupted_twice_are_an_error_naming_the_file_and_nothing_is_kept(hub, tmp_path):
    content = hashlib.sha256(b"weights").digest() * 1000
    publish(hub, UNPINNED, content)
    filename = load_config(UNPINNED).release.filename
    hub.corrupt[filename] = 2
    with pytest.raises(CheckpointError) as error:
        zoo.resolve_weights(UNPINNED)
    message = str(error.value)
    assert filename in message and "corrupted" in message
    assert f"instead of {hashlib.sha256(content).hexdigest()}" in message
    assert zoo.cached_path(UNPINNED) is None
    assert hub_cache_files(tmp_path / "hf-home") == []


def test_the_published_sha256_is_checked(hub, monkeypatch, tmp_path):
    content = b"pretend weights"
    publish(hub, RGBIE, content)
    with pytest.raises(CheckpointError, match=r"sha256 [0-9a-f]{64} instead of e7be9248"):
        zoo.resolve_weights(RGBIE)
    assert zoo.cached_path(RGBIE) is None
    assert hub_cache_files(tmp_path / "hf-home") == []
    assert len(hub.gets("/resolve/")) == 2

    with_published_sha256(monkeypatch, hashlib.sha256(content).hexdigest())
    assert zoo.resolve_weights(RGBIE).read_bytes() == content
    assert len(hub_cache_files(tmp_path / "hf-home")) == 2  # the blob and its snapshot link


def test_offline_with_the_weights_in_the_cache_makes_no_request(hub, monkeypatch):
    content = b"small weights"
    publish(hub, UNPINNED, content)
    path = zoo.resolve_weights(UNPINNED)
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert zoo.resolve_weights(UNPINNED) == path
    assert zoo.resolve_weights(UNPINNED, offline=True).read_bytes() == content
    assert hub.requests == []


def test_offline_without_the_weights_says_how_to_get_them(hub):
    publish(hub, RGBIE, b"never fetched")
    with pytest.raises(CheckpointError) as error:
        zoo.resolve_weights(RGBIE, offline=True)
    message = str(error.value)
    assert "offline" in message
    assert zoo.weights_url(RGBIE) in message
    assert f"flair models {RGBIE} --download" in message
    assert "pass the file's path instead of the name" in message
    assert hub.requests == []


def test_offline_environment_variable_disables_downloads(hub, monkeypatch):
    monkeypatch.setenv("FLAIRKIT_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="offline"):
        zoo.resolve_weights(RGBIE)
    assert hub.requests == []


def test_missing_weights_are_a_clear_error_and_leave_nothing(hub, tmp_path):
    with pytest.raises(CheckpointError) as error:
        zoo.resolve_weights(UNPINNED)
    assert "404" in str(error.value)
    assert zoo.weights_url(UNPINNED) in str(error.value)
    assert hub_cache_files(tmp_path / "hf-home") == []


def test_unknown_names_and_presets_without_release_are_refused(hub):
    with pytest.raises(CheckpointError, match="not a released model"):
        zoo.resolve_weights("demo")
    with pytest.raises(CheckpointError, match="neither an existing weights file"):
        load_model(load_config("demo", ["model.encoder_weights=null"]), "no-such-model")


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr(common.console, "width", 250)  # tables whole, whatever the terminal running the tests
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
    release = load_config(RGBIE).release
    assert release.filename in result.output
    assert release.revision in result.output and release.sha256 in result.output
    assert "97,957,843 bytes" in result.output
    assert f"not downloaded yet (`flair models {RGBIE} --download`)" in result.output
    result = cli(UNPINNED)
    assert "not published: checked against the hub's ETag" in result.output


def test_models_command_downloads_weights_into_the_hub_cache(cli, hub, tmp_path):
    publish(hub, UNPINNED, b"weights for the cli")
    result = cli(UNPINNED, "--download")
    assert result.exit_code == 0, result.output
    cached = zoo.cached_path(UNPINNED)
    assert cached is not None and cached.read_bytes() == b"weights for the cli"
    assert str(cached) in result.output.replace("\n", "")
    assert cli("--download").exit_code == 2


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
