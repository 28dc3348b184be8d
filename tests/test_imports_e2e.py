"""What ``buildpacks build`` imports on the paths a developer repeats: a no-op and a warm
edit, with real parts (the command line in a subprocess, hatchling installed in this
environment, a local base or one pulled once from a real registry). Every module imported is
paid for by every build, so one that a path does not use is a regression: the lifecycle
and the wheel's tooling on a no-op, the HTTP client (and the command-line tools its package
imports) when no registry is asked, what only a first build or a rare branch needs on a warm
edit (hatchling's building of a wheel and the search of the installed distributions among
them: a warm edit's wheel is the last one patched). So are the methods our dataclasses
generate: on Python 3.11 each is an exec at import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

UP_TO_DATE = "is up to date: nothing it is built from has changed"
# httpx's own package imports its command line, which imports click, rich and pygments.
HTTP = ("httpx", "httpcore", "click", "rich", "pygments")
# What only building needs: the lifecycle, version specifiers and requirements (the image's
# Python, the SBOM), reading a wheel and writing layers.
BUILDING = (
    "buildpacks.lifecycle",
    "buildpacks.cnb",
    "buildpacks.oci.layer",
    "installer",
    "packaging.requirements",
    "packaging.specifiers",
    "email.parser",
)
# What only building a wheel with hatchling needs, and asking the installed distributions
# whether its backend is installed (``wheels.satisfied``, noted when called): a warm edit
# patches the last wheel, and its up-to-date check's shape answers that question.
WHEEL_BUILD = ("hatchling.build", "trove_classifiers", "importlib.metadata", "wheels.satisfied")
PATCHED = "Building the wheel from the last one, "
# Needed only for a mistake (a close match to suggest) or an unset cache directory.
NEVER = ("difflib", "platformdirs")
# What a warm edit (a source edit: the application's layer rebuilt, every other one reused)
# does not use: the deflate pool (its layers are one block each; the git query waits on a
# bare thread), a new SBOM document's serial number, the wheel-gap check (it runs only when
# the dependencies are installed), the Debian assembler (not asked for), zstd, the registry.
NOT_WARM = (
    "concurrent.futures",
    "uuid",
    "buildpacks.wheelgap",
    "buildpacks.debian.archive",
    "buildpacks.debian.assemble",
    "zstandard",
    "buildpacks.oci.registry",
)
# The methods our dataclasses may generate on a warm edit, at most. On Python 3.11 each is
# one exec at import (a frozen dataclass with == and repr: six), so == and repr are asked
# for where used and frozen where data is shared: at 63b1f03 a warm edit paid for 374,
# since for 162 (the budget leaves room for a few more, not for a return to frozen ones).
GENERATED_BUDGET = 200


# Counts the methods dataclasses generate for our modules: those the decorator added.
_COUNT_GENERATED = """
import dataclasses
GENERATED = []
_process_class = dataclasses._process_class
METHODS = ("__init__", "__repr__", "__eq__", "__setattr__", "__delattr__", "__hash__",
           "__lt__", "__le__", "__gt__", "__ge__")
def _counted(cls, *args, **kwargs):
    before = {m for m in METHODS if m in cls.__dict__}
    cls = _process_class(cls, *args, **kwargs)
    if cls.__module__.split(".")[0] in ("buildpacks", "hatch_buildpacks"):
        GENERATED.extend(
            f"{cls.__module__}.{cls.__qualname__}.{m}" for m in METHODS
            if m not in before and cls.__dict__.get(m) is not None
        )
    return cls
dataclasses._process_class = _counted
"""


def _probe(project: Path, env: dict[str, str]) -> tuple[str, set[str], list[str]]:
    """``buildpacks build PROJECT`` in a new interpreter: its output, the modules it
    imported (with ``wheels.satisfied`` among them when it was called: it asks the installed
    distributions whether the backend is installed) and the methods our dataclasses
    generated."""
    build = (
        "from buildpacks import cli, wheels\n"
        "asked = []\n"
        "satisfied = wheels.satisfied\n"
        "wheels.satisfied = lambda requires: asked.append(1) or satisfied(requires)\n"
        f"status = cli.main(['build', {str(project)!r}])\n"
        "print(json.dumps(GENERATED))\n"
        "print(json.dumps(sorted(sys.modules) + ['wheels.satisfied'] * bool(asked)))\n"
        "sys.exit(status)\n"
    )
    code = "import json, sys\n" + _COUNT_GENERATED + build
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    *lines, generated, modules = result.stdout.splitlines()
    return "\n".join(lines), set(json.loads(modules)), json.loads(generated)


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The names among ``names`` imported, themselves or any submodule of theirs."""
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def _edit(project: Path, n: int) -> None:
    server = project / "src" / "example_service" / "server.py"
    server.write_text(server.read_text() + f"# edit {n}\n")


def _runs(project: Path, env: dict[str, str]) -> dict[str, tuple[str, set[str], list[str]]]:
    """A first build, a warm edit, and a no-op after it."""
    runs = {"first": _probe(project, env)}
    _edit(project, 1)
    runs["warm edit"] = _probe(project, env)
    runs["no-op"] = _probe(project, env)
    return runs


def test_a_no_op_and_a_warm_edit_on_a_local_base_import_only_what_they_use(
    session_dir, hatch_env, base_layout
):
    project = testbed.copy_example(session_dir / "imports-local")
    cache = testbed.seeded_cache(session_dir / "imports-local-cache")
    runs = _runs(project, {**hatch_env, "BP_CACHE_DIR": cache, "BP_BASE_IMAGE": base_layout})
    # The probe sees what a build imports, and when the backend's installation is asked.
    assert _loaded(runs["first"][1], WHEEL_BUILD) == list(WHEEL_BUILD)
    out, modules, generated = runs["warm edit"]
    assert UP_TO_DATE not in out and PATCHED in out, out
    assert _loaded(modules, BUILDING) == list(BUILDING)
    assert _loaded(modules, WHEEL_BUILD + HTTP + NEVER + NOT_WARM) == []
    # The probe sees what the first build (the dependencies installed) imports of them.
    assert {"buildpacks.wheelgap", "uuid", "concurrent.futures"} <= runs["first"][1]
    assert "buildpacks.cnb.LayersMetadata.__eq__" in generated  # the count sees our classes
    assert len(generated) <= GENERATED_BUDGET, sorted(generated)
    out, modules, _ = runs["no-op"]
    assert UP_TO_DATE in out, out
    assert _loaded(modules, BUILDING + WHEEL_BUILD + HTTP + NEVER) == []


def test_a_warm_edit_on_a_base_pulled_from_a_registry_imports_no_http_client(
    session_dir, hatch_env, registry, base_layout
):
    base = testbed.push_layout(base_layout, registry, "imports/base:bookworm")
    project = testbed.copy_example(session_dir / "imports-registry")
    env = {**hatch_env, "BP_CACHE_DIR": str(session_dir / "imports-registry-cache")}
    runs = _runs(project, {**env, "BP_BASE_IMAGE": base})
    assert "httpx" in runs["first"][1]  # the first build pulls the base
    out, modules, _ = runs["warm edit"]
    assert UP_TO_DATE not in out and "buildpacks.lifecycle" in modules, out
    assert _loaded(modules, HTTP) == []
    out, modules, _ = runs["no-op"]
    assert UP_TO_DATE in out, out
    assert _loaded(modules, HTTP + BUILDING) == []


def test_a_warm_edit_in_the_build_server_imports_nothing(session_dir, hatch_env, base_layout):
    """What the server imports before it forks (``server.preload``) is all a warm edit's
    worker needs: a lazy import added to the warm path without it is paid by every edit."""
    project = testbed.copy_example(session_dir / "imports-server")
    cache = testbed.seeded_cache(session_dir / "imports-server-cache")
    env = {**hatch_env, "BP_CACHE_DIR": cache, "BP_BASE_IMAGE": base_layout}
    _probe(project, env)  # the first build
    _edit(project, 1)
    code = (
        "import json, sys\n"
        "from buildpacks import cli, server\n"
        "server.preload()\n"
        "before = set(sys.modules)\n"
        f"status = cli.main(['build', {str(project)!r}])\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    *lines, imported = result.stdout.splitlines()
    assert PATCHED in "\n".join(lines), result.stdout
    assert json.loads(imported) == []
