"""HTTP endpoints and the production entry point."""

import os
import signal
import sys
from importlib.metadata import version

from flask import Flask, jsonify

NAME = "example-service"
app = Flask(__name__)


@app.get("/")
def about():
    return jsonify(name=NAME, version=version(NAME))


@app.get("/healthz")
def health():
    return "ok"


def main() -> None:
    from waitress import serve

    # As PID 1 in a container, SIGTERM is ignored unless handled: stop promptly on it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = int(os.environ.get("PORT", "8080"))
    print(f"{NAME} listening on port {port}", flush=True)
    serve(app, host="0.0.0.0", port=port)
