"""TTRL, label-free RL: the majority vote by the math verifier's equivalence on hand-made completions, its
rewards and statistics (computed by hand), answer-less data accepted only in this mode, and a 2-step run on
the tiny model with a task file that has no answers."""

import json
import math
import sys
from pathlib import Path

import pytest

import tasks
import verifiers
from rlvr import config, preflight
from rlvr.sampling import vote_metrics
from rlvr.tracking import read_metrics
from rlvr.train_config import TrainConfig
from rlvr.trainer import train
from verifiers.ttrl import VoteStats, majority_vote, vote_verdicts

sys.path.insert(0, str(Path(__file__).parent))
import train_plugins  # noqa: E402


@pytest.fixture(scope="module")
def math_verifier():
    checker = verifiers.get("math")
    yield checker
    checker.close()


HALF_THREE_WAYS = ["so it is \\boxed{1/2}", "The answer is 0.5", "\\boxed{\\frac{1}{2}}"]


def test_equivalent_forms_vote_together(math_verifier):
    completions = [*HALF_THREE_WAYS, "\\boxed{3}", "\\boxed{3.0}", "I give up"]
    vote = majority_vote(math_verifier, completions)
    assert vote.cluster_of == [0, 0, 0, 1, 1, None]
    assert vote.sizes == [3, 2] and vote.label == "1/2"
    assert vote.agreement == pytest.approx(3 / 6)  # the abstaining sample counts in the denominator
    # entropy over the 5 answers: -(3/5 ln 3/5 + 2/5 ln 2/5)
    assert vote.entropy == pytest.approx(0.6730116670092565, abs=1e-12)
    assert math.isclose(vote.entropy, -(0.6 * math.log(0.6) + 0.4 * math.log(0.4)))


def test_a_tie_goes_to_the_answer_seen_first(math_verifier):
    vote = majority_vote(math_verifier, ["\\boxed{7}", "\\boxed{2}", "\\boxed{2}", "\\boxed{7}"])
    assert vote.sizes == [2, 2] and vote.label == "7"


def test_rewards_agree_with_the_majority_and_gold_only_enters_the_statistics(math_verifier):
    completions = ["\\boxed{4}", "\\boxed{5}", "it is 4", "\\boxed{4.0}", "\\boxed{5}"]
    verdicts = vote_verdicts(math_verifier, completions, reference="5", trained=3)
    assert [v.reward for v in verdicts] == [1.0, 0.0, 1.0]  # the majority (3 votes for 4) pays, gold 5 does not
    assert [v.reason for v in verdicts] == ["agrees with the majority", "disagrees with the majority", "agrees with the majority"]
    stats = [v.details["vote"] for v in verdicts]
    assert all(s.agreement == pytest.approx(3 / 5) and s.label_correct is False for s in stats)
    assert [s.gold_correct for s in stats] == [False, True, False]
    unlabelled = vote_verdicts(math_verifier, completions, reference=None)
    assert [v.reward for v in unlabelled] == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert all(v.details["vote"].label_correct is None and v.details["vote"].gold_correct is None for v in unlabelled)


def test_no_answer_at_all_pays_nothing(math_verifier):
    verdicts = vote_verdicts(math_verifier, ["I give up", "<think> never finished"], reference=None)
    assert [v.reward for v in verdicts] == [0.0, 0.0]
    assert verdicts[0].details["vote"].agreement == 0.0 and verdicts[0].details["vote"].entropy == 0.0


def test_a_verifier_without_answers_is_refused():
    with pytest.raises(TypeError, match="TTRL votes on final answers"):
        vote_verdicts(train_plugins.EvenLength(), ["ab", "abc"])


def test_vote_metrics_average_over_trained_samples():
    votes = [VoteStats(0.5, 0.7, True, True), VoteStats(0.5, 0.7, True, False), VoteStats(1.0, 0.0, None, None), None]
    metrics = vote_metrics(votes)
    assert metrics["ttrl/agreement"] == pytest.approx(2.0 / 3)
    assert metrics["ttrl/vote_entropy"] == pytest.approx(1.4 / 3)
    assert metrics["ttrl/label_accuracy"] == 1.0 and metrics["ttrl/gold_accuracy"] == 0.5
    assert vote_metrics([None, None]) == {}


def write_problems(path: Path, count: int = 8) -> Path:
    path.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?"}) + "\n" for i in range(count)))
    return path


def test_answer_less_rows_load_only_when_answers_are_not_required(tmp_path):
    data = write_problems(tmp_path / "problems.jsonl", 3)
    with pytest.raises(tasks.TaskDataError, match="no gold answer"):
        tasks.load("jsonl", path=data)
    examples = tasks.load("jsonl", path=data, require_answers=False)
    assert [(e.problem, e.reference) for e in examples] == [(f"What is {i} + {i}?", None) for i in range(3)]
    with_gold = tmp_path / "gold.jsonl"
    with_gold.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    assert tasks.load("jsonl", path=with_gold, require_answers=False)[0].reference == "2"


def ttrl_overrides(model_dir, data: Path, output_dir: Path, votes: int = 6) -> list[str]:
    return [*train_plugins.overrides(model_dir, output_dir, steps=2), "data.task=jsonl", f"data.path={data}", "data.limit=null",
            f"verifier.ttrl_votes={votes}", "algorithm.dynamic_sampling=false", "verifier.extraction=lenient"]


def test_preflight_checks_the_votes(tiny_model_dir, tmp_path):
    cfg = config.load(TrainConfig, None, ttrl_overrides(tiny_model_dir, tmp_path / "p.jsonl", tmp_path / "run", votes=3))
    assert any("ttrl_votes=3 must be 0 (off) or at least rollout.group_size=4" in p for p in preflight.config_problems(cfg))
    remax = config.load(TrainConfig, None, ttrl_overrides(tiny_model_dir, tmp_path / "p.jsonl", tmp_path / "run")
                        + ["algorithm.estimator=remax"])
    assert any("would vote alone" in p for p in preflight.config_problems(remax))


@pytest.mark.slow
def test_ttrl_trains_on_problems_without_answers(tiny_model_dir, tmp_path):
    data = write_problems(tmp_path / "problems.jsonl")
    cfg = config.load(TrainConfig, None, ttrl_overrides(tiny_model_dir, data, tmp_path / "run"))
    assert not preflight.config_problems(cfg)
    final = train(cfg)
    assert final.name == "step-000002"
    rows = read_metrics(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= row["ttrl/agreement"] <= 1.0 and row["ttrl/vote_entropy"] >= 0.0
        assert "ttrl/label_accuracy" not in row  # no gold answers in the file
        assert row["reward/mean"] == row["accuracy"]  # the reward is 1 exactly for a sample that agrees with the label
        assert math.isfinite(row["loss"])
    assert any(row["ttrl/vote_entropy"] > 0 and row["grad_norm"] > 0 for row in rows)  # the votes split: a signal to learn


def test_a_task_whose_verifier_cannot_vote_stops_before_training(tiny_model_dir, tmp_path):
    cfg = config.load(TrainConfig, None, [*train_plugins.overrides(tiny_model_dir, tmp_path / "run", steps=1),
                                          "verifier.ttrl_votes=4"])  # the even-length verifier extracts no answer
    with pytest.raises(TypeError, match="cannot extract one; use a math task"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
