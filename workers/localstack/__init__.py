"""The embedded local stack for development (``scorefleet up``): the stack itself
(:mod:`.stack`), the emulator side and the S3 -> Lambda bridge (:mod:`.aws`), the
example models' catalog (:mod:`.models`), the stack's state directory (:mod:`.state`),
the emulator launcher (:mod:`.emulator`) and the stand-in for AWS's Lambda Runtime
Interface Emulator, under which Lambda images' handlers run with ``awslambdaric``
(:mod:`.lambda_emulator`). Runtime code (the app, scoring, backends, tasks) never imports it."""
