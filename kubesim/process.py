"""Real processes for kubesim's exec and attach: spawn in a pod sandbox, async fd I/O, ptys.

A kubesim "container" is the pod's sandbox directory, so a command runs as a plain child
process of the server with that directory as cwd and HOME.  Its environment is built from
scratch (never inherited): the server's own environment may hold credentials.  Every child
leads its own session, so the whole process group can be killed when the client goes away.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import shutil
import signal
import struct
import termios
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_CHUNK = 64 * 1024
# util-linux setsid(1) with --ctty makes the pty our child's controlling terminal (so ^C
# and SIGWINCH reach it) without a preexec_fn, which is unsafe in a threaded server.
SETSID = shutil.which("setsid", path=DEFAULT_PATH)


class SpawnError(Exception):
    """The command could not be started; the message is safe to show to the client."""


def container_env(pod: dict, container: dict, sandbox: Path, *, tty: bool) -> dict[str, str]:
    """Environment of a process in ``container``: literal ``env`` values plus kubesim's own."""
    meta = pod.get("metadata") or {}
    env: dict[str, str] = {}
    for item in container.get("env") or ():
        if not isinstance(item, dict):
            continue
        name, value = item.get("name"), item.get("value")
        if isinstance(name, str) and isinstance(value, str) and _env_safe(name, value):
            env[name] = value
    env.update(
        PATH=env.get("PATH", DEFAULT_PATH),
        HOME=str(sandbox),
        HOSTNAME=str(meta.get("name", "")),
        KUBESIM_POD=str(meta.get("name", "")),
        KUBESIM_NAMESPACE=str(meta.get("namespace", "")),
    )
    if tty:
        env.setdefault("TERM", "xterm")
    return env


def _env_safe(name: str, value: str) -> bool:
    return bool(name) and "=" not in name and "\0" not in name + value


def resolve(argv0: str, env: dict[str, str], cwd: Path) -> str | None:
    """Where ``argv0`` would be executed from, like execvp with the child's PATH and cwd."""
    if "\0" in argv0:
        return None
    if "/" in argv0:
        path = cwd / argv0
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(argv0, path=env.get("PATH", DEFAULT_PATH))


@dataclass
class Child:
    """A running command and our ends of its stdio (pty master, or pipe ends; None if unused)."""

    proc: asyncio.subprocess.Process
    stdin: int | None
    stdout: int | None
    stderr: int | None
    tty: bool
    _closed: set[int] = field(default_factory=set)

    def close_stdin(self) -> None:
        """Pipe: close it (EOF).  Pty: type the EOF character, the master must stay open."""
        if self.stdin is None:
            return
        if self.tty:
            try:
                os.write(self.stdin, b"\x04")
            except OSError:
                pass
            return
        self._close(self.stdin)
        self.stdin = None

    def kill(self) -> None:
        """SIGKILL the whole process group: the command and anything it left running."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            if self.proc.returncode is None:  # not yet in its own session
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        except PermissionError:  # the group id now belongs to someone else's processes
            pass

    def resize(self, width: int, height: int) -> None:
        if self.tty and self.stdout is not None:
            fcntl.ioctl(self.stdout, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close(self) -> None:
        for fd in {self.stdin, self.stdout, self.stderr} - {None}:
            self._close(fd)

    def _close(self, fd: int) -> None:
        if fd not in self._closed:
            self._closed.add(fd)
            os.close(fd)

    async def wait(self) -> int:
        """Exit code as a shell reports it: 128+N when killed by signal N."""
        code = await self.proc.wait()
        return 128 - code if code < 0 else code


async def spawn(
    argv: list[str], *, cwd: Path, env: dict[str, str], tty: bool, stdin: bool, stdout: bool, stderr: bool
) -> Child:
    """Start ``argv``; with ``tty`` all stdio is one pty (stderr merged), else separate pipes."""
    if not argv or not argv[0]:
        raise SpawnError("no command given")
    if any("\0" in arg for arg in argv):
        raise SpawnError("command contains a NUL character")
    if not cwd.is_dir():
        raise SpawnError("container is not running: its sandbox does not exist")
    if resolve(argv[0], env, cwd) is None:
        raise SpawnError(f'exec: "{argv[0]}": executable file not found in $PATH')
    if tty:
        return await _spawn_pty(argv, cwd, env)
    return await _spawn_pipes(argv, cwd, env, stdin, stdout, stderr)


async def _spawn_pipes(argv, cwd, env, stdin, stdout, stderr) -> Child:
    ours: dict[str, int | None] = {}
    theirs: list[int] = []
    fds: dict[str, int] = {}
    try:
        for name, wanted, child_reads in (("stdin", stdin, True), ("stdout", stdout, False), ("stderr", stderr, False)):
            if not wanted:
                ours[name] = None
                fds[name] = asyncio.subprocess.DEVNULL
                continue
            r, w = os.pipe()
            mine, child = (w, r) if child_reads else (r, w)
            os.set_blocking(mine, False)
            ours[name], fds[name] = mine, child
            theirs.append(child)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=fds["stdin"], stdout=fds["stdout"], stderr=fds["stderr"],
            start_new_session=True,
        )
    except OSError as exc:
        for fd in [*theirs, *(v for v in ours.values() if v is not None)]:
            os.close(fd)
        raise SpawnError(f'exec: "{argv[0]}": {exc.strerror or exc}') from None
    for fd in theirs:
        os.close(fd)
    return Child(proc, ours["stdin"], ours["stdout"], ours["stderr"], tty=False)


async def _spawn_pty(argv, cwd, env) -> Child:
    if SETSID is None:
        raise SpawnError("tty sessions need setsid(1) from util-linux on the kubesim host")
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = await asyncio.create_subprocess_exec(
            SETSID, "--ctty", *argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave
        )
    except OSError as exc:
        os.close(master)
        raise SpawnError(f'exec: "{argv[0]}": {exc.strerror or exc}') from None
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    # One fd serves both directions of a pty; Child.close() closes it once.
    return Child(proc, master, master, None, tty=True)


async def _wait_fd(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


async def read_fd(fd: int, size: int = READ_CHUNK) -> bytes:
    """Read up to ``size`` bytes from a non-blocking fd; b"" at EOF (EIO on a pty = hang-up)."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await _wait_fd(fd, writable=False)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


async def write_fd(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to a non-blocking fd; False if the reader has gone away."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _wait_fd(fd, writable=True)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EIO, errno.EBADF):
                return False
            raise
    return True
