"""Locust glue for sagelab's users: settings out to workers, measurements back, a clean end.

Imported by :mod:`sagelab.loadtest.locustfile` inside locust's own processes only (locust
gevent-patches the standard library on import). What it does depends on the process's role:

* **master**: answers each worker's ``sagelab_hello`` with the run's
  :class:`~sagelab.loadtest.settings.UserSettings` (``sagelab_setup``), writes every batch of
  rows it receives (``sagelab_rows``) with a
  :class:`~sagelab.loadtest.collect.Collector`, notes workers whose heartbeat stopped, and ends
  the run itself (:func:`finish`): locust's own ``--run-time`` end sends workers ``quit`` and
  gives them half a second, too little for a worker to hang up its sessions and send its last
  batch. :func:`finish` instead stops the workers and waits for them to report (a worker sends
  its last batch before it reports "stopped", on the same ordered connection), then waits a
  little for any last batch still missing, writes ``workers.json`` and quits. The run time
  comes from ``SAGELAB_RUN_TIME_S``, the capacity search's shape calls :func:`finish` when its
  staircase is over, and ``SIGUSR1`` (sent by ``sagelab loadtest`` when a step broke the
  budget) ends it early the same way.
* **worker**: waits for its settings before any user speaks, hands users a
  :class:`~sagelab.loadtest.collect.RowBatcher` and sends a batch about once a second with its
  own CPU use, the last one as locust stops its users; at exit it writes its own tally to
  ``SAGELAB_WORKER_DIR`` (if set), so what it measured can be checked against what arrived.
* **standalone** (``locust -f …/locustfile.py`` without ``--master``/``--worker``): settings
  from the environment and raw rows to ``SAGELAB_RAW_LOG`` (a file), as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Protocol

import gevent
import psutil
from gevent.event import Event
from gevent.lock import RLock
from locust import events
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from sagelab.loadtest.collect import Collector, RowBatcher
from sagelab.loadtest.measure import RawLog
from sagelab.loadtest.settings import UserSettings, is_loopback

#: A worker sends what its users measured this often.
BATCH_S = 1.0
#: After every worker reported "stopped", how long the master waits for a last batch that is
#: still on its way before it calls the worker lost.
FINAL_WAIT_S = 10.0
HELLO_MSG = "sagelab_hello"
SETUP_MSG = "sagelab_setup"
ROWS_MSG = "sagelab_rows"


class Sink(Protocol):
    def write(
        self, user: int, metric: str, value_ms: float | None, error: str | None = None, **extra: Any
    ) -> None: ...


class _State:
    """This process's role and its parts; one per locust process."""

    def __init__(self) -> None:
        self.settings = UserSettings.from_env()
        self.ready = Event()
        self.sink: Sink = RawLog(None)
        self.batcher: RowBatcher | None = None
        self.collector: Collector | None = None
        self.environment: Environment | None = None
        self.finishing = False
        self.send_lock = RLock()
        self.on_settings: list[Any] = []  # callbacks: settings changed (rebuild microphones)
        self.process = psutil.Process()


STATE = _State()


def settings() -> UserSettings:
    return STATE.settings


def sink() -> Sink:
    return STATE.sink


def wait_until_ready(timeout: float) -> bool:
    """A worker's users wait here for the master's settings (standalone: already set)."""
    return bool(STATE.ready.wait(timeout))


def note_local_address(address: str) -> None:
    """The address this worker's sessions left from (what the target saw)."""
    if STATE.batcher is not None:
        STATE.batcher.local_addresses.add(address)


@events.init.add_listener
def _init(environment: Environment, runner: Any = None, **_kw: Any) -> None:
    STATE.environment = environment
    runner = runner or environment.runner
    if isinstance(runner, MasterRunner):
        _init_master(environment, runner)
    elif isinstance(runner, WorkerRunner):
        _init_worker(environment, runner)
    else:
        STATE.sink = RawLog.from_env()
        _apply(STATE.settings)


def _apply(settings: UserSettings) -> None:
    STATE.settings = settings
    for callback in STATE.on_settings:
        callback(settings)
    STATE.ready.set()


# -- master ----------------------------------------------------------------------------------


def _init_master(environment: Environment, runner: MasterRunner) -> None:
    run_dir = Path(os.environ.get("SAGELAB_RUN_DIR", "."))
    collector = STATE.collector = Collector(run_dir)
    options = environment.parsed_options
    bind = getattr(options, "master_bind_host", "*") if options is not None else "*"
    include_key = is_loopback(bind)
    setup = STATE.settings.to_message(include_key=include_key)

    def on_connect(client_id: str, **_kw: Any) -> None:
        collector.joined(client_id)  # counted even if it never says hello

    def on_hello(environment: Environment, msg: Any, **_kw: Any) -> None:
        rec = collector.joined(msg.node_id)
        rec.name = str((msg.data or {}).get("name") or rec.name)
        runner.send_message(SETUP_MSG, {"w": rec.w, "settings": setup}, client_id=msg.node_id)

    def on_rows(environment: Environment, msg: Any, **_kw: Any) -> None:
        collector.receive(msg.node_id, msg.data)

    environment.events.worker_connect.add_listener(on_connect)
    runner.register_message(HELLO_MSG, on_hello)
    runner.register_message(ROWS_MSG, on_rows)

    def watch_heartbeats() -> None:
        while True:
            gevent.sleep(1.0)
            for client in list(runner.clients.values()):
                if client.state == STATE_MISSING:
                    collector.missing(client.id)

    gevent.spawn(watch_heartbeats)

    run_time = os.environ.get("SAGELAB_RUN_TIME_S")
    if run_time:

        @environment.events.test_start.add_listener
        def _start_clock(**_kw: Any) -> None:
            gevent.spawn_later(float(run_time), finish, "run time over")

    if hasattr(signal, "SIGUSR1"):
        gevent.signal_handler(signal.SIGUSR1, lambda: gevent.spawn(finish, "stopped early"))

    @environment.events.quitting.add_listener
    def _write_roster(**_kw: Any) -> None:
        collector.close()
        collector.write_roster(run_dir / "workers.json")


def finish(reason: str) -> None:
    """End the run on the master so that every live worker's last batch arrives first."""
    env, collector = STATE.environment, STATE.collector
    if STATE.finishing or env is None or collector is None or env.runner is None:
        return
    STATE.finishing = True
    runner = env.runner
    assert isinstance(runner, MasterRunner)
    print(f"sagelab: {reason}; stopping the workers", flush=True)
    runner.stop()  # "stop" to every worker, then waits until they all reported stopped
    deadline = time.monotonic() + FINAL_WAIT_S
    while time.monotonic() < deadline and any(r.missing_at is None for r in collector.incomplete()):
        gevent.sleep(0.2)
    collector.write_roster(collector.run_dir / "workers.json")
    runner.quit()


# -- worker ----------------------------------------------------------------------------------


def _init_worker(environment: Environment, runner: WorkerRunner) -> None:
    name = os.environ.get("SAGELAB_WORKER_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    batcher = STATE.batcher = RowBatcher(name)
    STATE.sink = batcher
    STATE.process.cpu_percent(None)  # the first call only starts the measurement

    def on_setup(environment: Environment, msg: Any, **_kw: Any) -> None:
        _apply(UserSettings.from_message(msg.data["settings"]))

    runner.register_message(SETUP_MSG, on_setup)
    # Asked for, not pushed at connect: locust connects a worker before its locustfile's
    # init listeners run, so a message pushed then could arrive before anyone listens.
    runner.send_message(HELLO_MSG, {"name": name})

    def send(final: bool = False) -> None:
        with STATE.send_lock:
            if batcher.final_sent:
                return
            batch = batcher.take(cpu_percent=STATE.process.cpu_percent(None), final=final)
            runner.send_message(ROWS_MSG, batch)

    def sender() -> None:
        while not batcher.final_sent:
            gevent.sleep(BATCH_S)
            try:
                send()
            except Exception as exc:  # a lost master: locust itself reports and reconnects
                print(f"sagelab: could not send measurements: {exc}", flush=True)

    gevent.spawn(sender)

    @environment.events.test_stop.add_listener
    def _last_batch(**_kw: Any) -> None:
        send(final=True)

    @environment.events.quitting.add_listener
    def _own_tally(**_kw: Any) -> None:
        with contextlib.suppress(Exception):  # e.g. the master is gone (Ctrl-C everywhere)
            send(final=True)
        folder = os.environ.get("SAGELAB_WORKER_DIR")
        if folder:
            path = Path(folder) / f"worker-{os.getpid()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(batcher.own_summary(), indent=1))
