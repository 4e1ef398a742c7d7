"""Every algorithm registry takes plug-ins from outside: from an entry point of an installed distribution (a
``*.dist-info`` directory on the path) and from a new module in the ``rlvr.algorithms`` package, found by the
package scan. Run in a fresh interpreter: a registry discovers once per process, and these plug-ins must not leak
into the other tests' registries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from algorithm_plugins import ENTRY_POINTS, advertise

TESTS = Path(__file__).parent

PROBE = """
import json, sys
import torch
import rlvr.algorithms as algorithms
from rlvr import config
from rlvr.train_config import TrainConfig

algorithms.__path__.append(sys.argv[1])  # a new module of the package, as a contributor would add one
out = {}
out["sign"] = algorithms.compute_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2, "sign").tolist()
loss, metrics = algorithms.compute_policy_loss(
    "reinforce", torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -2.0]]), torch.tensor([2.0]),
    torch.tensor([[1.0, 0.0]]), agg="token-mean", scale=3.0)
out["reinforce"] = [loss.item(), metrics["num_tokens"]]
out["from_package"] = algorithms.compute_policy_loss(
    "from-package", torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), agg="token-mean")[0].item()
out["token_sum"] = algorithms.aggregate_loss(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1, 1], [1, 0]]),
                                             "token-sum").item()
out["abs"] = algorithms.kl_penalty(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0]), "abs").tolist()
shaped, _ = algorithms.shape_rewards(torch.tensor([0.0, 1.0]), torch.tensor([3, 4]), torch.tensor([False, False]), 2,
                                     max_len=8)
out["shaped"] = shaped.tolist()
config.load(TrainConfig, None, ["algorithm.estimator=sign", "algorithm.policy_loss=reinforce",
                                  "algorithm.loss_agg=token-sum", "algorithm.kl_estimator=abs"])  # choices include plug-ins
out["options"] = algorithms.policy_loss_options("reinforce")
print(json.dumps(out))
"""

PACKAGE_MODULE = '''
from rlvr.algorithms import POLICY_LOSSES


@POLICY_LOSSES.register("from-package")
def constant_loss(logprobs, old_logprobs, advantages, mask, *, agg, norm_len=None, denominator=None, is_weights=None):
    return logprobs.sum() + 7.0, {"num_tokens": float(mask.sum())}
'''


@pytest.mark.slow  # a fresh interpreter importing torch and rlvr: ~7 s
def test_each_algorithm_registry_loads_plug_ins_from_entry_points_and_the_package(tmp_path):
    site, package_dir = tmp_path / "site", tmp_path / "package"
    advertise(site, ENTRY_POINTS)
    package_dir.mkdir()
    (package_dir / "extra_losses.py").write_text(textwrap.dedent(PACKAGE_MODULE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(TESTS)])}
    done = subprocess.run([sys.executable, "-c", PROBE, str(package_dir)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["sign"] == [-1.0, 1.0, 0.0, 0.0]  # groups [1, 3] and [2, 2] (all equal: zero, as for every estimator)
    assert out["reinforce"] == [3.0 * 2.0 * 1.0, 1.0]  # -3 * 2 * (-1.0) on the one masked-in token
    assert out["from_package"] == 7.0
    assert out["token_sum"] == 6.0  # 1 + 2 + 3, the masked 4 left out
    assert out["abs"] == [1.0, 2.0]
    assert out["shaped"] == [0.5, 1.5]  # the built-in shapers are off by default; the plug-in adds 0.5
    assert out["options"] == {"scale": 1.0}
