"""Chronos: self-hosted job telemetry and analytics on Redis Stack."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

__version__ = "0.1.0.dev0"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings, the backend extension, error handling, browser hardening,
    blueprints (the JSON API, websockets, the dashboard), CLI.

    Settings come from ``CHRONOS_*`` environment variables (see ``chronos.config``), then
    ``test_config`` on top. No network I/O happens here: the backend connects on first use.
    """
    from chronos import config, http_errors, logs, prometheus, security
    from chronos.blueprints import analytics, api, dashboard, health, ingest, metrics, sockets
    from chronos.blueprints.settings import bp as settings_bp
    from chronos.cli import chronos_cli
    from chronos.extension import Chronos

    app = Flask(__name__)
    app.config.update(config.DEFAULTS)
    app.config.update(config.from_environ(os.environ))
    if test_config:
        app.config.update(test_config)

    data_dir = Path(app.config["CHRONOS_DATA_DIR"]).resolve()
    app.config["CHRONOS_DATA_DIR"] = str(data_dir)
    app.config["SECRET_KEY"] = app.config.get("CHRONOS_SECRET_KEY") or app.config.get(
        "SECRET_KEY"
    ) or config.secret_key(data_dir)
    app.config["MAX_CONTENT_LENGTH"] = app.config["CHRONOS_MAX_BODY_BYTES"]

    Chronos(app)
    logs.init_app(app)
    prometheus.init_app(app)
    http_errors.init_app(app)
    security.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(ingest.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(analytics.bp)
    app.register_blueprint(settings_bp)
    app.register_blueprint(sockets.bp)
    app.register_blueprint(dashboard.bp)
    app.cli.add_command(chronos_cli)
    return app
