"""The ``local`` launch backend: a model "image" is a command run as a process.

The model catalog maps an image name to a command template with a ``{port}``
placeholder (``{python}`` is this interpreter, ``{host}`` the loopback
address)::

    {"scorefleet/iris:1": {"command": "{python} serve.py --host {host} --port {port}"}}

Each run gets its own process on a free loopback port, in its own session (so the
whole process group can be stopped), with a minimal environment (no AWS_* or
SCOREFLEET_* variable: the worker's credentials are not passed on) and a private,
fresh HOME and TMPDIR of its own (so ``~/.aws`` is not the worker's). The worker
itself is not dumpable (workers.process.hardening), so the model cannot read its
environment through ``/proc``. This is no security boundary: the model runs as the
worker's user (docs/security.md). A record per run under ``STATE_DIR/local/<run id>/``
(pid, start time, port, log file) lets any worker on the machine tear it down and
the reaper find what a killed worker left behind. The model runs only once its
record is written: it starts held (``processes.held_process``), and a worker killed
before it released the model leaves a process that exits without running it.

Warm mode (``SCOREFLEET_WARM_IDLE_SECONDS`` > 0): a healthy model is parked under
``STATE_DIR/local/_warm/<image>/`` whenever no file needs it: by the launch step
as soon as it is ready (:meth:`LocalBackend.park`: no model waits idle, held for a
file whose score is still in the queue), and again right after its file is scored
(:meth:`LocalBackend.release`). The score step claims a parked model of its image by
renaming its directory (atomic: two claimants cannot get the same model) and skips
the start; a launch that finds one parked starts nothing. Any worker on the machine
may claim any parked model. Parked models idle longer than the limit are stopped.

Its parts, along their seams: :mod:`.runs` (the state directory: run directories,
records, HOMEs, the processes), :mod:`.processes` (starting, describing and stopping
one), :mod:`.warm` (the warm pool), :mod:`.capacity` (``SCOREFLEET_MAX_LIVE_MODELS``),
:mod:`.reaper` (what dead workers left behind) and this module (the backend: launch,
the queries, release and teardown).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from scorefleet.errors import ModelError, ModelUnavailable
from scorefleet.job import Job
from scorefleet.settings import ModelSpec
from workers.backends.base import Endpoint
from workers.backends.local import reaper
from workers.backends.local.capacity import Capacity
from workers.backends.local.config import command_of
from workers.backends.local.processes import (
    HOST,
    KILLED_FROM_OUTSIDE,
    describe_exit,
    find_command,
    free_port,
    held_process,
    listens_on,
    model_environment,
    tail,
)
from workers.backends.local.runrecords import spec_of, write_record
from workers.backends.local.runs import Runs
from workers.backends.local.warm import WarmPool
from workers.scoring.protocols import probe, protocol_for

log = logging.getLogger(__name__)


class LocalBackend:
    name = "local"

    def __init__(
        self,
        state_dir: Path,
        launch_timeout: float,
        log_lines: int = 40,
        *,
        warm_idle: float = 0.0,
        warm_max: int = 4,
        max_live: int = 0,
        model_aws: Mapping[str, str] | None = None,
        served: tuple[str, ...] = (),
    ) -> None:
        #: the images (and ``prefix*`` patterns) the catalog has a command for
        self.served = served
        self.launch_timeout = launch_timeout
        #: SCOREFLEET_LOCAL_MODEL_AWS: the models' own AWS access (catalog local_aws)
        self.model_aws = dict(model_aws or {})
        self.log_lines = log_lines
        self.runs = Runs(state_dir)
        self.warm = WarmPool(self.runs, warm_idle, warm_max)
        self.capacity = Capacity(self.runs, self.warm, max_live)

    # ------------------------------------------------------------------ launch
    def launch(self, job: Job, spec: ModelSpec, replica: int = 0) -> Endpoint:
        runs = self.runs
        runs.reap_children()
        earlier = runs.record(job.run_id, replica)
        running = runs.process(earlier)
        if earlier and running:
            log.info("adopting the model process %s of this run", earlier["pid"])
            return self._wait_ready(job, earlier, running, replica)
        if earlier:
            runs.remove(job.run_id, replica)  # a dead one from an earlier attempt
        command = command_of(spec)
        if not command:
            raise ModelError(
                f"no model command for image {spec.image!r} on this machine: the model "
                "catalog (SCOREFLEET_MODEL_CATALOG; `scorefleet up --catalog FILE` on the local "
                f'stack) has no entry for it. Add one, e.g. {{"{spec.image}": {{"command": '
                '"<command that serves the model> --port {port}"}}, or tag the file with an '
                "image the catalog lists"
                + (f" ({', '.join(sorted(self.served))})" if self.served else "")
            )
        model_aws = self._model_aws(spec)  # before anything is made for the model
        if self.warm.enabled:
            self.warm.expire()
            warm = self.warm.claim_or_wait(job, spec, self.capacity.room, replica)
            if warm is not None:
                return warm
        run_dir = runs.dir(job.run_id, replica)
        with self.capacity.lock():  # count and reserve a slot in one go
            if not self.capacity.make_room(spec.image):
                # a model of this image parked since the look above: take it
                warm = self.warm.claim(job, spec, replica)
                if warm is not None:
                    return warm
                raise self.capacity.full()
            run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = shlex.split(command.format(port=port, python=sys.executable, host=HOST))
        home = runs.new_home(job.run_id)
        env = model_environment(os.environ, spec.extra.get("env") or {}, home, model_aws)
        cwd = spec.extra.get("cwd") or None
        rec = {
            "port": port,
            "image": spec.image,
            # readiness is the model's protocol's: kept for the warm pool's checks
            "protocol": spec.protocol,
            "protocol_options": protocol_for(spec.protocol).raw_options(spec.extra),
            "started": time.time(),
            "source": str(job.source),
            "launch_timeout": float(spec.extra.get("launch_timeout", self.launch_timeout)),
            "home": home.name,
            "replica": replica,
            # what ran: on this machine an "image" is its catalog entry's command
            "image_id": spec.entry_id,
        }
        write_record(run_dir, rec)  # a worker killed from here on leaves its HOME found
        try:
            argv[0] = find_command(argv[0], env, cwd)
            with (
                (run_dir / "model.log").open("ab") as out,
                held_process(argv, env=env, cwd=cwd, log=out) as popen,
            ):
                runs.track(popen)
                proc = psutil.Process(popen.pid)
                rec.update(pid=popen.pid, create_time=proc.create_time())
                # the model runs only once its record (pid, start time) is written
                write_record(run_dir, rec)
        except OSError as exc:
            runs.remove_home(rec)
            raise ModelError(f"could not start the model command {argv[0]!r}: {exc}") from exc
        which = f" (replica {replica})" if replica else ""
        log.info("started model %s%s as pid %d on port %d", spec.image, which, popen.pid, port)
        return self._wait_ready(job, rec, proc, replica)

    def _model_aws(self, spec: ModelSpec) -> Mapping[str, str] | None:
        """The models' own AWS access, for an entry that says ``local_aws``."""
        if not spec.extra.get("local_aws"):
            return None
        if not self.model_aws:
            raise ModelError(
                f"the catalog entry of {spec.image!r} says local_aws, but the worker has no "
                "SCOREFLEET_LOCAL_MODEL_AWS (the AWS endpoint and credentials of the models "
                "themselves; `scorefleet up` sets it for its emulator)"
            )
        return self.model_aws

    def _wait_ready(
        self, job: Job, rec: dict[str, Any], proc: psutil.Process, replica: int
    ) -> Endpoint:
        url = f"http://{HOST}:{rec['port']}"
        spec = spec_of(rec)
        readiness = protocol_for(spec.protocol).describe_readiness(spec)
        limit = float(rec.get("launch_timeout", self.launch_timeout))
        deadline = time.monotonic() + limit
        delay = 0.02
        #: the port answered, but from a process not the model's: another process took
        #: the port between its choice and the model's bind
        stranger = False
        while True:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                rc = self.runs.exit_code(int(rec["pid"]))
                message = f"the model exited{describe_exit(rc)} before it answered {readiness}"
                logs = self.logs(job, self.log_lines, replica)
                if stranger:
                    # most likely it could not bind its port: not the model's fault; a
                    # new launch (a new port) is retried
                    raise ModelUnavailable(
                        f"{message}; another process was listening on its port "
                        f"{rec['port']}, taken between the launch's choice and the model's "
                        "start (a new launch chooses another)",
                        model_logs=logs,
                    )
                if rc is not None and -rc in KILLED_FROM_OUTSIDE:
                    # killed by someone else (an operator, a node going away): a new
                    # launch may well work; retried, and an .error after the last try
                    raise ModelUnavailable(message, model_logs=logs)
                raise ModelError(message, model_logs=logs)
            if probe(url, spec, timeout=1.0):
                if not listens_on(proc, int(rec["port"])):
                    # an answer from whoever holds the port is not the model's: never
                    # score a file with another process's model
                    if not stranger:
                        log.warning(
                            "port %s answered %s, but not from the model (pid %s): "
                            "another process holds it",
                            rec["port"],
                            readiness,
                            rec["pid"],
                        )
                    stranger = True
                    if time.monotonic() > deadline:
                        logs = self.logs(job, self.log_lines, replica)
                        self.runs.remove(job.run_id, replica)  # so a new launch, a new port
                        raise ModelUnavailable(
                            f"the model's port {rec['port']} is held by another process: "
                            "the model never answered there itself (a new launch chooses "
                            "another port)",
                            model_logs=logs,
                        )
                    time.sleep(delay)
                    delay = min(delay * 1.5, 0.05)
                    continue
                handle = {"pid": rec["pid"], "port": rec["port"]}
                return Endpoint(
                    url=url,
                    handle={**handle, **({"replica": replica} if replica else {})},
                    image_id=rec.get("image_id") or None,
                )
            if time.monotonic() > deadline:
                raise ModelError(
                    f"the model did not answer {readiness} within {limit:g}s",
                    model_logs=self.logs(job, self.log_lines, replica),
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    # --------------------------------------------------------------- queries
    def endpoint(self, job: Job, replica: int = 0) -> str | None:
        """From the record of the run's replica (the port this backend picked), if its
        process runs."""
        rec = self.runs.record(job.run_id, replica)
        if rec is None or self.runs.process(rec) is None:
            return None
        return f"http://{HOST}:{int(rec['port'])}"

    def is_alive(self, job: Job, replica: int = 0) -> bool:
        return self.runs.process(self.runs.record(job.run_id, replica)) is not None

    def logs(self, job: Job, lines: int, replica: int = 0) -> str:
        return tail(self.runs.dir(job.run_id, replica) / "model.log", lines)

    def has_room(self, spec: ModelSpec) -> bool:
        """Could a launch of this image go ahead now (a free slot, or a warm model of
        it)? A cheap look, no lock: the launch itself decides for sure."""
        return self.capacity.has_room(spec)

    # -------------------------------------------------------------------- warm
    def has_parked(self, spec: ModelSpec) -> bool:
        """Warm mode: a model of this image is parked (any worker on this machine
        may claim it; whether it still answers is checked when it is claimed)."""
        return self.warm.parked(spec.image)

    def park(self, job: Job) -> bool:
        """Warm mode: the run's ready models into the pool now, each replica a
        parked model of its own (the launch step's hand-over; the score step claims
        models of the image from the pool). True when every one was parked."""
        if not self.warm.enabled:
            return False
        parked = [self.warm.park(job, i) for i in self.runs.replicas(job.run_id)]
        return bool(parked) and all(parked)

    def release(self, job: Job) -> bool:
        """Warm mode: park the run's model for the next file of its image now (or
        stop it if it cannot be kept), rather than at teardown."""
        if not self.warm.enabled:
            return False
        self.teardown(job)
        return True

    # -------------------------------------------------------------- teardown
    def teardown(self, job: Job) -> bool:
        """Stop the run's models (every replica it has here), or park them (warm
        mode, after a success)."""
        done = False
        keep = self.warm.enabled and job.failure is None and not job.skipped
        for replica in self.runs.replicas(job.run_id):
            if keep and self.warm.park(job, replica):
                done = True
                continue
            done = self.runs.remove(job.run_id, replica) or done
        if keep:
            self.warm.expire()
        return done

    def reap(self, max_age: float, is_finished: Callable[[str], bool]) -> list[str]:
        return reaper.reap(self.runs, self.warm, max_age, is_finished)

    def stop_all(self) -> list[str]:
        """Stop every model process this state directory knows (local stack shutdown)."""
        return self.warm.expire(idle=-1) + self.reap(0, lambda _run: True)
