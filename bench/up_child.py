"""`polyvec up` as a child process for the benchmarks: the real command, on free ports, in a temp folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFLINE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class UpChild:
    """``with UpChild(data_dir) as up:`` -> up.http_url (the gateway), up.proc; Ctrl-C (SIGINT) on exit."""

    def __init__(self, data_dir: str | Path, model: str = OFFLINE_MODEL, *,
                 env: dict[str, str] | None = None, startup_timeout_s: float = 600) -> None:
        self.data_dir = Path(data_dir)
        self.model = model
        self.env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    "LOG_LEVEL": "WARNING", **(env or {})}
        for key in ("QDRANT_URL", "MODELS", "HTTP_PORT", "GRPC_PORT"):
            self.env.pop(key, None)
        self.startup_timeout_s = startup_timeout_s
        self.http_url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.tail: deque[str] = deque(maxlen=40)

    def __enter__(self) -> UpChild:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--model", self.model,
             "--data-dir", str(self.data_dir), "--http-port", "0", "--grpc-port", "0", "--quiet"],
            cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.startup_timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.tail.append(line.rstrip())
            found = re.search(r"HTTP\s+(http://\S+)", line)
            if found:
                self.http_url = found.group(1)
            if "Press Ctrl-C to stop" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.__exit__()
        raise RuntimeError("polyvec up did not start:\n" + "\n".join(self.tail))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.tail.append(line.rstrip())

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
