"""What Linux's /proc says about processes and ports: when a process started, who is in a
process group, who listens on a TCP port. ``server`` uses it to end what it started (and only
that) and to prove that the server answering its port is its own child.

Where /proc is missing (not Linux), ``available()`` is False and callers fall back to what
they can see through a socket.
"""
from __future__ import annotations

import ctypes
import ipaddress
import os
import pwd
import re
import signal
import socket
import time
from pathlib import Path

PROC = Path("/proc")
LISTEN = "0A"                    # TCP_LISTEN in /proc/net/tcp's state column
PR_SET_PDEATHSIG = 1


def available() -> bool:
    return (PROC / "net" / "tcp").exists()


def die_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn``: the child gets ``sig`` when the thread that started it ends (prctl
    PR_SET_PDEATHSIG). It is kept across exec, and cleared in the child's own children and
    by a change of user (``runuser``)."""
    def preexec():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
        except (OSError, AttributeError):
            pass
    return preexec


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...); None when gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when there is no such process."""
    fields = _stat(pid)
    return int(fields[19]) if fields and fields[0] != "Z" else None


def alive(pid: int | None, started: int | None) -> bool:
    """``pid`` runs and is the process that started at ``started`` (not a reused pid)."""
    return bool(pid) and started is not None and start_time(pid) == started


def boot_id() -> str:
    """This boot of this kernel: random at every boot, so two hosts never share one ("" where unknown)."""
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """The installation's id (/etc/machine-id; "" where there is none). VM images copied without
    clearing it share one, which is why a run's identity also holds the boot."""
    try:
        return Path("/etc/machine-id").read_text().strip()
    except OSError:
        return ""


def pid_namespace() -> str:
    """This process's pid namespace ("" where unknown): containers that share a host name and a
    store see different pids, and must not judge each other's runs dead."""
    try:
        return os.readlink(PROC / "self" / "ns" / "pid")
    except OSError:
        return ""


# The tags that say which process, on which machine, writes a run (tracking/session.py)
IDENTITY_TAGS = ("bpb.host", "bpb.pid", "bpb.pid_start", "bpb.pid_ns", "bpb.boot_id", "bpb.machine_id")


def identity() -> dict[str, str]:
    """This process's identity, as the tags of a run it starts."""
    pid = os.getpid()
    return dict(zip(IDENTITY_TAGS, (socket.gethostname(), str(pid), str(start_time(pid) or ""), pid_namespace(),
                                    boot_id(), machine_id())))


def writer_gone(tags: dict) -> bool:
    """Whether the process whose ``identity()`` the tags hold is known to be gone: it ran on
    this machine, in this boot and this pid namespace, and its pid is free or reused. A run
    from another machine with this host name (another boot id or machine id), from an earlier
    boot, or from another container is never judged gone: nothing here can see its process.
    Runs written before the boot and machine ids were recorded are judged by host name and pid
    namespace alone."""
    here = identity()
    try:
        pid = int(tags.get("bpb.pid", ""))
    except ValueError:
        return False
    for key in ("bpb.host", "bpb.pid_ns", "bpb.boot_id", "bpb.machine_id"):
        if key in tags and tags[key] != here[key]:
            return False
    if "bpb.host" not in tags:
        return False
    started = tags.get("bpb.pid_start", "")
    now = start_time(pid)
    return now is None or (started.isdigit() and now != int(started))


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (zombies left out)."""
    members = []
    for entry in PROC.glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def our_group(pgid: int | None, started: int | None) -> list[int]:
    """Members of group ``pgid`` if it is still the group whose leader started at ``started``:
    a group id is not reused while any member lives, so members without their leader count;
    a leader with another start time means the id now names someone else's group."""
    if not pgid:
        return []
    members = group_members(pgid)
    if pgid in members and start_time(pgid) != started:
        return []
    return members


def signal_group(pgid: int, sig: int) -> None:
    """``sig`` to process group ``pgid``; a SIGTERM is followed by SIGCONT, as systemd ends a unit:
    a stopped process (SIGSTOP, Ctrl-Z) keeps a TERM pending until it runs again, and would be
    left to the KILL."""
    os.killpg(pgid, sig)
    if sig == signal.SIGTERM:
        os.killpg(pgid, signal.SIGCONT)


def end_group(pgid: int, started: int | None, grace: float = 15.0) -> list[int]:
    """TERM, then KILL after ``grace`` seconds, to every member of our group ``pgid``;
    returns the pids that were running. A stopped member gets SIGCONT after the TERM (``signal_group``)."""
    members = our_group(pgid, started)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not our_group(pgid, started):
            break
        try:
            signal_group(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + wait
        while our_group(pgid, started) and time.monotonic() < deadline:
            time.sleep(0.1)
    return members


def command(pid: int, limit: int = 120) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = " ".join(Path(part).name if i == 0 else part
                    for i, part in enumerate(raw.decode(errors="replace").split("\0")) if part)
    text = re.sub(r"[\s\x00-\x1f\x7f-\x9f]+", " ", text).strip()      # one line, no terminal controls
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _address(hexaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hexaddr)
    # the kernel prints each 32-bit word in host (little-endian) order
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw)


def _host_addresses(host: str) -> set | None:
    """The addresses ``host`` binds to; None for every interface (or a name that does not resolve)."""
    try:
        found = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, ValueError):
        return None
    return None if any(a.is_unspecified for a in found) else found


def listeners(port: int, host: str = "0.0.0.0") -> dict[int, int]:
    """inode -> uid of each TCP socket listening on ``port`` where a server bound to ``host``
    would collide with it (the same address, or either side on every interface)."""
    ours, found = _host_addresses(host), {}
    for table in ("tcp", "tcp6"):
        try:
            rows = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            address, _, hexport = f[1].rpartition(":")
            if f[3] != LISTEN or int(hexport, 16) != port:
                continue
            addr = _address(address)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
            if ours is None or addr.is_unspecified or addr in ours:
                found[int(f[9])] = int(f[7])
    return found


def socket_owners(inodes, pids=None) -> dict[int, str]:
    """pid -> command of each process (among ``pids``, else every one this user may look
    into) holding one of the sockets ``inodes``."""
    wanted, owners = {f"socket:[{i}]" for i in inodes}, {}
    for pid in pids if pids is not None else (int(e.name) for e in PROC.glob("[0-9]*")):
        try:
            fds = os.listdir(PROC / str(pid) / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(PROC / str(pid) / "fd" / fd) in wanted:
                    owners[pid] = command(pid)
                    break
            except OSError:
                continue
    return owners


def describe(sockets: dict[int, int]) -> str:
    """Who holds ``sockets`` (from ``listeners``), in words: pids and commands where this user
    may see them, else the socket's owner."""
    owners = socket_owners(sockets)
    if owners:
        return ", ".join(f"pid {pid} ({cmd})" for pid, cmd in sorted(owners.items()))
    users = sorted({_user(uid) for uid in sockets.values()})
    return f"a process of user {', '.join(users)} (its pid is not visible to this user)"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
