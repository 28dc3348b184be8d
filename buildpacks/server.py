"""The build server: a process that has imported the command line, the lifecycle and the
installed build backend once, and forks a worker for each command a ``buildpacks`` client
sends (``buildpacks.client``), as Gradle's daemon and Bazel's server keep a build tool warm.

A worker is the client's command run in a copy of this process: it takes over the client's
standard streams, working directory, umask, environment and arguments, and is its own
process group, so that the client's Ctrl-C (forwarded) reaches it and whatever it started,
as a terminal's would. Nothing of one command outlives its worker: every build reads its
settings, caches and project from disk, as a command run on its own does.

The server stops after ``client.IDLE_SECONDS`` without a command; and when a file it
imported a module from has changed, or a directory on its import path has (a package was
installed or removed): its modules would no longer be those a new process imports. It then
answers ``stale`` and the client runs the command itself and starts a new server.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import io
import os
import pkgutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

from buildpacks import client

# Imported once, whole: our packages (the Hatch plugin only where hatchling is installed).
PACKAGES = ("buildpacks", "hatch_buildpacks")
# What our modules import when a command needs it, imported here so that a warm edit's
# worker imports nothing (test_imports_e2e checks it): reading and installing the wheel,
# hatchling's view of a project (when hatchling is installed), and hatchling's backend, with
# which a hatchling project's wheel is built in the worker. setuptools is not among them: it
# reads SETUPTOOLS_USE_DISTUTILS when imported, which must be the command's environment.
LAZY = (
    "configparser",
    "email.parser",
    "email.policy",
    "encodings.cp437",
    "glob",
    "gzip",
    "importlib.metadata",
    "installer",
    "installer.destinations",
    "installer.records",
    "installer.scripts",
    "installer.sources",
    "installer.utils",
    "hatchling.__about__",
    "hatchling.bridge.app",
    "hatchling.build",
    "hatchling.builders.wheel",
    "hatchling.metadata.spec",
    "hatchling.metadata.core",
    "hatchling.plugin.manager",
    "hatchling.utils.context",
    "trove_classifiers",
)
# How often an idle server checks that its socket is still there, that its modules are
# (an environment deleted) and that it is not idle for too long: a server without a socket or
# an environment stops within this time.
CHECK_SECONDS = 60
MAX_REQUEST = 1 << 20  # bytes; the client's environment and arguments
COMMANDS = ("run", "hatch")  # the command line's command; the Hatch target's build
Stats = dict[str, tuple[int, int, int]]


@dataclass(frozen=True)
class Request:
    """A client's command, as ``client.request`` sends it."""

    kind: str  # run: the command line's; hatch: the Hatch target's
    key: str
    path0: str  # the client's first import path entry
    umask: int
    encoding: str
    errors: str
    line_buffering: bool
    write_through: bool
    argv: list[str]
    env: dict[str, str]

    @classmethod
    def parse(cls, message: bytes) -> Request:
        kind, key, path0, umask, encoding, errors, buffering, count, *rest = client.decode(message)
        argv, env = rest[: int(count)], rest[int(count) :]
        return cls(
            kind=kind,
            key=key,
            path0=path0,
            umask=int(umask),
            encoding=encoding,
            errors=errors,
            line_buffering=buffering[0] == "1",
            write_through=buffering[1] == "1",
            argv=argv,
            env=dict(item.split("=", 1) for item in env),
        )


def main() -> None:
    """The server's process, as ``client.start_server`` starts it."""
    os.chdir("/")  # not the directory of the project it was started from
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a worker's Ctrl-C
    directory = client.runtime_dir()
    if directory is not None:
        serve(directory, client.identity(sys.path))


def _log(line: str) -> None:
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{when} [{os.getpid()}] {line}", file=sys.stderr, flush=True)


def preload() -> None:
    """Import what commands use: every module of ours, and what they import lazily."""
    for name in PACKAGES:
        try:
            package = importlib.import_module(name)
        except ImportError:
            continue
        for module in pkgutil.walk_packages(package.__path__, f"{name}."):
            try:
                importlib.import_module(module.name)
            except ImportError:  # an optional dependency that is not installed
                continue
    for name in LAZY:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    from buildpacks import cli

    cli.parser()  # every command's arguments are parsed by the one made here


def _files() -> Iterator[str]:
    """The files this process's modules came from, and the directories of its import path."""
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            yield path
    yield from (entry for entry in sys.path if entry)


def snapshot(paths: list[str]) -> Stats:
    """Each path's modification time, size and inode; a path that cannot be read is left
    out (a module from a zip archive), and one that becomes unreadable differs."""
    stats = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        stats[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return stats


def serve(directory: str, key: str) -> None:
    """Serve commands for ``key`` until idle or stale; return at once if another server for
    it holds the lock (it is starting, or running)."""
    lock = os.open(os.path.join(directory, "server.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return
    # One lock for every key of the directory: a server starts in a moment, and two
    # environments rarely start theirs in the same one (the loser's command ran anyway).
    path = client.address(directory, key)
    listener = None
    bound = -1
    try:
        preload()
        if threading.active_count() != 1:
            _log("not serving: a module started a thread on import, which fork would not copy")
            return
        paths = list(_files())
        known = snapshot(paths)
        if _answers(path):
            return  # a server for a key with the same checksum: the clients use that one
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a socket left by a server that was killed
        listener.bind(path)
        bound = os.stat(path).st_ino
        listener.listen(64)
        # Release the lock only now: a second server started meanwhile gave up.
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        lock = -1
        listener.settimeout(CHECK_SECONDS)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers' statuses go to their clients
        _log(f"serving {len(sys.modules)} modules at {path}")
        _loop(listener, key, paths, known, (path, bound))
    finally:
        if listener is not None:
            listener.close()
            _unlink_own(path, bound)
        if lock >= 0:
            os.close(lock)


def _answers(path: str) -> bool:
    """Whether a server listens at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
        return True


def _owns(path: str, inode: int) -> bool:
    """Whether the socket at ``path`` is still the one this server bound."""
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _unlink_own(path: str, inode: int) -> None:
    """Remove the socket unless a newer server has put its own there."""
    if _owns(path, inode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _loop(
    listener: socket.socket, key: str, paths: list[str], known: Stats, bound: tuple[str, int]
) -> None:
    served = 0
    started = last = time.monotonic()
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if not _owns(*bound):
                _log("the socket was removed (its directory cleaned?): stopping")
                return
            if _changed(paths, known):  # e.g. its environment deleted: nothing to serve
                return
            if time.monotonic() - last >= client.IDLE_SECONDS:
                _log(f"idle for {client.IDLE_SECONDS} s: stopping")
                return
            continue
        last = time.monotonic()
        fds: list[int] = []
        with conn:
            try:
                conn.settimeout(5)
                message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 4)
                kind = _kind(message) if _peer_is_us(conn) else "stranger"
                if kind in COMMANDS and _changed(paths, known):
                    # Checked first: a client of changed code may send a changed request.
                    listener.close()  # no new client reaches this server
                    conn.send(b"stale")
                    return
                if kind in COMMANDS:
                    request = Request.parse(message)
                    if request.key != key or len(fds) != 4:
                        conn.send(b"other")
                        continue
                    served += 1
                    _fork(conn, listener, request, fds)
                elif kind == "status":
                    uptime = int(time.monotonic() - started)
                    conn.send(f"pid {os.getpid()}, up {uptime} s, {served} command(s)".encode())
                elif kind == "stop":
                    conn.send(b"stopping")
                    _log("asked to stop")
                    return
            except (OSError, ValueError) as e:  # a client gone, or a message not of ours
                _log(f"a connection failed: {type(e).__name__}: {e}")
            finally:
                for fd in fds:
                    os.close(fd)


def _changed(paths: list[str], known: Stats) -> bool:
    """Whether a file of its modules or a directory of its import path changed since the
    server started (said in its log: the server stops)."""
    if snapshot(paths) == known:
        return False
    _log("a module or the import path changed: stopping")
    return True


def _peer_is_us(conn: socket.socket) -> bool:
    """Whether the client runs as this user (the directory is private; this is the lock's
    second key)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


def _kind(message: bytes) -> str:
    """One of ``COMMANDS``, or ``status`` or ``stop``."""
    return message.partition(b"\0")[0].decode("ascii", "replace")


def control(action: str) -> str:
    """``buildpacks server status`` and ``stop``: what this environment's server says."""
    directory = client.runtime_dir()
    path = client.address(directory, client.identity(sys.path[1:])) if directory else ""
    reply = ask(path, action.encode())
    if reply is None:
        return "no build server is running for this Python environment"
    return f"build server {path}: {reply}"


def ask(path: str, action: bytes) -> str | None:
    """The answer of the server at ``path`` to ``status`` or ``stop``; None when none
    listens there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        try:
            sock.connect(path)
            sock.send(action)
            return sock.recv(256).decode()
        except OSError:
            return None


def _fork(conn: socket.socket, listener: socket.socket, request: Request, fds: list[int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()  # nothing of the server's own output is left to a worker
    if os.fork() == 0:
        _work(conn, listener, request, fds)


def _work(
    conn: socket.socket, listener: socket.socket, request: Request, fds: list[int]
) -> NoReturn:
    """The worker: become the client's command, run it, tell the client its status."""
    status = 1
    finished = threading.Event()
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        listener.close()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        os.fchdir(fds[3])
        for fd in fds:  # received inheritable: what the command starts must not get them
            os.close(fd)
        os.umask(request.umask)
        os.environ.clear()
        os.environ.update(request.env)
        time.tzset()
        tempfile.tempdir = None  # gettempdir() reads this command's TMPDIR
        sys.argv = ["buildpacks", *request.argv]
        sys.path.insert(0, request.path0)  # the client's whole import path, as in-process
        _take_streams(request)
        conn.settimeout(None)
        threading.Thread(target=_watch, args=(conn, finished), daemon=True).start()
        client.IN_WORKER = True
        conn.send(b"ok")
        status = _run(request, conn)
    except BaseException as e:  # the setup failed: the client runs the command itself
        _log(f"worker failed: {type(e).__name__}: {e}")
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        finished.set()
        with contextlib.suppress(OSError):
            conn.send(b"exit %d" % status)
        os._exit(status)


def _take_streams(request: Request) -> None:
    """The client's streams as this process's, opened as its interpreter opened them."""
    sys.stdin = sys.__stdin__ = _stream(0, "r", request.errors, request)
    sys.stdout = sys.__stdout__ = _stream(1, "w", request.errors, request)
    sys.stderr = sys.__stderr__ = _stream(2, "w", "backslashreplace", request)


def _stream(fd: int, mode: str, errors: str, request: Request) -> io.TextIOWrapper:
    raw = io.FileIO(fd, mode, closefd=False)
    unbuffered = request.write_through and mode == "w"
    binary = raw if unbuffered else (io.BufferedReader if mode == "r" else io.BufferedWriter)(raw)
    return io.TextIOWrapper(
        binary,  # type: ignore[arg-type]
        request.encoding,
        errors,
        line_buffering=mode == "w" and (request.line_buffering or fd == 2),
        write_through=unbuffered,
    )


def _run(request: Request, conn: socket.socket) -> int:
    """The command's exit status, as the interpreter would have exited with it."""
    from buildpacks import cli, errors

    try:
        if request.kind == "hatch":
            from hatch_buildpacks.builder import build_here

            for artifact in build_here(request.argv):
                conn.send(b"result " + os.fsencode(artifact))
            status = 0
        else:
            status = cli.main(request.argv)
    except SystemExit as e:  # argparse's usage errors, --help and --version
        if e.code is None or isinstance(e.code, int):
            status = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:  # between two commands' parts that report it themselves
        status = errors.INTERRUPTED
    # What the interpreter does at exit (Py_FinalizeEx): threads' exit hooks (a pool's
    # workers are told to stop) and joins, then the exit functions. Private, as the
    # interpreter's own call is; os._exit, which ends a worker, runs neither.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    return status


def _watch(conn: socket.socket, finished: threading.Event) -> None:
    """Pass the client's forwarded signals to the worker's process group; if the client
    dies (killed: it never ends before the worker), kill the group, as its death would
    have killed a command run in it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, client.FORWARDED)  # they go to the main thread
    while True:
        try:
            message = conn.recv(64)
        except OSError:
            message = b""
        if message.startswith(b"sig "):
            os.killpg(0, int(message[4:]))
        elif not message:
            if not finished.is_set():
                os.killpg(0, signal.SIGKILL)
            return
