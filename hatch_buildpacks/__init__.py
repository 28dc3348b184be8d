"""The Hatch build target ``image``: ``hatch build -t image``."""
