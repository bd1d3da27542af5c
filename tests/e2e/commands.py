"""`gptlab` commands as a user runs them, each in a process of its own, without importing torch each time.

A new `gptlab` process spends seconds importing torch and gptlab before it reads its flags, and the suite
runs hundreds of commands. Here each command is a child forked from a server process that imported them
once: it has its own stdin, stdout and stderr (file descriptors, so output from C is caught too),
environment, working folder and exit code, as a `gptlab` process has. What a fork cannot show stays with
real subprocesses: the console script itself, terminals (pexpect), servers and torchrun.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# Reads one job per line; forks a child that runs it and answers with the child's exit code.
FORK_SERVER = """
import json, os, signal, sys
import torch
from gptlab.cli import main

def run(job):
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    for fd, (path, flags) in enumerate(zip(job["streams"], (os.O_RDONLY, os.O_WRONLY, os.O_WRONLY))):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin, sys.stdout, sys.stderr = (open(fd, mode, closefd=False) for fd, mode in ((0, "r"), (1, "w"), (2, "w")))
    if "OMP_NUM_THREADS" in job["env"]:  # OpenMP read the variable when torch was imported, before the fork
        torch.set_num_threads(int(job["env"]["OMP_NUM_THREADS"]))
    signal.alarm(job["timeout"])  # its default action ends the child: the caller's timeout
    sys.exit(main(job["args"]))

for line in sys.stdin:
    job = json.loads(line)
    child = os.fork()
    if child == 0:
        run(job)
    _, status = os.waitpid(child, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


@functools.cache
def _fork_server() -> subprocess.Popen:
    """One per test process; it ends when this process closes its stdin, at exit."""
    return subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def gptlab(*args: str, input: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
           timeout: int = 600) -> subprocess.CompletedProcess:
    """`gptlab ARGS` with `env` added to this process's environment: what it printed and its exit code."""
    with tempfile.TemporaryDirectory(prefix="gptlab-command-") as folder:
        streams = [Path(folder, name) for name in ("stdin", "stdout", "stderr")]
        for stream, text in zip(streams, (input or "", "", "")):
            stream.write_text(text)
        server = _fork_server()
        job = {"args": list(args), "env": {**os.environ, **(env or {})}, "cwd": str(cwd or os.getcwd()),
               "streams": [str(stream) for stream in streams], "timeout": timeout}
        server.stdin.write(json.dumps(job) + "\n")
        server.stdin.flush()
        answer = server.stdout.readline()
        assert answer, "the fork server of tests/e2e/commands.py exited"
        code = int(answer)
        if code == -signal.SIGALRM:
            raise subprocess.TimeoutExpired(["gptlab", *args], timeout)
        return subprocess.CompletedProcess(["gptlab", *args], code, streams[1].read_text(), streams[2].read_text())
