"""Generate small test videos with PyAV whose frames say which frame they are.

Every frame of a `pattern="index"` video draws its frame index as a 4x4 grid of
black/white cells (16 bits, most significant first, row by row). Big flat
cells survive lossy coding at tiny sizes, so `frame_index_of(image)` reads the
index back from a decoded RGB frame and a test can check WHICH frame it got.

Also writes the malformed files the decoder must reject: empty, garbage,
truncated copies, audio-only files and a video stream with zero frames.

Encoders used are those the PyAV wheel ships (checked on av 18 / FFmpeg 8):
libx264, mpeg4, mjpeg, ffv1, libvpx (VP8), libvpx-vp9; aac, libopus, mp3,
pcm_s16le, flac. libx264 refuses odd sizes with 4:2:0, so odd-size videos use
another codec (see `codec_for`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

INDEX_GRID = 4  # the index is drawn as INDEX_GRID x INDEX_GRID cells
INDEX_BITS = INDEX_GRID * INDEX_GRID
# What each container is written with unless the caller picks a codec.
VIDEO_CODECS = {
    "mp4": "libx264",
    "mkv": "libx264",
    "webm": "libvpx-vp9",
    "avi": "mjpeg",
    "mov": "mpeg4",
}
AUDIO_CODECS = {
    "mp4": "aac",
    "mkv": "aac",
    "webm": "libopus",
    "avi": "pcm_s16le",
    "mov": "aac",
    "m4a": "aac",
    "wav": "pcm_s16le",
    "mka": "flac",
}
# Sample rates each audio codec accepts; opus only takes 48k-family rates.
AUDIO_RATES = {"libopus": 48000}
_PIX_FMT = {"mjpeg": "yuvj444p"}
# Ask every lossy encoder for near-lossless quality so the cells stay crisp.
_QUALITY_OPTIONS = {
    "libx264": {"crf": "12", "preset": "veryfast"},
    "libvpx-vp9": {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"crf": "4", "b": "2M", "deadline": "realtime", "cpu-used": "8"},
}
_BIT_RATES = {"mpeg4": 4_000_000, "mjpeg": 8_000_000}


@dataclass(frozen=True)
class TestVideo:
    """What was written: the ground truth a test compares decoding against."""

    path: Path
    frame_times: tuple[float, ...]  # presentation time (s) of every frame, in order
    width: int  # stored (coded) size; the upright size swaps them for 90/270
    height: int
    codec: str
    rotation: int  # clockwise degrees a player turns the picture on display
    audio_codec: str | None
    audio_rate: int | None

    __test__ = False  # not a pytest test class despite the name


def codec_for(container: str, size: tuple[int, int]) -> str:
    """Default video codec for a container; an encoder that takes odd sizes when needed."""
    codec = VIDEO_CODECS[container]
    odd = size[0] % 2 or size[1] % 2
    if odd and codec == "libx264":
        return "mpeg4" if container != "webm" else "libvpx-vp9"
    return codec


def index_image(index: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] whose cells spell `index` in binary (white = 1)."""
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"index {index} does not fit in {INDEX_BITS} bits")
    image = np.zeros((height, width, 3), np.uint8)
    rows = np.linspace(0, height, INDEX_GRID + 1).round().astype(int)
    cols = np.linspace(0, width, INDEX_GRID + 1).round().astype(int)
    for bit in range(INDEX_BITS):
        if index >> (INDEX_BITS - 1 - bit) & 1:
            r, c = divmod(bit, INDEX_GRID)
            image[rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = 255
    return image


def frame_index_of(image: np.ndarray) -> int:
    """Read back the index drawn by `index_image` (from the cell centres)."""
    height, width = image.shape[:2]
    grey = np.asarray(image, np.float32).mean(axis=2)
    rows = np.linspace(0, height, INDEX_GRID + 1)
    cols = np.linspace(0, width, INDEX_GRID + 1)
    value = 0
    for bit in range(INDEX_BITS):
        r, c = divmod(bit, INDEX_GRID)
        # The middle of the cell: lossy codecs smear only the edges.
        r0, r1 = _cell_core(rows[r], rows[r + 1])
        c0, c1 = _cell_core(cols[c], cols[c + 1])
        value = value << 1 | int(grey[r0:r1, c0:c1].mean() > 127.5)
    return value


def _cell_core(start: float, stop: float) -> tuple[int, int]:
    lo, hi = math.ceil(start), math.floor(stop)
    margin = (hi - lo) // 4
    return lo + margin, max(hi - margin, lo + margin + 1)


def vfr_frame_times(num_frames: int, fps: float) -> list[float]:
    """Irregular timestamps (s): durations cycle through 1, 3 and 2 frame periods."""
    times, t = [], 0.0
    for i in range(num_frames):
        times.append(round(t, 3))
        t += (1 + (0, 2, 1)[i % 3]) / fps
    return times


def write_test_video(
    path: str | Path,
    num_frames: int,
    fps: float = 10.0,
    size: tuple[int, int] = (32, 32),
    container: str | None = None,
    codec: str | None = None,
    vfr: bool = False,
    rotation: int | None = None,
    with_audio: bool = False,
    pattern: str = "index",
    gop: int | None = None,
    audio_freq: float = 440.0,
    audio_codec: str | None = None,
    open_gop: bool = False,
) -> TestVideo:
    """Write `num_frames` frames of `size` = (width, height) to `path`.

    container: "mp4"/"mkv"/"webm"/"avi"/"mov" (default: the file suffix).
    vfr: frame times from `vfr_frame_times` instead of i/fps (not for avi).
    rotation: clockwise degrees (90/180/270) a player turns the picture; the
      stored frames are the upright index images turned the other way, so a
      decoder that honours the display matrix gets upright index images back.
    with_audio: add a mono sine of `audio_freq` Hz (amplitude 0.5) as long as the video.
    pattern: "index" (see module doc) or "black".
    gop: keyframe interval in frames (default: the encoder's).
    open_gop: libx264 only: B-frames shown before a keyframe may reference the
      previous GOP (so decoding them needs the GOP before).
    """
    path = Path(path)
    container = container or path.suffix.lstrip(".")
    codec = codec or codec_for(container, size)
    width, height = size
    rotation = (rotation or 0) % 360
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90, got {rotation}")
    if vfr and container == "avi":
        raise ValueError("avi stores a constant frame rate; use mp4/mkv/webm/mov for vfr")
    stored = (height, width) if rotation in (90, 270) else (width, height)
    times = vfr_frame_times(num_frames, fps) if vfr else [i / fps for i in range(num_frames)]

    out = av.open(str(path), "w", format=_muxer_name(container))
    stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
    stream.width, stream.height = stored
    stream.pix_fmt = _PIX_FMT.get(codec, "yuv420p")
    stream.options = dict(_QUALITY_OPTIONS.get(codec, {}))
    if codec in _BIT_RATES:
        stream.bit_rate = _BIT_RATES[codec]
    x264_params = ["open-gop=1", "bframes=3"] if open_gop else []
    if gop is not None:
        stream.codec_context.gop_size = gop
        x264_params += [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
    if codec == "libx264" and x264_params:
        stream.options["x264-params"] = ":".join(x264_params)
    time_base = Fraction(1, 1000) if vfr else Fraction(1, 1) / stream.codec_context.framerate
    stream.codec_context.time_base = time_base
    if rotation:
        stream.set_display_matrix(_display_matrix_clockwise(rotation))

    audio = None
    if with_audio:
        audio_codec = audio_codec or AUDIO_CODECS[container]
        audio = _add_audio_stream(out, audio_codec)

    for i, t in enumerate(times):
        upright = index_image(i, width, height) if pattern == "index" else _black(width, height)
        # np.rot90 turns counter-clockwise: store the picture turned back by `rotation`.
        picture = np.ascontiguousarray(np.rot90(upright, k=rotation // 90))
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = round(t / time_base)
        frame.time_base = time_base
        out.mux(stream.encode(frame))
    out.mux(stream.encode())

    if audio is not None:
        duration = times[-1] + (1 / fps) if times else 0.0
        _write_sine(out, audio, duration, audio_freq)
    out.close()
    return TestVideo(
        path=path,
        frame_times=tuple(times),
        width=stored[0],
        height=stored[1],
        codec=codec,
        rotation=rotation,
        audio_codec=audio.codec_context.name if audio is not None else None,
        audio_rate=audio.codec_context.sample_rate if audio is not None else None,
    )


def write_audio_only(
    path: str | Path, seconds: float = 1.0, freq: float = 440.0, codec: str | None = None
) -> Path:
    """A file with one audio stream (a sine) and no video: m4a / wav / mka / mp4 ..."""
    path = Path(path)
    suffix = path.suffix.lstrip(".")
    out = av.open(str(path), "w", format=_muxer_name(suffix))
    stream = _add_audio_stream(out, codec or AUDIO_CODECS[suffix])
    _write_sine(out, stream, seconds, freq)
    out.close()
    return path


def write_zero_frame_video(path: str | Path, codec: str = "mpeg4") -> Path:
    """A container whose video stream holds no frame at all (header only)."""
    path = Path(path)
    out = av.open(str(path), "w", format=_muxer_name(path.suffix.lstrip(".")))
    stream = out.add_stream(codec, rate=10)
    stream.width, stream.height = 32, 32
    stream.pix_fmt = "yuv420p"
    out.start_encoding()
    out.mux(stream.encode())
    out.close()
    return path


def write_empty_file(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_garbage_file(path: str | Path, num_bytes: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a video file name."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, num_bytes, np.uint8).tobytes())
    return path


def write_truncated_copy(source: str | Path, path: str | Path, keep: float = 0.5) -> Path:
    """The first `keep` fraction of `source`'s bytes, as if a download stopped."""
    data = Path(source).read_bytes()
    path = Path(path)
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_corrupted_copy(
    source: str | Path, path: str | Path, start: float = 0.3, stop: float = 0.7, seed: int = 0
) -> Path:
    """`source` with the bytes between the `start` and `stop` fractions randomised."""
    data = bytearray(Path(source).read_bytes())
    lo, hi = int(len(data) * start), int(len(data) * stop)
    noise = np.random.default_rng(seed).integers(0, 256, hi - lo, np.uint8).tobytes()
    data[lo:hi] = noise
    path = Path(path)
    path.write_bytes(bytes(data))
    return path


def decode_all_frames(path: str | Path) -> list[tuple[float, np.ndarray]]:
    """Reference: every frame by plain sequential decode, (time s, RGB as stored)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (float(frame.pts * stream.time_base), frame.to_ndarray(format="rgb24"))
            for frame in container.decode(stream)
        ]


def _muxer_name(container: str) -> str:
    return {"mkv": "matroska", "mka": "matroska", "m4a": "ipod"}.get(container, container)


def _display_matrix_clockwise(degrees: int) -> list[int]:
    """FFmpeg display matrix (16.16 fixed point; w in 2.30) turning the picture clockwise.

    Written from the matrix definition (x' = a*x + c*y, y' = b*x + d*y with y
    pointing down), not from any library helper, so the decoder's reading of it
    is checked independently.
    """
    radians = math.radians(degrees)
    cos, sin = round(math.cos(radians)), round(math.sin(radians))
    one = 1 << 16
    return [cos * one, sin * one, 0, -sin * one, cos * one, 0, 0, 0, 1 << 30]


def _add_audio_stream(out: av.container.OutputContainer, codec: str) -> av.audio.AudioStream:
    rate = AUDIO_RATES.get(codec, 16000)
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "mono"
    return stream


def _write_sine(out, stream, seconds: float, freq: float) -> None:
    rate = stream.codec_context.sample_rate
    total = round(seconds * rate)
    chunk = 1024
    for start in range(0, total, chunk):
        t = np.arange(start, min(start + chunk, total)) / rate
        samples = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def _black(width: int, height: int) -> np.ndarray:
    return np.zeros((height, width, 3), np.uint8)
