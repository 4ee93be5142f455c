"""The ``local`` launch backend: a model process per file on this machine
(:mod:`.backend`), the state directory and the processes it knows (:mod:`.runs`),
starting and stopping one (:mod:`.processes`), their run records (:mod:`.runrecords`),
the warm pool (:mod:`.warm`), the machine's model slots (:mod:`.capacity`) and the
reaper (:mod:`.reaper`)."""
