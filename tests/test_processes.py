"""Process types and their commands: which run without a shell, how a shell command is
spelled for the CNB launcher, what ``/cnb/process/<type>`` does with them, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from buildpacks.builtin import Process
from buildpacks.builtin.processes import command_argv, entries, launcher, plan_processes
from buildpacks.config import resolve
from buildpacks.errors import BuildError
from buildpacks.oci.layer import Symlink
from buildpacks.project import Project, read_procfile


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("example-service", ("example-service",)),
        ("waitress-serve --port=8080 app:app", ("waitress-serve", "--port=8080", "app:app")),
        ("exec gunicorn app:app", ("gunicorn", "app:app")),
    ],
)
def test_commands_without_shell_syntax_run_without_a_shell(command, argv):
    assert command_argv("web", command, "Procfile") == (argv, True)


@pytest.mark.parametrize(
    ("command", "script"),
    [
        ("gunicorn -b :$PORT app:app", 'exec gunicorn -b :$PORT app:app "$@"'),
        ("exec gunicorn -b :$PORT app", 'exec gunicorn -b :$PORT app "$@"'),
        ("A=1 B='x y' serve --x", "A=1 B='x y' exec serve --x \"$@\""),
        ("echo 'a;b'", "exec echo 'a;b' \"$@\""),
        # Lists and builtins cannot be exec'd as one program: they run as they are.
        ("flask init-db && flask run", "flask init-db && flask run"),
        ("cd /srv; run", "cd /srv; run"),
        ("cd /srv", "cd /srv"),
    ],
)
def test_shell_commands_are_spelled_out_with_exec_and_the_arguments(command, script):
    assert command_argv("web", command, "Procfile") == (("/bin/sh", "-c", script, "web"), False)


def project(tmp_path: Path, **fields) -> Project:
    return Project(root=tmp_path, name="app", version="1", **fields)


def test_web_is_the_default_command_too_when_no_type_is_called_web(tmp_path):
    config = resolve(project(tmp_path, scripts={"serve": "app:main"}), tmp_path / "dist", env={})
    processes = {p.type: p for p in plan_processes(config)}
    assert sorted(processes) == ["serve", "web"]
    assert processes["serve"].default and not processes["web"].default
    assert processes["web"].command == processes["serve"].command


@pytest.mark.parametrize(
    ("fields", "env", "message"),
    [
        (
            {"tool_config": {"processes": {"../../../tmp/x": "echo"}}},
            {},
            r"\[tool.buildpacks.processes\]: process type '../../../tmp/x' is not valid",
        ),
        ({"tool_config": {"processes": {"..": "echo"}}}, {}, "process type '..' is not valid"),
        ({"tool_config": {"processes": {"web": " "}}}, {}, "process 'web' has an empty command"),
        ({"tool_config": {"processes": {"web": "echo 'x"}}}, {}, "No closing quotation"),
        ({"scripts": {"a/b": "m:f"}}, {}, r"\[project.scripts\]: process type 'a/b'"),
        (
            {"scripts": {"serve": "m:f"}},
            {"BP_DEFAULT_PROCESS": "worker"},
            "default-process 'worker' is not a process type; the project has: serve",
        ),
    ],
)
def test_bad_process_declarations_are_errors(tmp_path, fields, env, message):
    with pytest.raises(BuildError, match=message):
        plan_processes(resolve(project(tmp_path, **fields), tmp_path / "dist", env=env))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"web:\n", r"line 1: process 'web' has an empty command"),
        (b"# ok\nweb: serve\n../x: echo\n", r"line 3: expected `type: command`"),
        (b"web: caf\xe9\n", r"not UTF-8 text \(byte 8\)"),
    ],
)
def test_bad_procfiles_are_errors(tmp_path, content, message):
    (tmp_path / "Procfile").write_bytes(content)
    with pytest.raises(BuildError, match=message):
        read_procfile(tmp_path)


def write_entries(processes: list[Process], interpreter: str, directory: Path) -> None:
    """The ``/cnb/process`` entries on disk, to be run."""
    directory.mkdir(parents=True)
    for name, entry in entries(processes, interpreter).items():
        if isinstance(entry, Symlink):
            (directory / name).symlink_to(entry.target)
        else:
            (directory / name).write_bytes(entry.data)
            (directory / name).chmod(0o755 if entry.executable else 0o644)


def run_entry(tmp_path: Path, process: Process, *args: str) -> subprocess.CompletedProcess[str]:
    write_entries([process], sys.executable, tmp_path / "process")
    return subprocess.run(
        [str(tmp_path / "process" / process.type), *args], capture_output=True, text=True
    )


def test_launcher_execs_the_command_with_the_arguments(tmp_path):
    argv, direct = command_argv("show", "echo fixed", "t")
    result = run_entry(tmp_path, Process("show", argv, True, direct), "a", "b c")
    assert result.stdout == "fixed a b c\n"


def test_shell_launcher_passes_arguments_as_positional_parameters(tmp_path):
    argv, direct = command_argv("show", 'printf "%s|" $GREETING', "t")
    write_entries([Process("show", argv, True, direct)], sys.executable, tmp_path / "process")
    result = subprocess.run(
        [str(tmp_path / "process" / "show"), "a", "b c"],
        capture_output=True,
        text=True,
        env={**os.environ, "GREETING": "hi"},
    )
    assert result.stdout == "hi|a|b c|"


def test_supervising_launcher_returns_the_status_of_a_command_list(tmp_path):
    argv, direct = command_argv("both", 'echo first && echo second "$@" && exit 3', "t")
    result = run_entry(tmp_path, Process("both", argv, True, direct), "x")
    assert (result.stdout, result.returncode) == ("first\nsecond x\n", 3)


def test_launcher_reports_a_missing_program_in_one_line(tmp_path):
    result = run_entry(tmp_path, Process("gone", ("no-such-program-here",), True, True))
    assert result.returncode == 1
    assert result.stderr == (
        "error: process gone: cannot run no-such-program-here: No such file or directory\n"
    )


def test_launcher_runs_without_site_or_environment(tmp_path):
    source = launcher(Process("x", ("true",), True, True), "/usr/bin/python3.11")
    assert source.startswith("#!/usr/bin/python3.11 -IS\n")
