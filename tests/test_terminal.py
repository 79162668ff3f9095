"""The environment of the user's shell: a temporary folder too deep for a socket, a C locale."""

from __future__ import annotations

import os
import subprocess
import sys

LOAD_ONE_BATCH = """
import sys
from flairkit.config import load_config
from flairkit.data.datamodule import FlairDataModule
config = load_config("demo", [f"data.root={sys.argv[1]}", "data.num_workers=1", "data.batch_size=2"])
module = FlairDataModule(config)
module.setup("fit")
print(tuple(next(iter(module.train_dataloader()))["image"].shape))
"""


def test_loader_workers_run_under_a_temporary_folder_too_deep_for_a_socket(tiny_world, tmp_path):
    """A worker hands its batches over through a Unix socket (at most 107 bytes of path) in the temporary folder."""
    deep = tmp_path / ("d" * 100) / ("e" * 40)
    deep.mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(deep), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", LOAD_ONE_BATCH, str(tiny_world)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "(2, 5, 32, 32)"


def test_errors_name_non_ascii_paths_under_the_c_locale(tmp_path):
    missing = tmp_path / "forêt_été" / "config.yaml"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "COLUMNS": "40"}
    command = [sys.executable, "-m", "flairkit", "config", "show", "-c", str(missing)]
    done = subprocess.run(command, capture_output=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.decode("utf-8").splitlines() == [
        f"error: config file {missing} does not exist; give a YAML file or a preset name"
    ]
