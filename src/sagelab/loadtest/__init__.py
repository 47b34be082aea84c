"""Load tests with locust: many concurrent voice sessions streaming real-time speech.

The locust users live in :mod:`sagelab.loadtest.locustfile`, shipped in the package and
handed to locust by path (locust loads them in its own processes, because it gevent-patches
the standard library); everything that needs neither locust nor gevent lives beside it, so it
is unit-tested and reused:

* :mod:`~sagelab.loadtest.mic`: what users say, encoded once (PCM16 chunks, or one WebM/Opus
  stream per relay session);
* :mod:`~sagelab.loadtest.settings`: what users do, sent from the master to each worker, and
  the recordings shipped in ``speech/``;
* :mod:`~sagelab.loadtest.wire`: endpoints, signed URLs, reading frames without decoding audio;
* :mod:`~sagelab.loadtest.measure`: the metrics, per turn and per frame;
* :mod:`~sagelab.loadtest.collect`: raw measurements from workers to the master in batches;
* :mod:`~sagelab.loadtest.summary`: raw logs → percentiles, error rate, stutter; the budget;
* :mod:`~sagelab.loadtest.generators`: each worker's rows, CPU and lateness; lost workers;
* :mod:`~sagelab.loadtest.steps`: the capacity search's staircase and per-step verdicts;
* :mod:`~sagelab.loadtest.plots`: latency, stutter, errors and server load over time;
* :mod:`~sagelab.loadtest.locustproc`: locust as child processes (a master and workers);
* :mod:`~sagelab.loadtest.serverconf`: an agents file with auth on, for ``--signed-url``;
* :mod:`~sagelab.loadtest.runner`: ``sagelab loadtest`` (the master) end to end;
* :mod:`~sagelab.loadtest.worker`: ``sagelab loadtest-worker`` on any machine.

Inside locust only: :mod:`~sagelab.loadtest.locustplugin` (settings out, measurements back,
an orderly end) and :mod:`~sagelab.loadtest.step_shape`.
"""
