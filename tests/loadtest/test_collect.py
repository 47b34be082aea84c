"""Measurements from workers to the master without locust: batches, clocks, tallies, losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagelab.loadtest.collect import Collector, RowBatcher
from sagelab.loadtest.generators import read_roster, worker_report
from sagelab.loadtest.settings import UserSettings, bundled_speech, is_loopback
from sagelab.loadtest.summary import measure, read_raw
from sagelab.loadtest.worker import parse_master


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_rows_travel_in_batches_and_land_on_the_masters_clock(tmp_path: Path) -> None:
    worker_clock, master_clock = Clock(50.0), Clock(1_000_000.0)  # unrelated clocks
    batcher = RowBatcher("gen1", clock=worker_clock)
    batcher.write(1, "connect", 5.0)
    worker_clock.t = 50.4
    batcher.write(1, "first_audio", 510.0)
    batcher.write(1, "first_audio", float("nan"), "no reply audio within 10 s")
    worker_clock.t = 51.0
    collector = Collector(tmp_path, clock=master_clock)
    collector.joined("node-a")
    assert collector.receive("node-a", batcher.take(cpu_percent=12.0)) == 3
    worker_clock.t, master_clock.t = 52.0, 1_000_002.0
    batcher.write(1, "close", 2000.0, code=1000, by="client")
    collector.receive("node-a", batcher.take(cpu_percent=20.0, final=True))
    collector.close()

    rows = [json.loads(line) for line in (tmp_path / "raw-1.jsonl").read_text().splitlines()]
    # Measured 0.6 s and 0.2 s before the batch left: placed that long before it arrived.
    assert [round(r["t"] - 1_000_000.0, 3) for r in rows] == [-1.0, -0.6, -0.6, 2.0]
    assert [r["value_ms"] for r in rows] == [5.0, 510.0, None, 2000.0]
    assert rows[2]["error"] == "no reply audio within 10 s" and not rows[2]["ok"]
    assert rows[3]["code"] == 1000 and rows[3]["w"] == 1
    rec = collector.workers["node-a"]
    assert rec.complete and rec.name == "gen1" and rec.rows == 4 and rec.batches == 2
    assert rec.tally == {"connect": 1, "first_audio": 2, "close": 1}
    assert rec.failures == {"first_audio": 1}
    # The merged figures are what the worker counted.
    summary = measure(read_raw([tmp_path / "raw-1.jsonl"]))
    assert summary["metrics"]["first_audio"]["n"] == 1
    assert summary["metrics"]["first_audio"]["failures"] == 1
    assert summary["close_codes"] == {"1000": 1}


def test_after_the_last_batch_nothing_is_counted_twice_or_silently() -> None:
    batcher = RowBatcher("gen1")
    batcher.write(1, "connect", 5.0)
    last = batcher.take(final=True)
    assert last["final"] and last["tally"] == {"connect": 1}
    batcher.write(1, "close", 10.0)  # a straggler after the worker reported
    assert batcher.pending() == 0 and batcher.dropped == 1
    assert batcher.own_summary()["rows"] == 1
    assert batcher.own_summary()["dropped_after_last_batch"] == 1


def test_a_worker_that_never_sent_its_last_batch_is_lost(tmp_path: Path) -> None:
    clock = Clock(100.0)
    collector = Collector(tmp_path, clock=clock)
    done, lost = RowBatcher("gen1"), RowBatcher("gen2")
    collector.joined("a")
    collector.joined("b")
    for batcher in (done, lost):
        batcher.write(1, "connect", 5.0)
        batcher.write(1, "send_lateness", 1.0)
    collector.receive("a", done.take(cpu_percent=10.0))
    collector.receive("b", lost.take(cpu_percent=95.0))
    lost.take()  # batch 2 never arrives
    lost.write(1, "send_lateness", 250.0)
    clock.t = 103.0
    collector.receive("b", lost.take(cpu_percent=97.0))
    collector.receive("b", lost.take(cpu_percent=99.0))
    clock.t = 107.0
    collector.missing("b")
    collector.receive("a", done.take(cpu_percent=12.0, final=True))
    collector.close()
    assert [r.client_id for r in collector.incomplete()] == ["b"]
    assert collector.workers["b"].missing_batches == 1
    collector.write_roster(tmp_path / "workers.json")

    roster = read_roster(tmp_path / "workers.json")
    raw = read_raw(sorted(tmp_path.glob("raw-*.jsonl")))
    report = worker_report(roster, raw, t0=100.0)
    assert report["workers_lost"] == ["gen2"]
    gen1, gen2 = report["workers"]
    assert gen1["complete"] and gen1["rows_match"] and gen1["rows"] == 2
    assert not gen2["complete"] and gen2["rows_match"] is None
    assert gen2["lost_after_s"] == 7.0 and gen2["missing_batches"] == 1
    assert gen2["cpu_percent"]["p95"] >= 90
    assert report["generator_bottleneck"] == [
        "worker gen2: CPU p95 99 % of its core",
        "worker gen2: send lateness p99 248 ms",
    ]


def test_a_worker_whose_tally_disagrees_with_what_arrived_is_caught(tmp_path: Path) -> None:
    collector = Collector(tmp_path)
    batcher = RowBatcher("gen1")
    batcher.write(1, "connect", 5.0)
    batcher.take()  # lost on the way
    batcher.write(1, "close", 5.0)
    collector.receive("a", batcher.take(final=True))
    collector.close()
    roster = [collector.workers["a"].as_dict()]
    report = worker_report(roster, read_raw([tmp_path / "raw-1.jsonl"]), t0=0.0)
    assert report["workers"][0]["rows_match"] is False
    assert report["workers"][0]["missing_batches"] == 1


def test_settings_reach_a_worker_without_paths_of_the_master(tmp_path: Path) -> None:
    env = {"SAGELAB_AGENT": "support", "SAGELAB_GAP_MS": "900", "SAGELAB_SIGNED_URL": "1",
           "SAGELAB_API_KEY": "sk-master"}  # fmt: skip
    bundled = UserSettings.from_env(env)
    message = bundled.to_message(include_key=True)
    assert message["speech_bytes"] is None  # every worker has the bundled recordings
    on_worker = UserSettings.from_message(message, env={})
    assert on_worker.agent == "support" and on_worker.gap_ms == 900 and on_worker.signed_url
    assert on_worker.api_key == "sk-master"
    assert on_worker.audio() == bundled_speech("goforward.wav")

    own = tmp_path / "mine.wav"
    own.write_bytes(bundled_speech("search.wav"))
    custom = UserSettings.from_env({**env, "SAGELAB_SPEECH": str(own)})
    message = custom.to_message(include_key=False)
    own.unlink()  # the worker never opens the master's file
    on_worker = UserSettings.from_message(message, env={"ELEVENLABS_API_KEY": "sk-worker"})
    assert on_worker.audio() == bundled_speech("search.wav")
    assert on_worker.api_key == "sk-worker"  # not sent across machines: its own


def test_only_loopback_masters_share_the_api_key() -> None:
    assert is_loopback("127.0.0.5") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("*") and not is_loopback("10.0.0.2")


def test_unknown_bundled_speech_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        bundled_speech("../agents.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.2", ("10.0.0.2", 5557)),
        ("master.lan:6000", ("master.lan", 6000)),
        ("[::1]:5600", ("::1", 5600)),
        ("::1", ("::1", 5557)),
    ],
)
def test_parse_master(text: str, expected: tuple[str, int]) -> None:
    assert parse_master(text) == expected


@pytest.mark.parametrize(("text", "message"), [(":5557", "needs a host"), ("h:x", "a number")])
def test_parse_master_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_master(text)
