"""`longrl video PATH`: probe a video, sample frames, print what was found as JSON.

Decodes the sampled frames for real (so a file that cannot give them fails
here, as it would in training). Exit 2 with a one-line reason on stderr for a
bad file or a bad sampling request.
"""

from __future__ import annotations

import argparse
import json
import sys

# Repeated here rather than imported so `longrl video --help` stays instant
# (importing longrl.video.sampling is cheap, but keep commands import-light).
_DEFAULT_MIN_FRAMES = 4
_DEFAULT_MAX_FRAMES = 768


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="video file (mp4, mkv, webm, avi, mov, ...)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--num-frames",
        type=int,
        help="sample this many frames uniformly over the whole video (rounded up to even)",
    )
    how.add_argument(
        "--fps",
        type=float,
        help="sample this many frames per second of video (default 2.0 when neither is given)",
    )
    parser.add_argument(
        "--min-frames",
        type=int,
        default=_DEFAULT_MIN_FRAMES,
        help=f"lower bound on the --fps count (default {_DEFAULT_MIN_FRAMES})",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        default=_DEFAULT_MAX_FRAMES,
        help=f"upper bound on the count, at most 8192 (default {_DEFAULT_MAX_FRAMES})",
    )


def run(args: argparse.Namespace) -> int:
    from longrl.video import SamplingError, VideoError, read_frames

    try:
        decoded = read_frames(
            args.path,
            num_frames=args.num_frames,
            fps=args.fps,
            min_frames=args.min_frames,
            max_frames=args.max_frames,
        )
    except (VideoError, SamplingError) as error:
        print(f"longrl video: error: {error}", file=sys.stderr)
        return 2
    info = decoded.info
    count, height, width = decoded.frames.shape[:3]
    report = {
        "path": info.path,
        "container": info.container,
        "codec": info.codec,
        "duration": round(info.duration, 6),
        "native_fps": round(info.native_fps, 6),
        "frame_count": info.frame_count,
        "width": info.width,
        "height": info.height,
        "rotation": info.rotation,
        "has_audio": info.has_audio,
        "requested_frames": decoded.requested,
        "sampled_frames": count,
        "indices": list(decoded.indices),
        "timestamps": [round(t, 6) for t in decoded.timestamps],
        "sampled_frame_size": {"width": width, "height": height},
        "frames_decoded": decoded.frames_decoded,
    }
    print(json.dumps(report, indent=2))
    return 0
