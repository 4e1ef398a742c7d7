"""The metric sinks run for real: TensorBoard event files and a Weights & Biases run in offline mode,
each read back with its own library's reader and compared with what was logged."""

import io
import json
import struct
import time

import pytest

from rlvr.tracking import MetricsLogger, read_metrics

LOGGED = {1: {"reward/mean": 0.25, "loss": -0.5}, 2: {"reward/mean": 0.5, "loss": -1.0}, 3: {"reward/mean": 0.75, "loss": -1.5}}


def log_three_steps(logger: MetricsLogger) -> None:
    for step, metrics in LOGGED.items():
        logger.log(step, metrics, note="no update: nothing to learn" if step == 2 else None)
    logger.close()


def test_progress_line_and_metrics_file_carry_the_note(tmp_path):
    stream = io.StringIO()
    log_three_steps(MetricsLogger(tmp_path, 3, stream=stream))
    lines = stream.getvalue().splitlines()
    assert lines[1].startswith("step 2/3  reward 0.500  loss -1.0000  ETA ")
    assert lines[1].endswith("  [no update: nothing to learn]") and "[" not in lines[0] + lines[2]
    assert [row.get("note") for row in read_metrics(tmp_path)] == [None, "no update: nothing to learn", None]


def test_tensorboard_events_hold_every_logged_scalar(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator", reason="TensorBoard is not installed (the `track` extra)")
    log_three_steps(MetricsLogger(tmp_path, 3, tensorboard=True, stream=io.StringIO()))
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["loss", "reward/mean"]
    for key in ("loss", "reward/mean"):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(step, m[key]) for step, m in LOGGED.items()]


def wandb_history(run_file) -> list[dict]:
    """The history records of a ``.wandb`` run file (a LevelDB-style log of protobuf ``Record``s: a 7-byte
    file header, then per record a 7-byte header of CRC, length and type; this small file is one block)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B" and len(data) < 32768, "not a one-block wandb run file"
    position, rows = 7, []
    while position + 7 <= len(data):
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:  # the zero padding at the end of the block
            break
        assert kind == 1, "a record split over blocks"
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data[position + 7 : position + 7 + length])
        position += 7 + length
        if record.WhichOneof("record_type") == "history":
            items = {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item}
            rows.append({key: value for key, value in items.items() if not key.startswith("_") or key == "_step"})
    return rows


@pytest.mark.slow
def test_wandb_offline_run_records_the_config_and_every_step(tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed (the `track` extra)")
    config = {"optim": {"lr": 3e-4}, "rollout": {"group_size": 8}}
    log_three_steps(MetricsLogger(tmp_path, 3, wandb_project="rlvr-test", wandb_mode="offline", config=config,
                                  stream=io.StringIO()))
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    expected = [{"_step": step, **metrics} for step, metrics in LOGGED.items()]
    deadline = time.monotonic() + 60  # wandb's service process finishes writing the file after finish() returns
    while wandb_history(run_file) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert wandb_history(run_file) == expected
    assert b"rlvr-test" in run_file.read_bytes() and b"group_size" in run_file.read_bytes()
