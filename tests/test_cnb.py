"""The typed CNB labels: encoded as the lifecycle's Go structs are, and decoded as strictly
as Go's ``encoding/json`` (types always; unknown and missing fields with ``strict``)."""

from __future__ import annotations

import json

import pytest

from buildpacks import cnb

TOP = "sha256:" + "a" * 64
DIGEST = "sha256:" + "b" * 64


def test_layers_metadata_round_trips_with_go_field_names_and_omitempty():
    run = cnb.run_image_for_rebase("python:3.12-slim", TOP, DIGEST)
    meta = cnb.LayersMetadata(
        app=[cnb.LayerMetadata("sha256:app")],
        sbom=cnb.LayerMetadata("sha256:sbom"),
        buildpacks=[
            cnb.BuildpackLayers(
                "bp/a", "1.0", {"venv": cnb.BuildpackLayer("sha256:v", {"k": 1}, False, True)}
            )
        ],
        process_types=cnb.LayerMetadata("sha256:p"),
        run_image=run,
        stack=run.to_stack(),
    )
    data = json.loads(cnb.encode(meta))
    assert list(data) == [
        "app", "sbom", "buildpacks", "config", "launcher", "process-types", "runImage", "stack"
    ]  # fmt: skip
    assert data["runImage"] == {
        "topLayer": TOP,
        "reference": f"index.docker.io/library/python@{DIGEST}",
        "image": "python:3.12-slim",
    }  # mirrors is omitempty
    assert data["stack"] == {"runImage": {"image": "python:3.12-slim"}}
    assert data["config"] == {"sha": ""} and data["launcher"] == {"sha": ""}
    assert data["buildpacks"][0]["layers"]["venv"] == {
        "sha": "sha256:v", "data": {"k": 1}, "build": False, "launch": True, "cache": False
    }  # fmt: skip
    assert cnb.decode(cnb.LayersMetadata, cnb.encode(meta), strict=True) == meta


def test_build_metadata_for_platform_0_13():
    build = cnb.BuildMetadata(
        buildpacks=[cnb.GroupElement("bp/a", "1.0", "https://x.invalid")],
        processes=[cnb.Process("web", ("/bin/sh", "-c", "serve"), [], True, buildpack_id="bp/a")],
        buildpack_default_process_type="web",
    )
    data = json.loads(cnb.encode(build))
    assert "bom" not in data and "extensions" not in data  # omitted from platform API 0.9
    assert data["launcher"] == {"version": "", "source": {"git": {"repository": "", "commit": ""}}}
    assert data["processes"] == [
        {
            "type": "web",
            "command": ["/bin/sh", "-c", "serve"],
            "args": [],
            "direct": True,
            "buildpackID": "bp/a",
        }
    ]
    assert data["buildpacks"] == [{"id": "bp/a", "version": "1.0", "homepage": "https://x.invalid"}]
    decoded = cnb.decode(cnb.BuildMetadata, cnb.encode(build), strict=True)
    assert decoded == build and decoded.default_process() == build.processes[0]


def test_project_metadata_is_an_empty_object_without_vcs():
    assert cnb.encode(cnb.ProjectMetadata()) == "{}"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"runImage": {"topLayer": 3}}', "runImage.topLayer must be a string, not number"),
        ('{"app": {"sha": "x"}}', "app must be an array, not object"),
        ('{"buildpacks": [{"layers": []}]}', "buildpacks[0].layers must be an object, not array"),
        ('{"buildpacks": [{"layers": {"v": {"launch": "yes"}}}]}', "launch must be a boolean"),
        ("[]", "must be an object, not array"),
        ("{", "not JSON"),
    ],
)
def test_wrong_types_are_refused_as_go_refuses_them(text, error):
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        cnb.decode(cnb.LayersMetadata, text)


def test_strict_refuses_unknown_and_missing_fields_lenient_takes_zero_values():
    with pytest.raises(ValueError, match="unknown field"):
        cnb.decode(cnb.LayerMetadata, '{"sha": "x", "size": 1}', strict=True)
    full = json.loads(cnb.encode(cnb.LayersMetadata(run_image=cnb.RunImageForRebase(TOP, DIGEST))))
    del full["runImage"]["reference"]
    with pytest.raises(ValueError, match=r"runImage\.reference is missing"):
        cnb.decode(cnb.LayersMetadata, json.dumps(full), strict=True)
    assert cnb.decode(cnb.LayersMetadata, json.dumps(full)).run_image.reference == ""
    lenient = cnb.decode(cnb.LayersMetadata, '{"runImage": {"topLayer": "x"}, "extra": 1}')
    assert lenient.run_image.top_layer == "x" and lenient.app == [] and lenient.sbom is None


def test_labels_written_by_older_platforms_decode():
    # Platform API < 0.10 wrote a process's command as one string; null is Go's nil slice.
    build = cnb.decode(
        cnb.BuildMetadata,
        '{"bom": null, "buildpacks": [], "launcher": {"version": "0.17.0", "source": {}},'
        '"processes": [{"type": "web", "command": "serve", "args": null, "direct": false,'
        '"default": true, "buildpackID": "x"}]}',
    )
    process = build.processes[0]
    assert process.command == ("serve",) and process.args == []
    assert build.default_process() == process


@pytest.mark.parametrize(
    ("spec", "image", "reference"),
    [
        ("python:3.12-slim", "python:3.12-slim", "index.docker.io/library/python@"),
        ("localhost:5000/base/debian:bookworm", "localhost:5000/base/debian:bookworm",
         "localhost:5000/base/debian@"),
        ("oci-layout:/root/.cache/testbed/debian-python:bookworm", "debian-python:bookworm",
         "debian-python@"),
        ("oci-archive:/tmp/bases/my-base.tar", "my-base", "my-base@"),
        ("debian-packages:bookworm", "debian-packages:bookworm", "debian-packages@"),
    ],
)  # fmt: skip
def test_run_image_names_registry_and_local_bases(spec, image, reference):
    run = cnb.run_image_for_rebase(spec, TOP, DIGEST)
    assert run.image == image and run.reference == reference + DIGEST
    assert "/root" not in cnb.encode(run) and "/tmp" not in cnb.encode(run)
