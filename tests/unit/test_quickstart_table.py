import pytest

from longrl.quickstart.pipeline import format_table


def test_table_lists_each_stage_and_each_kind_per_stage():
    row = {
        "format_accuracy": 1.0,
        "reasoning_rate": 0.5,
        "mean_response_length": 40.0,
        "num_questions": 4,
    }
    summary = {
        "stages": {
            "base": {**row, "accuracy": 0.25, "per_type_accuracy": {"first": 0.5, "count": 0.0}},
            "sft": {**row, "accuracy": 0.5, "per_type_accuracy": {"first": 1.0}},
            "rl": {
                **row,
                "accuracy": 0.75,
                "format_accuracy": None,
                "reasoning_rate": None,
                "per_type_accuracy": {},
            },
        },
        "chance_accuracy": 0.25,
        "seconds": {"total": 1.0},
    }
    lines = format_table(summary).splitlines()
    assert lines[0].startswith("| stage | accuracy | format accuracy | reasoning rate |")
    assert lines[2] == "| base | 0.250 | 1.000 | 0.500 | 40.0 | 4 |"
    assert lines[4] == "| rl | 0.750 | - | - | 40.0 | 4 |"
    assert "| kind | base | sft | rl |" in lines
    assert "| count | 0.000 | - | - |" in lines
    assert "| first | 0.500 | 1.000 | - |" in lines
    assert lines[-2] == (
        "margins (accuracy points): SFT - chance +25.0, RL - SFT +25.0 "
        "(the targets: SFT - chance >= 20, RL - SFT >= 5)"
    )
    assert lines[-1].startswith("chance accuracy: 0.25")


def test_learning_margins_by_hand():
    from longrl.quickstart.pipeline import learning_margins

    stages = {"base": {"accuracy": 0.0}, "sft": {"accuracy": 0.555}, "rl": {"accuracy": 0.676}}
    margins = learning_margins(stages, 0.25)
    assert margins["SFT - chance"] == pytest.approx(30.5)
    assert margins["RL - SFT"] == pytest.approx(12.1)
    assert learning_margins({"base": {"accuracy": 0.3}}, 0.25) == {}


def test_moving_average_is_the_mean_of_the_trailing_window():
    from longrl.quickstart.plots import moving_average

    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0], 5) == [2.0, 3.0]
    assert moving_average([], 3) == []
