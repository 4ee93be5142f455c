"""The Celery tasks of the pipeline (loaded by ``workers.app`` by name; the Lambda
never imports them). They stand on :mod:`workers` (the worker process) and
:mod:`scorefleet` (the shared core)."""
