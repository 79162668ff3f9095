"""The work folder of a map being computed: settings manifest, raw block file and block journals.

Beside ``map.tif`` lives ``.map.tif.work/`` while the map is computed. Finished blocks are written in
place into ``blocks.raw`` and, only once the bytes are on disk, their id is appended (and fsynced) to
``journal-rank<r>.log``. After a Ctrl-C, a ``kill -9`` or a crash, ``resume=True`` reads every journal
and computes only the missing blocks; because each block is deterministic and the final GeoTIFF is made
from ``blocks.raw`` in one pass, the result is byte-identical to an uninterrupted run. The folder is
deleted once the map is in place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from flairkit.atomic import write_text_atomic
from flairkit.errors import DataError, FlairError

MANIFEST = "manifest.json"
RAW = "blocks.raw"
JOURNAL_GLOB = "journal-rank*.log"

logger = logging.getLogger(__name__)


def work_dir_for(map_path: Path) -> Path:
    """The work folder of the map ``map_path``."""
    map_path = Path(map_path)
    return map_path.parent / f".{map_path.name}.work"


class Journal:
    """Append-only list of finished block ids of one rank; each entry is on disk when ``append`` returns."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle = self.path.open("a", encoding="ascii")

    def append(self, block_id: int) -> None:
        self._handle.write(f"{block_id}\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


class WorkDir:
    """The work folder of one map."""

    def __init__(self, map_path: Path):
        self.map_path = Path(map_path)
        self.path = work_dir_for(self.map_path)

    @property
    def raw_path(self) -> Path:
        return self.path / RAW

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def create(self, manifest: dict[str, Any]) -> None:
        """Start afresh: an empty folder holding ``manifest``."""
        self.remove()
        self.path.mkdir(parents=True)
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))

    def check_manifest(self, manifest: dict[str, Any]) -> None:
        """Refuse to resume when the interrupted run used other inputs, settings or weights."""
        try:
            previous = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(
                f"{self.manifest_path}: cannot read the interrupted run's settings ({error}); "
                f"delete {self.path} and run again without --resume"
            ) from None
        changed = sorted(key for key in manifest.keys() | previous.keys() if manifest.get(key) != previous.get(key))
        if changed:
            raise DataError(
                f"cannot resume {self.map_path}: the interrupted run used different {', '.join(changed)}; "
                f"run with the same config, input and weights, or pass --overwrite to start afresh"
            )

    def done_blocks(self) -> set[int]:
        """Ids of the blocks every rank's journal lists as finished (a torn last line is ignored)."""
        done: set[int] = set()
        for journal in sorted(self.path.glob(JOURNAL_GLOB)):
            text = journal.read_text(encoding="ascii", errors="replace")
            lines = text.split("\n")[:-1]  # the text after the last newline was not fully written
            done.update(int(line) for line in lines if line.isdigit())
        return done

    def journal(self, rank: int) -> Journal:
        return Journal(self.path / f"journal-rank{rank}.log")

    def remove(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)

    def after_failure(self, error: BaseException) -> BaseException:
        """The error to report once a run of this map failed: the folder is deleted when it holds no finished block
        (nothing to resume), else a :class:`FlairError` says that it is kept and how to use it."""
        blocks = len(self.done_blocks()) if self.path.is_dir() else 0
        if not blocks:
            self.remove()
            return error
        kept = (
            f"{blocks} finished block(s) are kept in {self.path}: rerun with --resume to continue once the cause is "
            f"fixed (the same input, config and weights), or delete the folder"
        )
        if not isinstance(error, FlairError):
            logger.warning(kept)
            return error
        return type(error)(f"{error}; {kept}")
