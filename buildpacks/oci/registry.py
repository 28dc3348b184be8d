"""The registry backend: pulling images over the OCI distribution API.

Anonymous and bearer-token access, the platform picked from an index, and every blob
(manifest, config, layers) checked against its digest before it is used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Image,
    Layer,
    Platform,
    sha256_digest,
)
from buildpacks.oci.reference import Reference

ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """One repository on one registry, with the token its challenges asked for."""

    def __init__(self, ref: Reference, *, timeout: float = 60.0) -> None:
        self.ref = ref
        scheme = "http" if ref.is_loopback else "https"
        self.base = f"{scheme}://{ref.api_host}/v2/{ref.repository}"
        self.http = httpx.Client(timeout=timeout, follow_redirects=True)
        self.token: str | None = None

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, url: str, headers: dict[str, str], stream: bool = False):
        if self.token:
            headers = {**headers, "Authorization": f"Bearer {self.token}"}
        try:
            request = self.http.build_request(method, url, headers=headers)
            response = self.http.send(request, stream=stream)
            if response.status_code == 401 and self.token is None:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                self.token = self._fetch_token(challenge)
                return self._send(method, url, headers, stream)
        except httpx.HTTPError as e:
            raise BuildError(f"cannot reach registry {self.ref.registry}: {e}") from None
        return response

    def _fetch_token(self, challenge: str) -> str:
        scheme, _, params_text = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise BuildError(
                f"registry {self.ref.registry} asks for credentials for {self.ref.repository}; "
                "only public images can be pulled anonymously"
            )
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        realm = params.pop("realm", None)
        if not realm:
            raise BuildError(
                f"registry {self.ref.registry} sent a bearer challenge without a realm"
            )
        params.setdefault("scope", f"repository:{self.ref.repository}:pull")
        try:
            response = self.http.get(realm, params=params)
        except httpx.HTTPError as e:
            raise BuildError(
                f"cannot reach the token service of {self.ref.registry}: {e}"
            ) from None
        if response.status_code != 200:
            raise BuildError(
                f"the token service of {self.ref.registry} refused anonymous access to "
                f"{self.ref.repository} (HTTP {response.status_code})"
            )
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise BuildError(f"the token service of {self.ref.registry} returned no token")
        return token

    def manifest(self, identifier: str) -> tuple[bytes, str]:
        """The raw manifest or index for a tag or digest, and its digest (verified)."""
        response = self._send("GET", f"{self.base}/manifests/{identifier}", {"Accept": ACCEPT})
        if response.status_code == 404:
            raise BuildError(
                f"image not found: {self.ref.registry}/{self.ref.repository}:{identifier}"
            )
        if response.status_code != 200:
            raise BuildError(
                f"registry {self.ref.registry} answered HTTP {response.status_code} for the "
                f"manifest of {self.ref.repository}:{identifier}"
            )
        data = response.content
        digest = sha256_digest(data)
        if identifier.startswith("sha256:") and digest != identifier:
            raise BuildError(
                f"manifest of {self.ref.repository}@{identifier} has content digest {digest}"
            )
        return data, digest

    def blob_into(self, store: BlobStore, descriptor: Descriptor) -> None:
        """Download a blob into the store unless it is there; its digest is verified."""
        if store.has(descriptor.digest):
            return
        url = f"{self.base}/blobs/{descriptor.digest}"
        response = self._send("GET", url, {}, stream=True)
        try:
            if response.status_code != 200:
                raise BuildError(
                    f"registry {self.ref.registry} answered HTTP {response.status_code} "
                    f"for blob {descriptor.digest} of {self.ref.repository}"
                )
            what = f"blob {descriptor.digest} of {self.ref}"
            store.put_stream(response.iter_bytes(1 << 20), descriptor.digest, what)
        except httpx.HTTPError as e:
            raise BuildError(
                f"download of {descriptor.digest} from {self.ref.registry} failed: {e}"
            ) from None
        finally:
            response.close()


def select_platform(index: dict[str, Any], platform: Platform, what: str) -> Descriptor:
    """The manifest of an index that serves ``platform``."""
    offered = []
    for entry in index.get("manifests", []):
        spec = entry.get("platform") or {}
        if platform.matches(spec):
            return Descriptor.from_json(entry)
        if spec.get("os") and spec.get("os") != "unknown":
            offered.append(
                "/".join(
                    filter(None, (spec.get("os"), spec.get("architecture"), spec.get("variant")))
                )
            )
    raise BuildError(f"{what} has no image for {platform} (it has: {', '.join(offered) or 'none'})")


def image_from_manifest(
    manifest_bytes: bytes,
    manifest_digest: str,
    fetch: Callable[[Descriptor], None],
    store: BlobStore,
    reference: str,
) -> Image:
    """Build an ``Image`` from a manifest whose blobs ``fetch`` puts into ``store``."""
    manifest = json.loads(manifest_bytes)
    config_desc = Descriptor.from_json(manifest["config"])
    fetch(config_desc)
    config = json.loads(store.path(config_desc.digest).read_bytes())
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    layer_descs = [Descriptor.from_json(d) for d in manifest.get("layers", [])]
    if len(diff_ids) != len(layer_descs):
        raise BuildError(
            f"{reference}: config lists {len(diff_ids)} layers, manifest {len(layer_descs)}"
        )
    layers = []
    for desc, diff_id in zip(layer_descs, diff_ids, strict=True):
        fetch(desc)
        layers.append(Layer(desc, diff_id, store.path(desc.digest)))
    return Image(config, layers, reference=reference, manifest_digest=manifest_digest)


def pull(ref: Reference, platform: Platform, store: BlobStore) -> Image:
    """Pull an image (manifest, config, layers) into the blob store."""
    client = RegistryClient(ref)
    try:
        data, digest = client.manifest(ref.identifier)
        media_type = json.loads(data).get("mediaType")
        if media_type in INDEX_TYPES or "manifests" in json.loads(data):
            chosen = select_platform(json.loads(data), platform, str(ref))
            data, digest = client.manifest(chosen.digest)
        return image_from_manifest(
            data, digest, lambda d: client.blob_into(store, d), store, str(ref)
        )
    finally:
        client.close()
