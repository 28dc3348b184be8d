"""The ``buildpacks`` command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from uv import find_uv_bin

from buildpacks import __version__
from buildpacks import config as build_config
from buildpacks.errors import BuildError
from buildpacks.lifecycle import build_image
from buildpacks.project import project_from_wheel, read_pyproject


def build_wheel(root: Path, out_dir: Path) -> Path:
    """Build the project's wheel with its own PEP 517 backend (through ``uv build``)."""
    read_pyproject(root)  # a malformed pyproject.toml is reported by us, in one line
    result = subprocess.run(
        [find_uv_bin(), "build", "--wheel", "--quiet", "--out-dir", str(out_dir), str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(out_dir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise BuildError(f"building the wheel of {root} failed: {tail}")
    return wheels[0]


def cmd_build(args: argparse.Namespace) -> int:
    root = Path(args.path).resolve()
    if not root.is_dir():
        raise BuildError(f"{args.path}: not a directory")
    overrides = {o.key: getattr(args, o.key.replace("-", "_")) for o in build_config.OPTIONS}
    with tempfile.TemporaryDirectory(prefix="buildpacks-wheel-") as tmp:
        wheel = build_wheel(root, Path(tmp))
        project = project_from_wheel(root, wheel)
        output = Path(args.output_dir) if args.output_dir else root / "dist"
        config = build_config.resolve(project, output.resolve(), overrides=overrides)
        build_image(config, wheel, log=lambda line: print(line, flush=True))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="buildpacks", description=__doc__)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the image of a Python project")
    build.add_argument("path", nargs="?", default=".", help="project directory (default: .)")
    build.add_argument("--output-dir", help="where the image archive goes (default: PATH/dist)")
    for option in build_config.OPTIONS:
        build.add_argument(f"--{option.key}", help=f"{option.help} [{option.env}]")
    build.set_defaults(func=cmd_build)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
