"""The ``buildpacks`` program: a thin client of a build server kept warm for this Python
environment (``buildpacks.server``), else the command line run here.

A ``buildpacks build`` spends about two thirds of a warm edit importing its modules. A
resident process that has imported them once forks a worker per command; the worker is given
this process's standard streams, working directory, umask, environment and arguments, so it
runs the command as this process would have, printing straight to the same terminal or
pipes. This process forwards the signals it gets (Ctrl-C) and exits with the worker's status.

The Hatch target is a client too (``kind="hatch"``): Hatch's build environment gets a server
of its own, whose worker makes the image target's build and sends back the archive's path.

When there is no server (the first command, or ``BP_SERVER=0``), the command runs here, as
it always did, and a server is started for the next one. The server stops after
``IDLE_SECONDS`` without a command, and at once when a module it imported has changed on
disk or a package was installed or removed.

This module runs on every command, before anything else: it imports only what the
interpreter already has, plus the C halves of ``socket`` and ``signal``, whose Python
halves build enums of every constant at import (~8 ms here).
"""

from __future__ import annotations

import _signal
import _socket
import os
import struct
import sys
import zlib

SWITCH = "BP_SERVER"  # 0, false, no or off: every command runs in its own process
OFF = ("0", "false", "no", "off")
IDLE_SECONDS = 15 * 60
# The signals a terminal or a supervisor sends to stop a command; the worker gets them.
FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT)
# Commands that manage the server itself run here.
LOCAL = ("server",)
# Set in a server's worker: what it runs must not ask a server again.
IN_WORKER = False
# What the interpreter's behaviour depends on besides its files and arguments: one server
# per combination (PYTHONPATH, PYTHONUTF8, ... and the locale's encoding).
LOCALE_VARIABLES = ("LC_ALL", "LC_CTYPE", "LANG")


def main() -> int:
    """The console script: the command through the server when one is up, else here."""
    argv = sys.argv[1:]
    if not (argv and argv[0] in LOCAL):
        try:
            status = run_on_server(argv)
        except KeyboardInterrupt:  # Ctrl-C before a worker took the command: none ran
            from buildpacks.errors import INTERRUPTED

            os.write(2, b"error: interrupted\n")
            return INTERRUPTED
        if status is not None:
            return status
    from buildpacks import cli

    return cli.main(argv)


def identity(import_path: list[str]) -> str:
    """What a server must share with this process to run its commands as it would: the
    interpreter, its flags, its import path (``sys.path`` without its first entry, the
    script's directory, from which nothing of ours is imported) and the environment
    variables read when the interpreter starts."""
    python_env = sorted(
        f"{k}={v}" for k, v in os.environ.items() if k.startswith("PYTHON") or k in LOCALE_VARIABLES
    )
    return "\n".join(
        [
            sys.executable,
            sys.version,
            repr(sys.flags),
            sys.getfilesystemencoding(),
            os.path.dirname(__file__),
            *import_path,
            *python_env,
        ]
    )


def runtime_dir() -> str | None:
    """This user's directory for servers' sockets (``$XDG_RUNTIME_DIR/python-buildpacks``,
    else ``/tmp/python-buildpacks-UID`` as tmux does), made private; None when it exists but
    is not a private directory of this user's (then no server is used)."""
    uid = os.getuid()
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "python-buildpacks") if base else f"/tmp/python-buildpacks-{uid}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    st = os.lstat(path)
    private = st.st_uid == uid and (st.st_mode & 0o170077) == 0o040000  # a directory, 0700
    return path if private else None


def address(directory: str, key: str) -> str:
    """The socket of the server for ``key``: named by a checksum of it (a socket's path is
    at most 107 bytes); the server checks the whole key on every connection."""
    return os.path.join(directory, f"server-{zlib.crc32(key.encode()):08x}.sock")


def encode(fields: list[str]) -> bytes:
    """Strings as one message; none of them (arguments, environment) can hold a NUL."""
    return "\0".join(fields).encode("utf-8", "surrogateescape")


def decode(message: bytes) -> list[str]:
    return message.decode("utf-8", "surrogateescape").split("\0")


def request(kind: str, key: str, argv: list[str]) -> bytes:
    """The command as the server reads it (``server.Request.parse``)."""
    umask = os.umask(0)
    os.umask(umask)
    out = sys.stdout
    return encode(
        [
            kind,
            key,
            # The entry of the import path the server leaves out (the script's directory,
            # or ``-m``'s working directory): the worker's path is then this process's.
            sys.path[0] if sys.path else "",
            str(umask),
            # How this interpreter opened its standard streams (a terminal's stdout is line
            # buffered; PYTHONUNBUFFERED's not buffered): the worker opens them the same way.
            out.encoding if out else "utf-8",
            out.errors if out else "strict",
            f"{int(bool(out and out.line_buffering))}{int(bool(out and out.write_through))}",
            str(len(argv)),
            *argv,
            *(f"{k}={v}" for k, v in os.environ.items()),
        ]
    )


def run_on_server(
    argv: list[str], kind: str = "run", results: list[str] | None = None
) -> int | None:
    """The command's exit status from a server's worker; None when no server took it (it
    must then run here; a server is started for the next command when none is up).
    ``kind`` is ``run`` (the command line's ``argv``) or ``hatch`` (the Hatch target's build,
    ``hatch_buildpacks.builder``); the paths the worker sends back go to ``results``."""
    if IN_WORKER or os.environ.get(SWITCH, "").strip().lower() in OFF:
        return None
    directory = runtime_dir()
    if directory is None:
        return None
    key = identity(sys.path[1:])
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    signals = _Forwarder(sock)  # from now on: a Ctrl-C before the worker starts is kept
    try:
        sock.connect(address(directory, key))
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            fds = struct.pack("4i", 0, 1, 2, cwd)
            message = request(kind, key, argv)
            sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        finally:
            os.close(cwd)
        reply = sock.recv(64)
    except OSError:  # no server, a stale socket, a closed stream, an environment too large
        reply = b""
    if reply == b"ok":
        signals.worker_started()
        return _follow(sock, signals, [] if results is None else results)
    # No worker started: nothing of the command has run. b"" is no server (or one that
    # died), b"stale" one that stopped as its modules changed: start one for the next
    # command; b"other" is a server of another environment, "exit 1" a worker that could
    # not take the command over.
    sock.close()
    signals.restore()  # a signal kept meanwhile is delivered here, now
    if reply in (b"", b"stale"):
        start_server(directory, key)
    return None


class _Forwarder:
    """This process's handler of the forwarded signals: each is sent to the worker, or kept
    until it starts (a signal sent before the request would be read as one)."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.received: list[int] = []
        self.started = False
        self.previous = {
            number: _signal.signal(number, self.forward)
            for number in FORWARDED
            if _signal.getsignal(number) is not _signal.SIG_IGN
        }

    def forward(self, number: int, frame: object) -> None:
        self.received.append(number)
        if self.started:
            self.send(number)

    def send(self, number: int) -> None:
        try:  # noqa: SIM105 (contextlib is one more import on every command)
            self.sock.send(b"sig %d" % number)
        except OSError:
            pass

    def worker_started(self) -> None:
        self.started = True
        for number in self.received:
            self.send(number)

    def restore(self) -> None:
        for number, handler in self.previous.items():
            _signal.signal(number, handler)
        for number in self.received:
            os.kill(os.getpid(), number)


def _follow(sock: _socket.socket, signals: _Forwarder, results: list[str]) -> int:
    """Wait for the worker's exit status, keeping the results it sends before."""
    while True:
        try:
            message = sock.recv(1 << 16)
        except OSError:
            message = b""
        if message.startswith(b"result "):
            results.append(os.fsdecode(message[7:]))
        elif message.startswith(b"exit "):
            return int(message[5:])
        elif not message:
            break
    # The worker died without an exit status: killed by a signal it did not handle. A
    # signal forwarded to it ends this process the same way, as if it had run here.
    for number in signals.received:
        _signal.signal(number, _signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os.write(
        2,
        b"error: the build server's worker ended without an exit status; "
        b"run the command again with BP_SERVER=0 to run it in its own process\n",
    )
    return 1


def start_server(directory: str, key: str) -> None:
    """A server for this environment, in its own session, its output to a log file beside
    its socket; it gives up at once if another is starting (``server.serve`` locks)."""
    log = address(directory, key).removesuffix(".sock") + ".log"
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    # ``-c`` puts "" (the working directory: a project's, which must not shadow our
    # modules) first on the import path; the server's first line takes it off, and the
    # server finds this package by the rest of the path, as this process did.
    code = "import sys; del sys.path[0]; from buildpacks import server; server.main()"
    try:  # noqa: SIM105 (contextlib is one more import on every command)
        os.posix_spawn(
            sys.executable,
            [sys.executable, "-c", code],
            os.environ,
            file_actions=actions,
            setsid=True,
            setsigdef=FORWARDED,  # not ignored because this process's caller ignores them
        )
    except OSError:
        pass  # no server: every command runs in its own process, as with BP_SERVER=0
