"""Integration tests: against moto (S3, SQS, SNS over HTTP) or the Kubernetes emulator, without the local stack."""
