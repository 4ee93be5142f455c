"""The worker process's health: the SQS heartbeat and run leases of a running step
(:mod:`.heartbeat`), the liveness probe (:mod:`.liveness`), Prometheus metrics
(:mod:`.metrics`) and the process's hardening (:mod:`.hardening`)."""
