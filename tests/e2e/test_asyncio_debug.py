"""The e2e tests' debug mode itself (tests/e2e/conftest.py): what it costs the loop."""

from __future__ import annotations

import asyncio
import linecache
from pathlib import Path

from tests.e2e.conftest import ASYNCIO_DEBUG


def _code_in(path: Path) -> dict[str, object]:
    path.write_text("def make_future(loop):\n    return loop.create_future()\n")
    namespace: dict[str, object] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


async def test_a_future_s_source_traceback_reads_no_file(tmp_path: Path) -> None:
    """Debug mode takes a stack for every future; the source lines of its frames are
    read when the traceback is shown, not on the loop when the future is made (a read
    lets go of the GIL: behind a thread computing in C, the loop waited at each)."""
    assert ASYNCIO_DEBUG and asyncio.get_running_loop().get_debug()
    source = tmp_path / "never_read.py"
    make_future = _code_in(source)["make_future"]
    future = make_future(asyncio.get_running_loop())  # type: ignore[operator]
    assert str(source) not in linecache.cache
    [frame] = [f for f in future._source_traceback if f.filename == str(source)]
    assert frame.line == "return loop.create_future()"  # read now, when asked
    assert str(source) in linecache.cache
