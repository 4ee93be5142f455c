"""The worker side: the Celery app, model launch backends, scoring, the CLI and
the embedded local stack."""
