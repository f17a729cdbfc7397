"""Two RL steps with worker.rollout.name=vllm on the tiny Qwen2.5-VL and synthetic videos.

Every rollout's log-probs are checked against the policy's own training forward at that
moment: at step 2 they must follow the weights of step 1's update (synced in place), not
the initial ones.
"""

import copy
import importlib.util

import pytest
import torch

from longrl.config import load_config
from longrl.train.logprobs import response_log_probs
from longrl.train.metrics import read_metrics
from longrl.train.rl import run_rl
from tests.e2e.conftest import rl_overrides

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None, reason="vllm not installed (make install-vllm)"
    ),
]


@pytest.fixture()
def length_reward(tmp_path):
    """A reward that differs between the replies of a group, so GRPO has a signal."""
    path = tmp_path / "length_reward.py"
    path.write_text(
        "def reply_length(responses, **columns):\n"
        "    return [len(text) / 10.0 for text in responses]\n"
    )
    return f"{path}:reply_length"


def _check_each_rollout(monkeypatch, initial_model):
    """For every vLLM rollout: max |log-prob difference| to the policy's training forward,
    and to the initial weights' forward."""
    from longrl.rollout.vllm_engine import VllmRolloutEngine

    seen = []
    original = VllmRolloutEngine.generate

    def generate(self, prompts, params):
        out = original(self, prompts, params)
        with torch.no_grad():
            diffs = []
            for model in (self.model, initial_model):
                forced = response_log_probs(
                    model,
                    prompts,
                    out.response_ids,
                    out.response_mask,
                    n=params.n,
                    temperature=params.temperature,
                ).log_probs
                diffs.append(float(((out.log_probs - forced) * out.response_mask).abs().max()))
        seen.append(diffs)
        return out

    monkeypatch.setattr(VllmRolloutEngine, "generate", generate)
    return seen


def test_two_rl_steps_with_vllm_roll_out_with_the_updated_weights(
    tiny_vl_checkpoint, synth_data, tmp_path, length_reward, monkeypatch
):
    from longrl.models.load import load_model
    from longrl.rollout.vllm_engine import close_live_engine

    initial = load_model(tiny_vl_checkpoint).eval()
    initial_weights = copy.deepcopy(initial.state_dict())
    rollouts = _check_each_rollout(monkeypatch, initial)
    config = load_config(
        None,
        rl_overrides(
            tiny_vl_checkpoint,
            synth_data,
            tmp_path / "run",
            **{
                "worker.rollout.name": "vllm",
                "worker.reward.reward_function": length_reward,
                "trainer.max_steps": 2,
            },
        ),
    )
    try:
        run_dir = run_rl(config)
    finally:
        close_live_engine()
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["response_length/mean"] > 0 for r in rows)
    assert len(rollouts) == 2
    (step1_current, step1_initial), (step2_current, step2_initial) = rollouts
    assert step1_current < 1e-4 and step1_initial < 1e-4  # nothing trained yet
    assert step2_current < 1e-4  # vLLM follows the updated policy...
    assert step2_initial > 1e-3  # ...which the update really moved
    from safetensors.torch import load_file

    final = load_file(str(run_dir / "checkpoints" / "step_00000002" / "model.safetensors"))
    changed = [k for k in final if not torch.equal(initial_weights[k], final[k])]
    assert len(changed) > 10
