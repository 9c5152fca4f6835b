"""Gunicorn configuration for a checkout: ``gunicorn -c gunicorn.conf.py wsgi:app``.

The settings live in ``chronos/gunicorn_config.py`` (installed with the package, and what
``chronos serve`` uses), read from ``GUNICORN_*`` environment variables; see its docstring.
"""

from chronos.gunicorn_config import *  # noqa: F403
