"""Episode videos: agentview and wrist camera side by side, streamed to an MP4 as the episode runs.

The outcome is only known at the end, so frames go to ``<stem>.partial.mp4`` and the
file is renamed to ``<stem>--<outcome>.mp4`` when the episode finishes; partial files
left by a killed run are removed when the run resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PARTIAL_SUFFIX", "VideoRecorder", "remove_partial_videos", "video_stem"]

PARTIAL_SUFFIX = ".partial.mp4"


def video_stem(suite: str, task_id: int, task_name: str, trial: int, init_state_id: int | None) -> str:
    """Unique file stem of an episode video (the outcome is appended when it ends)."""
    init = "random" if init_state_id is None else f"{init_state_id:03d}"
    return f"{suite}--task{task_id:02d}--{task_name[:80]}--trial{trial:03d}--init{init}"


def remove_partial_videos(folder: str | Path) -> int:
    """Delete videos of episodes that never finished; returns how many were removed."""
    removed = 0
    for path in Path(folder).glob(f"*{PARTIAL_SUFFIX}"):
        path.unlink()
        removed += 1
    return removed


class VideoRecorder:
    """An episode observer (see ``eval.libero.episode.Observer``) that writes an MP4."""

    def __init__(self, folder: str | Path, stem: str, fps: int = 20) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stem = stem
        self.fps = fps
        self._partial = self.folder / f"{stem}{PARTIAL_SUFFIX}"
        self._writer: Any = None

    def __call__(self, env: Any, obs: dict[str, Any], action: np.ndarray | None) -> None:
        if self._writer is None:
            import imageio

            # macro_block_size=2: H.264 needs even sides; the default 16 would rescale 120 px frames.
            self._writer = imageio.get_writer(
                self._partial, fps=self.fps, codec="libx264", macro_block_size=2, ffmpeg_log_level="error"
            )
        self._writer.append_data(np.concatenate([obs["image"], obs["wrist_image"]], axis=1))

    def finish(self, outcome: str) -> str | None:
        """Close the file and name it after ``outcome``; returns the final file name."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        final = self.folder / f"{self.stem}--{outcome}.mp4"
        self._partial.replace(final)
        return final.name

    def abort(self) -> None:
        """Drop the partial file (the episode will be retried or recorded as an error)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._partial.unlink(missing_ok=True)
