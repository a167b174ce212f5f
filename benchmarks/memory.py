"""Private memory of a benchmark process: RssAnon, without the page cache that memory maps add."""

from __future__ import annotations

import threading
import time


class AnonPeak:
    """Peak RssAnon (private resident memory) of this process, sampled every 10 ms in a thread
    while the context is open (or from construction until :meth:`stop`)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.01)

    def start(self) -> AnonPeak:
        self.peak = self.now()
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())
        return self.peak

    def __enter__(self) -> AnonPeak:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
