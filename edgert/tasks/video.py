"""Frames from a video file or a camera (OpenCV's VideoCapture) through a task pipeline, with a running frame rate
and each stage's latency; optionally written out annotated.

A camera takes the same path as a file: `open_capture(camera=0)` opens the device with `cv2.VideoCapture(0)`, and
everything after that call (reading frames, the pipeline, the statistics) is the code a file goes through.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgert.errors import InputDataError


def _cv2():
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # its warnings about absent cameras would not be one line
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # nor FFmpeg's about damaged files (AV_LOG_QUIET)
    try:
        import cv2
    except ImportError:
        raise InputDataError("video and cameras need OpenCV: pip install 'edgert[video]' (or "
                             "opencv-python-headless)") from None
    return cv2


@dataclass
class Capture:
    """An opened video source: `frames()` yields RGB pixels, decoding time measured for each."""

    source: str  # the file, or "camera N"
    handle: object
    fps: float  # what the source declares (0 when it does not)
    width: int
    height: int
    read_ms: list[float] = field(default_factory=list)

    def frames(self, limit: int | None = None) -> Iterator[np.ndarray]:
        cv2 = _cv2()
        count = 0
        while limit is None or count < limit:
            t0 = time.perf_counter_ns()
            ok, frame = self.handle.read()
            if not ok or frame is None:
                return
            pixels = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            self.read_ms.append((time.perf_counter_ns() - t0) / 1e6)
            count += 1
            yield pixels

    def close(self) -> None:
        self.handle.release()


def open_capture(video: str | os.PathLike | None = None, camera: int | None = None) -> Capture:
    """Open a video file or camera N.

    Raises:
        InputDataError: neither or both given, no such file, or OpenCV cannot open it (the camera is absent or
            busy, the file's codec is unknown to this OpenCV).
    """
    cv2 = _cv2()
    if (video is None) == (camera is None):
        raise InputDataError("give one of --video FILE or --camera N")
    if video is not None:
        path = Path(video)
        if not path.is_file():
            raise InputDataError(f"--video {path}: no such file")
        handle, source = cv2.VideoCapture(str(path)), str(path)
        why = "not a video this OpenCV can decode (its FFmpeg lacks the codec, or the file is damaged)"
    else:
        if camera < 0:
            raise InputDataError(f"--camera {camera}: camera numbers start at 0 (/dev/video0)")
        handle, source = cv2.VideoCapture(int(camera)), f"camera {camera}"
        why = (f"no camera {camera} here (/dev/video{camera} is missing or busy); check `ls /dev/video*` and that "
               "no other program holds it")
    if not handle.isOpened():
        handle.release()
        raise InputDataError(f"{source}: {why}")
    return Capture(source, handle, float(handle.get(cv2.CAP_PROP_FPS) or 0.0),
                   int(handle.get(cv2.CAP_PROP_FRAME_WIDTH)), int(handle.get(cv2.CAP_PROP_FRAME_HEIGHT)))


@dataclass(frozen=True)
class StreamStats:
    """A stream's frames so far: frame rate end to end and each stage's median (ms)."""

    frames: int
    fps: float
    read_ms: float
    pre_ms: float
    infer_ms: float
    post_ms: float

    def describe(self) -> str:
        return (f"{self.frames} frames, {self.fps:.1f} fps; per frame (median): read {self.read_ms:.2f} ms, pre "
                f"{self.pre_ms:.2f} ms, infer {self.infer_ms:.2f} ms, post {self.post_ms:.2f} ms")

    def to_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def run_stream(pipeline, capture: Capture, *, max_frames: int | None = None, every: int = 30,
               on_result: Callable[[int, object, np.ndarray], None] | None = None,
               on_stats: Callable[[StreamStats], None] | None = None) -> StreamStats:
    """Each frame through `pipeline`; `on_result(index, result, pixels)` for each, `on_stats` every `every` frames
    and at the end (Ctrl-C ends the stream with the statistics so far)."""
    stages: list[tuple[float, float, float]] = []
    started = time.perf_counter()
    stats = StreamStats(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    try:
        for index, pixels in enumerate(capture.frames(max_frames)):
            result = pipeline.run_pixels(pixels, f"{capture.source}#{index}")
            t = result.timings
            stages.append((t.pre_ms, t.infer_ms, t.post_ms))
            if on_result is not None:
                on_result(index, result, pixels)
            if on_stats is not None and (index + 1) % every == 0:
                on_stats(_stats(stages, capture.read_ms, started))
    except KeyboardInterrupt:
        pass
    if stages:
        stats = _stats(stages, capture.read_ms, started)
        if on_stats is not None:
            on_stats(stats)
    return stats


def _stats(stages, read_ms, started) -> StreamStats:
    a = np.asarray(stages, np.float64)
    elapsed = time.perf_counter() - started
    return StreamStats(len(stages), len(stages) / elapsed if elapsed > 0 else 0.0,
                       float(np.median(read_ms)) if read_ms else 0.0, *(float(v) for v in np.median(a, axis=0)))


class VideoWriter:
    """Annotated frames to a video file (the codec from the suffix: .mp4 mp4v, .avi MJPG), written to a temporary
    file beside it and renamed when closed, so an interrupted run leaves no half-written video."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], *, force: bool = False):
        from edgert.files import check_output_path

        cv2 = _cv2()
        self.path = Path(path)
        check_output_path(self.path, force=force)
        codec = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}.get(self.path.suffix.lower())
        if codec is None:
            raise InputDataError(f"-o {self.path}: an annotated video is .mp4, .avi or .mkv")
        self._tmp = self.path.with_name(f".{self.path.name}.part{self.path.suffix}")
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), fps or 25.0, size)
        if not self._writer.isOpened():
            raise InputDataError(f"-o {self.path}: this OpenCV cannot write {self.path.suffix} video")

    def write(self, image) -> None:
        cv2 = _cv2()
        self._writer.write(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))

    def close(self, keep: bool = True) -> None:
        self._writer.release()
        if keep:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
