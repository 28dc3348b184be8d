"""A plain WSGI service: GET / answers with the distribution's name and version."""

import json
import os
from importlib.metadata import version


def application(environ, start_response):
    body = json.dumps({"name": "setup-app", "version": version("setup-app")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def main():
    from waitress import serve

    serve(application, host="0.0.0.0", port=int(os.environ.get("PORT", "8080")))
