"""Real processes for kubesim's exec and attach: spawned confined in the pod (kubesim.sandbox), async fd
I/O, ptys.

The environment of a command is built from scratch (never inherited): the server's own environment may
hold credentials.  Every child leads its own session, so the whole process group can be killed when the
client goes away.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import struct
import termios
from dataclasses import dataclass, field

from kubesim.sandbox import CHAIN_ENV, DEFAULT_PATH, ConfinementError, Jail

READ_CHUNK = 64 * 1024


class SpawnError(Exception):
    """The command could not be started; the message is safe to show to the client."""


def container_env(pod: dict, container: dict, *, tty: bool) -> dict[str, str]:
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
        HOME=env.get("HOME", "/"),
        HOSTNAME=str(meta.get("name", "")),
        KUBESIM_POD=str(meta.get("name", "")),
        KUBESIM_NAMESPACE=str(meta.get("namespace", "")),
    )
    if tty:
        env.setdefault("TERM", "xterm")
    return env


def _env_safe(name: str, value: str) -> bool:
    return bool(name) and "=" not in name and "\0" not in name + value


def workdir(container: dict) -> str:
    """The container's ``workingDir`` when it is an absolute path, else the root."""
    wanted = container.get("workingDir")
    return wanted if isinstance(wanted, str) and wanted.startswith("/") and "\0" not in wanted else "/"


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
    argv: list[str], *, jail: Jail, env: dict[str, str], cwd: str, tty: bool, stdin: bool, stdout: bool,
    stderr: bool,
) -> Child:
    """Start ``argv`` confined by ``jail``; with ``tty`` all stdio is one pty (stderr merged), else pipes."""
    if not argv or not argv[0]:
        raise SpawnError("no command given")
    if any("\0" in arg for arg in argv):
        raise SpawnError("command contains a NUL character")
    try:
        jail.prepare()
    except ConfinementError as exc:
        raise SpawnError(str(exc)) from None
    except OSError as exc:
        raise SpawnError(f"the pod's filesystem cannot be prepared: {exc.strerror or exc}") from None
    if not jail.executable(argv[0], env, cwd):
        raise SpawnError(f'exec: "{argv[0]}": executable file not found in $PATH')
    if tty:
        return await _spawn_pty(jail, argv, env, cwd)
    return await _spawn_pipes(jail.command(argv, env, workdir=cwd), argv[0], stdin, stdout, stderr)


async def _spawn_pipes(chain, name, stdin, stdout, stderr) -> Child:
    ours: dict[str, int | None] = {}
    theirs: list[int] = []
    fds: dict[str, int] = {}
    try:
        for stream, wanted, child_reads in (("stdin", stdin, True), ("stdout", stdout, False), ("stderr", stderr, False)):
            if not wanted:
                ours[stream] = None
                fds[stream] = asyncio.subprocess.DEVNULL
                continue
            r, w = os.pipe()
            mine, child = (w, r) if child_reads else (r, w)
            os.set_blocking(mine, False)
            ours[stream], fds[stream] = mine, child
            theirs.append(child)
        proc = await asyncio.create_subprocess_exec(
            *chain, cwd="/", env=CHAIN_ENV, stdin=fds["stdin"], stdout=fds["stdout"], stderr=fds["stderr"],
            start_new_session=True,
        )
    except OSError as exc:
        for fd in [*theirs, *(v for v in ours.values() if v is not None)]:
            os.close(fd)
        raise SpawnError(f'exec: "{name}": {exc.strerror or exc}') from None
    for fd in theirs:
        os.close(fd)
    return Child(proc, ours["stdin"], ours["stdout"], ours["stderr"], tty=False)


async def _spawn_pty(jail: Jail, argv, env, cwd) -> Child:
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    chain = jail.command(argv, env, workdir=cwd, tty=os.ttyname(slave))
    try:
        proc = await asyncio.create_subprocess_exec(
            *chain, cwd="/", env=CHAIN_ENV, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
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
