"""A WSGI application with no packaging at all: a requirements.txt and a Procfile."""

import json
import os


def application(environ, start_response):
    body = json.dumps({"name": "plain-app", "cwd": os.getcwd()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
