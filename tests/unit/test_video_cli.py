"""`longrl video`: JSON on stdout, exit 2 with the reason on stderr."""

import json
import subprocess
import sys

import pytest

from longrl.cli import main
from longrl.commands import video as video_command
from longrl.video import DEFAULT_MAX_FRAMES, DEFAULT_MIN_FRAMES

from .video_fixtures import (
    write_audio_only,
    write_empty_file,
    write_garbage_file,
    write_test_video,
    write_truncated_copy,
    write_zero_frame_video,
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "clip.mp4"
    return write_test_video(path, 60, fps=10, size=(32, 16), gop=10, with_audio=True)


def test_json_report(clip, capsys):
    assert main(["video", str(clip.path), "--num-frames", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(clip.path)
    assert report["duration"] == pytest.approx(6.0)
    assert report["native_fps"] == pytest.approx(10.0)
    assert report["frame_count"] == 60
    assert (report["width"], report["height"], report["rotation"]) == (32, 16, 0)
    assert report["has_audio"] is True
    assert report["requested_frames"] == 6  # 5 rounded up to the temporal patch
    # targets 0, 1.18, 2.36, 3.54, 4.72, 5.9 s
    assert report["indices"] == [0, 12, 24, 35, 47, 59]
    assert report["timestamps"] == pytest.approx([0.0, 1.2, 2.4, 3.5, 4.7, 5.9])
    assert report["sampled_frames"] == 6
    assert report["sampled_frame_size"] == {"width": 32, "height": 16}


def test_fps_and_bounds(clip, capsys):
    assert main(["video", str(clip.path), "--fps", "10", "--max-frames", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["indices"]) == 8


def test_bad_file_exits_2_with_the_reason(tmp_path, capsys):
    path = write_garbage_file(tmp_path / "broken.mp4")
    assert main(["video", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(path) in captured.err
    assert "cannot be opened" in captured.err


def test_bad_request_exits_2(clip, capsys):
    assert main(["video", str(clip.path), "--num-frames", "1000"]) == 2
    assert "exceeds max_frames=768" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:  # argparse: the two are exclusive
        main(["video", str(clip.path), "--num-frames", "4", "--fps", "1"])
    assert caught.value.code == 2


def test_cli_defaults_follow_the_library():
    parser = __import__("argparse").ArgumentParser()
    video_command.add_arguments(parser)
    args = parser.parse_args(["x.mp4"])
    assert (args.min_frames, args.max_frames) == (DEFAULT_MIN_FRAMES, DEFAULT_MAX_FRAMES)
    assert args.num_frames is None and args.fps is None


def test_as_a_subprocess(clip, tmp_path):
    command = [sys.executable, "-m", "longrl.cli", "video", str(clip.path), "--num-frames", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indices"] == [0, 20, 39, 59]
    missing = tmp_path / "missing.mkv"
    command[4] = str(missing)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"video {missing}: no such file" in done.stderr


CLI_CONTAINERS = ("mp4", "mkv", "webm", "avi", "mov")


@pytest.mark.parametrize("with_audio", [False, True], ids=["silent", "audio"])
@pytest.mark.parametrize("container", CLI_CONTAINERS)
def test_every_container_reports_json(tmp_path, capsys, container, with_audio):
    clip = write_test_video(
        tmp_path / f"clip.{container}", 24, fps=8, size=(33, 17), with_audio=with_audio
    )
    assert main(["video", str(clip.path), "--num-frames", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sampled_frames"] == 4
    assert report["has_audio"] is with_audio
    assert report["duration"] == pytest.approx(3.0, abs=0.2)
    assert (report["width"], report["height"]) == (33, 17)


def _malformed(tmp_path, kind):
    source = write_test_video(tmp_path / "source.mp4", 48, fps=8, size=(32, 32), gop=8)
    return {
        "missing": lambda: tmp_path / "missing.mp4",
        "empty": lambda: write_empty_file(tmp_path / "empty.mp4"),
        "garbage": lambda: write_garbage_file(tmp_path / "garbage.mkv", num_bytes=20000),
        "truncated": lambda: write_truncated_copy(source.path, tmp_path / "cut.mp4", 0.5),
        "audio_only": lambda: write_audio_only(tmp_path / "tone.m4a", seconds=0.5),
        "zero_frames": lambda: write_zero_frame_video(tmp_path / "zero.avi"),
    }[kind]()


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "garbage", "truncated", "audio_only", "zero_frames"]
)
def test_every_malformed_kind_exits_2_naming_the_file(tmp_path, capsys, kind):
    path = _malformed(tmp_path, kind)
    assert main(["video", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"longrl video: error: video {path}: ")
