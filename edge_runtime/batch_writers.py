"""Streaming writers for `edge-runtime batch`: chunks in, one file out, written atomically."""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
from numpy.lib import format as npformat
from numpy.typing import NDArray

from edge_runtime.errors import PayloadInvalid
from edge_runtime.manifest import TensorSpec

Outputs = dict[str, NDArray[Any]]


class Writer(Protocol):
    def write(self, outputs: Outputs) -> None: ...

    def close(self) -> None: ...


@contextmanager
def open_writer(path: Path, specs: tuple[TensorSpec, ...], total: int) -> Iterator[Writer]:
    """Write to PATH.partial and rename on success; a failed run leaves no output file."""
    suffix = path.suffix.lower()
    tmp = path.with_name(path.name + ".partial")
    makers: dict[str, Callable[[Path, tuple[TensorSpec, ...], int], Writer]] = {
        ".npz": _NpzWriter, ".npy": _NpyWriter, ".csv": _CsvWriter,
              ".parquet": _ParquetWriter}
    if suffix not in makers:
        raise PayloadInvalid(f"{path}: unsupported output format {suffix!r} "
                             "(.npz, .npy, .csv, .parquet)")
    writer = makers[suffix](tmp, specs, total)
    try:
        yield writer
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


class _NpzWriter:
    """One .npy stream per output inside a zip; headers need the total row count up front."""

    def __init__(self, path: Path, specs: tuple[TensorSpec, ...], total: int) -> None:
        self._zf = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED)
        self._specs, self._total = specs, total
        self._streams: dict[str, IO[bytes]] = {}

    def write(self, outputs: Outputs) -> None:
        for spec in self._specs:
            arr = np.ascontiguousarray(outputs[spec.name])
            fh = self._streams.get(spec.name)
            if fh is None:
                fh = self._zf.open(f"{spec.name}.npy", "w", force_zip64=True)
                npformat.write_array_header_2_0(fh, {
                    "descr": npformat.dtype_to_descr(arr.dtype), "fortran_order": False,
                    "shape": (self._total, *arr.shape[1:])})
                self._streams[spec.name] = fh
            fh.write(arr.tobytes())

    def close(self) -> None:
        for fh in self._streams.values():
            fh.close()
        self._streams = {}
        self._zf.close()


class _NpyWriter(_NpzWriter):
    def __init__(self, path: Path, specs: tuple[TensorSpec, ...], total: int) -> None:
        if len(specs) != 1:
            raise PayloadInvalid(f"{path.name}: the model has {len(specs)} outputs; write .npz")
        self._fh: IO[bytes] = path.open("wb")
        self._specs, self._total, self._started = specs, total, False

    def write(self, outputs: Outputs) -> None:
        arr = np.ascontiguousarray(outputs[self._specs[0].name])
        if not self._started:
            npformat.write_array_header_2_0(self._fh, {
                "descr": npformat.dtype_to_descr(arr.dtype), "fortran_order": False,
                "shape": (self._total, *arr.shape[1:])})
            self._started = True
        self._fh.write(arr.tobytes())

    def close(self) -> None:
        self._fh.close()


def _columns(outputs: Outputs, specs: tuple[TensorSpec, ...]) -> tuple[list[str], NDArray[Any]]:
    names, blocks = [], []
    for spec in specs:
        arr = outputs[spec.name]
        flat = arr.reshape(arr.shape[0], -1)
        names += ([spec.name] if flat.shape[1] == 1
                  else [f"{spec.name}_{i}" for i in range(flat.shape[1])])
        blocks.append(flat.astype(np.float64) if flat.dtype.kind != "O" else flat)
    return names, np.hstack(blocks)


class _CsvWriter:
    def __init__(self, path: Path, specs: tuple[TensorSpec, ...], total: int) -> None:
        self._fh = path.open("w", newline="")
        self._csv = csv.writer(self._fh)
        self._specs, self._header = specs, False

    def write(self, outputs: Outputs) -> None:
        names, table = _columns(outputs, self._specs)
        if not self._header:
            self._csv.writerow(names)
            self._header = True
        self._csv.writerows(table.tolist())

    def close(self) -> None:
        self._fh.close()


class _ParquetWriter:
    def __init__(self, path: Path, specs: tuple[TensorSpec, ...], total: int) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise PayloadInvalid("writing .parquet needs pyarrow (pip install pyarrow)") from exc
        self._path, self._specs = path, specs
        self._writer: Any = None

    def write(self, outputs: Outputs) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names, table = _columns(outputs, self._specs)
        batch = pa.table({n: table[:, i] for i, n in enumerate(names)})
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._path, batch.schema)
        self._writer.write_table(batch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
