"""Where registry credentials come from, in Docker's and podman's order."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from buildpacks.errors import BuildError
from buildpacks.oci.auth import Credentials, find_credentials, redact
from buildpacks.oci.reference import Reference

REGISTRY = "registry.example.invalid:5000"


def docker_config(tmp_path: Path, content: dict) -> dict[str, str]:
    directory = tmp_path / "docker"
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(content))
    return {"DOCKER_CONFIG": str(directory)}


def helper(tmp_path: Path, name: str, registry: str, user: str, secret: str) -> dict[str, str]:
    """A docker-credential-<name> program on PATH that knows one registry."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    program = bin_dir / f"docker-credential-{name}"
    answer = json.dumps({"ServerURL": registry, "Username": user, "Secret": secret})
    program.write_text(
        '#!/bin/sh\n[ "$1" = get ] || exit 2\nread server\n'
        f"if [ \"$server\" = '{registry}' ]; then echo '{answer}'; exit 0; fi\n"
        "echo 'credentials not found in native keychain'; exit 1\n"
    )
    program.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.fixture(autouse=True)
def no_home_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_environment_variables_win(tmp_path):
    env = {
        "BP_REGISTRY_USERNAME": "ci",
        "BP_REGISTRY_PASSWORD": "token",
        **docker_config(
            tmp_path, {"auths": {REGISTRY: {"auth": base64.b64encode(b"a:b").decode()}}}
        ),
    }
    assert find_credentials(REGISTRY, env) == Credentials("ci", "token")


def test_docker_config_auths(tmp_path):
    env = docker_config(
        tmp_path,
        {
            "auths": {
                f"https://{REGISTRY}": {"auth": base64.b64encode(b"alice:pw:with:colons").decode()}
            }
        },
    )
    assert find_credentials(REGISTRY, env) == Credentials("alice", "pw:with:colons")
    assert find_credentials("other.example.invalid", env) is None


def test_docker_hub_keys(tmp_path):
    env = docker_config(
        tmp_path, {"auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p"}}}
    )
    assert find_credentials("docker.io", env) == Credentials("u", "p")


def test_cred_helpers_and_creds_store(tmp_path):
    env = {
        **helper(tmp_path, "test", REGISTRY, "helper-user", "helper-secret"),
        **docker_config(tmp_path, {"credHelpers": {REGISTRY: "test"}}),
    }
    assert find_credentials(REGISTRY, env) == Credentials("helper-user", "helper-secret")
    env = {
        **helper(tmp_path, "store", REGISTRY, "store-user", "store-secret"),
        **docker_config(tmp_path, {"credsStore": "store"}),
    }
    assert find_credentials(REGISTRY, env) == Credentials("store-user", "store-secret")
    assert find_credentials("unknown.example.invalid", env) is None


def test_missing_helper_is_named(tmp_path):
    env = {"PATH": "/nonexistent", **docker_config(tmp_path, {"credHelpers": {REGISTRY: "nope"}})}
    with pytest.raises(
        BuildError, match="docker-credential-nope is named in the Docker config but not installed"
    ):
        find_credentials(REGISTRY, env)


def test_containers_auth_json(tmp_path):
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(
        json.dumps({"auths": {REGISTRY: {"auth": base64.b64encode(b"pod:man").decode()}}})
    )
    assert find_credentials(REGISTRY, {"REGISTRY_AUTH_FILE": str(auth_file)}) == Credentials(
        "pod", "man"
    )


def test_secrets_are_never_shown():
    assert "s3cret" not in repr(Credentials("alice", "s3cret"))
    assert (
        redact("https://user:s3cret@pypi.example.invalid/simple")
        == "https://***@pypi.example.invalid/simple"
    )


def test_malformed_docker_config_is_named(tmp_path):
    directory = tmp_path / "bad"
    directory.mkdir()
    (directory / "config.json").write_text("{not json")
    with pytest.raises(BuildError, match=r"config.json: cannot be read as JSON"):
        find_credentials(REGISTRY, {"DOCKER_CONFIG": str(directory)})


@pytest.mark.parametrize(
    "text", ["index.docker.io/python", "registry-1.docker.io/library/python", "python"]
)
def test_docker_hub_names_get_docker_hub_credentials(tmp_path, text):
    env = docker_config(
        tmp_path,
        {"auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()}}},
    )
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository) == ("docker.io", "library/python")
    assert find_credentials(ref.registry, env) == Credentials("hub", "pw")


def test_identity_token_entry(tmp_path):
    env = docker_config(
        tmp_path,
        {
            "auths": {
                REGISTRY: {
                    "auth": base64.b64encode(b"<token>:").decode(),
                    "identitytoken": "refresh-123",
                }
            }
        },
    )
    found = find_credentials(REGISTRY, env)
    assert found == Credentials("<token>", "", identity_token="refresh-123")
    assert "refresh-123" not in repr(found)


def test_identity_token_from_a_credential_helper(tmp_path):
    env = {
        **helper(tmp_path, "tok", REGISTRY, "<token>", "refresh-456"),
        **docker_config(tmp_path, {"credHelpers": {REGISTRY: "tok"}}),
    }
    assert find_credentials(REGISTRY, env) == Credentials(
        "<token>", "", identity_token="refresh-456"
    )
