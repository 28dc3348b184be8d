"""Registries and daemons with real parts: a ``docker-registry`` on loopback (basic auth,
TLS with a private CA, a flaky proxy in front), podman pulling and running what we pushed,
and podman's Docker-compatible service loading the image through the ``docker`` SDK."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "s3cret-Pa55word"
ARCHIVE = "dist/example-service-0.1.0.tar"


@pytest.fixture(scope="module")
def auth_registry(session_dir):
    reg = testbed.Registry(session_dir / "auth-registry", users={USER: PASSWORD})
    yield reg
    reg.stop()


def build(session_dir: Path, hatch_env: dict, name: str, **env: str):
    project = testbed.copy_example(session_dir / name)
    return project, testbed.hatch_build(project, hatch_env, env)


def assert_one_clean_error(result, pattern: str) -> str:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out and PASSWORD not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert pattern in errors[0], errors[0]
    return errors[0]


def docker_config(directory: Path, registry: str, user: str, password: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return str(directory)


def test_push_with_basic_auth_then_podman_pulls_and_runs_it(
    session_dir, hatch_env, auth_registry, podman
):
    host = auth_registry.host
    project, result = build(
        session_dir,
        hatch_env,
        "push-basic",
        BP_PUBLISH="true",
        BP_IMAGE=f"{host}/team/example:0.1.0",
        BP_TAGS=f"{host}/team/example:latest",
        DOCKER_CONFIG=docker_config(session_dir / "docker-config", host, USER, PASSWORD),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert (
        PASSWORD not in out and base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in out
    )
    digest = testbed.read_archive_manifest(project / "dist/example-0.1.0.tar")[0]
    assert (project / "dist/example-0.1.0.tar.digest").read_text().strip() == digest
    assert f"Pushed {host}/team/example:latest@{digest}" in out.strip().splitlines()[-2:][-1] + out
    podman(
        "pull", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"{host}/team/example:latest"
    )
    port = testbed.free_port()
    podman("rm", "-f", "pushed", check=False)
    podman.serve(f"{host}/team/example:latest", port, "pushed")
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert status == 200 and json.loads(body)["name"] == "example-service"
    finally:
        podman("rm", "-f", "-t", "2", "pushed", check=False)


def test_second_push_after_edit_uploads_only_app_layer_config_and_manifest(
    session_dir, hatch_env, registry
):
    image = f"{registry.host}/team/edit:0.1.0"
    project, first = build(session_dir, hatch_env, "push-edit", BP_PUBLISH="true", BP_IMAGE=image)
    assert first.returncode == 0, first.stdout + first.stderr
    before = len(registry.requests("PUT", "/team/edit/blobs/uploads/"))
    _, old_manifest, _ = testbed.read_archive_manifest(project / "dist/edit-0.1.0.tar")
    server = project / "src/example_service/server.py"
    server.write_text(server.read_text().replace('return "ok"', 'return "ok, edited"'))
    second = testbed.hatch_build(project, hatch_env, {"BP_PUBLISH": "true", "BP_IMAGE": image})
    assert second.returncode == 0, second.stdout + second.stderr
    _, manifest, _ = testbed.read_archive_manifest(project / "dist/edit-0.1.0.tar")
    uploads = registry.requests("PUT", "/team/edit/blobs/uploads/")[before:]
    changed_layers = {layer["digest"] for layer in manifest["layers"]} - {
        layer["digest"] for layer in old_manifest["layers"]
    }
    assert len(changed_layers) == 1
    expected = {*changed_layers, manifest["config"]["digest"]}
    assert {
        line.split("digest=")[1].split()[0].split("&")[0].strip('"') for line in uploads
    } == expected
    assert len(uploads) == 2
    assert len([r for r in registry.requests("PUT", "/team/edit/manifests/")]) == 2  # one per build


def test_push_to_a_tls_registry_with_a_private_ca(session_dir, hatch_env):
    ca, cert, key = testbed.make_ca_and_cert(session_dir / "tls")
    reg = testbed.Registry(session_dir / "tls-registry", tls=(cert, key))
    try:
        image = f"{reg.host}/secure/example:0.1.0"
        _, ok = build(
            session_dir,
            hatch_env,
            "push-tls",
            BP_PUBLISH="true",
            BP_IMAGE=image,
            BP_REGISTRY_CA=str(ca),
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert reg.requests("PUT", "/secure/example/manifests/0.1.0")
        _, refused = build(
            session_dir, hatch_env, "push-tls-no-ca", BP_PUBLISH="true", BP_IMAGE=image
        )
        assert_one_clean_error(refused, "TLS certificate not trusted")
    finally:
        reg.stop()


class Denying(http.server.BaseHTTPRequestHandler):
    """A registry that lets anyone in but grants no repository any permission."""

    def log_message(self, *args):
        pass

    def _answer(self):
        status = 200 if self.path == "/v2/" else 403
        body = (
            b"{}"
            if status == 200
            else b'{"errors":[{"code":"DENIED","message":"requested access '
            b'to the resource is denied"}]}'
        )
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = _answer


def test_registry_errors_are_one_clear_line(session_dir, hatch_env, auth_registry):
    host = auth_registry.host
    common = {"BP_PUBLISH": "true", "BP_REGISTRY_USERNAME": USER}
    _, wrong = build(
        session_dir,
        hatch_env,
        "err-password",
        **common,
        BP_IMAGE=f"{host}/team/x:1",
        BP_REGISTRY_PASSWORD=PASSWORD + "-wrong",
    )
    assert_one_clean_error(wrong, f"registry {host} refused the credentials as alice")
    _, unknown = build(
        session_dir,
        hatch_env,
        "err-host",
        **common,
        BP_REGISTRY_PASSWORD=PASSWORD,
        BP_IMAGE="no-such-registry.invalid/team/x:1",
    )
    assert_one_clean_error(unknown, "cannot reach registry no-such-registry.invalid")
    down = f"127.0.0.1:{testbed.free_port()}"
    _, stopped = build(
        session_dir,
        hatch_env,
        "err-down",
        **common,
        BP_REGISTRY_PASSWORD=PASSWORD,
        BP_IMAGE=f"{down}/team/x:1",
    )
    assert_one_clean_error(stopped, f"cannot reach registry {down}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Denying)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        denying = f"127.0.0.1:{server.server_address[1]}"
        _, denied = build(
            session_dir,
            hatch_env,
            "err-denied",
            **common,
            BP_REGISTRY_PASSWORD=PASSWORD,
            BP_IMAGE=f"{denying}/team/x:1",
        )
        assert_one_clean_error(denied, "denied pull,push access to team/x")
    finally:
        server.shutdown()


def test_push_through_a_flaky_proxy_completes_with_the_same_digest(
    session_dir, hatch_env, registry
):
    proxy = testbed.FlakyProxy(registry.host, every=4)
    try:
        project, result = build(
            session_dir,
            hatch_env,
            "push-flaky",
            BP_PUBLISH="true",
            BP_IMAGE=f"{proxy.host}/team/flaky:0.1.0",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert proxy.failures >= 2
        local = testbed.read_archive_manifest(project / "dist/flaky-0.1.0.tar")[0]
        assert testbed.registry_digest(f"{registry.host}/team/flaky:0.1.0") == local
    finally:
        proxy.stop()


def test_base_pull_policy_uses_the_local_cache(session_dir, hatch_env, registry, base_layout):
    testbed.push_layout(base_layout, registry, "base/policy:bookworm")
    env = {
        "BP_BASE_IMAGE": f"{registry.host}/base/policy:bookworm",
        "BP_CACHE_DIR": str(session_dir / "policy-cache"),
    }
    _, never_first = build(
        session_dir, hatch_env, "policy-never-cold", **env, BP_PULL_POLICY="never"
    )
    assert_one_clean_error(never_first, "is not in the local cache and pull-policy is never")
    _, first = build(session_dir, hatch_env, "policy-1", **env)
    assert first.returncode == 0, first.stdout + first.stderr
    asked = len(registry.requests("GET", "/base/policy/"))
    _, second = build(session_dir, hatch_env, "policy-2", **env)
    _, offline = build(session_dir, hatch_env, "policy-3", **env, BP_PULL_POLICY="never")
    assert second.returncode == 0 and offline.returncode == 0
    assert len(registry.requests("GET", "/base/policy/")) == asked  # no request at all
    _, always = build(session_dir, hatch_env, "policy-4", **env, BP_PULL_POLICY="always")
    assert always.returncode == 0
    new = registry.requests("GET", "/base/policy/")[asked:]
    assert any("/manifests/bookworm" in line for line in new)
    assert not any("/blobs/" in line for line in new)  # blobs already cached are not fetched


def test_daemon_load_into_podmans_docker_api(session_dir, hatch_env, podman):
    with podman.docker_api(session_dir / "docker.sock") as docker_host:
        try:
            _, result = build(
                session_dir,
                hatch_env,
                "daemon",
                BP_DAEMON="true",
                DOCKER_HOST=docker_host,
                BP_IMAGE="daemon-example:0.1.0",
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert "Loaded into the daemon" in result.stdout + result.stderr
            digest = testbed.read_archive_manifest(
                session_dir / "daemon" / "dist/daemon-example-0.1.0.tar"
            )[0]
            # A builder with no layer cache (only the base, as after any first build) and no dist/
            # reuses the layers of the daemon's previous image.
            again_project = testbed.copy_example(session_dir / "daemon-again")
            again = testbed.hatch_build(
                again_project,
                hatch_env,
                {
                    "BP_DAEMON": "true",
                    "DOCKER_HOST": docker_host,
                    "BP_IMAGE": "daemon-example:0.1.0",
                    "BP_CACHE_DIR": testbed.seeded_cache(session_dir / "daemon-cache"),
                },
            )
            out = again.stdout + again.stderr
            assert again.returncode == 0, out
            assert (
                "Restored python-buildpacks/dependencies venv layer" in out
                and "Installing" not in out
            )
            assert (
                testbed.read_archive_manifest(again_project / "dist/daemon-example-0.1.0.tar")[0]
                == digest
            )
            port = testbed.free_port()
            podman("rm", "-f", "from-daemon", check=False)
            podman.serve("daemon-example:0.1.0", port, "from-daemon")
            status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
            assert status == 200 and json.loads(body)["version"] == "0.1.0"
        finally:
            podman("rm", "-f", "-t", "2", "from-daemon", check=False)


def test_bearer_token_registry_anonymous_pull_and_authenticated_push(
    session_dir, hatch_env, registry, base_layout
):
    proxy = testbed.TokenProxy(registry.host, {USER: PASSWORD})
    try:
        testbed.push_layout(base_layout, registry, "base/token:bookworm")
        base = f"{proxy.host}/base/token:bookworm"
        _, pulled = build(
            session_dir,
            hatch_env,
            "token-pull",
            BP_BASE_IMAGE=base,
            BP_CACHE_DIR=str(session_dir / "token-cache-1"),
        )
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        assert ("repository:base/token:pull", None) in proxy.token_requests  # anonymous
        image = f"{proxy.host}/team/token:0.1.0"
        project, pushed = build(
            session_dir,
            hatch_env,
            "token-push",
            BP_BASE_IMAGE=base,
            BP_PUBLISH="true",
            BP_IMAGE=image,
            BP_REGISTRY_USERNAME=USER,
            BP_REGISTRY_PASSWORD=PASSWORD,
            BP_CACHE_DIR=str(session_dir / "token-cache-2"),
        )
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert ("repository:team/token:pull,push", USER) in proxy.token_requests
        local = testbed.read_archive_manifest(project / "dist/token-0.1.0.tar")[0]
        assert testbed.registry_digest(f"{registry.host}/team/token:0.1.0") == local
        _, refused = build(
            session_dir,
            hatch_env,
            "token-anon-push",
            BP_BASE_IMAGE=base,
            BP_PUBLISH="true",
            BP_IMAGE=image,
            BP_CACHE_DIR=str(session_dir / "token-cache-2"),
        )
        assert_one_clean_error(refused, "refused pull,push access to team/token anonymously")
    finally:
        proxy.stop()


def test_identity_token_from_docker_config_pushes_through_the_oauth2_flow(
    session_dir, hatch_env, registry, base_layout
):
    """``docker login`` against a token provider leaves an ``identitytoken`` (an OAuth2
    refresh token) in config.json and no password: it is traded for a push token."""
    refresh = "refresh-token-4f1c9a"
    proxy = testbed.TokenProxy(registry.host, {USER: PASSWORD}, refresh_tokens=(refresh,))
    try:
        base = testbed.push_layout(base_layout, registry, "base/identity:bookworm")
        config_dir = session_dir / "identity-docker"
        config_dir.mkdir()
        entry = {"auth": base64.b64encode(b"<token>:").decode(), "identitytoken": refresh}
        (config_dir / "config.json").write_text(json.dumps({"auths": {proxy.host: entry}}))
        image = f"{proxy.host}/team/identity:0.1.0"
        project, pushed = build(
            session_dir,
            hatch_env,
            "identity-push",
            BP_BASE_IMAGE=base,
            BP_PUBLISH="true",
            BP_IMAGE=image,
            DOCKER_CONFIG=str(config_dir),
            BP_CACHE_DIR=str(session_dir / "identity-cache"),
        )
        out = pushed.stdout + pushed.stderr
        assert pushed.returncode == 0, out
        assert refresh not in out
        assert ("repository:team/identity:pull,push", "<refresh token>") in proxy.token_requests
        local = testbed.read_archive_manifest(project / "dist/identity-0.1.0.tar")[0]
        assert testbed.registry_digest(f"{registry.host}/team/identity:0.1.0") == local
    finally:
        proxy.stop()
