"""Resumable artifact downloads for the device agent.

Chunks arrive over MQTT in any order; each is checked against its sha256 from the desired state
and written at its offset in ``SHA.part``; the set of chunks on disk is saved to ``SHA.chunks``
every few chunks, so a restart or a disconnect resumes instead of starting over. The whole file
is checked against its sha256 before it becomes ``SHA.edgepkg``. An HTTP(S) URL is the other
route (for large models).
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

from edge_runtime.errors import IntegrityError
from edge_runtime.package import sha256_file
from edge_runtime.protocol.messages import Artifact

_SAVE_EVERY = 16
# Copies of one chunk that may fail their sha256 before the download fails: the bytes are not
# damaged in transit (TCP) but wrong at the source, and asking forever would hang the update.
BAD_COPIES = 3


class PartialDownload:
    def __init__(self, directory: Path, artifact: Artifact) -> None:
        self.artifact = artifact
        directory.mkdir(parents=True, exist_ok=True)
        self.final = directory / f"{artifact.sha256}.edgepkg"
        self.part = directory / f"{artifact.sha256}.part"
        self._meta = directory / f"{artifact.sha256}.chunks"
        self.done: set[int] = set()
        self._bad: dict[int, int] = {}
        self._unsaved = 0
        if not self.final.exists():
            self._load()

    def _load(self) -> None:
        if self.part.exists() and self._meta.exists():
            try:
                self.done = {int(i) for i in json.loads(self._meta.read_text())}
            except (ValueError, TypeError):
                self.done = set()
        else:
            self.part.unlink(missing_ok=True)
        with self.part.open("ab") as fh:
            fh.truncate(self.artifact.size)

    @property
    def complete(self) -> bool:
        return self.final.exists() or len(self.done) == len(self.artifact.chunks)

    def missing(self) -> list[int]:
        return [i for i in range(len(self.artifact.chunks)) if i not in self.done]

    def write(self, index: int, data: bytes) -> bool:
        """Store one chunk if it is ours and intact; False (ignored) otherwise. Raises
        IntegrityError when ``BAD_COPIES`` copies of the same chunk were corrupt."""
        a = self.artifact
        if not 0 <= index < len(a.chunks) or index in self.done:
            return False
        actual = hashlib.sha256(data).hexdigest()
        if actual != a.chunks[index]:
            self._bad[index] = self._bad.get(index, 0) + 1
            if self._bad[index] >= BAD_COPIES:
                raise IntegrityError(self.part, f"chunk {index}", a.chunks[index], actual)
            return False
        fd = os.open(self.part, os.O_WRONLY)
        try:
            os.pwrite(fd, data, index * a.chunk_size)
        finally:
            os.close(fd)
        self.done.add(index)
        self._unsaved += 1
        if self._unsaved >= _SAVE_EVERY:
            self.save()
        return True

    def save(self) -> None:
        tmp = self._meta.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(self.done)))
        os.replace(tmp, self._meta)
        self._unsaved = 0

    def finalize(self) -> Path:
        """The verified package path; a corrupt whole file is discarded and raises."""
        if self.final.exists():
            return self.final
        actual = sha256_file(self.part)
        if actual != self.artifact.sha256:
            self.discard()
            raise IntegrityError(self.part, "artifact", self.artifact.sha256, actual)
        os.replace(self.part, self.final)
        self._meta.unlink(missing_ok=True)
        return self.final

    def discard(self) -> None:
        for p in (self.part, self._meta):
            p.unlink(missing_ok=True)
        self.done = set()


def http_download(url: str, dl: PartialDownload, *, timeout: float = 60.0) -> Path:
    """Fetch the whole artifact over HTTP(S) (large models); checked like the MQTT route."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, dl.part.open("wb") as fh:
        while chunk := resp.read(1 << 16):
            fh.write(chunk)
    dl.done = set(range(len(dl.artifact.chunks)))
    return dl.finalize()
