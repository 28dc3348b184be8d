"""The processes buildpack: process types from the project's console scripts
(``[project.scripts]``, ``module:function`` entries included), a ``Procfile`` and the
``[tool.buildpacks.processes]`` table (later sources win for the same type), and the default.

Processes are recorded as Buildpack API 0.9 and later write them: every one is direct, a
shell command has its shell spelled out (``/bin/sh -c 'exec COMMAND "$@"' TYPE``). A command
without shell syntax runs without a shell. ``entries`` renders ``/cnb/process/<type>``: each
runs its command with the container's arguments, the command ending as PID 1, so it gets
``podman stop``'s SIGTERM itself."""

from __future__ import annotations

import re
import shlex

from packaging.utils import canonicalize_name

from buildpacks.builtin import BuildContext, Process
from buildpacks.builtin.application import BIN
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.oci.layer import File, Symlink

ID = "python-buildpacks/processes"
VERSION = "0.1.0"
PROCESS_DIR = "/cnb/process"
SHELL = "/bin/sh"
WEB = "web"

NO_ENTRY_POINT = (
    'no entry point: declare one as [project.scripts] NAME = "package.module:function" in '
    "pyproject.toml, as a Procfile line `web: COMMAND`, or as [tool.buildpacks.processes] "
    'web = "COMMAND"'
)

# CNB process types: they name files in /cnb/process, so never a path.
PROCESS_TYPE = re.compile(r"[A-Za-z0-9_.-]+")
# Characters that make a command need a shell: expansions, quoting, operators, globs.
SHELL_CHARACTERS = set("$`\\'\";&|<>()*?[]{}~#!\n")
# Leading variable assignments (`A=1 B="x y" cmd`): `exec` goes after them.
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
ASSIGNMENTS = re.compile(
    r"""(?:[A-Za-z_][A-Za-z0-9_]*=(?:[^\s'"\\]|\\.|'[^']*'|"(?:[^"\\]|\\.)*")*\s+)+"""
)
# Control operators: a command holding one is a list or pipeline, not one program to exec.
CONTROL_OPERATORS = {";", "&", "&&", "||", "|", "|&", ";;", "(", ")"}
# First words that are shell syntax or builtins (no program of that name can be exec'd).
SHELL_WORDS = {
    "!", "{", "}", ".", ":", "alias", "break", "case", "cd", "command", "continue", "eval",
    "exit", "export", "for", "if", "read", "readonly", "return", "set", "shift", "source",
    "trap", "ulimit", "umask", "unset", "until", "wait", "while",
}  # fmt: skip


def check_type(name: object, where: str) -> str:
    """``name`` if it is a valid CNB process type, else a ``BuildError`` naming ``where``."""
    if not isinstance(name, str) or not PROCESS_TYPE.fullmatch(name) or name in (".", ".."):
        raise BuildError(
            f"{where}: process type {name!r} is not valid: use letters, digits, '.', '_' and "
            "'-' (it names a file in /cnb/process)"
        )
    return name


def command_argv(type_: str, command: str, where: str) -> tuple[tuple[str, ...], bool]:
    """The argv recorded for a command line, and whether it runs without a shell."""
    if not command.strip():
        raise BuildError(f"{where}: process {type_!r} has an empty command")
    command = command.strip()
    try:
        words = shlex.split(command)
    except ValueError as e:
        raise BuildError(f"{where}: process {type_!r}: {e} in {command!r}") from None
    if not SHELL_CHARACTERS & set(command):
        if words[0] == "exec" and len(words) > 1:
            words = words[1:]
        if not ASSIGNMENT.match(words[0]) and words[0] not in SHELL_WORDS:
            return tuple(words), True
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    compound = "\n" in command or any(token in CONTROL_OPERATORS for token in lexer)
    assignments = ASSIGNMENTS.match(command)
    prefix = assignments.group(0) if assignments else ""
    program = command[len(prefix) :]
    first = shlex.split(program)[0] if program else ""
    if compound or not program or first in SHELL_WORDS or ASSIGNMENT.match(first):
        script = command  # one program cannot be exec'd for the whole: it runs as it is
    elif first == "exec":
        script = f'{command} "$@"'
    else:
        script = f'{prefix}exec {program} "$@"'
    # The type is $0, so the container's arguments are "$@".
    return (SHELL, "-c", script, type_), False


def choose_default(types: list[str], requested: str | None, project_name: str = "") -> str:
    """The default process type: the requested one, the only one, ``web``, or the one named
    after the project (``black`` among ``black`` and ``blackd``), as a Dockerfile author
    would pick its entry point."""
    if requested:
        if requested not in types:
            raise BuildError(
                f"default-process {requested!r} is not a process type; "
                f"the project has: {', '.join(types)}"
            )
        return requested
    if len(types) == 1:
        return types[0]
    if WEB in types:
        return WEB
    named = [t for t in types if canonicalize_name(t) == canonicalize_name(project_name)]
    if named:
        return named[0]
    raise BuildError(
        f"the project has {len(types)} process types ({', '.join(types)}), none is called web "
        'nor named after the project; set [tool.buildpacks] default-process = "<type>"'
    )


def plan_processes(config: BuildConfig) -> list[Process]:
    """Process types from scripts, Procfile and the processes table; one is the default.
    Without a ``web`` type, ``web`` is the default's command too, as pack users expect
    ``--entrypoint web`` to work."""
    project = config.project
    commands: dict[str, tuple[tuple[str, ...], bool]] = {
        check_type(name, "[project.scripts]"): ((f"{BIN}/{name}",), True)
        for name in project.scripts
    }
    for where, table in (
        ("Procfile", project.procfile),
        ("[tool.buildpacks.processes]", config.processes),
    ):
        for name, command in table.items():
            commands[check_type(name, where)] = command_argv(name, command, where)
    if not commands:
        raise BuildError(NO_ENTRY_POINT)
    default = choose_default(sorted(commands), config.default_process, project.name)
    commands.setdefault(WEB, commands[default])
    return [Process(t, commands[t][0], t == default, commands[t][1]) for t in sorted(commands)]


def launcher(process: Process, interpreter: str) -> str:
    """The Python program at ``/cnb/process/<type>``: it execs the process's command with
    the container's arguments. A command list (``a && b``) cannot be exec'd as a whole: the
    launcher then stays as a tiny init that forwards signals to it and reaps orphans.

    It runs on the image's own interpreter with ``-I -S`` (no site, no environment): every
    image has Python, not every base has a shell."""
    argv = repr(list(process.command))
    run = (
        "os.execvp(COMMAND[0], COMMAND + sys.argv[1:])"
        if process.direct or process.command[2].startswith("exec ")
        else "supervise(COMMAND + sys.argv[1:])"
    )
    return f"""#!{interpreter} -IS
# python-buildpacks: process {process.type!r}
import os
import signal
import sys

COMMAND = {argv}
# As the CNB launcher does: the process's PATH has no /cnb/process, so a type named like
# its program (`echo: echo hi`) runs the program, not itself again.
os.environ["PATH"] = os.pathsep.join(
    entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry != {PROCESS_DIR!r}
)


def supervise(argv):
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        os.execvp(argv[0], argv)

    def forward(number, frame):
        try:
            os.killpg(child, number)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, forward)
    while True:
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            sys.exit(128 - code if code < 0 else code)


try:
    {run}
except OSError as e:
    sys.exit(f"error: process {process.type}: cannot run {{COMMAND[0]}}: {{e.strerror}}")
"""


def entries(processes: list[Process], interpreter: str) -> dict[str, File | Symlink]:
    """``/cnb/process/<type>`` for each process, by type: a symlink to a lone program (the
    kernel runs it, with the arguments, as PID 1), else a launcher."""
    found: dict[str, File | Symlink] = {}
    for process in processes:
        if process.direct and len(process.command) == 1 and process.command[0].startswith("/"):
            found[process.type] = Symlink(process.command[0])
        else:
            found[process.type] = File(launcher(process, interpreter).encode(), executable=True)
    return found


class ProcessesBuildpack:
    id = ID
    version = VERSION

    def detect(self, config: BuildConfig) -> bool:
        # Fails early, before anything is installed, when no entry point is declared.
        plan_processes(config)
        return True

    def build(self, ctx: BuildContext) -> None:
        processes = plan_processes(ctx.config)
        ctx.processes.extend(processes)
        for process in processes:
            ctx.log(
                f"Process {process.type}: {shlex.join(process.command)}"
                + (" (default)" if process.default else "")
            )


BUILDPACK = ProcessesBuildpack()
