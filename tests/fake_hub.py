"""A local stand-in for the Hugging Face Hub and for IGN's storage, for the download tests (never the network).

It speaks the part of the Hub's API that huggingface_hub's downloads use: HEAD and GET on
``/[datasets/]{repo_id}/resolve/{revision}/{filename}`` with ``X-Repo-Commit``, ``ETag`` (the git blob sha1 of a
small file, the sha256 of an LFS file, then also in ``X-Linked-Etag`` with ``X-Linked-Size``), ``Content-Length``
and Range requests; a missing file answers 404 with ``X-Error-Code: EntryNotFound``. Any other path is a plain
file. Faults, per file (the repository filename, or the plain path): a connection dropped after some bytes, a
flipped byte, error statuses, Range requests ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
"""The commit the fake hub reports for a branch name such as ``main``."""

_HUB_PATH = re.compile(r"((?:datasets/)?[^/]+/[^/]+)/resolve/([^/]+)/(.+)")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def git_sha1(data: bytes) -> str:
    """The git blob sha1 of ``data``: the Hub's ETag of a file kept outside LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeServer:
    """What the server holds, how it misbehaves, and what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    repos: dict[str, dict[str, tuple[bytes, bool]]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # per file, bytes sent before dropping
    corrupt: dict[str, int] = field(default_factory=dict)  # per file, how many answers get a flipped byte
    corrupt_at: int = 5000
    statuses: dict[str, list[int]] = field(default_factory=dict)  # per file, error statuses answered first
    ignore_range: bool = False
    url: str = ""

    def add_hub_file(
        self, repo_id: str, filename: str, data: bytes, *, repo_type: str = "model", lfs: bool = True
    ) -> None:
        """Serve ``data`` as ``filename`` of a hub repository, at any revision."""
        repo = ("datasets/" if repo_type == "dataset" else "") + repo_id
        self.repos.setdefault(repo, {})[filename] = (data, lfs)

    def gets(self, fragment: str = "") -> list[tuple[str, str, str | None]]:
        """The GET requests whose path contains ``fragment``."""
        return [r for r in self.requests if r[0] == "GET" and fragment in r[1]]

    def range_requests(self) -> list[str]:
        """The Range headers of the GET requests that had one."""
        return [r for method, _, r in self.requests if method == "GET" and r is not None]


def _handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # socket timeout: a stuck client cannot keep a thread alive

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _status(self, code: int, headers: dict[str, str]) -> None:
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _answer(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path).lstrip("/")
            state.requests.append((self.command, path, self.headers.get("Range")))
            match = _HUB_PATH.fullmatch(path)
            if match and match.group(1) in state.repos:
                repo, revision, key = match.groups()
                headers = {"X-Repo-Commit": revision if _COMMIT.fullmatch(revision) else COMMIT}
                entry = state.repos[repo].get(key)
                if entry is None:
                    self._status(404, {**headers, "X-Error-Code": "EntryNotFound"})
                    return
                data, lfs = entry
                etag = hashlib.sha256(data).hexdigest() if lfs else git_sha1(data)
                headers["ETag"] = f'"{etag}"'
                if lfs:
                    headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
            elif path in state.files:
                key, data, headers = path, state.files[path], {"ETag": '"v1"'}
            else:
                self._status(404, {})
                return
            if head:
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return
            if state.statuses.get(key):
                self._status(state.statuses[key].pop(0), {})
                return
            if state.corrupt.get(key, 0) > 0:
                state.corrupt[key] -= 1
                at = state.corrupt_at
                data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
            start, status = 0, 200
            requested = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if requested and not state.ignore_range:
                start, status = int(requested.group(1)), 206
                if start >= len(data):
                    self._status(416, {"Content-Range": f"bytes */{len(data)}"})
                    return
            body = data[start:]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            drops = state.drop_after.get(key)
            if drops:
                self.wfile.write(body[: drops.pop(0)])  # then close: the client sees a short body
                return
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def serve(state: FakeServer) -> Iterator[FakeServer]:
    """Run ``state`` on 127.0.0.1 (any free port) until the block ends; ``state.url`` is its address."""
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


def use_as_hub(monkeypatch: pytest.MonkeyPatch, state: FakeServer, home: Path) -> None:
    """Point huggingface_hub at ``state`` through HF_ENDPOINT, with an empty HF_HOME and downloads on.

    huggingface_hub reads these variables when it is imported, hence its constants are patched too.
    """
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", state.url)
    monkeypatch.setattr(constants, "ENDPOINT", state.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", state.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    # Downloads resume from the last whole chunk received (10 MiB by default): small chunks for small test files.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 10_000)
    for name in ("HF_HUB_OFFLINE", "FLAIRKIT_OFFLINE", "FLAIRKIT_DATA_MIRROR"):
        monkeypatch.delenv(name, raising=False)
