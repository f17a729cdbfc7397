import json

from longrl.cli import main


def test_inspect_shows_tokens_grid_and_reference_rule_positions(
    tiny_vl_checkpoint, synth_data, capsys
):
    code = main(["inspect", str(tiny_vl_checkpoint), str(synth_data / "rl.jsonl"), "--row", "2"])
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    (video,) = shown["videos"]
    t, h, w = video["grid_thw"]
    assert video["video_tokens"] == t * h * w // 4
    assert "<|video_pad|>x" in shown["prompt_text"]
    # Reference rule: the text after the video resumes at max(all video positions) + 1.
    assert video["text_after_video_position"] == [max(video["positions_max"]) + 1] * 3


def test_inspect_bad_row_exits_2_with_a_reason(tiny_vl_checkpoint, synth_data, capsys):
    assert (
        main(["inspect", str(tiny_vl_checkpoint), str(synth_data / "rl.jsonl"), "--row", "999"])
        == 2
    )
    assert "fewer than 999 records" in capsys.readouterr().err
