"""The ``local`` launch backend: a model process per file on this machine
(:mod:`.backend`), the processes themselves (:mod:`.processes`) and their run records
(:mod:`.runrecords`)."""
