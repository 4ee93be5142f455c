"""The Lambda: S3 notifications in, one Celery chain per new file out."""
