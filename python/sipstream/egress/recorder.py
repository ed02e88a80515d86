"""Recording a stream to files (WCS ``/recorder/*``, ``sip_record_stream``).

Files are fragmented MP4 written with PyAV: a ``moov`` with the first
fragment, then one ``moof``+``mdat`` fragment per second, flushed to the OS as it is
written. A crash (even ``kill -9``) loses at most the fragment being built;
what is on disk plays. H.264 is copied; audio becomes AAC, or opus is kept
when ``record_audio_codec=opus``. Every file starts at a keyframe, so each
file of a rotated recording plays on its own.

Names come from a template (``stream_record_policy_template``) whose fields
are filled when known: while a file is written, ``{endTime}`` and the like
stay in its name as they are (as WCS shows them); when it is finished it is
renamed with them filled in. No name can leave ``record_dir``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from ..media.stream import MediaFrame, Stream
from .mux import BATCH_WINDOW_S, AvWriter, BatchItem, TrackClock, first_frames, next_frames

log = logging.getLogger(__name__)

FRAGMENT_US = 1_000_000
# Files are for any player and any later editing: full-band AAC.
RECORD_AAC_RATE = 48000
START_FIELDS = ("streamName", "mediaSessionId", "startTime", "startTimeMillis", "audioCodec", "videoCodec", "login")
END_FIELDS = ("endTime", "endTimeMillis", "duration")
_FIELD = re.compile(r"\{([^{}]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}
_TIME_UNITS = {"": 1, "S": 1, "SEC": 1, "MIN": 60, "H": 3600}
_HOOK_TIMEOUT_S = 60.0


class RecordingError(ValueError):
    """A recording setting or request that cannot work."""


@dataclasses.dataclass(frozen=True)
class Rotation:
    """Start a new file after this many seconds or bytes (None: never)."""

    seconds: float | None = None
    size: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> Rotation:
        """``""``/``disabled`` (off), ``20M``/``500K``/``1G`` (size), ``30``/``30s``/``5min``/``1h`` (duration)."""
        value = (text or "").strip().upper()
        if value in ("", "DISABLED", "FALSE", "OFF", "0"):
            return cls()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Z]*)", value)
        if match is not None:
            number, unit = float(match.group(1)), match.group(2)
            if unit.rstrip("B") in _SIZE_UNITS and unit not in ("",):
                size = int(number * _SIZE_UNITS[unit.rstrip("B")])
                if size >= 64 * 1024:
                    return cls(size=size)
            elif unit in _TIME_UNITS and number * _TIME_UNITS[unit] >= 1:
                return cls(seconds=number * _TIME_UNITS[unit])
        raise RecordingError(
            f"rotation must be a duration (30, 30s, 5min, 1h; at least 1 s) or a size (500K, 20M, 1G; "
            f"at least 64K), or 'disabled'; got {text!r}"
        )

    @property
    def enabled(self) -> bool:
        return self.seconds is not None or self.size is not None


def check_template(template: str) -> str:
    """The template, or RecordingError naming an unknown field."""
    if not template.strip():
        raise RecordingError("the file template is empty")
    unknown = [f for f in _FIELD.findall(template) if f not in START_FIELDS + END_FIELDS]
    if unknown:
        known = ", ".join("{" + f + "}" for f in START_FIELDS + END_FIELDS)
        raise RecordingError(f"unknown field {{{unknown[0]}}} in file template {template!r} (known: {known})")
    return template


def render_name(template: str, fields: dict[str, str]) -> str:
    """A file name (without directory): fields substituted when given, kept
    as ``{name}`` otherwise; every character outside ``[A-Za-z0-9._-]`` of
    the template and of the values becomes ``_``, so the name has no path in it."""
    out: list[str] = []
    pos = 0
    for match in _FIELD.finditer(template):
        out.append(_UNSAFE.sub("_", template[pos:match.start()]))
        name = match.group(1)
        out.append(_UNSAFE.sub("_", fields[name]) if name in fields else "{" + name + "}")
        pos = match.end()
    out.append(_UNSAFE.sub("_", template[pos:]))
    name = "".join(out).lstrip(".") or "record"
    return name[:200]


def _recorded_audio(source: str | None, wanted: str) -> str:
    if source is None:
        return "none"
    return "opus" if source == "opus" and wanted == "opus" else "AAC"


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime(ts))


@dataclasses.dataclass
class RecordConfig:
    record_dir: Path
    template: str
    rotation: Rotation = dataclasses.field(default_factory=Rotation)
    audio_codec: str = "aac"  # or "opus": keep opus as it came
    login: str = ""


class _File:
    """One file of a recording, while it is written."""

    def __init__(self, path: Path, template: str, fields: dict[str, str], started: float) -> None:
        self.path = path
        self.template = template
        self.fields = fields
        self.started = started
        self.writer: AvWriter | None = None
        # Bytes on disk after the last write that succeeded: whole fragments.
        # A failed write (disk full) may leave part of one after them.
        self.complete_size: int | None = None
        self.failed = False

    def write(self, batch: list[BatchItem]) -> None:
        """Write on the recording's thread, then note the size reached."""
        assert self.writer is not None
        self.writer.write_batch(batch)
        self.complete_size = os.path.getsize(self.path)


class Recording:
    """One stream recorded until stopped or until the stream ends."""

    def __init__(self, stream: Stream, config: RecordConfig,
                 on_file_done: Callable[[Recording, Path], None] | None = None) -> None:
        self.stream = stream
        self.config = config
        self.on_file_done = on_file_done
        self.status = "NEW"
        self.info = ""
        self.files: list[Path] = []  # finished files, in order
        self.current: _File | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"rec-{stream.name}")

    @property
    def media_session_id(self) -> str:
        return self.stream.media_session_id

    @property
    def file_name(self) -> str | None:
        """The file being written (with the fields not known yet as ``{…}``), else the last one finished."""
        if self.current is not None:
            return self.current.path.name
        return self.files[-1].name if self.files else None

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def on_done(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the recording has ended, however it ended."""
        assert self._task is not None
        self._task.add_done_callback(lambda _: callback())

    async def stop(self) -> None:
        """Finish the file being written and stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _set(self, status: str, info: str = "") -> None:
        if (status, info) != (self.status, self.info):
            level = logging.WARNING if status == "FAILED" else logging.INFO
            log.log(level, "recording of %s: %s%s", self.stream.name, status, f" ({info})" if info else "")
        self.status, self.info = status, info
        self.stream.changed()

    def to_json(self) -> dict[str, Any]:
        return {
            "fileName": self.file_name,
            "mediaSessionId": self.media_session_id,
            "streamName": self.stream.name,
            "status": self.status,
            "info": self.info,
            "files": [p.name for p in self.files],
        }

    # ------------------------------------------------------------------ run
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stream = self.stream
        video = stream.subscribe("video") if stream.has_video else None
        audio = stream.subscribe("audio") if stream.has_audio else None
        self._set("PENDING", "waiting for the first keyframe" if video is not None else "waiting for audio")
        try:
            start = await first_frames(video, audio, black_for_audio_only=True)
            if start is None:
                self._set("STOPPED", "the stream ended before it had media")
                return
            first, audio_first, black = start
            audio_codec = audio_first.codec if audio_first is not None else None
            # An audio-only call gets the generator's black picture, as RTMP
            # does: every file is H.264 + audio and plays in any player.
            starts = [audio_first] if black is not None else [first, audio_first]
            pending: list[MediaFrame] = sorted((f for f in starts if f is not None), key=lambda f: f.pts_us)
            while pending:
                keyframe = black or next((f.data for f in pending if f.kind == "video" and f.keyframe), None)
                await self._open(loop, keyframe, audio_codec)
                pending = await self._write_file(loop, pending, video, audio, black)
                await self._finish(loop)
            self._set("STOPPED", "stream ended")
        except (av.error.FFmpegError, OSError) as exc:
            if self.current is not None:
                self.current.failed = True
            self._set("FAILED", f"cannot write {self.current.path if self.current else self.config.record_dir}: "
                                f"{getattr(exc, 'strerror', None) or exc}")
        except asyncio.CancelledError:
            self._set("STOPPED", "stopped")
            raise
        finally:
            for sub in (video, audio):
                if sub is not None:
                    sub.close()
            await asyncio.shield(self._finish(loop))
            # The writer thread has nothing left to do: let it go now, not
            # when the gateway closes (a server with many calls would keep
            # one idle thread per recording that ever ran).
            self._executor.shutdown(wait=False)

    async def _write_file(self, loop: asyncio.AbstractEventLoop, pending: list[MediaFrame],
                          video: Any, audio: Any, black: bytes | None) -> list[MediaFrame]:
        """Write frames into the current file until the stream ends ([]) or
        the file is due for rotation: then the frames from the next keyframe
        on (they start the next file)."""
        assert self.current is not None and self.current.writer is not None
        current = self.current
        clock = TrackClock(pending[0].pts_us)
        seconds = self.config.rotation.seconds
        limit_us = seconds * 1_000_000 if seconds is not None else None
        next_black_us = 0
        rotate = False
        while pending:
            batch: list[BatchItem] = []
            for i, frame in enumerate(pending):
                us = clock.us(frame)
                if not rotate and limit_us is not None and us >= limit_us:
                    rotate = self._rotation_starts(video)
                if rotate and (video is None or frame.kind == "video" and frame.keyframe):
                    # the next file starts here, at a keyframe
                    if batch:
                        await loop.run_in_executor(self._executor, current.write, batch)
                    return pending[i:]
                if black is not None and us >= next_black_us:
                    # one black keyframe a second, the first at the file's start
                    batch.append(("video", "H264", black, next_black_us, True))
                    next_black_us += 1_000_000
                flag = frame.keyframe if frame.kind == "video" else False
                batch.append((frame.kind, frame.codec, frame.data, us, flag))
            await loop.run_in_executor(self._executor, current.write, batch)
            if not rotate and self._size_reached():
                rotate = self._rotation_starts(video)
            await asyncio.sleep(BATCH_WINDOW_S)
            pending = await next_frames(video, audio)
        return []

    def _rotation_starts(self, video: Any) -> bool:
        """The file is due: cut at the next keyframe, and ask for one."""
        if video is not None:
            self.stream.request_keyframe("recording rotation")
        return True

    def _size_reached(self) -> bool:
        size = self.config.rotation.size
        if size is None or self.current is None:
            return False
        try:
            return self.current.path.stat().st_size >= size
        except OSError:
            return False

    async def _open(self, loop: asyncio.AbstractEventLoop, keyframe: bytes | None, audio_codec: str | None) -> None:
        config = self.config
        now = time.time()
        fields = {
            "streamName": self.stream.name,
            "mediaSessionId": self.media_session_id,
            "startTime": _utc(now),
            "startTimeMillis": str(int(now * 1000)),
            "audioCodec": _recorded_audio(audio_codec, config.audio_codec),
            "videoCodec": "H264" if keyframe is not None else "none",
            "login": config.login,
        }
        path = await loop.run_in_executor(self._executor, self._create, fields)
        self.current = _File(path, config.template, fields, now)
        writer = AvWriter(str(path), "mp4", options={
            # delay_moov: the moov (with the edit list that hides the AAC
            # priming) is written with the first fragment, once both tracks' starts are known.
            "movflags": "frag_keyframe+empty_moov+default_base_moof+delay_moov",
            "frag_duration": str(FRAGMENT_US),
            "flush_packets": "1",
        }, audio_copy=config.audio_codec == "opus", aac_rate=RECORD_AAC_RATE)
        self.current.writer = writer
        await loop.run_in_executor(self._executor, writer.open)
        await loop.run_in_executor(self._executor, writer.start, keyframe, audio_codec)
        self._set("RECORDING")

    def _create(self, fields: dict[str, str]) -> Path:
        """A new, empty file for ``fields`` in ``record_dir`` (made if missing)."""
        directory = self.config.record_dir
        directory.mkdir(parents=True, exist_ok=True)
        return _exclusive(directory, render_name(self.config.template, fields))

    async def _finish(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the current file, fill its end fields into its name, report it."""
        current, self.current = self.current, None
        if current is None:
            return
        if current.writer is not None:
            await loop.run_in_executor(self._executor, current.writer.close)
        if current.failed and current.complete_size:
            # keep the fragments that were written whole: the file plays to the end
            await loop.run_in_executor(self._executor, os.truncate, current.path, current.complete_size)
        ended = time.time()
        fields = {
            **current.fields,
            "endTime": _utc(ended),
            "endTimeMillis": str(int(ended * 1000)),
            "duration": str(int((ended - current.started) * 1000)),
        }
        path = current.path
        final = render_name(current.template, fields)
        if final != path.stem:
            try:
                path = await loop.run_in_executor(self._executor, _rename_exclusive, path, final)
            except OSError as exc:
                log.warning("recording of %s: cannot rename %s: %s", self.stream.name, path.name, exc)
        if not path.exists() or path.stat().st_size == 0:
            return
        self.files.append(path)
        log.info("recording of %s: file %s finished", self.stream.name, path)
        if self.on_file_done is not None:
            self.on_file_done(self, path)


def _exclusive(directory: Path, stem: str, suffix: str = ".mp4") -> Path:
    """``directory/stem.mp4`` created empty, or ``stem-1.mp4``… if taken."""
    for n in range(1000):
        path = directory / f"{stem}{'' if n == 0 else f'-{n}'}{suffix}"
        try:
            path.touch(exist_ok=False)
        except FileExistsError:
            continue
        if path.resolve().parent != directory.resolve():
            path.unlink(missing_ok=True)
            raise PermissionError(f"{path} would leave {directory}")
        return path
    raise FileExistsError(f"no free file name for {stem!r} in {directory}")


def _rename_exclusive(path: Path, stem: str) -> Path:
    target = _exclusive(path.parent, stem, path.suffix)
    os.replace(path, target)
    return target


class TooManyRecordings(RecordingError):
    """``max_recorders`` recordings are running."""


class Recorders:
    """Every recording of a gateway, by the stream's mediaSessionId; at most
    ``max_recorders`` at a time."""

    def __init__(self, record_dir: str | Path, template: str, rotation: str = "", audio_codec: str = "aac",
                 hook_script: str = "", max_recorders: int = 100) -> None:
        self.max_recorders = max_recorders
        self.record_dir = Path(record_dir).absolute()
        self.template = check_template(template)
        self.rotation = Rotation.parse(rotation)
        if audio_codec not in ("aac", "opus"):
            raise RecordingError(f"record_audio_codec must be aac or opus, got {audio_codec!r}")
        self.audio_codec = audio_codec
        self.hook_script = hook_script
        self.recordings: dict[str, Recording] = {}
        self._hooks: set[asyncio.Task[None]] = set()

    def config(self, file_template: str | None = None, rotation: str | None = None, login: str = "") -> RecordConfig:
        return RecordConfig(
            record_dir=self.record_dir,
            template=check_template(file_template) if file_template else self.template,
            rotation=Rotation.parse(rotation) if rotation is not None else self.rotation,
            audio_codec=self.audio_codec,
            login=login,
        )

    async def start(self, stream: Stream, config: RecordConfig | None = None) -> Recording:
        """Record ``stream``; a recording already running for it is finished first."""
        config = config or self.config()
        old = self.recordings.get(stream.media_session_id)
        if old is None and len(self.find_all()) >= self.max_recorders:
            raise TooManyRecordings(f"max_recorders ({self.max_recorders}) recordings are running")
        if old is not None:
            await old.stop()
        recording = Recording(stream, config, self._file_done)
        msid = stream.media_session_id
        self.recordings[msid] = recording
        stream.recording = recording
        recording.start()
        # a finished recording is forgotten (the stream still shows its last file)
        recording.on_done(lambda: self.recordings.pop(msid, None) if self.recordings.get(msid) is recording else None)
        return recording

    def get(self, media_session_id: str) -> Recording | None:
        recording = self.recordings.get(media_session_id)
        return recording if recording is not None and recording.active else None

    def find_all(self) -> list[Recording]:
        return [r for r in self.recordings.values() if r.active]

    async def stop(self, media_session_id: str) -> bool:
        recording = self.recordings.pop(media_session_id, None)
        if recording is None or not recording.active:
            return False
        await recording.stop()
        return True

    def _file_done(self, recording: Recording, path: Path) -> None:
        if not self.hook_script:
            return
        task = asyncio.get_running_loop().create_task(self._run_hook(recording.stream.name, path))
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    async def _run_hook(self, stream_name: str, path: Path) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.hook_script, stream_name, str(path.absolute()),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            log.warning("on_record_hook_script %s: cannot run: %s", self.hook_script, exc)
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate(), _HOOK_TIMEOUT_S)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            log.warning("on_record_hook_script %s: killed after %.0f s", self.hook_script, _HOOK_TIMEOUT_S)
            return
        if proc.returncode != 0:
            log.warning("on_record_hook_script %s exited with %s: %s", self.hook_script, proc.returncode,
                        err.decode(errors="replace").strip()[-500:])

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop every recording (files finished) and wait a little for hook
        scripts, ``grace_s`` in all. Recordings of streams that already ended
        get part of it to write what they still hold."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        recordings, self.recordings = list(self.recordings.values()), {}
        ending = [r.wait() for r in recordings if r.active and r.stream.ended]
        if ending:
            await asyncio.wait([asyncio.ensure_future(w) for w in ending], timeout=grace_s / 2)
        await asyncio.gather(*(r.stop() for r in recordings), return_exceptions=True)
        if self._hooks:
            _, pending = await asyncio.wait(set(self._hooks), timeout=max(0.1, deadline - loop.time()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
