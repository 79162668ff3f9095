"""Untrusted files never run code: weights only through safetensors or ``torch.load(weights_only=True)``,
YAML only through safe loading, and no shell command built anywhere in the package.

The malicious files carry a payload that writes a marker file when unpickled (or YAML-constructed); every
test first proves the payload works with an unsafe loader, so a refusal is a real refusal.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import flairkit
from flairkit.cli.main import app
from flairkit.config import load_config
from flairkit.errors import CheckpointError, ConfigError
from flairkit.models.build import build_model
from flairkit.models.loader import load_model
from flairkit.models.weights import load_weights
from flairkit.training.run import train

runner = CliRunner()
REFUSED = "contains pickled code"
TINY = [
    "model.encoder=resnet18",
    "model.encoder_weights=null",
    "data.num_workers=0",
    "data.batch_size=4",
    "train.max_epochs=1",
    "train.accelerator=cpu",
    "train.devices=1",
]


class Payload:
    """Unpickling this object executes Python code that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _sets(*settings: str) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def _flat(text: str) -> str:
    return "".join(text.split())


@pytest.fixture(params=["zip", "legacy", "plain-pickle"])
def evil(request, tmp_path) -> tuple[Path, Path]:
    """(malicious weights file, marker it would create): a Lightning-like checkpoint whose hyper-parameters
    hold the payload (the loaders meet it after the tensors)."""
    marker = tmp_path / "marker.txt"
    checkpoint = {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {"model.seg_model.encoder.conv1.weight": torch.zeros(64, 5, 7, 7)},
        "optimizer_states": [],
        "hyper_parameters": {"note": Payload(marker)},
    }
    path = tmp_path / "evil.ckpt"
    if request.param == "plain-pickle":
        path.write_bytes(pickle.dumps(checkpoint, protocol=2))
    else:
        torch.save(checkpoint, path, _use_new_zipfile_serialization=request.param == "zip")
    # The payload is real: an unsafe load runs it.
    torch.load(path, weights_only=False) if request.param != "plain-pickle" else pickle.loads(path.read_bytes())
    assert marker.read_text() == "pwned"
    marker.unlink()
    return path, marker


def assert_refused(result, marker: Path) -> None:
    assert result.exit_code == 2, f"{result.output}\n{result.exception!r}"
    assert _flat(REFUSED) in _flat(result.output) and "Traceback" not in result.output
    assert not marker.exists()


@pytest.fixture
def world_sets(tiny_world, tmp_path) -> list[str]:
    return _sets(*TINY, f"data.root={tiny_world}", f"output_dir={tmp_path / 'runs'}")


def test_load_model_and_load_weights_refuse_pickled_code(evil):
    path, marker = evil
    config = load_config("demo", TINY)
    with pytest.raises(CheckpointError, match=REFUSED):
        load_model(config, path)
    with pytest.raises(CheckpointError, match=REFUSED):
        load_weights(build_model(config, pretrained_encoder=False), path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "{out}", "-c", "demo", "--checkpoint", "{evil}"],
        ["predict", "{out}", "--checkpoint", "{evil}"],  # the config would come from the checkpoint
        ["evaluate", "{out}", "-c", "demo", "--checkpoint", "{evil}"],
        ["export", "{evil}", "{out}", "-c", "demo"],
        ["export", "{evil}", "{out}"],
        ["models", "--inspect", "{evil}"],
        ["detect", "{ortho}", "-o", "{out}", "-c", "demo", "--checkpoint", "{evil}", "--no-progress"],
    ],
    ids=["predict", "predict-embedded-config", "evaluate", "export", "export-embedded-config", "inspect", "detect"],
)
def test_every_command_taking_weights_refuses_pickled_code(evil, world_sets, tiny_world, tmp_path, command):
    path, marker = evil
    ortho = next((tiny_world / "orthophotos").glob("ORTHO_*.tif"))
    args = [a.format(out=tmp_path / "out", evil=path, ortho=ortho) for a in command]
    if command[0] != "models":
        args += world_sets
    assert_refused(runner.invoke(app, args), marker)
    assert not (tmp_path / "out").exists()


def test_init_weights_refuses_pickled_code(evil, tiny_world, tmp_path):
    path, marker = evil
    config = load_config("demo", [*TINY, f"data.root={tiny_world}", f"output_dir={tmp_path / 'runs'}"])
    config.train.init_weights = path
    with pytest.raises(CheckpointError, match=REFUSED):
        train(config, progress=False)
    assert not marker.exists()
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


def test_resume_from_refuses_pickled_code_before_any_output(evil, world_sets, tmp_path):
    path, marker = evil
    result = runner.invoke(
        app, ["train", "-c", "demo", "--no-progress", *world_sets, "--set", f"train.resume_from={path}"]
    )
    assert_refused(result, marker)
    assert not (tmp_path / "runs").exists()


def test_resume_flag_refuses_a_planted_last_checkpoint(evil, world_sets, tmp_path):
    path, marker = evil
    planted = tmp_path / "runs" / "demo" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(path.read_bytes())
    result = runner.invoke(app, ["train", "-c", "demo", "--no-progress", *world_sets, "--resume"])
    assert_refused(result, marker)


def test_lightning_resume_itself_loads_weights_only(evil, tiny_world, tmp_path, monkeypatch):
    """Defence in depth: even past flairkit's own check, and with torch told to default to unsafe loading,
    the checkpoint Lightning unpickles on resume cannot run code."""
    import pickle as pickle_module

    import flairkit.models.weights as weights

    path, marker = evil
    monkeypatch.setattr(weights, "check_resume_checkpoint", lambda _: None)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    config = load_config("demo", [*TINY, f"data.root={tiny_world}", f"output_dir={tmp_path}"])
    config.train.resume_from = path
    with pytest.raises(pickle_module.UnpicklingError, match="Weights only load failed"):
        train(config, progress=False)
    assert not marker.exists()


def test_resume_from_plain_weights_names_init_weights(tmp_path, tiny_world):
    from safetensors.torch import save_file

    weights = tmp_path / "weights.safetensors"
    state = build_model(load_config("demo", TINY), pretrained_encoder=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    config = load_config("demo", [*TINY, f"data.root={tiny_world}", f"output_dir={tmp_path / 'runs'}"])
    config.train.resume_from = weights
    with pytest.raises(CheckpointError, match=r"not a Lightning training checkpoint.*use train.init_weights"):
        train(config, progress=False)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------- YAML


YAML_PAYLOADS = [
    "name: !!python/object/apply:builtins.exec [\"open({marker!r}, 'w').write('pwned')\"]\n",
    "train: !!python/object/new:builtins.exec [\"open({marker!r}, 'w').write('pwned')\"]\n",
    "!!python/object/apply:builtins.exec [\"open({marker!r}, 'w').write('pwned')\"]\n",
]


@pytest.mark.parametrize("template", YAML_PAYLOADS, ids=["apply", "new", "top-level"])
def test_yaml_with_python_tags_is_refused_by_load_config(tmp_path, template):
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.yaml"
    evil.write_text(template.format(marker=str(marker)))
    yaml.unsafe_load(evil.read_text())  # the payload is real
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(evil)
    result = runner.invoke(app, ["config", "validate", "-c", str(evil)])
    assert result.exit_code == 2 and _flat(f"{evil} is not valid YAML") in _flat(result.output)
    assert not marker.exists()


def test_python_tag_in_an_override_is_only_text(tmp_path):
    marker = tmp_path / "marker.txt"
    value = f"!!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w')\"]"
    config = load_config("demo", [f"description={value}"])
    assert config.description == value
    assert not marker.exists()


# ---------------------------------------------------------------------------------------- static checks

SOURCE = Path(flairkit.__file__).parent
FORBIDDEN_IMPORTS = {"subprocess", "pickle.load", "marshal", "shelve", "dill", "joblib"}
FORBIDDEN_CALLS = {
    "os.system",
    "os.popen",
    "os.execv",
    "os.execve",
    "os.execl",
    "os.execvp",
    "os.spawnv",
    "os.spawnl",
    "os.startfile",
    "pickle.load",
    "pickle.loads",
    "yaml.load",
    "yaml.unsafe_load",
    "yaml.full_load",
    "yaml.load_all",
    "yaml.unsafe_load_all",
    "torch.jit.load",
    "eval",
    "exec",
    "compile",
    "__import__",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value == value for k in call.keywords)


def _violations(code: str, label: str) -> list[str]:
    """What the static check refuses in ``code``, one line per finding."""
    found = []
    for node in ast.walk(ast.parse(code, filename=label)):
        where = f"{label}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom):
                names += [f"{node.module}.{a.name}" for a in node.names]
            found += [f"{where}: imports {n}" for n in names if n in FORBIDDEN_IMPORTS]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in FORBIDDEN_CALLS:
            found.append(f"{where}: calls {name}")
        if _keyword_is(node, "shell", True):
            found.append(f"{where}: shell=True")
        if name.endswith(("torch.load", "serialization.load")) and not _keyword_is(node, "weights_only", True):
            found.append(f"{where}: torch.load without weights_only=True")
        if name.endswith("np.load") and not _keyword_is(node, "allow_pickle", False):
            found.append(f"{where}: np.load without allow_pickle=False")
        if any(k.arg == "ckpt_path" for k in node.keywords) and not _keyword_is(node, "weights_only", True):
            found.append(f"{where}: a Lightning checkpoint is loaded without weights_only=True")
    return found


def test_source_builds_no_shell_command_and_unpickles_nothing_unsafely():
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 30
    violations = [v for path in files for v in _violations(path.read_text("utf-8"), str(path.relative_to(SOURCE)))]
    assert violations == []


def test_static_check_catches_what_it_looks_for():
    code = (
        "import subprocess, os, yaml, torch, numpy as np\n"
        "os.system('ls ' + name)\n"
        "subprocess.run(cmd, shell=True)\n"
        "yaml.load(text)\n"
        "torch.load(path)\n"
        "np.load(path)\n"
        "trainer.fit(task, ckpt_path=path)\n"
        "eval(text)\n"
    )
    found = _violations(code, "probe.py")
    assert [line.split(": ", 1)[1] for line in found] == [
        "imports subprocess",
        "calls os.system",
        "shell=True",
        "calls yaml.load",
        "torch.load without weights_only=True",
        "np.load without allow_pickle=False",
        "a Lightning checkpoint is loaded without weights_only=True",
        "calls eval",
    ]
