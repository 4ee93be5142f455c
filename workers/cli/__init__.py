"""The ``scorefleet`` command (:func:`workers.cli.main.main`): its verbs in :mod:`.main`,
the run views (``status``, ``runs``, ``sweep``) in :mod:`.runs`, and how a command finds
the running local stack's settings in :mod:`.stackenv`."""
