"""Test helper: the real app launched in this process on 127.0.0.1 (a free port), closed afterwards."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from syncnet import pipeline


@contextlib.contextmanager
def running_app() -> Iterator[str]:
    """Launch app.py's demo with its production settings (queue, limits); yields the local URL."""
    import app

    pipeline.unload_engines()  # engines as this environment provides them (e.g. SYNCNET_WEIGHTS set by the test)
    demo, (_, url, _) = app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()
        pipeline.unload_engines()
