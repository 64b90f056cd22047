"""Holds a kubesim pod's network namespace (started by kubesim.sandbox.PodNetwork inside ``unshare --net``).

Brings the loopback interface up, lets the pod's processes (uid 0 without capabilities) bind ports below
1024 as a container runtime does (``net.ipv4.ip_unprivileged_port_start=0``, per network namespace),
reports its pid, then serves kubesim over the inherited socket: a big-endian uint16 port in, a 4-byte
errno back (0 on success) with the connected TCP socket attached (SCM_RIGHTS).  It exits when kubesim
closes the socket.  Run with ``python -I -S``: the standard library only, nothing from the environment.
"""

import fcntl
import os
import socket
import struct
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
CONNECT_TIMEOUT = 5.0


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def connect(port: int) -> tuple[socket.socket | None, int]:
    """localhost:port as a kubelet's port-forward tries it: IPv4 first, then IPv6."""
    code = 0
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect((address, port))
        except OSError as exc:
            code = code or exc.errno or 111
            sock.close()
            continue
        sock.settimeout(None)
        return sock, 0
    return None, code


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    loopback_up()
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", "w") as knob:
        knob.write("0")
    if len(sys.argv) > 2:  # started as root: keep nothing of it
        uid = int(sys.argv[2])
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    control.sendall(struct.pack("!i", os.getpid()))
    while len(request := control.recv(2)) == 2:
        sock, code = connect(struct.unpack("!H", request)[0])
        if sock is None:
            control.sendall(struct.pack("!i", code))
            continue
        socket.send_fds(control, [struct.pack("!i", 0)], [sock.fileno()])
        sock.close()


if __name__ == "__main__":
    main()
