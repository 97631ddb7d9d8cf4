"""`edge-runtime batch`: stream a file through a model in chunks, never holding it all in memory.

Inputs: ``.npy`` (memory-mapped), ``.npz`` (each member's .npy stream read chunk by chunk, one
array per input name), ``.csv`` (numeric; optional header), ``.parquet`` (pyarrow, record
batches; every column is a feature of a single-input model). Outputs by suffix: ``.npz`` (one
array per model output), ``.npy`` (single-output models), ``.csv`` or ``.parquet`` (columns
``OUTPUT`` or ``OUTPUT_i``).
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
import numpy as np
from numpy.lib import format as npformat
from numpy.typing import NDArray

from edge_runtime.batch_writers import open_writer
from edge_runtime.errors import PayloadInvalid
from edge_runtime.manifest import TensorSpec
from edge_runtime.runtime import Runtime

Chunk = dict[str, NDArray[Any]]


def run_batch(rt: Runtime, name: str, input_path: Path, output_path: Path, *,
              version: str | None = None, chunk_rows: int = 1024, progress: bool = True) -> int:
    manifest = rt.registry.get(name, version).installed.manifest
    total, chunks = open_reader(input_path, manifest.inputs, chunk_rows)
    done = 0
    with open_writer(output_path, manifest.outputs, total) as writer, click.progressbar(
            length=total, label=name, hidden=not progress) as bar:
        for chunk in chunks:
            outputs = rt.dataplane.infer(name, version, chunk).outputs
            writer.write(outputs)
            rows = int(next(iter(chunk.values())).shape[0])
            done += rows
            bar.update(rows)
    return done


# What numpy, zipfile, csv and pyarrow raise for a corrupt or truncated file (ArrowInvalid is a
# ValueError, ArrowIOError an OSError): the user's input, so one line and exit 1, not a crash.
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def open_reader(path: Path, specs: tuple[TensorSpec, ...], chunk_rows: int
                ) -> tuple[int, Iterator[Chunk]]:
    """(total rows, iterator of chunks keyed by input name)."""
    if not path.is_file():
        raise PayloadInvalid(f"{path}: no such file")
    try:
        total, chunks = _open_reader(path, specs, chunk_rows)
    except _UNREADABLE as exc:
        raise PayloadInvalid(f"{path}: cannot read the file ({exc})") from exc
    return total, _guarded(path, chunks)


def _guarded(path: Path, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    try:
        yield from chunks
    except _UNREADABLE as exc:
        raise PayloadInvalid(f"{path}: cannot read the file ({exc})") from exc


def _open_reader(path: Path, specs: tuple[TensorSpec, ...], chunk_rows: int
                 ) -> tuple[int, Iterator[Chunk]]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        single = _single(specs, path)
        return len(array), ({single: np.asarray(array[i:i + chunk_rows])}
                            for i in range(0, len(array), chunk_rows))
    if suffix == ".npz":
        return _npz(path, specs, chunk_rows)
    if suffix == ".csv":
        return _csv_rows(path), _csv(path, _single(specs, path), chunk_rows)
    if suffix == ".parquet":
        return _parquet(path, _single(specs, path), chunk_rows)
    raise PayloadInvalid(f"{path}: unsupported input format {suffix!r} "
                         "(.npy, .npz, .csv, .parquet)")


def _single(specs: tuple[TensorSpec, ...], path: Path) -> str:
    if len(specs) != 1:
        raise PayloadInvalid(f"{path}: the model has {len(specs)} inputs; use .npz with one "
                             "array per input name")
    return specs[0].name


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    major, _minor = npformat.read_magic(fh)
    read = npformat.read_array_header_1_0 if major == 1 else npformat.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    if fortran or dtype.hasobject:
        raise PayloadInvalid("npz members must be C-ordered numeric arrays")
    return shape, dtype


def _npz(path: Path, specs: tuple[TensorSpec, ...], chunk_rows: int
         ) -> tuple[int, Iterator[Chunk]]:
    zf = zipfile.ZipFile(path)
    members = {n.removesuffix(".npy"): n for n in zf.namelist()}
    names = [s.name for s in specs]
    if len(specs) == 1 and len(members) == 1:
        members = {names[0]: next(iter(members.values()))}
    missing = [n for n in names if n not in members]
    if missing:
        raise PayloadInvalid(f"{path}: no arrays for inputs {missing} (has {sorted(members)})")
    streams = {n: zf.open(members[n]) for n in names}
    headers = {n: _npy_header(fh) for n, fh in streams.items()}
    totals = {shape[0] for shape, _ in headers.values()}
    if len(totals) != 1:
        raise PayloadInvalid(f"{path}: arrays have different row counts {sorted(totals)}")
    total = totals.pop()

    def chunks() -> Iterator[Chunk]:
        with zf:
            for start in range(0, total, chunk_rows):
                rows = min(chunk_rows, total - start)
                yield {n: _read_rows(streams[n], *headers[n], rows) for n in names}

    return total, chunks()


def _read_rows(fh: IO[bytes], shape: tuple[int, ...], dtype: np.dtype[Any], rows: int
               ) -> NDArray[Any]:
    row_shape = shape[1:]
    nbytes = rows * int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    data = fh.read(nbytes)
    if len(data) != nbytes:
        raise PayloadInvalid("npz member is truncated")
    return np.frombuffer(data, dtype=dtype).reshape((rows, *row_shape))


def _csv_rows(path: Path) -> int:
    with path.open("rb") as fh:
        lines = sum(1 for line in fh if line.strip())
    with path.open() as fh:
        return lines - int(_has_header(fh.readline()))


def _has_header(line: str) -> bool:
    try:
        [float(v) for v in line.strip().split(",") if v]
    except ValueError:
        return True
    return False


def _csv(path: Path, name: str, chunk_rows: int) -> Iterator[Chunk]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        rows: list[list[str]] = []
        for i, row in enumerate(reader):
            if not row or (i == 0 and _has_header(",".join(row))):
                continue
            rows.append(row)
            if len(rows) == chunk_rows:
                yield {name: _floats(rows, path)}
                rows = []
        if rows:
            yield {name: _floats(rows, path)}


def _floats(rows: list[list[str]], path: Path) -> NDArray[Any]:
    try:
        return np.asarray(rows, dtype=np.float64)
    except ValueError as exc:
        raise PayloadInvalid(f"{path}: CSV must be numeric with equal-length rows ({exc})"
                             ) from exc


def _parquet(path: Path, name: str, chunk_rows: int) -> tuple[int, Iterator[Chunk]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise PayloadInvalid("reading .parquet needs pyarrow (pip install pyarrow)") from exc
    pf = pq.ParquetFile(path)

    def chunks() -> Iterator[Chunk]:
        for batch in pf.iter_batches(batch_size=chunk_rows):
            cols = [np.asarray(c.to_numpy(zero_copy_only=False)) for c in batch.columns]
            yield {name: np.column_stack(cols)}

    return int(pf.metadata.num_rows), chunks()
