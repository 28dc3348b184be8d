"""A PEP 517 backend wrapping ``setuptools.build_meta`` (image support comes with issue 5)."""
