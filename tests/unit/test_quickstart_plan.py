import pytest

from longrl.cli import main
from longrl.quickstart.plan import PlanOverrideError, QuickstartPlan, apply_overrides


def test_overrides_parse_json_into_each_field_type():
    plan = apply_overrides(
        QuickstartPlan(),
        [
            "num_sft=1024",
            "rl_kl_coef=0",
            'kinds=["first", "last"]',
            'sft_kind_weights={"last": 0.1}',
            'model_sizes={"hidden_size": 256}',
            "num_sampled_frames=null",
            "rl_online_filtering=true",
            "reasoning=timed",  # not JSON: taken as the string
        ],
    )
    assert plan.num_sft == 1024
    assert plan.rl_kl_coef == 0.0 and isinstance(plan.rl_kl_coef, float)
    assert plan.kinds == ("first", "last")
    assert plan.sft_kind_weights == {"last": 0.1}
    assert plan.model_sizes == {"hidden_size": 256}
    assert plan.num_sampled_frames is None
    assert plan.rl_online_filtering is True
    assert plan.reasoning == "timed"
    # Untouched fields keep their defaults; the last assignment of a field wins.
    assert plan.sft_steps == QuickstartPlan().sft_steps
    assert apply_overrides(plan, ["num_sft=8", "num_sft=16"]).num_sft == 16


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("num_sfts=3", "FIELD one of"),
        ("num_sft", "FIELD one of"),
        ("num_sft=1.5", "num_sft: expected int"),
        ("num_sft=true", "num_sft: expected int"),
        ("rl_online_filtering=1", "expected bool"),
        ('kinds=["first", 3]', "kinds: expected tuple"),
        ("model_sizes=null", "model_sizes: expected dict"),
        ("sft_steps=null", "sft_steps: expected int"),
    ],
)
def test_bad_override_names_the_field_and_what_it_expects(assignment, message):
    with pytest.raises(PlanOverrideError, match=message):
        apply_overrides(QuickstartPlan(), [assignment])


def test_cli_refuses_a_bad_override_before_running_anything(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["quickstart", "--out", str(out), "--set", "rl_step=3"]) == 2
    assert "rl_step=3" in capsys.readouterr().out
    assert not out.exists()
