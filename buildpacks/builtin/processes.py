"""The processes buildpack: process types from the project's console scripts
(``[project.scripts]``, ``module:function`` entries included), a ``Procfile`` and the
``[tool.buildpacks.processes]`` table (later sources win for the same type); the default
chosen; and ``/cnb/process/<type>`` entries so any type starts by name, as in CNB images."""

from __future__ import annotations

from packaging.utils import canonicalize_name

from buildpacks.builtin import BuildContext, LayerResult, Process
from buildpacks.builtin.application import BIN
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.oci.layer import TreeMapping, write_layer

ID = "python-buildpacks/processes"
VERSION = "0.1.0"
PROCESS_DIR = "/cnb/process"

NO_ENTRY_POINT = (
    'no entry point: declare one as [project.scripts] NAME = "package.module:function" in '
    "pyproject.toml, as a Procfile line `web: COMMAND`, or as [tool.buildpacks.processes] "
    'web = "COMMAND"'
)


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
    if "web" in types:
        return "web"
    named = [t for t in types if canonicalize_name(t) == canonicalize_name(project_name)]
    if named:
        return named[0]
    raise BuildError(
        f"the project has {len(types)} process types ({', '.join(types)}), none is called web "
        'nor named after the project; set [tool.buildpacks] default-process = "<type>"'
    )


def plan_processes(config: BuildConfig) -> list[Process]:
    """Process types from scripts, Procfile and the processes table; one is the default."""
    project = config.project
    commands: dict[str, tuple[tuple[str, ...], bool]] = {
        name: ((f"{BIN}/{name}",), True) for name in project.scripts
    }
    for name, command in {**project.procfile, **config.processes}.items():
        commands[name] = (("/bin/sh", "-c", command), False)
    if not commands:
        raise BuildError(NO_ENTRY_POINT)
    types = sorted(commands)
    default = choose_default(types, config.default_process, project.name)
    return [Process(t, commands[t][0], t == default, commands[t][1]) for t in types]


class ProcessesBuildpack:
    id = ID
    version = VERSION

    def detect(self, config: BuildConfig) -> bool:
        # Fails early, before anything is installed, when no entry point is declared.
        plan_processes(config)
        return True

    def build(self, ctx: BuildContext) -> None:
        processes = plan_processes(ctx.config)
        stage = ctx.work_dir / "process"
        stage.mkdir()
        for process in processes:
            entry = stage / process.type
            if process.direct:
                entry.symlink_to(process.command[0])
            else:
                entry.write_text(f"#!/bin/sh\n{process.command[-1]}\n")
                entry.chmod(0o755)
        layer = write_layer(ctx.store, [TreeMapping(stage, PROCESS_DIR)])
        ctx.layers.append(LayerResult(ID, "process", PROCESS_DIR, layer, False))
        ctx.processes.extend(processes)
        ctx.path_entries.append(PROCESS_DIR)
        for process in processes:
            ctx.log(
                f"Process {process.type}: {' '.join(process.command)}"
                + (" (default)" if process.default else "")
            )


BUILDPACK = ProcessesBuildpack()
