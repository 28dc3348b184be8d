"""The registry backend: the OCI distribution API, for pulling and pushing.

TLS is verified unless a registry is listed as insecure (loopback registries may also speak
plain HTTP). Anonymous, basic and bearer-token auth follow the registry's challenge. Requests
are retried with backoff on 5xx, 429 and dropped connections. Every pulled blob is checked
against its digest; pushes upload only the blobs the registry lacks, mounting them from
another repository of the same registry when one is known to have them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import httpx

from buildpacks.errors import BuildError
from buildpacks.oci.auth import Credentials, find_credentials
from buildpacks.oci.blobs import CHUNK, BlobStore, write_atomic
from buildpacks.oci.manifest import select_platform, source_from_manifest
from buildpacks.oci.model import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Artifact,
    Descriptor,
    Image,
    ImageSource,
    Index,
    Platform,
    RegistryOptions,
    images_of,
    sha256_digest,
)
from buildpacks.oci.reference import Reference
from buildpacks.progress import Transfers

ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))
RETRY_STATUS = (429, 500, 502, 503, 504)
# Distinct 401 challenges one request answers before giving up (a registry that varies
# its challenge every time would otherwise keep a client asking for tokens forever).
MAX_CHALLENGES = 3
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """One repository on one registry, with the scheme and auth its registry asked for."""

    def __init__(
        self,
        ref: Reference,
        options: RegistryOptions,
        actions: str = "pull",
        credentials: Credentials | None = None,
    ) -> None:
        self.ref = ref
        self.options = options
        self.actions = actions
        self.credentials = (
            credentials if credentials is not None else find_credentials(ref.registry)
        )
        self.listed_insecure = ref.registry in options.insecure
        self.http = httpx.Client(timeout=60.0, follow_redirects=True, verify=self._verify())
        self.authorization: str | None = None
        self.base = f"{self._scheme()}://{ref.api_host}/v2/{ref.repository}"

    def _verify(self) -> ssl.SSLContext | bool:
        if self.listed_insecure:
            return False
        ca = self.options.ca_bundle or os.environ.get("SSL_CERT_FILE")
        if ca:
            if not Path(ca).is_file():
                raise BuildError(f"registry-ca: {ca} is not a file")
            return ssl.create_default_context(cafile=ca)
        return True

    def _scheme(self) -> str:
        """https, unless the registry may speak plain HTTP (listed insecure, or loopback)
        and its port does not speak TLS."""
        if not (self.listed_insecure or self.ref.is_loopback):
            return "https"
        try:
            self.http.get(f"https://{self.ref.api_host}/v2/", timeout=5)
            return "https"
        except httpx.ConnectError as e:
            if "CERTIFICATE_VERIFY_FAILED" in str(e):
                raise BuildError(
                    f"registry {self.ref.registry}: TLS certificate not trusted ({e}); give its CA "
                    "with registry-ca, or list it in insecure-registries"
                ) from None
            return "http"
        except httpx.HTTPError:
            return "http"

    def close(self) -> None:
        self.http.close()

    # -- requests -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: Callable[[], Iterator[bytes] | bytes] | None = None,
        stream: bool = False,
        what: str = "",
    ) -> httpx.Response:
        """Send with auth, retrying on 5xx, 429 and dropped connections. A 401 is answered
        once per distinct challenge (as go-containerregistry's bearer transport does): the
        same challenge after new credentials or a new token means they were refused."""
        what = what or f"{method} {url}"
        answered: set[str] = set()
        attempt = 1
        while True:
            send_headers = dict(headers or {})
            if self.authorization:
                send_headers["Authorization"] = self.authorization
            try:
                request = self.http.build_request(
                    method, url, headers=send_headers, content=body() if body else None
                )
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as e:
                if attempt == self.options.attempts:
                    raise BuildError(
                        f"cannot reach registry {self.ref.registry} ({what}): "
                        f"{e or type(e).__name__}"
                    ) from None
                time.sleep(self.options.backoff * 2 ** (attempt - 1))
                attempt += 1
                continue
            challenge = response.headers.get("WWW-Authenticate", "")
            if (
                response.status_code == 401
                and challenge not in answered
                and len(answered) < MAX_CHALLENGES
            ):
                response.close()
                answered.add(challenge)
                self._authenticate(challenge)
                continue
            if response.status_code in RETRY_STATUS and attempt < self.options.attempts:
                delay = response.headers.get("Retry-After", "")
                response.close()
                time.sleep(
                    float(delay) if delay.isdigit() else self.options.backoff * 2 ** (attempt - 1)
                )
                attempt += 1
                continue
            self._check(response, what)
            return response

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        registry = self.ref.registry
        if status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            if "insufficient_scope" in challenge:
                raise self._insufficient_scope(challenge)
            who = f" as {self.credentials.username}" if self.credentials else ""
            raise BuildError(
                f"registry {registry} refused the credentials{who} for {self.ref.repository} "
                "(wrong username or password?)"
            )
        if status == 403:
            raise BuildError(
                f"registry {registry} denied {self.actions} access to {self.ref.repository}: "
                "the account lacks permission for this repository"
            )

    def _insufficient_scope(self, challenge: str) -> BuildError:
        """The error for a token that does not grant what a request needs: the repository
        and actions the registry asked for (its challenge's scope), else ours."""
        scope = dict(_CHALLENGE_PARAM.findall(challenge)).get("scope", "")
        kind, _, rest = scope.partition(":")
        repository, _, actions = rest.rpartition(":")
        if kind != "repository" or not repository:
            repository, actions = self.ref.repository, self.actions
        who = f" as {self.credentials.username}" if self.credentials else " anonymously"
        return BuildError(
            f"registry {self.ref.registry} refused {actions} access to repository {repository}"
            f"{who} (insufficient_scope): the account lacks permission for it"
        )

    def _authenticate(self, challenge: str) -> None:
        scheme, _, params_text = challenge.partition(" ")
        registry = self.ref.registry
        if scheme.lower() == "basic":
            if not self.credentials:
                raise BuildError(
                    f"registry {registry} needs credentials for {self.ref.repository}: run `docker "
                    "login`, or set BP_REGISTRY_USERNAME and BP_REGISTRY_PASSWORD"
                )
            self.authorization = _basic(self.credentials)
            return
        if scheme.lower() != "bearer":
            raise BuildError(f"registry {registry} asks for unsupported auth scheme {scheme!r}")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        realm = params.pop("realm", None)
        if not realm:
            raise BuildError(f"registry {registry} sent a bearer challenge without a realm")
        params.pop("error", None)
        # The scope we need, and the one the challenge names when it is of another
        # repository (a mount reads from there): both in one token.
        ours = f"repository:{self.ref.repository}:{self.actions}"
        theirs = params.pop("scope", ours)
        same = theirs.startswith(f"repository:{self.ref.repository}:")
        scopes = [ours] if same else [ours, theirs]
        try:
            if self.credentials and self.credentials.identity_token:
                # Docker's OAuth2 flow: the refresh token is traded for an access token.
                form = {
                    **params,
                    "scope": " ".join(scopes),
                    "grant_type": "refresh_token",
                    "refresh_token": self.credentials.identity_token,
                    "client_id": "python-buildpacks",
                }
                response = self.http.post(realm, data=form)
            else:
                headers = {"Authorization": _basic(self.credentials)} if self.credentials else {}
                response = self.http.get(realm, params={**params, "scope": scopes}, headers=headers)
        except httpx.HTTPError as e:
            raise BuildError(f"cannot reach the token service of {registry}: {e}") from None
        if response.status_code in (401, 403):
            who = f" as {self.credentials.username}" if self.credentials else " anonymously"
            raise BuildError(
                f"the token service of {registry} refused {self.actions} access to "
                f"{self.ref.repository}{who}"
            )
        if response.status_code != 200:
            raise BuildError(
                f"the token service of {registry} answered HTTP {response.status_code}"
            )
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise BuildError(f"the token service of {registry} returned no token")
        self.authorization = f"Bearer {token}"

    # -- pull -----------------------------------------------------------------------------

    def manifest(self, identifier: str) -> tuple[bytes, str]:
        """The raw manifest or index for a tag or digest, and its digest (verified)."""
        what = f"manifest of {self.ref.repository}:{identifier}"
        response = self.request(
            "GET", f"{self.base}/manifests/{identifier}", {"Accept": ACCEPT}, what=what
        )
        if response.status_code == 404:
            raise BuildError(
                f"image not found: {self.ref.registry}/{self.ref.repository}:{identifier}"
            )
        if response.status_code != 200:
            raise BuildError(
                f"registry {self.ref.registry} answered HTTP {response.status_code} for the {what}"
            )
        data = response.content
        digest = sha256_digest(data)
        if identifier.startswith("sha256:") and digest != identifier:
            raise BuildError(
                f"manifest of {self.ref.repository}@{identifier} has content digest {digest}"
            )
        return data, digest

    def blob_into(
        self, store: BlobStore, descriptor: Descriptor, transfers: Transfers | None = None
    ) -> None:
        """Download a blob into the store unless it is there; its digest is verified."""
        if store.has(descriptor.digest):
            return
        what = f"blob {descriptor.digest} of {self.ref}"
        for attempt in range(1, self.options.attempts + 1):
            response = self.request(
                "GET", f"{self.base}/blobs/{descriptor.digest}", stream=True, what=what
            )
            try:
                if response.status_code != 200:
                    raise BuildError(
                        f"registry {self.ref.registry} answered HTTP "
                        f"{response.status_code} for {what}"
                    )
                if transfers is None:
                    store.put_stream(response.iter_bytes(CHUNK), descriptor.digest, what)
                else:
                    with transfers.blob(
                        "Pulled", descriptor.digest[:19], descriptor.size
                    ) as advance:
                        store.put_stream(
                            _counted(response.iter_bytes(CHUNK), advance), descriptor.digest, what
                        )
                return
            except httpx.TransportError as e:
                if attempt == self.options.attempts:
                    raise BuildError(f"download of {what} failed: {e}") from None
            finally:
                response.close()

    # -- push -----------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        response = self.request("HEAD", f"{self.base}/blobs/{digest}", what=f"HEAD blob {digest}")
        return response.status_code == 200

    def mount(self, digest: str, source_repository: str) -> bool:
        """Ask the registry to link a blob from another repository; True if it did."""
        response = self.request(
            "POST",
            f"{self.base}/blobs/uploads/?mount={digest}&from={source_repository}",
            what=f"mount of {digest}",
        )
        if response.status_code == 201:
            return True
        location = response.headers.get("Location")
        if response.status_code == 202 and location:
            # The registry started an upload instead; cancel it, the caller uploads.
            self.request("DELETE", urljoin(self.base + "/", location), what="cancel upload")
        return False

    def upload(
        self, digest: str, size: int, content: Path | bytes, advance: Callable[[int], None]
    ) -> None:
        """Upload one blob: open an upload session, then one monolithic PUT. A PUT whose
        answer was lost is retried into a session the registry has already closed (404):
        the blob is then asked for, and uploaded in a new session only if it is not there."""
        what = f"upload of {digest} to {self.ref}"

        def body() -> Iterator[bytes] | bytes:
            if isinstance(content, bytes):
                return content
            return _read_file(content, advance)

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        for session in (1, 2):
            started = self.request("POST", f"{self.base}/blobs/uploads/", what=what)
            location = started.headers.get("Location")
            if started.status_code != 202 or not location:
                raise BuildError(
                    f"registry {self.ref.registry} answered HTTP {started.status_code} to {what}"
                )
            url = urljoin(self.base + "/", location)
            url += ("&" if "?" in url else "?") + f"digest={digest}"
            done = self.request("PUT", url, headers, body=body, what=what)
            if done.status_code == 201 or self.has_blob(digest):
                return
            if done.status_code != 404 or session == 2:
                break
        raise BuildError(f"registry {self.ref.registry} answered HTTP {done.status_code} to {what}")

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> str:
        what = f"manifest {self.ref.repository}:{tag}"
        response = self.request(
            "PUT",
            f"{self.base}/manifests/{tag}",
            {"Content-Type": media_type},
            body=lambda: data,
            what=what,
        )
        if response.status_code not in (200, 201):
            raise BuildError(
                f"registry {self.ref.registry} answered HTTP {response.status_code} to {what}"
            )
        digest = sha256_digest(data)
        echoed = response.headers.get("Docker-Content-Digest")
        if echoed and echoed != digest:
            raise BuildError(
                f"registry {self.ref.registry} stored {what} as {echoed}, expected {digest}"
            )
        return digest


def _basic(credentials: Credentials | None) -> str:
    assert credentials is not None
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _counted(chunks: Iterator[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in chunks:
        advance(len(chunk))
        yield chunk


def _read_file(path: Path, advance: Callable[[int], None]) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            advance(len(chunk))
            yield chunk


@contextmanager
def registry_source(
    ref: Reference,
    platform: Platform,
    store: BlobStore,
    options: RegistryOptions,
    transfers: Transfers,
) -> Iterator[ImageSource]:
    """The image at ``ref``: manifest and config now, layers when asked for."""
    client = RegistryClient(ref, options)
    try:
        data, digest = client.manifest(ref.identifier)
        parsed = json.loads(data)
        if parsed.get("mediaType") in INDEX_TYPES or "manifests" in parsed:
            chosen = select_platform(parsed, platform, str(ref))
            data, digest = client.manifest(chosen.digest)
        store.put_bytes(data)
        yield source_from_manifest(
            data, digest, lambda d: client.blob_into(store, d, transfers), store, str(ref)
        )
    finally:
        client.close()


def registry_index(ref: Reference, options: RegistryOptions) -> tuple[dict, str] | None:
    """The image index at ``ref`` and its digest; None when ``ref`` is one image."""
    client = RegistryClient(ref, options)
    try:
        data, digest = client.manifest(ref.identifier)
    finally:
        client.close()
    parsed = json.loads(data)
    is_index = parsed.get("mediaType") in INDEX_TYPES or "manifests" in parsed
    return (parsed, digest) if is_index else None


def pull(
    ref: Reference,
    platform: Platform,
    store: BlobStore,
    options: RegistryOptions,
    transfers: Transfers,
) -> Image:
    """Pull an image (manifest, config, layers) into the blob store."""
    with registry_source(ref, platform, store, options, transfers) as source:
        return source.image()


def _blobs(image: Image) -> list[tuple[Descriptor, Path | bytes]]:
    return [
        *((layer.descriptor, layer.path) for layer in image.layers),
        (image.config_descriptor(), image.config_bytes()),
    ]


def push(
    artifact: Artifact,
    targets: list[Reference],
    options: RegistryOptions,
    transfers: Transfers,
    mount_sources: Sequence[Reference] = (),
) -> str:
    """Push an image or index under every target reference; returns its digest. Each
    blob is asked for (HEAD) once per repository and uploaded only when missing there (a
    layer several platforms share, once), or mounted from a repository of the same registry
    that has it; an index's manifests go up by digest before the index."""
    digest = artifact.digest()
    index = isinstance(artifact, Index)
    pushed: list[Reference] = []
    for ref in targets:
        client = RegistryClient(ref, options, actions="pull,push")
        try:
            sources = [
                r.repository
                for r in [*pushed, *mount_sources]
                if r.registry == ref.registry and r.repository != ref.repository
            ]
            there: set[str] = set()
            for image in images_of(artifact):
                for descriptor, content in _blobs(image):
                    if descriptor.digest in there:
                        continue
                    there.add(descriptor.digest)
                    _put_blob(client, descriptor, content, sources, transfers)
                if index:
                    client.put_manifest(image.digest(), image.manifest_bytes(), OCI_MANIFEST)
            stored = client.put_manifest(
                ref.identifier, artifact.manifest_bytes(), OCI_INDEX if index else OCI_MANIFEST
            )
            if stored != digest:
                raise BuildError(f"pushed manifest digest {stored} differs from {digest}")
            pushed.append(ref)
        finally:
            client.close()
    return digest


def _put_blob(
    client: RegistryClient,
    descriptor: Descriptor,
    content: Path | bytes,
    sources: list[str],
    transfers: Transfers,
) -> None:
    """Make sure the registry has a blob: there already, mounted, else uploaded."""
    if client.has_blob(descriptor.digest):
        return
    if any(client.mount(descriptor.digest, source) for source in dict.fromkeys(sources)):
        transfers.log(f"Mounted {descriptor.digest[:19]} from another repository")
        return
    with transfers.blob("Pushed", descriptor.digest[:19], descriptor.size) as advance:
        client.upload(descriptor.digest, descriptor.size, content, advance)


class RegistrySink:
    """Pushes to ``targets`` (the image reference and its tags), mounting blobs from
    ``mount_sources`` (the base's repository) when the registry is the same; logs
    ``<verb> REGISTRY/REPOSITORY:TAG@DIGEST`` per target, and writes the digest to
    ``digest_file`` (beside the archive, for scripts) when given."""

    def __init__(
        self,
        targets: list[Reference],
        options: RegistryOptions,
        mount_sources: Sequence[Reference] = (),
        digest_file: Path | None = None,
        verb: str = "Pushed",
    ) -> None:
        self.targets = targets
        self.options = options
        self.mount_sources = mount_sources
        self.digest_file = digest_file
        self.verb = verb

    def write(self, artifact: Artifact, log: Callable[[str], None]) -> str:
        digest = push(artifact, self.targets, self.options, Transfers(log), self.mount_sources)
        if self.digest_file is not None:
            write_atomic(self.digest_file, digest + "\n")
        for target in self.targets:
            log(f"{self.verb} {target.registry}/{target.repository}:{target.identifier}@{digest}")
        return digest
