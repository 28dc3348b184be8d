"""python-buildpacks: build OCI images of Python projects with the Cloud Native Buildpacks
lifecycle, in-process, with no Dockerfile and no daemon."""

__version__ = "0.1.0"
