"""read_frames / probe_video on generated videos: the right frames, cheaply."""

import numpy as np
import pytest

from longrl.video import probe_video, read_frames
from longrl.video.libav_log import capture_libav_errors
from longrl.video.opening import open_media
from longrl.video.timeline import scan_timeline

from .video_fixtures import (
    decode_all_frames,
    frame_index_of,
    vfr_frame_times,
    write_test_video,
)

CONTAINERS = ["mp4", "mkv", "webm", "avi", "mov"]


def assert_same_as_full_decode(decoded, path):
    """Each returned frame is bit-identical to full sequential decode at its index."""
    reference = decode_all_frames(path)
    first_time = reference[0][0]
    assert len(decoded.frames) == len(decoded.indices) == len(decoded.timestamps)
    for picture, index, seconds in zip(
        decoded.frames, decoded.indices, decoded.timestamps, strict=True
    ):
        np.testing.assert_array_equal(picture, reference[index][1])
        assert seconds == pytest.approx(reference[index][0] - first_time, abs=1e-6)
        assert frame_index_of(picture) == index


def timeline_of(path):
    with capture_libav_errors() as log, open_media(path) as container:
        return scan_timeline(container, container.streams.video[0], path, log)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """60 frames at 10 fps, keyframe every 10, in every container, with/without audio."""
    root = tmp_path_factory.mktemp("videos")
    return {
        (container, audio): write_test_video(
            root / f"v_{audio}.{container}", 60, fps=10, gop=10, with_audio=audio
        )
        for container in CONTAINERS
        for audio in (False, True)
    }


@pytest.mark.parametrize("audio", [False, True], ids=["silent", "audio"])
@pytest.mark.parametrize("container", CONTAINERS)
def test_num_frames_matches_full_decode(videos, container, audio):
    video = videos[container, audio]
    decoded = read_frames(video.path, num_frames=10)
    # targets 0, 0.6556, ..., 5.9 s over frames 0.0 .. 5.9 s
    assert decoded.indices == (0, 7, 13, 20, 26, 33, 39, 46, 52, 59)
    assert decoded.frames.shape == (10, 32, 32, 3)
    assert decoded.frames.dtype == np.uint8
    assert_same_as_full_decode(decoded, video.path)
    assert decoded.info.has_audio is audio
    assert decoded.info.frame_count == 60
    assert decoded.info.frame_count_exact
    assert decoded.info.duration == pytest.approx(6.0)
    assert decoded.info.native_fps == pytest.approx(10.0)


@pytest.mark.parametrize("container", CONTAINERS)
def test_fps_matches_full_decode(videos, container):
    video = videos[container, False]
    decoded = read_frames(video.path, fps=1.0)  # 6 s -> 6 frames
    assert decoded.requested == 6
    assert decoded.indices == (0, 12, 24, 35, 47, 59)  # targets 0, 1.18, 2.36, ... 5.9 s
    assert_same_as_full_decode(decoded, video.path)
    default = read_frames(video.path)  # 2 fps -> 12 frames
    assert len(default.indices) == 12
    assert_same_as_full_decode(default, video.path)


def test_every_frame_when_asking_more_than_exist(videos):
    video = videos["mkv", False]
    decoded = read_frames(video.path, num_frames=100, max_frames=100)
    assert decoded.indices == tuple(range(60))
    assert decoded.requested == 100
    assert_same_as_full_decode(decoded, video.path)


def test_open_gop_seeks_stay_exact(tmp_path):
    # Frames shown before each keyframe reference the previous GOP: seeking
    # to such a keyframe makes FFmpeg complain about those leading frames,
    # which must neither fail the read nor leak into the result.
    video = write_test_video(tmp_path / "open.mp4", 100, gop=12, open_gop=True)
    assert timeline_of(video.path).open_keyframes, "fixture must produce an open GOP"
    for count in (4, 6, 10, 16):
        decoded = read_frames(video.path, num_frames=count)
        assert decoded.seeks > 1
        assert_same_as_full_decode(decoded, video.path)


def test_seeks_instead_of_decoding_everything(tmp_path):
    gop = 50
    video = write_test_video(tmp_path / "long.mp4", 3000, fps=30, size=(16, 16), gop=gop)
    timeline = timeline_of(video.path)
    assert timeline.keyframe_pts == tuple(timeline.pts[i] for i in range(0, 3000, gop))
    decoded = read_frames(video.path, num_frames=16)
    assert [frame_index_of(picture) for picture in decoded.frames] == list(decoded.indices)
    # The least work: from each target's keyframe up to the target.
    least = sum(index % gop + 1 for index in decoded.indices)
    assert decoded.frames_decoded == least
    assert decoded.frames_decoded <= 16 * gop < 3000
    assert decoded.seeks == 16  # one rewind after the scan, then one per target's GOP


def test_dense_targets_decode_sequentially(tmp_path):
    video = write_test_video(tmp_path / "dense.mkv", 300, size=(16, 16), gop=30)
    decoded = read_frames(video.path, num_frames=150, max_frames=150)  # every other frame
    assert decoded.seeks == 1  # only the rewind after the packet scan
    assert decoded.frames_decoded == decoded.indices[-1] + 1
    assert [frame_index_of(picture) for picture in decoded.frames] == list(decoded.indices)


@pytest.mark.parametrize("container", ["mp4", "mkv", "webm", "mov"])
def test_variable_frame_rate_uses_real_timestamps(tmp_path, container):
    video = write_test_video(tmp_path / f"vfr.{container}", 30, fps=10, vfr=True, gop=5)
    times = vfr_frame_times(30, 10)  # steps of 0.1, 0.3, 0.2 s
    assert times[:6] == [0.0, 0.1, 0.4, 0.6, 0.7, 1.0]
    decoded = read_frames(video.path, num_frames=8)
    # targets 0, 0.829, 1.657, 2.486, 3.314, 4.143, 4.971, 5.8 s -> nearest frames
    assert decoded.indices == (0, 4, 8, 13, 17, 21, 25, 29)
    assert decoded.timestamps == pytest.approx((0.0, 0.7, 1.6, 2.5, 3.4, 4.2, 4.9, 5.8))
    assert_same_as_full_decode(decoded, video.path)
    assert decoded.info.frame_count == 30
    assert decoded.info.native_fps == pytest.approx(30 / decoded.info.duration)


@pytest.mark.parametrize("rotation", [90, 180, 270])
@pytest.mark.parametrize("container", ["mp4", "mov", "mkv"])
def test_rotated_video_comes_back_upright(tmp_path, container, rotation):
    # Upright 32 wide x 16 high; stored turned back by `rotation`.
    video = write_test_video(tmp_path / f"r.{container}", 10, size=(32, 16), rotation=rotation)
    decoded = read_frames(video.path, num_frames=4)
    assert decoded.frames.shape == (4, 16, 32, 3)
    assert [frame_index_of(picture) for picture in decoded.frames] == [0, 3, 6, 9]
    stored = decode_all_frames(video.path)
    for picture, index in zip(decoded.frames, decoded.indices, strict=True):
        np.testing.assert_array_equal(picture, np.rot90(stored[index][1], k=-rotation // 90))
    for info in (decoded.info, probe_video(video.path)):
        assert (info.width, info.height, info.rotation) == (32, 16, rotation)


@pytest.mark.parametrize("container", CONTAINERS)
def test_odd_size(tmp_path, container):
    video = write_test_video(tmp_path / f"odd.{container}", 20, size=(33, 17), with_audio=True)
    decoded = read_frames(video.path, num_frames=6)
    assert decoded.frames.shape == (6, 17, 33, 3)
    assert_same_as_full_decode(decoded, video.path)
    assert (decoded.info.width, decoded.info.height) == (33, 17)


@pytest.mark.parametrize(
    ("container", "codec", "exact"),
    [
        ("mp4", "h264", True),
        ("mkv", "h264", False),
        ("webm", "vp9", False),
        ("avi", "mjpeg", True),
        ("mov", "mpeg4", True),
    ],
)
def test_probe(videos, container, codec, exact):
    info = probe_video(videos[container, True].path)
    assert info.codec == codec
    assert info.frame_count_exact is exact
    if exact:
        assert info.frame_count == 60
    else:  # estimated from the header duration (the audio may run a little longer)
        assert abs(info.frame_count - 60) <= 2
    assert info.native_fps == pytest.approx(10.0)
    assert info.duration == pytest.approx(6.0, abs=0.1)
    assert (info.width, info.height, info.rotation) == (32, 32, 0)
    assert info.has_audio
    assert container in info.container or (container, info.container) == ("mkv", "matroska,webm")
