"""read_audio: a sine tone comes back at its frequency and loudness, mono float32."""

import numpy as np
import pytest

from longrl.video import VideoError, read_audio

from .video_fixtures import write_audio_only, write_test_video

SINE_RMS = 0.5 / np.sqrt(2)  # the fixtures write amplitude 0.5


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * sample_rate / len(samples))


def middle(samples: np.ndarray) -> np.ndarray:
    # Lossy codecs ramp in and out at the edges; measure the steady middle.
    return samples[len(samples) // 4 : 3 * len(samples) // 4]


@pytest.mark.parametrize("container", ["mp4", "mkv", "webm", "avi", "mov"])
def test_tone_in_every_container(tmp_path, container):
    video = write_test_video(
        tmp_path / f"tone.{container}", 20, fps=10, with_audio=True, audio_freq=440.0
    )
    samples = read_audio(video.path)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert len(samples) / 16000 == pytest.approx(2.0, abs=0.1)  # 20 frames at 10 fps
    steady = middle(samples)
    assert dominant_frequency(steady, 16000) == pytest.approx(440.0, abs=3.0)
    assert float(np.sqrt(np.mean(steady**2))) == pytest.approx(SINE_RMS, rel=0.03)


def test_resamples_to_the_rate_asked(tmp_path):
    # Opus is stored at 48 kHz; ask for 8 kHz.
    video = write_test_video(tmp_path / "tone.webm", 20, with_audio=True, audio_freq=1000.0)
    samples = read_audio(video.path, sample_rate=8000)
    assert len(samples) / 8000 == pytest.approx(2.0, abs=0.1)
    assert dominant_frequency(middle(samples), 8000) == pytest.approx(1000.0, abs=5.0)


@pytest.mark.parametrize("name", ["tone.wav", "tone.m4a"])
def test_audio_only_files(tmp_path, name):
    path = write_audio_only(tmp_path / name, seconds=1.0, freq=1000.0)
    samples = read_audio(path)
    assert len(samples) / 16000 == pytest.approx(1.0, abs=0.1)
    assert dominant_frequency(middle(samples), 16000) == pytest.approx(1000.0, abs=3.0)


def test_no_audio_stream_is_a_video_error(tmp_path):
    video = write_test_video(tmp_path / "silent.mp4", 5)
    with pytest.raises(VideoError, match="no audio stream") as caught:
        read_audio(video.path)
    assert str(video.path) in str(caught.value)


def test_bad_sample_rate(tmp_path):
    video = write_test_video(tmp_path / "tone.mkv", 5, with_audio=True)
    with pytest.raises(ValueError, match="sample_rate=0"):
        read_audio(video.path, sample_rate=0)
