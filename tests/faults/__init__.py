"""Fault injection: real processes (Redis Stack, gunicorn workers, scanners) killed while real
clients (SDK clients and runners, websockets) work, then exact checks of what was stored."""
