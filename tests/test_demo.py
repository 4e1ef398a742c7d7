"""A shortened `rlvr demo` end to end: every stage runs, the files are there, the report's numbers
are those of the two evaluations, and a second run skips the finished stages."""

import json
import re
import shutil
import subprocess
import sys

import pytest

SHORT = [
    "problems.sft_examples=300", "problems.eval_problems=12", "sft.steps=15", "rl.steps=2", "rl.prompts_per_step=4",
    "rl.group_size=4", "rl.max_new_tokens=24", "eval.n=2", "model.num_layers=2",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run([sys.executable, "-m", "rlvr", "demo", "--out", str(out), *SHORT],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out, result.stdout


def test_every_stage_ran_and_wrote_its_files(demo_run):
    out, stdout = demo_run
    for stage in ("model", "sft", "eval-base", "rl", "eval-final", "report"):
        assert f"] {stage} ..." in stdout
        assert (out / f".done-{stage}").is_file()
    for path in ("init/config.json", "base/model.safetensors", "final/model.safetensors", "rl/metrics.jsonl",
                 "eval-base/results.json", "eval-base/samples.jsonl", "eval-final/results.json", "report.md"):
        assert (out / path).is_file(), path
    assert not (out / "final" / "trainer_state.pt").exists()  # final is a plain model directory
    assert "step 2/2" in stdout  # progress lines of the RL stage


def test_report_numbers_are_those_of_the_evaluations(demo_run):
    out, _ = demo_run
    report = (out / "report.md").read_text()
    base = json.loads((out / "eval-base" / "results.json").read_text())["tasks"]["arithmetic"]
    final = json.loads((out / "eval-final" / "results.json").read_text())["tasks"]["arithmetic"]
    for metric in ("pass@1", "pass@2", "maj@2", "avg@2"):
        row = re.search(rf"^\| {re.escape(metric)} \| ([-\d.]+) \[.*?\] \| ([-\d.]+) \[.*?\] \| ([-+\d.]+) \|$", report, re.M)
        assert row, f"no row for {metric} in the report"
        assert float(row.group(1)) == pytest.approx(100 * base[metric], abs=0.05)
        assert float(row.group(2)) == pytest.approx(100 * final[metric], abs=0.05)
        assert float(row.group(3)) == pytest.approx(100 * (final[metric] - base[metric]), abs=0.1)
    assert base["num_problems"] == final["num_problems"] == 12


def test_plots_are_pngs_linked_from_the_report(demo_run):
    pytest.importorskip("matplotlib", reason="plots need the `plot` extra")
    out, _ = demo_run
    report = (out / "report.md").read_text()
    for name in ("reward_accuracy.png", "response_length.png", "pass_at_k.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in report


def test_running_again_skips_finished_stages(demo_run):
    out, _ = demo_run
    result = subprocess.run([sys.executable, "-m", "rlvr", "demo", "--out", str(out), *SHORT],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("done earlier, skipped") == 6


def test_stages_of_other_settings_or_other_code_are_never_reused(demo_run, tmp_path):
    out, _ = demo_run
    assert re.search(r"^Settings and code fingerprint: `[0-9a-f]{16}`", (out / "report.md").read_text(), re.M)
    other_settings = subprocess.run([sys.executable, "-m", "rlvr", "demo", "--out", str(out), *SHORT, "sft.steps=16"],
                                    capture_output=True, text=True, timeout=120)
    assert other_settings.returncode == 2
    assert f"{out} holds stages (model, sft, eval-base, rl, eval-final, report) done with other settings" in other_settings.stderr
    assert "done earlier, skipped" not in other_settings.stdout

    copy = tmp_path / "made-by-other-code"
    shutil.copytree(out, copy)
    (copy / ".fingerprint").write_text("0123456789abcdef\n")  # what a run of another version of the code left
    other_code = subprocess.run([sys.executable, "-m", "rlvr", "demo", "--out", str(copy), *SHORT],
                                capture_output=True, text=True, timeout=120)
    assert other_code.returncode == 2 and "(fingerprint 0123456789abcdef, now " in other_code.stderr
