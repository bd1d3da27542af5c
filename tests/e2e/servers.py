"""Start `gptlab serve` as a user does and find its address."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=30)


def start_server(model: str, log: Path, *flags: str) -> Server:
    with log.open("w") as errors:  # the child keeps its own copy of the file descriptor
        process = subprocess.Popen([str(BIN / "gptlab"), "serve", "--model", model, "--port", "0", *flags],
                                   stdout=subprocess.PIPE, stderr=errors, text=True)
    lines = []
    while not any("OpenAI API:" in line for line in lines):
        line = process.stdout.readline()
        if not line:
            process.kill()
            raise AssertionError(f"the server exited before listening:\n{''.join(lines)}{log.read_text()}")
        lines.append(line)
    url = re.search(r"OpenAI API: (http://\S+)/v1", "".join(lines)).group(1)
    return Server(url, process, log)
