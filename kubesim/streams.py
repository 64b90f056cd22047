"""Streaming pod subresources of kubesim: exec, attach and port-forward over WebSocket.

kubesim plays kube-apiserver and kubelet at once: ``server.py`` authenticates, authorizes
and looks up the pod, then hands the WebSocket GET to :func:`handle`.  Exec and attach speak
the remotecommand channel protocols (``v5.channel.k8s.io`` as kubectl >= 1.30 does, and the
kubelet's older ``v4.channel.k8s.io``/``channel.k8s.io`` with their base64 variants, used by
the Python client); port-forward is in :mod:`kubesim.portforward`.  Errors found before the
upgrade are answered with a 400 Status, like kube-apiserver.  Commands and data are never
logged: exec command lines and output may hold secrets.

Long because exec and attach share one session loop (channels, resize, the exit status); split,
the order of their frames would be harder to follow.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSMsgType, web
from multidict import MultiMapping

from kube.channels import (
    CLOSE, ERROR, REMOTECOMMAND_PROTOCOLS, RESIZE, STDERR, STDIN, STDOUT, ChannelError, ChannelProtocol,
)
from kubesim import errors, portforward, sandbox
from kubesim.channels import ChannelWriter, accept, negotiate
from kubesim.process import Child, SpawnError, container_env, read_fd, spawn, workdir, write_fd
from kubesim.store import encode_body


def query_bool(query: Mapping[str, str], name: str, default: bool) -> bool:
    """apimachinery's query conversion: only "0" and "false" (any case) are false."""
    if name not in query:
        return default
    return not (query[name] == "0" or query[name].lower() == "false")


@dataclass(frozen=True)
class StreamOptions:
    """PodExecOptions / PodAttachOptions from the query string."""

    container: dict
    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def pod_containers(pod: dict) -> list[dict]:
    spec = pod.get("spec") or {}
    return [
        c
        for key in ("containers", "initContainers", "ephemeralContainers")
        for c in spec.get(key) or ()
        if isinstance(c, dict)
    ]


def select_container(pod: dict, name: str) -> dict:
    """The container the request names, or the only one; raises ApiError like kube-apiserver."""
    pod_name = (pod.get("metadata") or {}).get("name", "")
    if name:
        for container in pod_containers(pod):
            if container.get("name") == name:
                return container
        raise errors.bad_request(f"container {name} is not valid for pod {pod_name}")
    containers = [c for c in (pod.get("spec") or {}).get("containers") or () if isinstance(c, dict)]
    if len(containers) == 1:
        return containers[0]
    if not containers:
        raise errors.bad_request(f"a container name must be specified for pod {pod_name}")
    names = " ".join(str(c.get("name", "")) for c in containers)
    raise errors.bad_request(f"a container name must be specified for pod {pod_name}, choose one of: [{names}]")


def parse_stream_options(query: MultiMapping[str], pod: dict, subresource: str) -> StreamOptions:
    command = tuple(query.getall("command", ()))
    opts = StreamOptions(
        container=select_container(pod, query.get("container", "")),
        command=command,
        stdin=query_bool(query, "stdin", False),
        stdout=query_bool(query, "stdout", True),
        stderr=query_bool(query, "stderr", True),
        tty=query_bool(query, "tty", False),
    )
    if subresource == "exec" and not command:
        raise errors.bad_request("you must specify at least one command for the container")
    if not (opts.stdin or opts.stdout or opts.stderr):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    return opts


def success_status() -> dict:
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int) -> dict:
    if code == 0:
        return success_status()
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error_status(message: str) -> dict:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def parse_resize(payload: bytes) -> list[tuple[int, int]]:
    """TerminalSize JSON objects ({"Width":W,"Height":H}; Go matches keys case-insensitively)."""
    sizes = []
    text, decoder, pos = payload.decode("utf-8", "replace"), json.JSONDecoder(), 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            break
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        if not isinstance(obj, dict):
            continue
        fields = {str(k).lower(): v for k, v in obj.items()}
        width, height = fields.get("width"), fields.get("height")
        if all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF for v in (width, height)):
            sizes.append((width, height))
    return sizes


async def ready(out: ChannelWriter, opts: StreamOptions) -> None:
    """Empty message on the lowest writable channel: the kubelet's "streams are set up"."""
    await out.send(STDOUT if opts.stdout else STDERR if opts.stderr else ERROR, b"")


async def _pump_output(fd: int, channel: int | None, out: ChannelWriter) -> None:
    """Copy a child's output to a channel (None: drain and drop) until EOF."""
    while data := await read_fd(fd):
        if channel is not None:
            await out.send(channel, data)


async def _feed_input(
    ws: web.WebSocketResponse, protocol: ChannelProtocol, opts: StreamOptions, on_stdin, on_stdin_close, on_resize
) -> None:
    """Dispatch client messages until the WebSocket closes."""
    async for msg in ws:
        if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            continue
        try:
            channel, payload = protocol.decode(msg.data)
        except ChannelError:
            continue
        if channel == STDIN and opts.stdin:
            if payload:
                await on_stdin(payload)
        elif channel == RESIZE and opts.tty:
            for width, height in parse_resize(payload):
                on_resize(width, height)
        elif channel == CLOSE and protocol.v5 and payload[:1] == bytes((STDIN,)):
            on_stdin_close()


async def _first(*aws) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close(ws: web.WebSocketResponse, inbound: asyncio.Task) -> None:
    """Close normally; close() wakes the reader task, which then ends by itself."""
    await ws.close()
    inbound.cancel()
    await asyncio.gather(inbound, return_exceptions=True)


async def start_pod(cluster, pod: dict) -> tuple[sandbox.Jail, float]:
    """A pod's first use (exec, attach, port-forward) starts it: its network and its containers' main
    processes.  Returns the pod's jail and when the newest main process was started."""
    meta = pod.get("metadata") or {}
    network = await sandbox.PodNetwork.get(cluster, pod)
    jail = sandbox.Jail(await sandbox.confinement(), cluster.sandbox_dir(meta.get("namespace", ""), meta.get("name", "")),
                        network.pid, str(meta.get("name", ""))[:63])
    mains = [await MainProcess.get(cluster, pod, container, jail)
             for container in (pod.get("spec") or {}).get("containers") or () if isinstance(container, dict)]
    return jail, max((main.started for main in mains), default=0.0)


async def serve_exec(
    request: web.Request, cluster, pod: dict, opts: StreamOptions, protocol: ChannelProtocol
) -> web.WebSocketResponse:
    """Run the command confined in the pod; exit code travels on the error channel."""
    ws = await accept(request, protocol.name)
    out = ChannelWriter(ws, protocol)
    env = container_env(pod, opts.container, tty=opts.tty)
    try:
        await ready(out, opts)
        try:
            jail, _ = await start_pod(cluster, pod)
            child = await spawn(
                list(opts.command), jail=jail, env=env, cwd=workdir(opts.container), tty=opts.tty,
                stdin=opts.stdin, stdout=opts.stdout, stderr=opts.stderr and not opts.tty,
            )
        except (SpawnError, sandbox.ConfinementError) as exc:
            await out.status(internal_error_status(f"error executing command in container: {exc}"))
            await ws.close()
            return ws
    except ConnectionError:
        return ws
    try:
        await _run_child(ws, out, protocol, opts, child)
    finally:
        child.kill()
        child.close()
        await child.proc.wait()
    return ws


async def _run_child(ws, out: ChannelWriter, protocol: ChannelProtocol, opts: StreamOptions, child: Child) -> None:
    if child.tty:
        outputs = [(child.stdout, STDOUT if opts.stdout else None)]
    else:
        outputs = [(fd, channel) for fd, channel in ((child.stdout, STDOUT), (child.stderr, STDERR)) if fd is not None]

    async def finish() -> int:
        """Exit code, once all output is sent (the status must come after it)."""
        await asyncio.gather(*(_pump_output(fd, channel, out) for fd, channel in outputs))
        return await child.wait()

    async def stdin(data: bytes) -> None:
        if child.stdin is not None and not await write_fd(child.stdin, data):
            child.close_stdin()

    finished = asyncio.ensure_future(finish())
    inbound = asyncio.ensure_future(_feed_input(ws, protocol, opts, stdin, child.close_stdin, child.resize))
    try:
        await asyncio.wait((finished, inbound), return_when=asyncio.FIRST_COMPLETED)
        if finished.done() and finished.exception() is None:
            await out.status(exit_status(finished.result()))
            await _close(ws, inbound)
    except ConnectionError:
        pass
    finally:
        child.kill()
        for task in (finished, inbound):
            task.cancel()
        await asyncio.gather(finished, inbound, return_exceptions=True)


class MainProcess:
    """A container's long-running main process, the thing ``attach`` connects to.

    kubesim has no container runtime, so the main processes start on the pod's first use (exec,
    attach or port-forward, see :func:`start_pod`) and live on after clients leave, like a
    container does.  It runs the container's ``command`` + ``args`` when ``command[0]`` is an
    executable in the pod (the host's /usr, or the sandbox: ``sh``, ``sleep``, ``python3``);
    anything else (no command, or an image entrypoint such as ``nginx``) runs ``sh`` reading
    stdin, so attach -i always has something to talk to.  ``tty: true`` in the container spec
    gives it a pty.  All attachers share its output; none sees output from before it attached.
    Closing stdin from an attacher reaches the process only with ``stdinOnce: true``, as with
    the kubelet.  Once it exits, the next use starts a fresh one (restartPolicy Always).  It is
    killed when the pod's sandbox disappears or kubesim exits.
    """

    # A Future stands in for a main process that is being started, so that concurrent
    # first attaches share one process.
    registry: dict[tuple, MainProcess | asyncio.Future] = {}

    def __init__(self, key: tuple, child: Child, container: dict, root: Path) -> None:
        self.key = key
        self.child = child
        self.started = time.monotonic()
        self.stdin_once = bool(container.get("stdinOnce"))
        self.listeners: set[asyncio.Queue] = set()
        self._sandbox = root
        self._sandbox_id = sandbox.inode(root)
        self._ending = False
        self._task = asyncio.ensure_future(self._run())

    @property
    def alive(self) -> bool:
        """False from the moment it starts to wind down, so no attacher joins too late."""
        return not self._ending and self.child.proc.returncode is None

    @classmethod
    async def get(cls, cluster, pod: dict, container: dict, jail: sandbox.Jail) -> MainProcess:
        meta = pod.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        key = (cluster, ns, name, meta.get("uid", ""), container.get("name", ""))
        while isinstance(current := cls.registry.get(key), asyncio.Future):
            await asyncio.wait((current,))
        if isinstance(current, MainProcess) and current.alive:
            return current
        starting = cls.registry[key] = asyncio.get_running_loop().create_future()
        try:
            main = await cls._start(key, jail, pod, container)
        finally:
            if cls.registry.get(key) is starting:
                del cls.registry[key]
            starting.set_result(None)
        cls.registry[key] = main
        return main

    @classmethod
    async def _start(cls, key: tuple, jail: sandbox.Jail, pod: dict, container: dict) -> MainProcess:
        tty = bool(container.get("tty"))
        env = container_env(pod, container, tty=tty)
        cwd = workdir(container)
        command = [str(c) for c in container.get("command") or ()]
        argv = command + [str(a) for a in container.get("args") or ()]
        if not command or not jail.executable(command[0], env, cwd):
            argv = ["sh"]
        child = await spawn(argv, jail=jail, env=env, cwd=cwd, tty=tty, stdin=True, stdout=True, stderr=True)
        return cls(key, child, container, jail.root)

    async def _pump(self, fd: int, channel: int) -> None:
        while data := await read_fd(fd):
            for queue in list(self.listeners):
                await queue.put((channel, data))

    async def _watch_sandbox(self) -> None:
        """Return once the pod is gone: its sandbox was removed (or replaced by a new pod's)."""
        while sandbox.inode(self._sandbox) == self._sandbox_id:
            await asyncio.sleep(1)

    async def _run(self) -> None:
        child = self.child
        outputs = [self._pump(child.stdout, STDOUT)]
        if child.stderr is not None:
            outputs.append(self._pump(child.stderr, STDERR))
        try:
            await _first(asyncio.gather(*outputs), self._watch_sandbox())
        finally:
            self._ending = True
            child.kill()
            await child.proc.wait()
            child.close()
            if self.registry.get(self.key) is self:
                del self.registry[self.key]
            for queue in list(self.listeners):
                await queue.put(None)

    async def write(self, data: bytes) -> None:
        if self.child.stdin is not None and not await write_fd(self.child.stdin, data):
            self.child.close_stdin()

    def close_stdin(self) -> None:
        if self.stdin_once:
            self.child.close_stdin()

    @classmethod
    def kill_all(cls) -> None:
        for main in list(cls.registry.values()):
            if isinstance(main, MainProcess):
                main.child.kill()


atexit.register(MainProcess.kill_all)
atexit.register(sandbox.PodNetwork.kill_all)


async def serve_attach(
    request: web.Request, cluster, pod: dict, opts: StreamOptions, protocol: ChannelProtocol
) -> web.WebSocketResponse:
    """Attach to the container's main process (see :class:`MainProcess`)."""
    ws = await accept(request, protocol.name)
    out = ChannelWriter(ws, protocol)
    try:
        await ready(out, opts)
        try:
            jail, _ = await start_pod(cluster, pod)
            main = await MainProcess.get(cluster, pod, opts.container, jail)
        except (SpawnError, sandbox.ConfinementError) as exc:
            await out.status(internal_error_status(f"error attaching to container: {exc}"))
            await ws.close()
            return ws
    except ConnectionError:
        return ws
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)
    main.listeners.add(queue)
    wanted = {STDOUT: opts.stdout, STDERR: opts.stderr}

    async def forward() -> None:
        while (item := await queue.get()) is not None:
            channel, data = item
            if wanted.get(channel):
                await out.send(channel, data)

    forwarding = asyncio.ensure_future(forward())
    inbound = asyncio.ensure_future(
        _feed_input(ws, protocol, opts, main.write, main.close_stdin, main.child.resize)
    )
    try:
        await asyncio.wait((forwarding, inbound), return_when=asyncio.FIRST_COMPLETED)
        if forwarding.done() and forwarding.exception() is None:
            await out.status(success_status())
            await _close(ws, inbound)
    except ConnectionError:
        pass
    finally:
        main.listeners.discard(queue)
        for task in (forwarding, inbound):
            task.cancel()
        await asyncio.gather(forwarding, inbound, return_exceptions=True)
    return ws


async def handle(request: web.Request, cluster, pod: dict, subresource: str) -> web.StreamResponse:
    """Entry point from server.py for WebSocket GETs on pods/{exec,attach,portforward}."""
    if subresource == "portforward":
        return await portforward.handle(request, cluster, pod, lambda: start_pod(cluster, pod))
    try:
        if subresource not in ("exec", "attach"):
            raise errors.bad_request(f"unsupported streaming subresource {subresource!r}")
        opts = parse_stream_options(request.query, pod, subresource)
        protocol = REMOTECOMMAND_PROTOCOLS[negotiate(request, REMOTECOMMAND_PROTOCOLS)]
    except errors.ApiError as exc:
        return web.Response(body=encode_body(exc.status()), status=exc.code, content_type="application/json")
    serve = serve_exec if subresource == "exec" else serve_attach
    return await serve(request, cluster, pod, opts, protocol)
