"""Where a request's decoding and encoding run, so that one large request never keeps the
event loop (health checks, small requests) waiting for long.

    JSON to parse      < 64 KiB     on the event loop (well under a millisecond here)
                       < 1 MiB      in a worker thread
                       otherwise    in a decoder process
    output elements    < 256 Ki     encoded on the event loop, else in a worker thread
    (feedback labels likewise)

Why a process: orjson and numpy hold the GIL for the whole of one call, and parsing 32 MB of
JSON into lists and arrays is a single call of 0.3-1 s (more on a Raspberry Pi). In a thread
that would still stop the event loop for as long; in another process it stops nothing here,
and the memory the parse churns through (Python lists of floats: ~10x the body) is that
process's, returned to the system when it exits. The process is started on the first large
body (spawn: ~0.3 s), runs at a lower CPU priority (nice 10), is stopped after ``idle_s``
without a large body, and exits by itself if the daemon dies. A decoder is a module-level
function of (body, *args) that raises ``PayloadInvalid``: the same function runs either way,
so both give the same answer; an error crosses back as its message (an ``InputInvalid``
arrives as a ``PayloadInvalid`` with the same text, hence the same 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar, cast

from numpy.typing import NDArray

from edge_runtime.errors import PayloadInvalid

log = logging.getLogger("edge_runtime.api")
T = TypeVar("T")
INLINE_JSON_MAX = 64 * 1024
PROCESS_JSON_MIN = 1 << 20
INLINE_OUTPUT_MAX = 256 * 1024  # output elements
IDLE_S = 60.0
COPY_STEP = 1 << 20
_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
_PREFIX = "edge-runtime-body-"


def output_elements(outputs: Mapping[str, NDArray[Any]]) -> int:
    n = 0
    for arr in outputs.values():
        n += arr.size
    return n


def _start_child(parent: int) -> None:
    """In the decoder process: yield the CPU to the serving process (a small device may have
    one core), and exit when the parent is gone (killed, it cannot stop us: the pool's
    queues would keep this process waiting forever)."""
    with contextlib.suppress(OSError):
        os.nice(10)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _write_body(body: bytes | memoryview) -> str:
    """The body in a new file in shared memory (/dev/shm), for the decoder process. pwrite
    copies in the kernel with the GIL released: the event loop's thread runs meanwhile
    (copying 32 MB in Python holds the GIL for ~20 ms)."""
    fd, path = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=_SHM_DIR)
    try:
        view = memoryview(body)
        pos = 0
        while pos < len(view):
            pos += os.pwrite(fd, view[pos:pos + COPY_STEP], pos)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return path


def _remove_stale_bodies() -> None:
    """Body files left by a daemon that was killed while its decoder worked."""
    for path in Path(_SHM_DIR).glob(f"{_PREFIX}*"):
        pid = path.name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)


def _in_child(fn: Callable[..., Any], path: str, args: tuple[Any, ...]) -> tuple[str, Any]:
    """Run a decoder in the decoder process on a body handed over in a file. The result
    goes back pickled; errors go back as text (an exception whose constructor takes other
    arguments than its message would not unpickle)."""
    body = Path(path).read_bytes()
    try:
        return "ok", pickle.dumps(fn(body, *args), protocol=pickle.HIGHEST_PROTOCOL)
    except PayloadInvalid as exc:
        return "invalid", str(exc)
    except MemoryError:
        return "invalid", "decoding the body ran out of memory"
    except Exception as exc:  # a decoder bug: the parent answers 500 with it
        return "error", f"{type(exc).__name__}: {exc}"


class Offload:
    """The worker threads and the decoder process of one app (``close`` stops them)."""

    def __init__(self, *, threads: int = 2, idle_s: float = IDLE_S) -> None:
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="codec")
        self._process: ProcessPoolExecutor | None = None
        self._idle_s = idle_s
        self._busy = 0
        self._last_used = 0.0
        self.process_starts = 0
        self.process_bodies = 0  # bodies decoded in the decoder process
        self._turn: asyncio.Lock | None = None

    async def decode(self, fn: Callable[..., T], body: bytes | memoryview, *args: Any,
                     json_bytes: int) -> T:
        """``fn(body, *args)``, run where ``json_bytes`` of JSON to parse belongs."""
        if json_bytes < INLINE_JSON_MAX:
            return fn(body, *args)
        if json_bytes < PROCESS_JSON_MIN:
            return await self.thread(fn, body, *args)
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:  # one body at a time: the process decodes one at a time, and
            return cast(T, await self._in_process(fn, body, args))  # each waits uncopied

    async def run(self, fn: Callable[..., T], *args: Any, elements: int) -> T:
        """``fn(*args)``, work in proportion to ``elements`` (a response's output elements,
        a feedback's labels), on the event loop or in a worker thread."""
        if elements < INLINE_OUTPUT_MAX:
            return fn(*args)
        return await self.thread(fn, *args)

    async def thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    async def _in_process(self, fn: Callable[..., Any], body: bytes | memoryview,
                          args: tuple[Any, ...]) -> Any:
        """The body goes over in a file in shared memory: pickling it would copy it twice
        more, holding the GIL, into this process's heap (which glibc then keeps)."""
        loop = asyncio.get_running_loop()
        try:
            path = await self.thread(_write_body, body)
        except OSError as exc:  # no room in /dev/shm: a thread, as for smaller bodies
            log.warning("no shared memory for a %d byte body (%s): decoding it in a thread",
                        len(body), exc)
            return await self.thread(fn, body, *args)
        pool = self._pool()
        self._busy += 1
        self.process_bodies += 1
        try:
            try:
                future = pool.submit(_in_child, fn, path, args)
            except BrokenProcessPool:  # it died before this body (idle, or another body's)
                self._discard()
                pool = self._pool()
                future = pool.submit(_in_child, fn, path, args)
            kind, value = await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:  # died on this body (out of memory?)
            log.warning("the decoder process died decoding a %d byte body", len(body))
            if self._process is pool:
                self._discard()
            raise PayloadInvalid("the decoder process died while decoding the body (out of "
                                 "memory?)") from exc
        finally:
            await self.thread(os.unlink, path)
            self._busy -= 1
            self._last_used = time.monotonic()
            loop.call_later(self._idle_s, self._stop_if_idle)
        if kind == "invalid":
            raise PayloadInvalid(value)
        if kind == "error":
            raise RuntimeError(f"decoder failed: {value}")
        return await self.thread(pickle.loads, value)  # (arrays: a copy, off the loop)

    def _pool(self) -> ProcessPoolExecutor:
        if self._process is None:
            _remove_stale_bodies()
            self._process = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child, initargs=(os.getpid(),))
            self.process_starts += 1
        return self._process

    def _stop_if_idle(self) -> None:
        if not self._busy and time.monotonic() - self._last_used >= self._idle_s * 0.99:
            self._discard()

    def _discard(self) -> None:
        pool, self._process = self._process, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    @property
    def process_running(self) -> bool:
        return self._process is not None

    def close(self) -> None:
        self._discard()
        self._threads.shutdown(wait=False, cancel_futures=True)
