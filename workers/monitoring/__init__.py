"""Monitoring on SQS: Flower and Celery events where kombu's SQS transport falls short
(:mod:`.compat_sqs`), the app's monitoring wiring (:mod:`.monitor`), task events
gathered per second (:mod:`.eventflush`), masked events (:mod:`.maskedevents`) and
Flower's own configuration (:mod:`.flowerconf`)."""
