"""Confinement of a pod's processes (exec, attach, the containers' main processes) and the pod's network.

kubesim has no container runtime.  A pod's sandbox directory stands in for its root filesystem and the
host's /usr (with the /bin, /lib... beside it) for its image.  Every process of a pod runs

- joined to the pod's network namespace (loopback only, held by one small process per pod, which also
  connects port-forwards to ports inside),
- in its own mount, PID, IPC and UTS namespaces, chroot'ed into the sandbox, with /usr bound read-only
  (nosuid, nodev), a /dev of null, zero, full, random, urandom, tty and its own pty, and the kubelet's
  log directory hidden,
- as uid 0 without any capability (empty bounding set) and with no_new_privs, so it can neither leave
  the chroot, mount, nor gain privileges,
- with its own /proc (its PID namespace only) where, as the OCI runtime spec's defaults have it,
  /proc/sys, /proc/sysrq-trigger, /proc/irq, /proc/bus and /proc/fs are read-only and kcore, keys,
  timer_list and the like are masked: uid 0 could write there even without capabilities; no /sys,
- with only the environment the container spec gives it (kubesim's own never reaches it).

The tools are util-linux's (unshare, nsenter, mount, setpriv) and coreutils'
(chroot, env), which every Debian has.  As root kubesim uses them directly; otherwise inside an
unprivileged user namespace where the kernel allows one.  Where neither works, exec, attach and
port-forwards into pods are refused with the reason: running a pod's command on the host unconfined is
never a fallback.
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import shutil
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("unshare", "nsenter", "mount", "chroot", "setpriv", "setsid", "hostname", "env", "sh")
# The host directories that make up a pod's "image": bound read-only when they are directories,
# re-created as the same symlink when they are symlinks (merged /usr: /bin -> usr/bin).
IMAGE_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
HOLDER = Path(__file__).with_name("podnet.py")
HOLDER_START_TIMEOUT = 10.0
NOBODY = 65534

# Runs in the new namespaces, before the chroot: "$1" root, "$2" hostname, "$3" pty path or "", then the
# command to run inside.  Its own environment is fixed (PATH only), so nothing from the pod's spec can
# steer it (LD_PRELOAD, IFS...); the pod's environment is handed to env(1) inside the chroot.
SETUP = """set -eu
root=$1 name=$2 tty=$3
shift 3
{binds}
{mount} -t tmpfs -o mode=0755,size=1m,nosuid,noexec kubesim-dev "$root/dev"
for node in null zero full random urandom tty; do
  : > "$root/dev/$node"
  {mount} --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/pts"
if [ -n "$tty" ]; then
  : > "$root/dev/pts/${{tty##*/}}"
  {mount} --bind "$tty" "$root/dev/pts/${{tty##*/}}"
fi
{mount} -t tmpfs -o ro,mode=0000,size=4k kubesim-logs "$root/.logs"
{mount} -t proc -o nosuid,nodev,noexec proc "$root/proc"
for path in bus fs irq sys sysrq-trigger; do
  if [ -e "$root/proc/$path" ]; then {mount} --bind -o ro "$root/proc/$path" "$root/proc/$path"; fi
done
for path in acpi asound kcore keys latency_stats sched_debug scsi timer_list timer_stats; do
  if [ -d "$root/proc/$path" ]; then {mount} -t tmpfs -o ro,size=4k kubesim-masked "$root/proc/$path"
  elif [ -e "$root/proc/$path" ]; then {mount} --bind /dev/null "$root/proc/$path"; fi
done
{hostname} "$name"
set +e
{chroot} "$root" {setpriv} --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs -- "$@"
status=$?
exit $status
"""


class ConfinementError(Exception):
    """Pod processes cannot be confined here, or a pod's filesystem cannot take them; safe to show."""


@dataclass(frozen=True)
class Confinement:
    """How this host confines pod processes: as root, or inside a user namespace."""

    user_namespace: bool
    tools: dict[str, str]
    image_dirs: tuple[str, ...]  # bound read-only
    image_links: dict[str, str]  # re-created as symlinks

    def holder_argv(self, control_fd: int) -> list[str]:
        userns = ["--user", "--map-root-user"] if self.user_namespace else []
        drop = [] if self.user_namespace else [str(NOBODY)]
        return [self.tools["unshare"], *userns, "--net", "--", sys.executable, "-I", "-S", str(HOLDER),
                str(control_fd), *drop]

    def setup_script(self) -> str:
        binds = "\n".join(f'{self.tools["mount"]} --bind -o ro,nosuid,nodev /{d} "$root/{d}"' for d in self.image_dirs)
        return SETUP.format(binds=binds, mount=self.tools["mount"], chroot=self.tools["chroot"],
                            setpriv=self.tools["setpriv"], hostname=self.tools["hostname"])


_detected: Confinement | ConfinementError | None = None


def _tools() -> dict[str, str]:
    found = {name: shutil.which(name, path=DEFAULT_PATH) for name in TOOLS}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        raise ConfinementError(f"missing {', '.join(missing)} (util-linux, coreutils, hostname)")
    return found  # type: ignore[return-value]


async def _probe(argv: list[str]) -> str | None:
    """None when the namespaces can be made, else what the kernel or the tool said."""
    try:
        proc = await asyncio.create_subprocess_exec(*argv, env={"PATH": DEFAULT_PATH},
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    except (OSError, asyncio.TimeoutError) as exc:
        return str(exc) or type(exc).__name__
    return None if proc.returncode == 0 else err.decode(errors="replace").strip() or f"exit {proc.returncode}"


async def confinement() -> Confinement:
    """This host's confinement, found once; ConfinementError says why there is none."""
    global _detected
    if _detected is None:  # two first callers may both probe; both find the same
        _detected = await _detect()
    if isinstance(_detected, ConfinementError):
        raise _detected
    return _detected


async def _detect() -> Confinement | ConfinementError:
    try:
        tools = _tools()
    except ConfinementError as exc:
        return ConfinementError(f"kubesim cannot confine pod processes on this host: {exc}")
    namespaces = ["--mount", "--pid", "--ipc", "--uts", "--net", "--fork", "--kill-child", "--", tools["sh"], "-c", ":"]
    attempts = [False, True] if os.geteuid() == 0 else [True]
    why = ""
    for userns in attempts:
        argv = [tools["unshare"], *(["--user", "--map-root-user"] if userns else []), *namespaces]
        why = await _probe(argv) or ""
        if not why:
            dirs, links = [], {}
            for name in IMAGE_DIRS:
                host = Path("/", name)
                if host.is_symlink():
                    links[name] = os.readlink(host)
                elif host.is_dir():
                    dirs.append(name)
            return Confinement(userns, tools, tuple(dirs), links)
    return ConfinementError(f"kubesim cannot confine pod processes on this host: unshare failed ({why}); "
                            "it needs root or unprivileged user namespaces")


@dataclass(frozen=True)
class Jail:
    """Where and how one pod's processes run."""

    confinement: Confinement
    root: Path  # the pod's sandbox directory
    net_pid: int  # the process holding the pod's network namespace
    hostname: str

    def prepare(self) -> None:
        """Give the sandbox the mount points and links of a root filesystem (once per pod)."""
        if not self.root.is_dir() or self.root.is_symlink():
            raise ConfinementError("container is not running: its sandbox does not exist")
        for name in (*self.confinement.image_dirs, "dev", "proc", ".logs"):
            self._directory(name)
        for name, target in self.confinement.image_links.items():
            path = self.root / name
            if path.is_symlink() and os.readlink(path) == target:
                continue
            if path.exists() or path.is_symlink():
                raise ConfinementError(f"the pod's /{name} is not the image's link to {target}")
            path.symlink_to(target)
        tmp = self.root / "tmp"
        if not tmp.exists() and not tmp.is_symlink():
            tmp.mkdir()  # kubesim's umask applies (the demo's 077): the pod's processes all run as uid 0

    def _directory(self, name: str) -> None:
        path = self.root / name
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise ConfinementError(f"the pod's /{name} is not a directory")
        path.mkdir(exist_ok=True)

    def view(self, path: str, workdir: str = "/") -> Path:
        """The host file that ``path`` (as a process in the pod sees it) is."""
        parts = [p for p in posixpath.normpath(posixpath.join("/", workdir, path)).split("/") if p]
        if parts and parts[0] in self.confinement.image_dirs:
            return Path("/", *parts)
        if parts and parts[0] in self.confinement.image_links:
            return Path("/", self.confinement.image_links[parts[0]], *parts[1:])
        return self.root.joinpath(*parts)

    def executable(self, argv0: str, env: dict[str, str], workdir: str = "/") -> bool:
        """Whether env(1) in the pod would find ``argv0`` (execvp with the container's PATH)."""
        if not argv0 or "=" in argv0 or "\0" in argv0:
            return False  # env(1) would take NAME=VALUE as an assignment
        dirs = [""] if "/" in argv0 else env.get("PATH", DEFAULT_PATH).split(":")
        for directory in dirs:
            host = self.view(posixpath.join(directory, argv0) if directory else argv0, workdir)
            if host.is_file() and os.access(host, os.X_OK):
                return True
        return False

    def command(self, argv: list[str], env: dict[str, str], *, workdir: str = "/", tty: str = "") -> list[str]:
        """The command line that runs ``argv`` confined; run it with :data:`CHAIN_ENV` only."""
        tools = self.confinement.tools
        if self.confinement.user_namespace:
            enter = [tools["nsenter"], f"--target={self.net_pid}", "--user", "--net", "--preserve-credentials", "--"]
        else:
            enter = [tools["nsenter"], f"--net=/proc/{self.net_pid}/ns/net", "--"]
        unshare = [tools["unshare"], "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child",
                   "--propagation", "private", "--"]
        inside = [tools["env"], "-i", "-C", workdir, "--", *(f"{k}={v}" for k, v in env.items()), *argv]
        # A pty becomes the controlling terminal inside the new PID namespace, as a container runtime
        # does it, so that job control in the pod sees the terminal's process groups.
        session = [tools["setsid"], "--ctty"] if tty else []
        return [*enter, *unshare, *session, tools["sh"], "-c", self.confinement.setup_script(), "kubesim-pod",
                str(self.root), self.hostname, tty, *inside]


CHAIN_ENV = {"PATH": DEFAULT_PATH}


class PodNetwork:
    """A pod's network namespace: a holder process (kubesim/podnet.py) started on the pod's first use.

    kubesim asks it over a socket pair to connect to a port inside and gets the connected socket back.
    It ends when kubesim goes away (the pair closes), when the pod's sandbox disappears, or at exit.
    """

    registry: dict[tuple, PodNetwork | asyncio.Future] = {}

    def __init__(self, key: tuple, proc: asyncio.subprocess.Process, pid: int, control: socket.socket,
                 sandbox: Path) -> None:
        self.key = key
        self.proc = proc
        self.pid = pid
        self._control = control
        self._lock = asyncio.Lock()
        self._sandbox = sandbox
        self._sandbox_id = inode(sandbox)
        self._task = asyncio.ensure_future(self._watch())

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and self.registry.get(self.key) is self

    @classmethod
    async def get(cls, cluster, pod: dict) -> PodNetwork:
        meta = pod.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        key = (cluster, ns, name, meta.get("uid", ""))
        while isinstance(current := cls.registry.get(key), asyncio.Future):
            await asyncio.wait((current,))
        if isinstance(current, PodNetwork) and current.alive:
            return current
        starting = cls.registry[key] = asyncio.get_running_loop().create_future()
        try:
            network = await cls._start(key, cluster.sandbox_dir(ns, name))
        finally:
            if cls.registry.get(key) is starting:
                del cls.registry[key]
            starting.set_result(None)
        cls.registry[key] = network
        return network

    @classmethod
    async def _start(cls, key: tuple, sandbox: Path) -> PodNetwork:
        conf = await confinement()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                *conf.holder_argv(theirs.fileno()), pass_fds=(theirs.fileno(),), env=CHAIN_ENV,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            ours.close()
            raise ConfinementError(f"the pod's network could not be set up: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        try:
            ready = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(ours, 4), HOLDER_START_TIMEOUT)
        except asyncio.TimeoutError:
            ready = b""
        if len(ready) != 4:
            ours.close()
            _kill(proc)
            await proc.wait()
            raise ConfinementError("the pod's network could not be set up")
        return cls(key, proc, struct.unpack("!i", ready)[0], ours, sandbox)

    async def connect(self, port: int) -> socket.socket:
        """A TCP connection to ``port`` on the pod's loopback; OSError (errno set) when it fails."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            try:
                await loop.sock_sendall(self._control, struct.pack("!H", port))
                code, fds = await self._receive(loop)
            except OSError:
                raise ConnectionRefusedError(errno.ECONNREFUSED, "the pod's network is gone") from None
        if fds:
            sock = socket.socket(fileno=fds[0])
            for extra in fds[1:]:
                os.close(extra)
            return sock
        raise OSError(code or errno.ECONNREFUSED, os.strerror(code or errno.ECONNREFUSED))

    async def _receive(self, loop) -> tuple[int, list[int]]:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._control, 4, 2)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(self._control.fileno(), lambda: ready.done() or ready.set_result(None))
                try:
                    await ready
                finally:
                    loop.remove_reader(self._control.fileno())
                continue
            if len(data) != 4:
                raise OSError(errno.EPIPE, "the pod's network holder went away")
            return struct.unpack("!i", data)[0], list(fds)

    async def _watch(self) -> None:
        """Stop once the pod is gone: its sandbox was removed (or replaced by a new pod's)."""
        try:
            while inode(self._sandbox) == self._sandbox_id and self.proc.returncode is None:
                await asyncio.sleep(1)
        finally:
            if self.registry.get(self.key) is self:
                del self.registry[self.key]
            self._control.close()
            _kill(self.proc)
            await self.proc.wait()

    @classmethod
    def kill_all(cls) -> None:
        for network in list(cls.registry.values()):
            if isinstance(network, PodNetwork):
                _kill(network.proc)


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            os.kill(proc.pid, 9)
        except ProcessLookupError:
            pass


def inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino
