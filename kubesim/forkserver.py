"""A fork server for the test suite: one process imports kubesim once, then forks a fresh kubesim per test.

``python -m kubesim`` spends most of its ~0.5 s start importing aiohttp, cryptography and kubesim itself;
a test suite that starts a few hundred of them pays that each time.  This process imports all of it once,
listens on a Unix socket and, for each connection, forks a child that runs ``kubesim.__main__.main`` with
the arguments, environment, working directory and stderr file the client sent: the child is as fresh as a
new ``python -m kubesim`` (its own state directory, port, CA and event loop), only started without imports.

Protocol, one connection per kubesim: the client sends one JSON line ``{"argv", "env", "cwd", "stderr"}``;
the server answers ``{"pid": N}`` and, when that child has ended, ``{"returncode": N}`` (negative: the
signal that ended it, as subprocess.Popen reports it), then closes the connection.  The server ends, and
terminates its children, when its stdin closes (the test process exited).

:class:`ForkServer` (client side) starts it; :meth:`ForkServer.spawn` returns a :class:`ForkedProcess`,
the subset of subprocess.Popen that kubesim.testing uses.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _run_child(request: dict, close: list[int]) -> None:
    """In the forked child: become ``python -m kubesim <argv>`` and never return."""
    code = 1
    try:
        for fd in close:
            try:
                os.close(fd)
            except OSError:
                pass
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        os.close(null)
        os.close(err)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["python -m kubesim", *request["argv"]]
        from kubesim.__main__ import main

        code = main(request["argv"])
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:  # noqa: BLE001 - reported on the child's stderr, as an uncaught exception would be
        traceback.print_exc()
        code = 1
    finally:
        try:
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(path: str) -> None:
    """The server's loop (``python -m kubesim.forkserver PATH``)."""
    import kubesim.__main__  # noqa: F401 - the point: import everything once, before forking

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C reaches the test process; it ends us via stdin
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    print("ready", flush=True)
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "stdin":
                    if not os.read(sys.stdin.fileno(), 4096):
                        return
                elif key.data == "child":
                    os.read(wake_r, 4096)
                    while children:
                        try:
                            pid, status = os.waitpid(-1, os.WNOHANG)
                        except ChildProcessError:
                            break
                        if pid == 0:
                            break
                        conn = children.pop(pid, None)
                        if conn is not None:
                            try:
                                conn.sendall(json.dumps({"returncode": _returncode(status)}).encode() + b"\n")
                            except OSError:
                                pass
                            conn.close()
                else:
                    conn, _ = listener.accept()
                    with conn.makefile("rb") as reader:
                        request = json.loads(reader.readline())
                    inherited = [listener.fileno(), wake_r, wake_w, selector.fileno(),
                                 *(c.fileno() for c in children.values())]
                    pid = os.fork()
                    if pid == 0:
                        _run_child(request, inherited + [conn.fileno()])
                    children[pid] = conn
                    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in list(children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


class _Lines:
    """JSON lines from the fork server over one connection, read with a deadline."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""
        self.eof = False

    def read(self, timeout: float | None) -> dict | None:
        """The next message; None when none came within ``timeout`` or the connection ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.eof:
                return None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.conn], [], [], remaining)[0]:
                return None
            chunk = self.conn.recv(4096)
            self.eof = not chunk
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


class ForkedProcess:
    """A kubesim the fork server started: the part of subprocess.Popen's interface the harness uses."""

    def __init__(self, pid: int, lines: _Lines) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lines = lines

    def _collect(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            message = self._lines.read(timeout)
            if message is not None:
                self.returncode = message["returncode"]
            elif self._lines.eof:  # the fork server went away without a status: so did the child's parent
                self.returncode = -signal.SIGKILL
            if self.returncode is not None:
                self._lines.conn.close()
        return self.returncode

    def poll(self) -> int | None:
        return self._collect(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._collect(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"kubesim pid {self.pid}", timeout)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """Client side: starts ``python -m kubesim.forkserver`` and asks it for kubesims."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self._directory = tempfile.mkdtemp(prefix="kubesim-fork-")  # short: a socket path has ~100 bytes
        self.path = os.path.join(self._directory, "sock")
        self.proc = subprocess.Popen([sys.executable, "-m", "kubesim.forkserver", self.path], cwd=root, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if self.proc.stdout.readline() != b"ready\n":
            self.proc.wait()
            raise RuntimeError(f"the kubesim fork server did not start (exit {self.proc.returncode})")

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, stderr: Path) -> ForkedProcess:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        conn.sendall(json.dumps({"argv": argv, "env": env, "cwd": cwd, "stderr": str(stderr)}).encode() + b"\n")
        lines = _Lines(conn)
        message = lines.read(timeout=30)
        if message is None:
            conn.close()
            raise RuntimeError("the kubesim fork server did not answer")
        return ForkedProcess(message["pid"], lines)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        try:
            os.unlink(self.path)
            os.rmdir(self._directory)
        except OSError:
            pass


if __name__ == "__main__":
    serve(sys.argv[1])
