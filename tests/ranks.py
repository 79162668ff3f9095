"""Two detection ranks on this machine: gloo processes that stand in for two GPUs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_two_ranks(script: Path, args: dict[str, Any]) -> list[Any]:
    """Run ``script ARGS_JSON TESTS_FOLDER`` as ranks 0 and 1 of one process group; each rank's last stdout line,
    parsed as JSON. A rank that fails fails the test with the end of its stderr."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), json.dumps(args), str(Path(__file__).parent)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(r), "WORLD_SIZE": "2"},
        )
        for r in range(2)
    ]
    reports = []
    for process in ranks:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports
