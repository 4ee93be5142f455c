"""scorefleet's core, shared by every process: the job and its ids, S3 URIs, errors,
image references, redaction and log context, settings, storage (S3 I/O, run records,
outcomes, the ``.error`` document), the submission rules (tags -> job, validation),
what a worker re-checks in a task message, and the chain builder that names the
tasks with the Celery configuration both sides need.

It imports none of ``lambda_enqueue``, ``workers``, ``tasks`` or the kubernetes
client (import-linter holds it to that: ``make lint``), so the Lambda can load it.
"""

#: scorefleet's version (pyproject.toml reads it from here): every outcome's
#: provenance names it (scorefleet/provenance.py), the Lambda's too
__version__ = "0.1.0"
