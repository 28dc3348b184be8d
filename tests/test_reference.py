"""Docker-style image references."""

import pytest

from buildpacks.oci.reference import Reference, normalize_repository, normalize_tag


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag"),
    [
        ("python:3.12-slim", "docker.io", "library/python", "3.12-slim"),
        ("user/app", "docker.io", "user/app", "latest"),
        ("127.0.0.1:5000/ns/app:1.0", "127.0.0.1:5000", "ns/app", "1.0"),
        ("localhost/app:dev", "localhost", "app", "dev"),
        ("ghcr.io/org/app", "ghcr.io", "org/app", "latest"),
        ("index.docker.io/python", "docker.io", "library/python", "latest"),
        ("registry-1.docker.io/python:3.12", "docker.io", "library/python", "3.12"),
        ("index.docker.io/user/app:1", "docker.io", "user/app", "1"),
    ],
)
def test_parse(text, registry, repository, tag):
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)


def test_digest_reference_and_loopback():
    ref = Reference.parse("127.0.0.1:5000/app@sha256:" + "a" * 64)
    assert ref.identifier == "sha256:" + "a" * 64
    assert ref.is_loopback
    assert not Reference.parse("ghcr.io/a/b").is_loopback


@pytest.mark.parametrize("text", ["App:1", "app:-bad", "app@sha256:xyz"])
def test_malformed(text):
    with pytest.raises(ValueError):
        Reference.parse(text)


def test_normalize():
    assert normalize_repository("My_Cool..Service") == "my-cool-service"
    assert normalize_tag("1.0+local.2") == "1.0-local.2"


def test_digests_other_than_sha256_are_refused_by_name():
    with pytest.raises(ValueError, match="sha512 digests are not supported; pin the image by its"):
        Reference.parse("python@sha512:" + "a" * 128)
    with pytest.raises(ValueError, match="digest must look like sha256:<64 hex digits>"):
        Reference.parse("python@sha256:abc")
