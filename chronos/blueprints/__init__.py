"""HTTP blueprints. Views are thin: validate, call the backend, serialise."""
