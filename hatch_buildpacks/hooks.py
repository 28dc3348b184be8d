"""Registers the ``image`` builder with Hatch (entry-point group ``hatch``)."""

from hatchling.plugin import hookimpl

from hatch_buildpacks.builder import ImageBuilder


@hookimpl
def hatch_register_builder() -> type[ImageBuilder]:
    return ImageBuilder
