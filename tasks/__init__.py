"""The pipeline's shared core: settings, the job, S3 I/O, outcomes and the chain
builder (importable by the Lambda: no worker or Kubernetes code here). The
Celery task bodies live in :mod:`tasks.steps`, loaded by ``workers.app``."""
