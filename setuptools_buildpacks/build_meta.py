"""PEP 517 hooks: for now exactly those of ``setuptools.build_meta``, so projects can
already name this backend; building an image from ``-C image=true`` is still to come."""

from setuptools.build_meta import (  # noqa: F401  (re-exported PEP 517 hooks)
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_wheel,
)
