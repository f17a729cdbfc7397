"""Every kind of bad file is one VideoError naming the file; never wrong frames."""

import copy

import numpy as np
import pytest

from longrl.video import SamplingError, VideoError, probe_video, read_audio, read_frames

from .video_fixtures import (
    decode_all_frames,
    write_audio_only,
    write_corrupted_copy,
    write_empty_file,
    write_garbage_file,
    write_test_video,
    write_truncated_copy,
    write_zero_frame_video,
)

CONTAINERS = ["mp4", "mkv", "webm", "avi", "mov"]


def read_error(path, reader=read_frames) -> VideoError:
    with pytest.raises(VideoError) as caught:
        reader(path)
    error = caught.value
    assert error.path == str(path)
    assert str(path) in str(error)
    assert error.action in str(error)  # says what to do
    return error


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {
        container: write_test_video(
            root / f"src.{container}", 20, size=(64, 48), gop=5, with_audio=True
        )
        for container in CONTAINERS
    }


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    for reader in (read_frames, probe_video, read_audio):
        assert "no such file" in read_error(path, reader).reason


def test_directory(tmp_path):
    assert "directory" in read_error(tmp_path).reason


def test_empty_file(tmp_path):
    path = write_empty_file(tmp_path / "empty.mp4")
    for reader in (read_frames, probe_video, read_audio):
        assert "empty (0 bytes)" in read_error(path, reader).reason


@pytest.mark.parametrize("name", ["garbage.mp4", "garbage.mkv", "garbage.avi"])
def test_garbage_bytes(tmp_path, name):
    path = write_garbage_file(tmp_path / name, num_bytes=20000)
    assert "cannot be opened" in read_error(path).reason
    assert "cannot be opened" in read_error(path, probe_video).reason


@pytest.mark.parametrize("name", ["tone.m4a", "tone.wav", "tone.mka"])
def test_audio_only(tmp_path, name):
    path = write_audio_only(tmp_path / name, seconds=0.5)
    error = read_error(path)
    assert "no video stream" in error.reason
    assert "audio" in error.reason
    assert "no video stream" in read_error(path, probe_video).reason


def test_zero_frame_video_stream(tmp_path):
    path = write_zero_frame_video(tmp_path / "zero.avi")
    assert "zero frames" in read_error(path).reason
    assert "zero frames" in read_error(path, probe_video).reason


@pytest.mark.parametrize("name", ["zero.mp4", "zero.mkv", "zero.mov"])
def test_zero_frame_video_in_other_containers(tmp_path, name):
    # These muxers drop an empty track or write no usable header: still one clear error.
    read_error(write_zero_frame_video(tmp_path / name))


@pytest.mark.parametrize("keep", [0.5, 0.8])
@pytest.mark.parametrize("container", CONTAINERS)
def test_truncated(sources, tmp_path, container, keep):
    path = write_truncated_copy(sources[container].path, tmp_path / f"cut.{container}", keep)
    error = read_error(path)
    said = error.reason
    assert any(word in said for word in ("truncated", "cannot be opened", "damage", "corrupt"))


@pytest.mark.parametrize("container", CONTAINERS)
def test_truncated_or_damaged_never_gives_wrong_frames(sources, tmp_path, container):
    """Cut or damaged anywhere: either a VideoError or exactly the original frames.

    (VP9 in WebM is left out of the damage half: its decoder turns some damaged
    bytes into pictures without any complaint, which no reader can notice.)
    """
    source = sources[container].path
    reference = decode_all_frames(source)
    damaged = [
        write_truncated_copy(source, tmp_path / f"cut{i}.{container}", keep)
        for i, keep in enumerate(np.linspace(0.1, 0.98, 12))
    ]
    if container != "webm":
        damaged += [
            write_corrupted_copy(source, tmp_path / f"bad{i}.{container}", start, start + 0.02)
            for i, start in enumerate(np.linspace(0.1, 0.9, 9))
        ]
    errors = 0
    for path in damaged:
        try:
            decoded = read_frames(path, num_frames=20, max_frames=20)
        except VideoError as error:
            assert str(path) in str(error)
            errors += 1
            continue
        assert decoded.indices == tuple(range(20))
        for picture, (_, expected) in zip(decoded.frames, reference, strict=True):
            np.testing.assert_array_equal(picture, expected)
    assert errors >= len(damaged) // 2  # the check above is not vacuous


def test_error_message_shape(tmp_path):
    path = write_empty_file(tmp_path / "clip.mp4")
    error = read_error(path)
    assert str(error) == f"video {path}: {error.reason}; {error.action}"


def test_error_keeps_its_fields_when_copied(tmp_path):
    # copy uses the same protocol as sending the error from a worker process.
    error = read_error(write_empty_file(tmp_path / "clip.mkv"))
    clone = copy.copy(error)
    assert (clone.path, clone.reason, clone.action) == (error.path, error.reason, error.action)
    assert str(clone) == str(error)


def test_bad_request_fails_before_reading_the_file(tmp_path):
    with pytest.raises(SamplingError, match="both num_frames"):
        read_frames(tmp_path / "not-even-there.mp4", num_frames=8, fps=2.0)
