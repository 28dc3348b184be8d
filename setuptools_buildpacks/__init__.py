"""A PEP 517 backend wrapping ``setuptools.build_meta``: ``python -m build -C image=true``."""
