"""Frame sampling rules, checked against hand-computed cases."""

import itertools
import math

import pytest

from longrl.video.sampling import (
    DEFAULT_FPS,
    MAX_FRAMES_LIMIT,
    TEMPORAL_PATCH_SIZE,
    SamplingError,
    constant_rate_times,
    frame_count,
    nearest_frames,
    plan_frames,
    target_times,
)


def test_temporal_patch_is_two():
    assert TEMPORAL_PATCH_SIZE == 2
    assert DEFAULT_FPS == 2.0


@pytest.mark.parametrize(
    ("duration", "fps", "expected"),
    [
        (10.0, 2.0, 20),  # 10 s * 2 fps
        (10.9, 1.0, 10),  # 10.9 floors to 10
        (11.5, 1.0, 10),  # 11 floors to even 10
        (10.0, 0.2, 4),  # 2 (float product 1.9999...) then min_frames 4
        (3.0, 1.0, 4),  # 3 -> 2 -> raised to min_frames 4
        (1000.0, 2.0, 768),  # 2000 capped at max_frames 768
        (0.0, 2.0, 4),  # empty duration still asks for min_frames
    ],
)
def test_fps_count(duration, fps, expected):
    assert frame_count(duration, fps=fps) == expected


def test_fps_count_epsilon_keeps_exact_products():
    # 10 s * 0.2 fps is 1.9999999999999998 in floats; it must count as 2.
    assert frame_count(10.0, fps=0.2, min_frames=2) == 2


def test_default_is_two_fps():
    assert frame_count(10.0) == 20
    assert frame_count(10.0) == frame_count(10.0, fps=2.0)


def test_bounds_round_inwards_to_even():
    assert frame_count(100.0, fps=1.0, max_frames=7) == 6
    assert frame_count(1.0, fps=1.0, min_frames=3, max_frames=10) == 4
    assert frame_count(100.0, fps=10.0, max_frames=MAX_FRAMES_LIMIT) == 1000


@pytest.mark.parametrize(("asked", "expected"), [(1, 2), (5, 6), (6, 6), (767, 768)])
def test_num_frames_rounds_up_to_even(asked, expected):
    assert frame_count(123.0, num_frames=asked) == expected


def test_num_frames_ignores_min_frames_and_duration():
    assert frame_count(0.5, num_frames=2, min_frames=4) == 2
    assert frame_count(5000.0, num_frames=8) == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 8, "fps": 2.0}, "both num_frames=8 and fps=2.0"),
        ({"num_frames": 770}, "exceeds max_frames=768"),
        ({"num_frames": 769, "max_frames": 769}, "exceeds max_frames=769"),
        ({"num_frames": 0}, "num_frames=0"),
        ({"fps": 0.0}, "fps=0.0"),
        ({"fps": -1.0}, "fps=-1.0"),
        ({"fps": math.nan}, "fps=nan"),
        ({"max_frames": MAX_FRAMES_LIMIT + 1}, "max_frames=8193"),
        ({"max_frames": 1}, "max_frames=1"),
        ({"min_frames": 0}, "min_frames=0"),
        ({"min_frames": 9, "max_frames": 9}, "min_frames=9"),
    ],
)
def test_invalid_requests(kwargs, message):
    with pytest.raises(SamplingError, match=message.replace("(", r"\(")):
        frame_count(10.0, **kwargs)


def test_sampling_error_is_a_value_error():
    assert issubclass(SamplingError, ValueError)


def test_target_times_include_both_ends():
    assert target_times(0.0, 9.0, 4) == [0.0, 3.0, 6.0, 9.0]
    assert target_times(1.0, 1.0, 2) == [1.0, 1.0]


def test_nearest_frames_ties_go_to_the_earlier_frame():
    times = [0.0, 1.0, 2.0, 3.0]
    targets = [0.4, 0.5, 0.6, 2.5, -1.0, 9.0, 3.0]
    assert nearest_frames(times, targets) == [0, 0, 1, 2, 0, 3, 3]


def test_num_frames_on_constant_rate():
    times = constant_rate_times(10, fps=1.0)  # 0, 1, ..., 9 s
    plan = plan_frames(times, 10.0, num_frames=4)
    assert plan.indices == (0, 3, 6, 9)
    assert plan.timestamps == (0.0, 3.0, 6.0, 9.0)
    # targets 0, 1.8, 3.6, 5.4, 7.2, 9
    assert plan_frames(times, 10.0, num_frames=6).indices == (0, 2, 4, 5, 7, 9)
    # 5 is rounded up to 6
    assert plan_frames(times, 10.0, num_frames=5).indices == (0, 2, 4, 5, 7, 9)


def test_fps_on_constant_rate():
    times = constant_rate_times(10, fps=10.0)  # 1 s of video
    plan = plan_frames(times, 1.0, fps=2.0, min_frames=2)
    assert plan.indices == (0, 9)
    assert plan.requested == 2
    times = constant_rate_times(100, fps=10.0)  # 10 s at 0.5 fps -> 5 -> 4 frames
    plan = plan_frames(times, 10.0, fps=0.5, min_frames=2)
    assert plan.indices == (0, 33, 66, 99)  # targets 0, 3.3, 6.6, 9.9 s


def test_short_video_gives_every_frame_once():
    plan = plan_frames([0.0, 0.5, 1.0], 1.5, num_frames=8)
    assert plan.indices == (0, 1, 2)
    assert plan.requested == 8
    assert plan.short_video
    one = plan_frames([0.0], 0.04, fps=2.0)
    assert one.indices == (0,)
    assert one.requested == 4


def test_exactly_count_frames_gives_all():
    plan = plan_frames([0.0, 0.1, 0.2, 0.3], 0.4, num_frames=4)
    assert plan.indices == (0, 1, 2, 3)
    assert not plan.short_video


def test_variable_frame_rate_samples_by_time():
    # A burst of frames then a long gap: uniform in time, not in index.
    times = [0.0, 0.1, 0.2, 3.0, 3.1]
    # targets 0, 1.0333, 2.0667, 3.1
    assert plan_frames(times, 3.2, num_frames=4).indices == (0, 2, 3, 4)
    # uniform in index would have given (0, 1, 3, 4)


def test_long_held_frame_can_be_picked_twice():
    times = [0.0, 5.0, 10.0, 10.1, 10.2]
    plan = plan_frames(times, 10.3, num_frames=4)  # targets 0, 3.4, 6.8, 10.2
    assert plan.indices == (0, 1, 1, 4)
    assert plan.timestamps == (0.0, 5.0, 5.0, 10.2)


def test_unsorted_times_are_rejected():
    with pytest.raises(ValueError, match="sorted"):
        plan_frames([0.0, 2.0, 1.0], 3.0, num_frames=2)


@pytest.mark.parametrize("fps", [1.0, 29.97, 30.0])
def test_constant_rate_indices_are_distinct_and_span_the_video(fps):
    for total in range(2, 61):
        times = constant_rate_times(total, fps)
        for count in range(2, total + 1, 2):
            indices = plan_frames(times, total / fps, num_frames=count).indices
            assert len(indices) == count
            assert indices[0] == 0
            assert indices[-1] == total - 1
            assert all(b > a for a, b in itertools.pairwise(indices))
            # Equal to rounding the evenly spaced index positions, ties down.
            step = (total - 1) / (count - 1)
            assert indices == tuple(math.ceil(k * step - 0.5 - 1e-6) for k in range(count))
