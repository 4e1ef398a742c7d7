"""The RL algorithms as small pure functions on tensors, registered by name.

Everything the trainer computes between "rewards came back" and "loss.backward()" lives in this package,
one module per family, so the variants of a family can be compared line by line:

* :mod:`~rlvr.algorithms.advantages`: advantage estimators (:data:`ADVANTAGE_ESTIMATORS`,
  :func:`compute_advantages`): ``grpo``, ``dr_grpo``, ``rloo``, ``reinforce_pp_baseline``, ``remax``; DAPO dynamic sampling;
* :mod:`~rlvr.algorithms.policy_losses`: policy losses (:data:`POLICY_LOSSES`, :func:`compute_policy_loss`):
  ``ppo`` (the clipped surrogate with decoupled clip range, dual clip; :func:`policy_loss`), ``gspo``, ``cispo``,
  ``dppo``; truncated importance sampling;
* :mod:`~rlvr.algorithms.aggregation`: loss aggregations (:data:`LOSS_AGGREGATIONS`, :func:`aggregate_loss`);
* :mod:`~rlvr.algorithms.kl`: KL estimators against a reference model (:data:`KL_ESTIMATORS`, :func:`kl_penalty`);
* :mod:`~rlvr.algorithms.logprobs`: memory-light per-token log-probabilities and entropy
  (:func:`token_logprobs`, :func:`entropy_from_logits`);
* :mod:`~rlvr.algorithms.length`: length regularization (:data:`LENGTH_SHAPERS`, :func:`shape_rewards`);
* :mod:`~rlvr.algorithms.value`: PPO with a value model: GAE (the ``gae`` estimator, :func:`gae_advantages`),
  VAPO's length-adaptive lambda, advantage whitening and the clipped value loss (:func:`value_loss`).

Every public name is importable from ``rlvr.algorithms`` itself. A plug-in is a new module in this package that
registers with a registry's decorator (``@POLICY_LOSSES.register("name")``), or, from another distribution, an
entry point in the registry's group: ``rlvr.advantage_estimators``, ``rlvr.policy_losses``,
``rlvr.loss_aggregations``, ``rlvr.kl_estimators``, ``rlvr.length_shapers``.

Shapes: ``N`` samples in contiguous groups of ``group_size`` (sample ``i`` belongs to group
``i // group_size``); ``B`` sequences by ``T`` completion tokens with a 0/1 ``mask`` over real tokens.
"""

from rlvr.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    dynamic_sampling_mask,
    is_token_level,
    uses_greedy_baseline,
)
from rlvr.algorithms.aggregation import LOSS_AGGREGATIONS, aggregate_loss
from rlvr.algorithms.kl import KL_ESTIMATORS, kl_penalty
from rlvr.algorithms.length import (
    LENGTH_SHAPERS,
    LengthBatch,
    kimi_length_penalty,
    overlong_filter_mask,
    overlong_penalty,
    shape_rewards,
    target_length_penalty,
)
from rlvr.algorithms.logprobs import entropy_from_logits, token_logprobs
from rlvr.algorithms.policy_losses import (
    POLICY_LOSSES,
    aggregates_with,
    check_policy_loss_options,
    cispo_loss,
    compute_policy_loss,
    dppo_loss,
    gspo_loss,
    policy_loss,
    policy_loss_aggregation,
    policy_loss_options,
    truncated_is_weights,
)
from rlvr.algorithms.value import gae_advantages, last_token_rewards, length_adaptive_lambda, value_loss, whiten
from rlvr.metrics import pass_at_k

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LENGTH_SHAPERS",
    "LOSS_AGGREGATIONS",
    "POLICY_LOSSES",
    "LengthBatch",
    "aggregate_loss",
    "aggregates_with",
    "check_policy_loss_options",
    "cispo_loss",
    "compute_advantages",
    "compute_policy_loss",
    "dppo_loss",
    "dynamic_sampling_mask",
    "entropy_from_logits",
    "gae_advantages",
    "gspo_loss",
    "is_token_level",
    "kimi_length_penalty",
    "kl_penalty",
    "last_token_rewards",
    "length_adaptive_lambda",
    "overlong_filter_mask",
    "overlong_penalty",
    "pass_at_k",
    "policy_loss",
    "policy_loss_aggregation",
    "policy_loss_options",
    "shape_rewards",
    "target_length_penalty",
    "token_logprobs",
    "truncated_is_weights",
    "uses_greedy_baseline",
    "value_loss",
    "whiten",
]
