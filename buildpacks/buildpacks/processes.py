"""The processes buildpack: process types from the project's console scripts
(``[project.scripts]``, ``module:function`` entries included), the default one chosen, and
``/cnb/process/<type>`` links so any type can be started by name, as in CNB images."""

from __future__ import annotations

from buildpacks.buildpacks import BuildContext, LayerResult, Process
from buildpacks.buildpacks.application import BIN
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.oci.layer import TreeMapping, write_layer

ID = "python-buildpacks/processes"
VERSION = "0.1.0"
PROCESS_DIR = "/cnb/process"

NO_ENTRY_POINT = (
    "no entry point: declare one in pyproject.toml as [project.scripts] "
    'NAME = "package.module:function" (its name becomes the process type)'
)


def choose_default(types: list[str], requested: str | None) -> str:
    """The default process type: the requested one, the only one, or ``web``."""
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
    raise BuildError(
        f"the project has {len(types)} process types ({', '.join(types)}) and none is called web; "
        'set [tool.buildpacks] default-process = "<type>"'
    )


def plan_processes(scripts: dict[str, str], requested: str | None) -> list[Process]:
    """Process types for console scripts; exactly one is the default."""
    if not scripts:
        raise BuildError(NO_ENTRY_POINT)
    types = sorted(scripts)
    default = choose_default(types, requested)
    return [Process(name, (f"{BIN}/{name}",), name == default) for name in types]


class ProcessesBuildpack:
    id = ID
    version = VERSION

    def detect(self, config: BuildConfig) -> bool:
        # Fails early, before anything is installed, when no entry point is declared.
        plan_processes(config.project.scripts, config.default_process)
        return True

    def build(self, ctx: BuildContext) -> None:
        processes = plan_processes(ctx.config.project.scripts, ctx.config.default_process)
        stage = ctx.work_dir / "process"
        stage.mkdir()
        for process in processes:
            (stage / process.type).symlink_to(process.command[0])
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
