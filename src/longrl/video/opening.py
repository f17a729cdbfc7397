"""Open a media file with PyAV, turning every failure into a `VideoError`."""

from __future__ import annotations

from pathlib import Path

from longrl.video.errors import VideoError


def open_media(path: str | Path):
    """An open `av` input container; `VideoError` for missing/empty/unreadable files."""
    import av

    path = Path(path)
    if not path.exists():
        raise VideoError(path, "no such file", "check the path (relative paths resolve from cwd)")
    if path.is_dir():
        raise VideoError(path, "is a directory, not a media file", "give the path of a file")
    if path.stat().st_size == 0:
        raise VideoError(path, "the file is empty (0 bytes)", "re-download or re-create it")
    try:
        return av.open(str(path))
    except Exception as error:  # av raises many types; all mean the same here
        raise VideoError(
            path, f"cannot be opened ({error}); it is corrupt, truncated or not a media file"
        ) from error
