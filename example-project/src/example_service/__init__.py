"""A small web service used to show python-buildpacks end to end."""
