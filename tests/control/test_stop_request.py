"""Stop and reload requests are safe to make from a signal handler."""

from __future__ import annotations

import threading
import time

from tests.control.conftest import RunningApp


def test_a_stop_request_needs_no_lock_and_still_stops_the_main_loop(running: RunningApp) -> None:
    """A handler runs wherever the main thread was, even inside a lock: requests take none.

    The thread below holds the locks the main thread may hold when a signal
    lands (its stop Event's, the graph lock, the emit lock). Before, the
    handler's Event.set() then waited for the stop Event's lock forever and
    the daemon ignored SIGTERM.
    """
    app = running.app
    held = [app._stop._cond, app.runtime.lock, app.runtime.emit_gate]
    returned = threading.Event()

    def like_a_signal_handler() -> None:
        for lock in held:
            lock.acquire()
        try:
            app.request_reload()
            app.request_stop()
            returned.set()
        finally:
            for lock in reversed(held):
                lock.release()

    handler = threading.Thread(target=like_a_signal_handler, daemon=True)
    handler.start()
    handler.join(5)
    assert returned.is_set(), "a stop/reload request waited for a lock"
    deadline = time.monotonic() + 5
    while not app._stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app._stop.is_set(), "the main loop did not take the stop request"
