"""The ``buildpacks`` command line. Each command imports what it uses when it runs: a
``buildpacks build`` that is up to date imports no more than its check needs."""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from buildpacks import __version__, errors
from buildpacks import config as build_config
from buildpacks.errors import BuildError
from buildpacks.oci.model import Platform

if TYPE_CHECKING:
    from buildpacks.oci.blobs import BlobStore
    from buildpacks.oci.model import ImageSource, RegistryOptions

DESCRIPTION = (
    "Build a production OCI image of a Python project, without a Dockerfile or a Docker "
    "daemon, the Cloud Native Buildpacks way; inspect, rebase and read the SBOM of such images."
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Flags besides --KEY, under the names pack and Spring Boot users know.
FLAG_ALIASES = {
    "base-image": ("--run-image",),
    "tags": ("--tag", "-t"),
    "default-process": ("-D",),
    "env": ("--env",),
    "processes": ("--process",),
    "platforms": ("--platform",),
}
TABLE_FLAGS = {
    "env": (
        "KEY=VALUE",
        "an environment variable of the running image (pack's --env sets the build's instead)",
    ),
    "processes": ("TYPE=COMMAND", "a process type and its shell command"),
}


def _pairs(key: str, items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` flags as a table; a flag without ``=`` or with a bad name is refused."""
    placeholder, _ = TABLE_FLAGS[key]
    flag = FLAG_ALIASES[key][0]
    table: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BuildError(f"{flag} {item!r}: write it as {placeholder}")
        if key == "env" and not _ENV_NAME.match(name):
            raise BuildError(
                f"{flag} {item!r}: {name!r} is not an environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        table[name] = value
    return table


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (None: not given)."""
    out: dict[str, Any] = {}
    for option in build_config.OPTIONS:
        if option.key in build_config.NARROW_ALIASES:  # its flag is the wider key's
            continue
        value = getattr(args, _dest(option.key))
        if value is not None and option.kind is dict:
            value = _pairs(option.key, value)
        elif value is not None and option.kind is list:
            value = [part.strip() for item in value for part in item.split(",") if part.strip()]
        out[option.key] = value
    return out


def _dest(key: str) -> str:
    return key.replace("-", "_")


def _add_settings(command: argparse.ArgumentParser) -> None:
    """A flag per setting: switches for booleans, repeatable flags for lists and tables."""
    for option in build_config.OPTIONS:
        if option.key in build_config.NARROW_ALIASES:
            continue
        where = option.env or "pyproject only"
        names = (f"--{option.key}", *FLAG_ALIASES.get(option.key, ()))
        if option.kind is dict:
            placeholder, meaning = TABLE_FLAGS[option.key]
            command.add_argument(
                *FLAG_ALIASES[option.key],
                dest=_dest(option.key),
                action="append",
                metavar=placeholder,
                help=f"{meaning}; repeat for more [{option.key} in pyproject]",
            )
        elif option.kind is list:
            command.add_argument(
                *names,
                dest=_dest(option.key),
                action="append",
                metavar="VALUE[,VALUE]",
                help=f"{option.help}; repeatable [{where}]",
            )
        elif option.kind is bool:
            command.add_argument(
                f"--{option.key}",
                dest=_dest(option.key),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{option.help} [{where}]",
            )
        else:
            command.add_argument(
                *names,
                dest=_dest(option.key),
                metavar=_dest(option.key).upper(),
                help=f"{option.help} [{where}]",
            )


def cmd_build(args: argparse.Namespace) -> int:
    from buildpacks import frontend, uptodate

    root = Path(args.path).resolve()
    output = Path(args.output_dir).resolve() if args.output_dir else root / "dist"
    overrides = _overrides(args)

    early = frontend.check_early(root, output, overrides) if root.is_dir() else None
    if early is not None and early.found is not None:
        for line in uptodate.report(early.found):
            _stdout(line)
        archive, platforms = Path(early.found.archive), early.platforms
    else:
        result = frontend.build_checked(root, output, overrides, _stdout, early)
        archive, platforms = result.archive, result.platforms
    if args.sbom_output_dir:
        from buildpacks import sbom
        from buildpacks.oci.blobs import BlobStore
        from buildpacks.oci.source import open_source

        several = len(platforms) > 1
        for platform in platforms:
            # With several platforms, each one's SBOM goes to a directory named after it.
            out = Path(args.sbom_output_dir)
            if several:
                out = out / platform_dir(platform)
            # A store of its own: the SBOM layer is copied out of the archive, not into a cache.
            with (
                tempfile.TemporaryDirectory(prefix="buildpacks-sbom-") as tmp,
                open_source(f"oci-archive:{archive}", platform, BlobStore(Path(tmp))) as source,
            ):
                for path in sbom.extract(source, out):
                    print(f"SBOM: {path}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from buildpacks import watch

    root = Path(args.path).resolve()
    output = Path(args.output_dir).resolve() if args.output_dir else root / "dist"
    try:
        watch.watch(root, output, _overrides(args), _stdout, _stderr)
    except KeyboardInterrupt:
        _stderr(f"Stopped watching {root}")
        return 130
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from buildpacks import frontend

    root = Path(args.path).resolve()
    with tempfile.TemporaryDirectory(prefix="buildpacks-wheel-") as tmp:
        config, _ = frontend.resolve_project(
            root, root / "dist", _overrides(args), Path(tmp), _stderr
        )
    print("\n".join(frontend.describe(config)))
    return 0


def _store() -> BlobStore:
    from buildpacks.oci.blobs import BlobStore

    return BlobStore(build_config.resolve_cache_dir(build_config.environment_settings()) / "blobs")


def _options() -> RegistryOptions:
    """Registry settings for commands run outside a project: from the environment."""
    from buildpacks.oci.model import RegistryOptions

    values = build_config.environment_settings()
    return RegistryOptions(
        insecure=tuple(build_config.setting(values, "insecure-registries") or ()),
        ca_bundle=values.get("registry-ca"),
    )


def _configured_platform() -> Platform:
    """The first platform ``BP_PLATFORMS``/``BP_PLATFORM`` name, else this machine's."""
    return build_config.environment_platforms()[0]


def _platform(args: argparse.Namespace) -> Platform:
    """``--platform``, else the configured platform: which image of an index to open."""
    if not args.platform:
        return _configured_platform()
    try:
        return Platform.parse(args.platform)
    except ValueError as e:
        raise BuildError(f"--platform: {e}") from None


def _open(ref: str, store: BlobStore, platform: Platform):
    from buildpacks.oci.source import open_source
    from buildpacks.progress import Transfers

    return open_source(ref, platform, store, options=_options(), transfers=Transfers(_stderr))


def _check_platform(source: ImageSource, args: argparse.Namespace, platform: Platform) -> None:
    """A ``--platform`` that a single image (not an index) is not for is refused."""
    has = source.platform
    if args.platform and not platform.matches(has.to_json()):
        raise BuildError(f"{args.ref} has no image for {platform} (it has: {has})")


def cmd_inspect(args: argparse.Namespace) -> int:
    from buildpacks import inspect
    from buildpacks.oci.source import open_index

    store = _store()
    found = None if args.platform else open_index(args.ref, store, options=_options())
    if found is not None:
        report = inspect.inspect_index(args.ref, *found)
        print(json.dumps(report, indent=2) if args.json else inspect.render_index(report))
        return 0
    platform = _platform(args)
    with _open(args.ref, store, platform) as source:
        _check_platform(source, args, platform)
        report = inspect.inspect(source)
    print(json.dumps(report, indent=2) if args.json else inspect.render(report))
    return 0


def platform_dir(platform: Platform) -> str:
    """The subdirectory of ``sbom -o DIR`` for one platform of an index: ``linux-arm64-v8``."""
    return str(platform).replace("/", "-")


def cmd_sbom(args: argparse.Namespace) -> int:
    from buildpacks import sbom
    from buildpacks.oci.manifest import index_platforms
    from buildpacks.oci.source import open_index

    store = _store()
    out = Path(args.output)
    found = None if args.platform else open_index(args.ref, store, options=_options())
    written = []
    if found is not None:
        # Every platform's SBOM: each lists what that platform's image holds.
        for platform, _ in index_platforms(found[0]):
            with _open(args.ref, store, platform) as source:
                written += sbom.extract(source, out / platform_dir(platform))
    else:
        platform = _platform(args)
        with _open(args.ref, store, platform) as source:
            _check_platform(source, args, platform)
            written = sbom.extract(source, out)
    for path in written:
        print(path)
    return 0


def _stdout(line: str) -> None:
    _say(line, sys.stdout)


def _stderr(line: str) -> None:
    _say(line, sys.stderr)


def _say(line: str, stream: TextIO) -> None:
    """One write per line, flushed: a line is never split by another thread's output
    (``print`` writes the newline apart, and an unbuffered stream passes each on)."""
    stream.write(f"{line}\n")
    stream.flush()


def _base_platforms(spec: str, store: BlobStore) -> list[Platform] | None:
    """The platforms a run image serves; None for one assembled for any (debian-packages:)."""
    from buildpacks.oci.manifest import index_platforms
    from buildpacks.oci.source import open_index

    if spec.startswith("debian-packages:"):
        return None
    found = open_index(spec, store, options=_options())
    if found is not None:
        return [platform for platform, _ in index_platforms(found[0])]
    with _open(spec, store, Platform()) as source:
        return [source.platform]


def cmd_rebase(args: argparse.Namespace) -> int:
    from buildpacks.lifecycle import rebase
    from buildpacks.oci.archive import ArchiveSink
    from buildpacks.oci.manifest import index_platforms
    from buildpacks.oci.model import Index, Layer
    from buildpacks.oci.reference import Reference
    from buildpacks.oci.registry import RegistrySink
    from buildpacks.oci.sink import Sink
    from buildpacks.oci.source import TRANSPORTS, open_image, open_index
    from buildpacks.progress import Transfers

    store = _store()
    registry_ref = not args.ref.startswith(TRANSPORTS)
    if args.publish and not registry_ref:
        raise BuildError(f"--publish pushes to REF, and {args.ref} is not a registry reference")
    output = Path(args.output) if args.output else None
    if output is None and args.ref.startswith("oci-archive:"):
        output = Path(args.ref.removeprefix("oci-archive:"))
    if output is None and not args.publish:
        raise BuildError(
            f"rebase of {args.ref}: give --publish to push the result, or --output PATH"
        )
    found = open_index(args.ref, store, options=_options())
    # An index is rebased platform by platform, in its order; one image on its own.
    platforms = [p for p, _ in index_platforms(found[0])] if found else [_configured_platform()]
    if not platforms:
        raise BuildError(f"{args.ref} is an image index without any platform's image")
    settings = build_config.environment_settings()
    images = []
    for platform in platforms:
        with _open(args.ref, store, platform) as source:
            run_image = args.run_image or rebase.recorded_run_image(source)
            if not run_image:
                raise BuildError(
                    f"{args.ref} was built on a local base, which cannot be pulled by its name; "
                    "give --run-image"
                )
            if found is not None and not images:
                offered = _base_platforms(run_image, store)
                if offered is not None:
                    rebase.check_platforms(args.ref, run_image, platforms, offered)
            new_base = open_image(
                run_image,
                source.platform,
                store,
                options=_options(),
                pull_policy="always",
                transfers=Transfers(_stderr),
                debian_mirror=settings.get("debian-mirror"),
                debian_keyring=settings.get("debian-keyring"),
            )

            def described(i: int, source: ImageSource = source) -> Layer:
                descriptor = source.layer_descriptors[i]
                return Layer(descriptor, source.diff_ids[i], store.path(descriptor.digest))

            # Pushing back to the registry the image came from needs none of its layers here.
            layer = described if output is None else source.layer
            images.append(rebase.rebase(source, new_base, layer, args.force))
            name = source.name or args.ref
    annotations = (found[0].get("annotations") or {}) if found else {}
    artifact = Index(tuple(images), name, annotations) if found else images[0]
    sinks: list[Sink] = []
    if output is not None:
        sinks.append(ArchiveSink(output, name, build_config.source_date_epoch()))
    if args.publish:
        mounts = [] if run_image.startswith(TRANSPORTS) else [Reference.parse(run_image)]
        sinks.append(RegistrySink([Reference.parse(args.ref)], _options(), mounts))
    for sink in sinks:
        sink.write(artifact, print)
    print(f"Rebased {args.ref} onto {run_image}: {artifact.digest()}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from buildpacks import server

    print(server.control(args.action))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake told in one ``error:`` line like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


@functools.cache  # the build server makes it once, for every command it serves
def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="buildpacks", description=DESCRIPTION)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    build = sub.add_parser(
        "build",
        help="build the image of a Python project",
        description="Build the image of a Python project (any PEP 517 project, or a directory "
        "of application source) into PATH/dist. Flags override [tool.buildpacks] and BP_*.",
    )
    build.add_argument("path", nargs="?", default=".", help="project directory (default: .)")
    build.add_argument("--output-dir", help="where the image archive goes (default: PATH/dist)")
    build.add_argument(
        "--sbom-output-dir",
        metavar="DIR",
        help="also write the image's SBOM files (sbom.cdx.json, sbom.spdx.json) into DIR",
    )
    _add_settings(build)
    build.set_defaults(func=cmd_build)

    watch_cmd = sub.add_parser(
        "watch",
        help="build, then rebuild on every saved change until Ctrl-C",
        description="Build the image of a Python project, then rebuild it on every saved change "
        "and update the chosen outputs (archive, --publish, --daemon), until Ctrl-C.",
    )
    watch_cmd.add_argument("path", nargs="?", default=".", help="project directory (default: .)")
    watch_cmd.add_argument("--output-dir", help="where the image archive goes (default: PATH/dist)")
    _add_settings(watch_cmd)
    watch_cmd.set_defaults(func=cmd_watch)

    config_cmd = sub.add_parser(
        "config", help="print the resolved configuration and where each value came from"
    )
    config_cmd.add_argument("path", nargs="?", default=".", help="project directory (default: .)")
    _add_settings(config_cmd)
    config_cmd.set_defaults(func=cmd_config)

    ref_help = "a registry reference, oci-archive:PATH or oci-layout:PATH[:TAG]"
    inspect_cmd = sub.add_parser(
        "inspect", help="show what an image is made of (no layer is downloaded)"
    )
    inspect_cmd.add_argument("ref", help=ref_help)
    inspect_cmd.add_argument("--json", action="store_true", help="print JSON")
    inspect_cmd.add_argument(
        "--platform", help="of an image index, the image of this os/arch[/variant]"
    )
    inspect_cmd.set_defaults(func=cmd_inspect)

    sbom_cmd = sub.add_parser(
        "sbom", help="write an image's SBOM files (only the SBOM layer is downloaded)"
    )
    sbom_cmd.add_argument("ref", help=ref_help)
    sbom_cmd.add_argument(
        "-o", "--output", default=".", help="directory to write into (default: .)"
    )
    sbom_cmd.add_argument(
        "--platform",
        help="of an image index, only this os/arch[/variant]'s SBOM, in DIR itself "
        "(default: every platform's, in DIR/OS-ARCH[-VARIANT])",
    )
    sbom_cmd.set_defaults(func=cmd_sbom)

    rebase_cmd = sub.add_parser("rebase", help="put an image's app layers on a newer run image")
    rebase_cmd.add_argument("ref", help=ref_help)
    rebase_cmd.add_argument("--run-image", help="the new run image (default: the one it records)")
    rebase_cmd.add_argument("--publish", action="store_true", help="push the result to REF")
    rebase_cmd.add_argument("--output", help="write the result as an archive here")
    rebase_cmd.add_argument(
        "--force", action="store_true", help="rebase even onto an incompatible run image"
    )
    rebase_cmd.set_defaults(func=cmd_rebase)

    server_cmd = sub.add_parser(
        "server",
        help="the build server of this Python environment: status, stop",
        description="Commands run in a warm build server of this Python environment, started "
        "by the first one and stopped when idle; BP_SERVER=0 runs each in its own process.",
    )
    server_cmd.add_argument("action", choices=("status", "stop"))
    server_cmd.set_defaults(func=cmd_server)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as e:
        return errors.report(e, _stderr, os.environ)


if __name__ == "__main__":
    sys.exit(main())
