"""The worker side: the Celery app, model launch backends, scoring, the CLI and
the embedded local stack.

``celery`` and ``kombu`` are imported here, by whichever thread imports
:mod:`workers` first (the main thread of every entry point: the CLI, the local
stack, the worker), before any of them starts a thread. Both packages replace
their own module object in ``sys.modules`` at the end of their import (lazy
attribute modules); a second thread that imports one of them while the first
import is still running gets the original, half-built module object, waits for
the import to finish and then keeps using that stale object:
``ImportError: cannot import name 'Celery' from 'celery'``. Once imported here,
every later import in any thread is a plain ``sys.modules`` lookup. (Only the
package objects are created: ``celery.Celery`` itself still loads on first use,
under the normal per-module import locks, which are thread-safe.)
"""

import celery
import kombu

__all__ = ["celery", "kombu"]
