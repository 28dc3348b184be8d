"""Registry credentials found the way Docker and podman users expect: ``BP_REGISTRY_USERNAME``
and ``BP_REGISTRY_PASSWORD`` (for CI), then ``~/.docker/config.json`` (``DOCKER_CONFIG``
honoured; ``credHelpers``, ``auths`` with ``auth`` or ``identitytoken``, and ``credsStore``),
then the containers ``auth.json`` (``REGISTRY_AUTH_FILE``). Credentials are only ever sent to
the registry they belong to."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from buildpacks.errors import BuildError
from buildpacks.oci.reference import DOCKER_HUB

DOCKER_HUB_KEYS = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
)


# The user name Docker's credential helpers give with an identity token instead of a password.
TOKEN_USER = "<token>"


@dataclass(frozen=True, repr=False)
class Credentials:
    """A user name and password, or an OAuth2 refresh token (Docker's ``identitytoken``,
    written by ``docker login`` against a token provider) traded for access tokens."""

    username: str
    password: str
    identity_token: str | None = None

    def __repr__(self) -> str:  # never show the secret, even in a debugger or a traceback
        token = ", identity_token=***" if self.identity_token else ""
        return f"Credentials(username={self.username!r}, password=***{token})"


def redact(text: str) -> str:
    """URLs with credentials (``https://user:token@host``) made safe to print."""
    return re.sub(r"://[^/@\s]+@", "://***@", text)


def _keys(registry: str) -> tuple[str, ...]:
    if registry == DOCKER_HUB:
        return DOCKER_HUB_KEYS
    return (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/")


def _from_helper(helper: str, server: str, env: Mapping[str, str]) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run(
            [program, "get"],
            input=server,
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(env),
        )
    except FileNotFoundError:
        raise BuildError(
            f"credential helper {program} is named in the Docker config but not installed"
        ) from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"credential helper {program} did not answer within 30 s") from None
    if result.returncode != 0:
        return None  # "credentials not found in native keychain"
    try:
        data = json.loads(result.stdout)
        if data["Username"] == TOKEN_USER:
            return Credentials(TOKEN_USER, "", identity_token=data["Secret"])
        return Credentials(data["Username"], data["Secret"])
    except (ValueError, KeyError):
        raise BuildError(
            f"credential helper {program} answered something that is not credentials"
        ) from None


def _from_auths(
    auths: Mapping[str, dict], keys: tuple[str, ...], source: Path
) -> Credentials | None:
    for key in keys:
        entry = auths.get(key)
        if not entry:
            continue
        if entry.get("identitytoken"):
            # `auth` then holds only the user name ("<token>:" or "user:"), if anything.
            user = _decode_auth(entry, key, source)[0] if entry.get("auth") else TOKEN_USER
            return Credentials(user or TOKEN_USER, "", identity_token=entry["identitytoken"])
        if entry.get("auth"):
            return Credentials(*_decode_auth(entry, key, source))
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""))
    return None


def _decode_auth(entry: Mapping[str, str], key: str, source: Path) -> tuple[str, str]:
    try:
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    except ValueError:
        raise BuildError(
            f"{source}: the auth entry for {key} is not base64 user:password"
        ) from None
    return user, password


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise BuildError(f"{path}: cannot be read as JSON ({e})") from None


def find_credentials(registry: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials for ``registry`` (``host[:port]``), or None for anonymous access."""
    env = os.environ if env is None else env
    if env.get("BP_REGISTRY_USERNAME") and env.get("BP_REGISTRY_PASSWORD"):
        return Credentials(env["BP_REGISTRY_USERNAME"], env["BP_REGISTRY_PASSWORD"])
    keys = _keys(registry)
    docker_dir = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
    docker_config = docker_dir / "config.json"
    config = _read_json(docker_config)
    for key in keys:
        helper = (config.get("credHelpers") or {}).get(key)
        if helper:
            return _from_helper(helper, key, env)
    found = _from_auths(config.get("auths") or {}, keys, docker_config)
    if found:
        return found
    if config.get("credsStore"):
        for key in keys:
            found = _from_helper(config["credsStore"], key, env)
            if found:
                return found
    candidates = [env.get("REGISTRY_AUTH_FILE")]
    if env.get("XDG_RUNTIME_DIR"):
        candidates.append(f"{env['XDG_RUNTIME_DIR']}/containers/auth.json")
    candidates.append(str(Path.home() / ".config" / "containers" / "auth.json"))
    for candidate in filter(None, candidates):
        path = Path(candidate)
        found = _from_auths(_read_json(path).get("auths") or {}, keys, path)
        if found:
            return found
    return None
