"""WSGI entry point: ``gunicorn -k gthread wsgi:app`` (or ``chronos serve``)."""

from chronos import create_app

app = create_app()
