"""One validated ``BuildConfig`` from ``[tool.buildpacks]``, ``BP_*`` environment variables
and explicit overrides (flags), in that order of precedence; and the inference of what a
Dockerfile author would write by hand: Python version, base image, image reference."""

from __future__ import annotations

import os
import platform as host
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildpacks import descriptor as project_toml
from buildpacks.cachedir import cache_dir
from buildpacks.errors import BuildError
from buildpacks.oci.model import Platform

# Imported where used, not here: every command and the up-to-date check import this module,
# and a no-op build reads only the settings (``gather``), never a version specifier, an
# image reference or a layer.
if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

    from buildpacks.project import Project

TOML_TYPES = {str: "string", bool: "boolean", list: "list of strings", dict: "table of strings"}
PULL_POLICIES = ("always", "if-not-present", "never")
COMPRESSIONS = ("gzip", "zstd")
# CPython minor versions that have python:X.Y-slim base images and wheels on PyPI, newest first.
CANDIDATE_PYTHONS = ("3.14", "3.13", "3.12", "3.11", "3.10", "3.9", "3.8")


# Settings are frozen, being shared by every phase and thread of a build, but without a
# generated ``==`` or repr, which nothing uses: each is one more ``exec`` at import.


@dataclass(frozen=True, eq=False, repr=False)
class Option:
    """A setting: its key, its environment variable (empty: none), its type, its default
    as text, and its help."""

    key: str
    env: str
    kind: type
    default: str | None
    help: str


OPTIONS = (
    Option("image", "BP_IMAGE", str, None, "image reference; default <project name>:<version>"),
    Option(
        "base-image",
        "BP_BASE_IMAGE",
        str,
        None,
        "run image: a registry reference, oci-layout:PATH[:TAG], oci-archive:PATH, "
        "docker-archive:PATH or debian-packages:SUITE; default python:<X.Y>-slim",
    ),
    Option(
        "python-version",
        "BP_PYTHON_VERSION",
        str,
        None,
        "Python X.Y; default the explicit base image's, else .python-version, else the highest "
        "allowed by requires-python",
    ),
    Option(
        "default-process",
        "BP_DEFAULT_PROCESS",
        str,
        None,
        "process type the image starts; default the only one, `web`, or the project's name",
    ),
    Option(
        "platforms",
        "BP_PLATFORMS",
        list,
        None,
        "target os/arch of the image; several give one image index (e.g. "
        "linux/amd64,linux/arm64); default this machine's",
    ),
    Option("platform", "BP_PLATFORM", str, None, "one target platform (platforms, one entry)"),
    Option("publish", "BP_PUBLISH", bool, "false", "push the image to the registry named by image"),
    Option("tags", "BP_TAGS", list, None, "more references to push the image as (comma-separated)"),
    Option(
        "pull-policy",
        "BP_PULL_POLICY",
        str,
        "if-not-present",
        "when to ask the registry for the base: always, if-not-present or never",
    ),
    Option(
        "insecure-registries",
        "BP_INSECURE_REGISTRIES",
        list,
        None,
        "host:port of registries reached over plain HTTP or unverified TLS",
    ),
    Option(
        "registry-ca",
        "BP_REGISTRY_CA",
        str,
        None,
        "CA bundle to verify registries with; default SSL_CERT_FILE, else the system's",
    ),
    Option(
        "processes", "", dict, None, "process types: type = shell command (over Procfile/scripts)"
    ),
    Option("env", "", dict, None, "environment variables of the running image"),
    Option("daemon", "BP_DAEMON", bool, "false", "also load the image into the Docker API daemon"),
    Option(
        "extras",
        "BP_EXTRAS",
        list,
        None,
        "optional dependency groups ([project.optional-dependencies]) to install",
    ),
    Option(
        "dependency-groups",
        "BP_DEPENDENCY_GROUPS",
        list,
        None,
        "dependency groups of the lock to install",
    ),
    Option(
        "index-url",
        "BP_INDEX_URL",
        str,
        None,
        "package index (default: UV_INDEX_URL, PIP_INDEX_URL, else PyPI)",
    ),
    Option("extra-index-urls", "BP_EXTRA_INDEX_URLS", list, None, "more package indexes"),
    Option(
        "cache-image",
        "BP_CACHE_IMAGE",
        str,
        None,
        "registry reference where the layer cache is stored for builders that share no disk",
    ),
    Option(
        "clear-cache",
        "BP_CLEAR_CACHE",
        bool,
        "false",
        "build every layer afresh: no cached layer, none from a previous image",
    ),
    Option(
        "creation-time",
        "BP_CREATION_TIME",
        str,
        None,
        "the image's created time: Unix seconds or `now`; default SOURCE_DATE_EPOCH, "
        "else 1980-01-01T00:00:01Z",
    ),
    Option(
        "layer-compression",
        "BP_LAYER_COMPRESSION",
        str,
        "gzip",
        "compression of the image's layers: gzip, or zstd (podman, Docker 23 and later)",
    ),
    Option(
        "cache-dir",
        "BP_CACHE_DIR",
        str,
        None,
        "where base blobs and cached layers are kept; default the user cache directory",
    ),
    Option(
        "system-packages",
        "BP_SYSTEM_PACKAGES",
        list,
        None,
        "Debian packages to add to a Debian-based run image (one layer, no scripts run)",
    ),
    Option(
        "debian-mirror",
        "BP_DEBIAN_MIRROR",
        str,
        None,
        "Debian archive for debian-packages: and system-packages; its security archive is "
        "<mirror>-security; default http://deb.debian.org/debian",
    ),
    Option(
        "debian-keyring",
        "BP_DEBIAN_KEYRING",
        str,
        None,
        "OpenPGP keyring (binary or armored) whose keys sign debian-mirror's InRelease files, "
        "for a private mirror; relative to the project; default Debian's archive keys",
    ),
)
OPTION_BY_KEY = {o.key: o for o in OPTIONS}
# Other names for keys, as pack and Spring Boot users know them.
ALIASES = {"run-image": "base-image"}
# Keys that set another key in a narrower form: ``platform`` is ``platforms`` of one entry.
NARROW_ALIASES = {"platform": "platforms"}
# The platforms images are built for: OCI architectures of Linux with the variants each
# may name.
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "amd64": ("v1", "v2", "v3", "v4"),
    "arm64": ("v8",),
    "arm": ("v7", "v6", "v5"),
    "386": (),
    "ppc64le": (),
    "s390x": (),
    "riscv64": (),
}


@dataclass(frozen=True, eq=False, repr=False)
class BuildConfig:
    """Everything a build needs to know, validated, with where each value came from."""

    project: Project
    image: str
    base_image: str
    python_version: str
    # The platform a phase builds for: the first of ``platforms``, replaced by the lifecycle
    # as it builds each of them.
    platform: Platform
    default_process: str | None
    processes: dict[str, str]
    env: dict[str, str]
    publish: bool
    tags: tuple[str, ...]
    pull_policy: str
    insecure_registries: tuple[str, ...]
    registry_ca: str | None
    daemon: bool
    cache_image: str | None
    clear_cache: bool
    source_date_epoch: int  # Unix seconds: the mtime of every entry of the layers we write
    creation_time: int  # Unix seconds: the image's `created` and the SBOMs' timestamps
    extras: tuple[str, ...]
    dependency_groups: tuple[str, ...]
    index_url: str | None
    extra_index_urls: tuple[str, ...]
    layer_compression: str
    cache_dir: Path
    output_dir: Path
    origins: dict[str, str] = field(default_factory=dict)
    descriptor: project_toml.Descriptor = field(default_factory=project_toml.Descriptor)
    system_packages: tuple[str, ...] = ()
    debian_mirror: str | None = None
    debian_keyring: str | None = None  # absolute path; None: Debian's archive keys
    warnings: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()  # every platform asked for, in order; one image each

    @property
    def needs_base_python(self) -> bool:
        """Whether the Python version is still to be read from the explicit base image."""
        return not self.python_version


def _suggest(key: str) -> str:
    import difflib  # only for a mistake

    close = difflib.get_close_matches(key, list(OPTION_BY_KEY), n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys: " + ", ".join(sorted(OPTION_BY_KEY))


# BP_* variables read elsewhere than OPTIONS (registry credentials, by oci.auth).
# Ours, but no setting of a build: credentials, and where and how a command runs.
OTHER_ENV = ("BP_REGISTRY_USERNAME", "BP_REGISTRY_PASSWORD", "BP_SERVER", "BP_DEBUG")


def misspelled_env(env: Mapping[str, str]) -> list[str]:
    """Warnings for ``BP_*`` variables that are not ours but close to one that is: a typo
    would otherwise be ignored without a word."""
    known = [o.env for o in OPTIONS if o.env] + list(OTHER_ENV)
    warnings = []
    for name in sorted(env):
        if name.startswith("BP_") and name not in known:
            import difflib  # only for a variable that is not ours

            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            if close:
                warnings.append(f"{name} is not a setting and is ignored; did you mean {close[0]}?")
    return warnings


def check_misplaced(table: Mapping[str, Any], where: str) -> None:
    """Refuse ``[tool.buildpacks]`` keys written in another table (e.g. Hatch's target
    table), where they would be silently ignored."""
    for key in table:
        if key in OPTION_BY_KEY:
            raise BuildError(
                f"pyproject.toml: {key!r} under [{where}] is a python-buildpacks setting, "
                f"which is read from [tool.buildpacks]: move it there"
            )


def gather(
    tool_config: Mapping[str, Any], env: Mapping[str, str], overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Raw values and their origins: ``[tool.buildpacks]`` < ``BP_*`` < overrides."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    tool_config = _unalias(tool_config, "pyproject.toml: [tool.buildpacks]")
    overrides = _unalias(overrides, "command line:")
    for key, value in tool_config.items():
        if key not in OPTION_BY_KEY:
            raise BuildError(
                f"pyproject.toml: unknown key [tool.buildpacks] {key!r}; {_suggest(key)}"
            )
        option = OPTION_BY_KEY[key]
        items = value.values() if isinstance(value, dict) else value
        if not isinstance(value, option.kind) or (
            option.kind in (list, dict) and not all(isinstance(v, str) for v in items)
        ):
            raise BuildError(
                f"pyproject.toml: [tool.buildpacks] {key} must be a {TOML_TYPES[option.kind]}, "
                f"not {type(value).__name__} ({value!r})"
            )
        values[key], origins[key] = value, "pyproject.toml [tool.buildpacks]"
    for option in OPTIONS:
        if option.env and env.get(option.env, "").strip():
            values[option.key] = from_text(option, env[option.env].strip(), option.env)
            origins[option.key] = option.env
    for key, value in overrides.items():
        if key not in OPTION_BY_KEY:
            raise BuildError(f"unknown setting {key!r}; {_suggest(key)}")
        if value is not None:
            option = OPTION_BY_KEY[key]
            if isinstance(value, str) and option.kind is not str:
                value = from_text(option, value, "command line")
            values[key], origins[key] = value, "command line"
    return values, origins


def _unalias(given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``given`` with aliases replaced by the keys they stand for; both at once is refused."""
    out = dict(given)
    for alias, key in ALIASES.items():
        if alias in out:
            if out.get(key) is not None and out[alias] is not None:
                raise BuildError(f"{where} {alias} and {key} are the same setting; give one")
            value = out.pop(alias)
            if value is not None or key not in out:
                out[key] = value
    return out


def source_date_epoch(env: Mapping[str, str] | None = None) -> int:
    """``SOURCE_DATE_EPOCH`` when set (reproducible-builds.org), else the CNB default."""
    from buildpacks.oci.layer import DEFAULT_EPOCH

    env = os.environ if env is None else env
    value = env.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else DEFAULT_EPOCH


def resolve_creation_time(value: str | None, origin: str, epoch: int) -> int:
    """``creation-time`` (Unix seconds or ``now``) as Unix seconds; unset, ``epoch``, the
    time the layers are dated with."""
    if value is None:
        return epoch
    text = value.strip()
    if text == "now":
        return int(time.time())
    if not text.isdigit():
        raise BuildError(
            f"creation-time ({origin}) must be Unix seconds (e.g. 1700000000) or now, not {value!r}"
        )
    return int(text)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def from_text(option: Option, text: str, origin: str) -> Any:
    """A setting given as text (environment, flags) converted to the option's type."""
    if option.kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise BuildError(f"{origin}: {option.key} must be true or false, not {text!r}")
    if option.kind is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def setting(values: dict[str, Any], key: str) -> Any:
    """A gathered value, or the option's default converted to its type."""
    if key in values:
        return values[key]
    option = OPTION_BY_KEY[key]
    return None if option.default is None else from_text(option, option.default, "default")


_MINOR = re.compile(r"^(?:cpython-|python)?(\d+)\.(\d+)(?:\.\d+.*)?$")


def _minor_of(text: str, origin: str) -> str:
    match = _MINOR.match(text.strip())
    if not match:
        raise BuildError(f"{origin}: {text!r} is not a Python version; write it as X.Y, e.g. 3.12")
    return f"{match[1]}.{match[2]}"


def minor_allowed(spec: SpecifierSet, minor: str) -> bool:
    """Whether some release X.Y.z of ``minor`` satisfies ``spec``."""
    return any(spec.contains(f"{minor}.{patch}") for patch in range(0, 40))


def python_specifier(requires_python: str | None) -> list[SpecifierSet]:
    """``requires-python`` as alternatives: PEP 440 has no "or", Poetry's ``||`` has; a
    version is allowed when one alternative allows it."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return [SpecifierSet(part.strip()) for part in (requires_python or "").split("||")]
    except InvalidSpecifier:
        raise BuildError(
            f"requires-python {requires_python!r} is not a valid version specifier"
        ) from None


def python_allowed(alternatives: list[SpecifierSet], minor: str) -> bool:
    """Whether ``requires-python`` (as ``python_specifier`` gives it) allows ``minor``."""
    return any(minor_allowed(spec, minor) for spec in alternatives)


@dataclass(frozen=True, eq=False, repr=False)
class BasePython:
    """What the explicit base image holds: its reference and its Pythons' ``X.Y``, in the
    order the runtime buildpack prefers them."""

    reference: str
    minors: tuple[str, ...]


def resolve_python_version(
    explicit: str | None,
    explicit_origin: str,
    version_file: str | None,
    requires_python: str | None,
    base: BasePython | None = None,
) -> tuple[str, str]:
    """The image's Python ``X.Y`` and where it came from.

    Precedence: the ``python-version`` setting, then the Python of an explicit ``base``
    image, then ``.python-version``, then the highest candidate allowed by
    ``requires-python``. A version outside ``requires-python`` is refused.
    """
    spec = python_specifier(requires_python)
    if explicit:
        minor = _minor_of(explicit, explicit_origin)
        if not python_allowed(spec, minor):
            raise BuildError(
                f"Python {minor} (from {explicit_origin}) is outside requires-python "
                f"{requires_python!r}"
            )
        return minor, explicit_origin
    if base is not None:
        for minor in base.minors:
            if python_allowed(spec, minor):
                return minor, "base image"
        if not base.minors:
            raise BuildError(
                f"base image {base.reference} has no Python interpreter; choose a base with "
                "Python (e.g. python:3.12-slim)"
            )
        raise BuildError(
            f"base image {base.reference} has Python {', '.join(base.minors)}, outside "
            f"requires-python {requires_python!r}; choose a base whose Python it allows"
        )
    if version_file:
        minor = _minor_of(version_file, ".python-version")
        if not python_allowed(spec, minor):
            raise BuildError(
                f"Python {minor} (from .python-version) is outside requires-python "
                f"{requires_python!r}"
            )
        return minor, ".python-version"
    for minor in CANDIDATE_PYTHONS:
        if python_allowed(spec, minor):
            return minor, f"requires-python {requires_python!r}" if requires_python else "default"
    raise BuildError(
        f"requires-python {requires_python!r} allows none of the Python versions with base images "
        f"({CANDIDATE_PYTHONS[-1]} to {CANDIDATE_PYTHONS[0]}); widen it or set python-version"
    )


def parse_platform(text: str, origin: str) -> Platform:
    """``linux/ARCH[/VARIANT]`` for an architecture images are built for; anything else is a
    ``BuildError`` that lists what is accepted."""
    parts = text.strip().split("/")
    accepted = ", ".join(
        f"linux/{arch}" + (f"[/{'|'.join(variants)}]" if variants else "")
        for arch, variants in ARCHITECTURES.items()
    )
    if (
        len(parts) in (2, 3)
        and parts[0] == "linux"
        and parts[1] in ARCHITECTURES
        and (len(parts) == 2 or parts[2] in ARCHITECTURES[parts[1]])
    ):
        return Platform(*parts)
    raise BuildError(
        f"{origin}: {text!r} is not a platform; write os/arch[/variant], one of {accepted}"
    )


def resolve_platforms(values: dict[str, Any], origins: dict[str, str]) -> tuple[Platform, ...]:
    """``platforms`` (or ``platform``, its one-entry form) parsed, in order; unset, this
    machine's platform. Its origin is recorded under ``platforms``."""
    if "platform" in values and "platforms" in values:
        raise BuildError(
            f"platform ({origins['platform']}) and platforms ({origins['platforms']}) are the "
            "same setting (platform is a one-entry platforms); give one"
        )
    if "platform" in values:
        texts, origin = [values["platform"]], origins["platform"]
        origins["platforms"] = f"platform, {origin}"
    elif "platforms" in values:
        texts, origin = values["platforms"], origins["platforms"]
    else:
        origins["platforms"] = f"this machine ({host.machine()})"
        return (Platform.host(),)
    where = f"platforms ({origin})"
    if not texts:
        raise BuildError(f"{where}: give at least one platform, e.g. linux/amd64")
    platforms = tuple(parse_platform(text, where) for text in texts)
    for i, one in enumerate(platforms):
        if one in platforms[:i]:
            raise BuildError(f"{where}: {one} is given twice")
    return platforms


def resolve_cache_dir(values: Mapping[str, Any]) -> Path:
    """``cache-dir`` if given, else the user's cache directory."""
    return cache_dir(values.get("cache-dir"))


def environment_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings ``BP_*`` variables give, for commands run outside a project."""
    return gather({}, os.environ if env is None else env, {})[0]


def environment_platforms(env: Mapping[str, str] | None = None) -> tuple[Platform, ...]:
    """The platforms ``BP_PLATFORMS``/``BP_PLATFORM`` name, else this machine's, for
    commands run outside a project."""
    values, origins = gather({}, os.environ if env is None else env, {})
    return resolve_platforms(values, origins)


def default_image(project: Project) -> str:
    from buildpacks.oci.reference import normalize_repository, normalize_tag

    return f"{normalize_repository(project.name)}:{normalize_tag(project.version)}"


def resolve(
    project: Project,
    output_dir: Path,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base_pythons: tuple[str, ...] | None = None,
) -> BuildConfig:
    """Validate and complete the configuration of a build of ``project``.

    With an explicit base image and no ``python-version``, the base decides the Python: the
    caller reads the base and resolves again with its ``base_pythons``; until then the
    configuration's ``needs_base_python`` is true (its ``python_version`` is empty).
    """
    from buildpacks.oci.reference import Reference

    env = os.environ if env is None else env
    descriptor = project_toml.read_descriptor(project.root)
    project = project_toml.apply(descriptor, project, (project.root / "pyproject.toml").is_file())
    known = {option.env: option.key for option in OPTIONS if option.env}
    file_env = project_toml.environment(descriptor, project.tool_config, known)
    values, origins = gather(project.tool_config, {**file_env, **env}, overrides or {})
    for key, origin in origins.items():
        if origin in file_env and not env.get(origin, "").strip():
            origins[key] = f"project.toml {origin}"
    base = values.get("base-image", "")
    if base.startswith("debian-packages:") and not project.python_version_file:
        from buildpacks.debian import suite_of

        # The suite decides the Python, checked against requires-python like any choice.
        values.setdefault("python-version", suite_of(base).python)
        origins.setdefault("python-version", f"base image {base}")

    explicit_base = "base-image" in values
    if explicit_base and "python-version" not in values and base_pythons is None:
        python, origins["python-version"] = "", "base image"
        python_specifier(project.requires_python)  # an invalid one is reported now
    else:
        python, origins["python-version"] = resolve_python_version(
            values.get("python-version"),
            origins.get("python-version", ""),
            project.python_version_file,
            project.requires_python,
            BasePython(values["base-image"], base_pythons)
            if explicit_base and base_pythons is not None
            else None,
        )
    warnings = misspelled_env(env)
    if origins["python-version"] == "base image" and python and project.python_version_file:
        pinned = _minor_of(project.python_version_file, ".python-version")
        if pinned != python:
            warnings.append(
                f".python-version asks for Python {pinned}; the base image has {python}, "
                "which is used (set python-version to choose)"
            )
    if "base-image" not in values:
        values["base-image"], origins["base-image"] = f"python:{python}-slim", f"Python {python}"
    if "image" in values:
        try:
            Reference.parse(values["image"])
        except ValueError as e:
            raise BuildError(f"image ({origins['image']}): {e}") from None
    else:
        values["image"], origins["image"] = default_image(project), "project name and version"
    platforms = resolve_platforms(values, origins)
    pull_policy = setting(values, "pull-policy")
    if pull_policy not in PULL_POLICIES:
        raise BuildError(
            f"pull-policy ({origins['pull-policy']}) must be one of {', '.join(PULL_POLICIES)}, "
            f"not {pull_policy!r}"
        )
    tags = tuple(setting(values, "tags") or ())
    for tag in tags:
        try:
            Reference.parse(tag)
        except ValueError as e:
            raise BuildError(f"tags ({origins['tags']}): {e}") from None
    if values.get("cache-image"):
        try:
            Reference.parse(values["cache-image"])
        except ValueError as e:
            raise BuildError(f"cache-image ({origins['cache-image']}): {e}") from None
    layer_compression = setting(values, "layer-compression")
    if layer_compression not in COMPRESSIONS:
        raise BuildError(
            f"layer-compression ({origins['layer-compression']}) must be one of "
            f"{', '.join(COMPRESSIONS)}, not {layer_compression!r}"
        )
    cache_dir = resolve_cache_dir(values)
    keyring = None
    if values.get("debian-keyring"):
        keyring = project.root / Path(values["debian-keyring"]).expanduser()
        if not keyring.is_file():
            raise BuildError(
                f"debian-keyring ({origins['debian-keyring']}): {keyring} is not a file; give "
                "the OpenPGP keyring that signs the mirror's InRelease files"
            )
    epoch = source_date_epoch(env)
    creation_time = resolve_creation_time(
        values.get("creation-time"), origins.get("creation-time", ""), epoch
    )
    return BuildConfig(
        project=project,
        image=values["image"],
        base_image=values["base-image"],
        python_version=python,
        platform=platforms[0],
        platforms=platforms,
        default_process=values.get("default-process"),
        processes=dict(values.get("processes") or {}),
        env=dict(values.get("env") or {}),
        publish=setting(values, "publish"),
        tags=tags,
        pull_policy=pull_policy,
        insecure_registries=tuple(setting(values, "insecure-registries") or ()),
        registry_ca=values.get("registry-ca"),
        daemon=setting(values, "daemon"),
        cache_image=values.get("cache-image"),
        clear_cache=setting(values, "clear-cache"),
        source_date_epoch=epoch,
        creation_time=creation_time,
        extras=tuple(setting(values, "extras") or ()),
        dependency_groups=tuple(setting(values, "dependency-groups") or ()),
        index_url=values.get("index-url"),
        extra_index_urls=tuple(setting(values, "extra-index-urls") or ()),
        layer_compression=layer_compression,
        cache_dir=cache_dir,
        output_dir=output_dir,
        origins=origins,
        descriptor=descriptor,
        system_packages=tuple(setting(values, "system-packages") or ()),
        debian_mirror=values.get("debian-mirror"),
        debian_keyring=str(keyring) if keyring else None,
        warnings=tuple(warnings),
    )
