"""Property-based tests (hypothesis): the algorithm functions give finite advantages and losses for any
finite rewards and log-probs and any group size that fits, and the math verifier takes any text (binary
junk, huge strings, odd Unicode) without raising and within its time bound."""

import math
import time

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import verifiers
from rlvr.algorithms import (
    ADVANTAGE_ESTIMATORS,
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    compute_advantages,
    compute_policy_loss,
    is_token_level,
    kl_penalty,
    policy_loss,
    shape_rewards,
    uses_greedy_baseline,
)

# The estimators whose baseline is the group's own rewards (remax takes a greedy sample's, gae a value model's).
GROUP_ESTIMATORS = [name for name in ADVANTAGE_ESTIMATORS.available() if not (uses_greedy_baseline(name) or is_token_level(name))]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
rewards_values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
logprob_values = st.floats(min_value=-30.0, max_value=0.0, allow_nan=False, width=32)


@st.composite
def grouped_rewards(draw, min_group=1):
    group_size = draw(st.integers(min_group, 16))
    groups = draw(st.integers(1, 8))
    values = draw(st.lists(st.one_of(rewards_values, st.sampled_from([0.0, 1.0])), min_size=group_size * groups,
                           max_size=group_size * groups))
    return torch.tensor(values), group_size


@pytest.mark.slow
@FAST
@given(data=grouped_rewards(min_group=2), estimator=st.sampled_from(GROUP_ESTIMATORS))
def test_advantages_are_finite_and_zero_for_flat_groups(data, estimator):
    rewards, group_size = data
    advantages = compute_advantages(rewards, group_size, estimator)
    assert advantages.shape == rewards.shape and bool(torch.isfinite(advantages).all())
    for group, values in zip(advantages.view(-1, group_size), rewards.view(-1, group_size)):
        if bool((values == values[0]).all()):
            assert bool((group == 0).all())


@pytest.mark.slow
@FAST
@given(count=st.integers(1, 64), group_size=st.integers(2, 16))
def test_a_batch_that_does_not_split_into_groups_is_a_clear_error(count, group_size):
    if count % group_size == 0:
        count += 1
    with pytest.raises(ValueError, match=f"do not split into groups of {group_size}"):
        compute_advantages(torch.zeros(count), group_size, "grpo")


@st.composite
def loss_batch(draw):
    rows, width = draw(st.integers(1, 6)), draw(st.integers(1, 12))
    cells = rows * width
    logprobs = torch.tensor(draw(st.lists(logprob_values, min_size=cells, max_size=cells))).view(rows, width)
    old = torch.tensor(draw(st.lists(logprob_values, min_size=cells, max_size=cells))).view(rows, width)
    mask = torch.tensor(draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=cells, max_size=cells))).view(rows, width)
    advantages = torch.tensor(draw(st.lists(st.floats(-100, 100, width=32), min_size=rows, max_size=rows)))
    return logprobs, old, advantages, mask


@pytest.mark.slow
@FAST
@given(batch=loss_batch(), agg=st.sampled_from(LOSS_AGGREGATIONS.available()),
       clip=st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 10.0)), dual_clip=st.one_of(st.none(), st.floats(1.01, 10.0)),
       kl=st.sampled_from(KL_ESTIMATORS.available()))
def test_policy_loss_and_its_gradient_are_finite(batch, agg, clip, dual_clip, kl):
    logprobs, old, advantages, mask = batch
    logprobs = logprobs.clone().requires_grad_(True)
    loss, metrics = policy_loss(logprobs, old, advantages, mask, clip_low=clip[0], clip_high=clip[1],
                                dual_clip=dual_clip, agg=agg, norm_len=float(mask.shape[1]))
    loss.backward()
    assert math.isfinite(loss.item()) and bool(torch.isfinite(logprobs.grad).all())
    assert all(math.isfinite(value) for value in metrics.values())
    assert bool(torch.isfinite(kl_penalty(logprobs.detach(), old, kl)).all())


@pytest.mark.slow
@FAST
@given(batch=loss_batch(), agg=st.sampled_from(LOSS_AGGREGATIONS.available()),
       name=st.sampled_from([name for name in POLICY_LOSSES.available() if name != "ppo"]))
def test_every_other_policy_loss_and_its_gradient_are_finite(batch, agg, name):
    logprobs, old, advantages, mask = batch
    logprobs = logprobs.clone().requires_grad_(True)
    loss, metrics = compute_policy_loss(name, logprobs, old, advantages, mask, agg=agg, norm_len=float(mask.shape[1]))
    loss.backward()
    assert math.isfinite(loss.item()) and bool(torch.isfinite(logprobs.grad).all())
    assert all(math.isfinite(value) for value in metrics.values())


@pytest.mark.slow
@FAST
@given(data=grouped_rewards(min_group=1), max_len=st.integers(2, 64), seed=st.integers(0, 2**16),
       overlong_buffer=st.integers(0, 1), kimi_coef=st.floats(0, 1), target_coef=st.floats(0, 1),
       overlong_filter=st.booleans())
def test_shaped_rewards_are_finite(data, max_len, seed, overlong_buffer, kimi_coef, target_coef, overlong_filter):
    rewards, group_size = data
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, rewards.shape, generator=generator).float()
    shaped, mask = shape_rewards(rewards, lengths, lengths >= max_len, group_size, max_len=max_len,
                                 overlong_buffer=overlong_buffer * (max_len // 2), kimi_coef=kimi_coef,
                                 target_length=max_len // 2, target_coef=target_coef, overlong_filter=overlong_filter)
    assert shaped.shape == rewards.shape == mask.shape and bool(torch.isfinite(shaped).all())


# --- the math verifier on hostile text

TIME_LIMIT = 1.0
BOUND = TIME_LIMIT + 20.0  # plus a fresh worker's start-up after a timeout, on a loaded 2-core machine

junk_text = st.one_of(
    st.binary(max_size=2000).map(lambda raw: raw.decode("latin-1")),  # any bytes, control characters and NULs
    st.text(alphabet=st.characters(codec="utf-8"), max_size=500),  # any Unicode, surrogates excluded
    st.text(alphabet=st.sampled_from("\\{}^_$()[]0123456789.,/+-*= frac sqrt boxed \u200b\u202e\ufeff"), max_size=400),
    st.builds(lambda unit, count: unit * count, st.sampled_from(["9", "\\boxed{", "{", "(1+", "10^", "x^x^"]),
              st.integers(1, 100_000)),  # huge and deeply nested
)


@pytest.fixture(scope="module")
def math_verifier():
    return verifiers.get("math", time_limit=TIME_LIMIT)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(completion=junk_text,  # a gold answer is never blank: tasks refuse such rows, the verifier calls it an error
       reference=st.one_of(st.sampled_from(["42", "\\frac{1}{2}", "x^2+1", "(1, 2)"]), junk_text.filter(str.strip)))
@example(completion="9" * 1_000_000, reference="42")  # a megabyte of digits
@example(completion="\\boxed{" * 50_000 + "1" + "}" * 50_000, reference="1")  # 50,000 nested boxes
@example(completion="The answer is \\boxed{" + "(1+" * 20_000 + "1" + ")" * 20_000 + "}", reference="20001")
@example(completion=bytes(range(256)).decode("latin-1") * 100, reference="\x00")
@example(completion="\\boxed{10^{10^{10^{10}}}}", reference="10^{10^{10^{10}}}+1")  # a tower no one can compute
def test_the_math_verifier_takes_any_text_within_its_time_bound(math_verifier, completion, reference):
    started = time.monotonic()
    (verdict,) = math_verifier.verify_batch([completion], [reference], workers=1)
    elapsed = time.monotonic() - started
    assert isinstance(verdict, verifiers.Verdict) and verdict.reward in (0.0, 1.0)
    assert verdict.reason != "error", verdict.details
    assert elapsed < BOUND, (elapsed, verdict.reason)


# --- malformed data rows: refused with the row number (row 2, between two good rows)

GOOD_MATH = {"problem": "What is 1+1?", "answer": "2"}
GOOD_MBPP = {"task_id": 1, "text": "Write f.", "code": "def f(): return 1", "test_list": ["assert f() == 1"]}
BAD_ROWS = [
    ("math500", {"answer": "3"}, "row 2: no problem column (looked for 'problem', 'question'"),
    ("math500", {"problem": "", "answer": "3"}, "row 2: column 'problem' (problem) is empty"),
    ("math500", {"problem": "  \n\t", "answer": "3"}, "row 2: column 'problem' (problem) is empty"),
    ("math500", {"problem": None, "answer": "3"}, "row 2: column 'problem' (problem) is empty"),
    ("math500", {"problem": 7, "answer": "3"}, "row 2: problem should be text, got int"),
    ("math500", {"problem": True, "answer": "3"}, "row 2: problem should be text, got bool"),
    ("math500", {"problem": {"x": 1}, "answer": "3"}, "row 2: problem should be text, got dict"),
    ("math500", {"problem": ["a"], "answer": "3"}, "row 2: the problem is a list but not of chat messages"),
    ("math500", {"problem": [{"role": "user", "content": " "}], "answer": "3"}, "row 2: the problem's user message is empty"),
    ("math500", {"problem": "What?", "answer": {"a": 1}}, "row 2: the answer should be text or a number (or a list of them), got dict"),
    ("math500", {"problem": "What?", "answer": False}, "row 2: the answer should be text or a number (or a list of them), got bool"),
    ("math500", {"problem": "What?", "answer": [[1], 2]}, "row 2: the answer should be text or a number (or a list of them), got list"),
    ("gsm8k", {"question": "What?", "answer": {"a": 1}}, "row 2: the answer should be text or a number"),
    ("jsonl", {"problem": "   ", "answer": "3"}, "row 2: column 'problem' (problem) is empty"),
    ("mbpp", {"task_id": 2, "text": "Write f."}, "row 2: no tests column (looked for 'test_list'"),
    ("mbpp", {"task_id": 2, "text": "Write f.", "test_list": "assert f() == 1"}, "row 2: test_list should be a list of assert lines"),
    ("mbpp", {"task_id": 2, "text": "Write f.", "test_list": []}, "row 2: column 'test_list' (tests) is empty"),
    ("mbpp", {"task_id": 2, "text": "Write f.", "test_list": [1, 2]}, "row 2: test_list should be a list of assert lines"),
    ("mbpp", {"task_id": 2, "text": " ", "test_list": ["assert f() == 1"]}, "row 2: column 'text' (problem) is empty"),
]


@pytest.mark.parametrize(("task", "row", "message"), BAD_ROWS, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(BAD_ROWS)])
def test_a_malformed_row_is_refused_with_its_row_number(tmp_path, task, row, message):
    import json

    import tasks
    from tasks import TaskDataError

    good = GOOD_MBPP if task == "mbpp" else ({"question": "What is 1+1?", "answer": "#### 2"} if task == "gsm8k" else GOOD_MATH)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (good, row, good)))
    with pytest.raises(TaskDataError) as error:
        tasks.load(task, path=path)
    assert f"{path}, {message}" in str(error.value)
    assert error.value.row_number == 2
