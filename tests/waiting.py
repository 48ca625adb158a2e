"""One loop for the tests that wait for a server they started: here, in a container or on the emulated board."""

from __future__ import annotations

import time


def wait_until(check, *, seconds: float, failure, alive=None) -> None:
    """Call `check()` until it returns true. An exception counts as "not yet": the server is not listening yet.

    Args:
        seconds: how long to wait before failing the test.
        failure: called for the failure's message, only then (so that a log is read only when it is needed).
        alive: called each round; when it returns false the test fails at once (the server process ended).
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        assert alive is None or alive(), failure()
        assert time.monotonic() < deadline, failure()
        time.sleep(0.1)
