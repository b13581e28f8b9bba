"""The streaming pipeline: every shot of a file scored on its own, long tracks scored in pieces, bounded memory."""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from syncnet import faces, pipeline
from syncnet.engines import EngineInput, load_engine
from syncnet.media import SAMPLES_PER_FRAME, load_media, media_chunks
from syncnet.protocols import full_frame_crops
from syncnet.report import Report, drift_ms_per_minute
from syncnet.scoring import OFFSETS, Calibration
from syncnet.verdict import AUDIO_EARLY, IN_SYNC, NO_SIGNAL, verdict_of
from tests.media_tools import ffmpeg
from tests.paths import CLIPS

SHOTS = [  # (clip, seconds used, audio shift in frames: + = audio early)
    ("syncnet_example.avi", 6.0, 3),
    ("pcavs_audiosrc_00086.mp4", 5.2, -4),
    ("videoretalking_face1.mp4", 6.0, 2),
]
SIDE = 320  # every shot scaled to one size so that they can be joined
ROOT = Path(__file__).parents[1]
# the peak resident memory of this process alone, in MiB (ru_maxrss would count the parent's, kept across exec)
PEAK_MB = "print(next(int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')))"


def shot(src: Path, seconds: float, shift: int, out: Path) -> Path:
    """`seconds` of `src` with its audio moved by `shift` frames (+: earlier, by cutting the start of the sound)."""
    delay = abs(shift) * 40
    sound = f"atrim=start={delay / 1000},asetpts=PTS-STARTPTS,apad" if shift > 0 else f"adelay={delay}:all=1,apad"
    ffmpeg("-i", str(src), "-t", str(seconds), "-vf", f"scale={SIDE}:{SIDE},fps=25", "-af", sound,
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-ar", "16000", "-ac", "1", str(out))
    return out


def joined(folder: Path, shifts: list[int]) -> Path:
    """The shots one after the other in one file (cuts between them), each with its own audio shift."""
    parts = [shot(CLIPS / name, seconds, s, folder / f"shot{i}.mp4")
             for i, ((name, seconds, _), s) in enumerate(zip(SHOTS, shifts, strict=True))]
    inputs = [arg for part in parts for arg in ("-i", str(part))]
    streams = "".join(f"[{i}:v][{i}:a]" for i in range(len(parts)))
    out = folder / f"shots_{'_'.join(map(str, shifts))}.mp4"
    ffmpeg(*inputs, "-filter_complex", f"{streams}concat=n={len(parts)}:v=1:a=1[v][a]", "-map", "[v]", "-map", "[a]",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out))
    return out


@pytest.mark.slow
def test_every_shot_gets_its_own_offset(tmp_path):
    """Three shots with audio shifts +3, -4, +2 frames: each track moves by its shift from the unshifted file's."""
    shifts = [s for _, _, s in SHOTS]
    base = pipeline.analyze_file(joined(tmp_path, [0, 0, 0]), ["landmarks"])
    shifted = pipeline.analyze_file(joined(tmp_path, shifts), ["landmarks"])
    assert len(base.tracks) == len(shifted.tracks) == len(SHOTS)
    starts = np.cumsum([0.0] + [seconds for _, seconds, _ in SHOTS[:-1]])
    for track, reference, start, shift in zip(shifted.tracks, base.tracks, starts, shifts, strict=True):
        assert track.speaking and abs(track.t_start - start) <= 0.2, (track.t_start, start)
        found = track.results[0].offset_frames - reference.results[0].offset_frames
        assert abs(found - shift) <= 1, (start, found, shift)
    listed = shifted.to_dict()["tracks"]
    assert [round(t["t_start"]) for t in listed] == [round(s) for s in starts]
    assert all(set(t) >= {"t_start", "t_end", "results"} and t["results"][0]["engine"] == "landmarks" for t in listed)


@pytest.mark.slow
def test_long_track_scored_in_pieces_matches_one_pass(monkeypatch, synthetic_weights):
    """Pieces with context give the very distance rows of one pass over the whole track (fcn, synthetic weights)."""
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(synthetic_weights))
    monkeypatch.setattr(faces, "PIECE_FRAMES", 100)  # syncnet_example's 317 frames: 4 pieces
    media = load_media(CLIPS / "syncnet_example.avi")
    with faces.FaceTracker(crops=True) as tracker:
        pieces = [p for chunk in media_chunks(media) for p in tracker.add(chunk)] + tracker.finish()
    assert [p.keep for p in pieces] == [(0, 100), (100, 200), (200, 300), (300, 317)]
    engine = load_engine("fcn")
    rows = []
    for piece in pieces:
        dists = engine.run(EngineInput(piece.crops, piece.audio, _mfcc(piece.audio), piece.lips)).window_dists
        rows.append(dists[piece.keep[0] - piece.start : piece.keep[1] - piece.start])
    whole = faces.crop_faces(media.frames, faces.track_face(media.frames, media.audio))
    audio = media.audio[: len(whole) * SAMPLES_PER_FRAME]
    one_pass = engine.run(EngineInput(whole, audio, _mfcc(audio), np.zeros((len(whole), 5), np.float32)))
    assert np.array_equal(np.concatenate([p.crops[p.keep[0] - p.start : p.keep[1] - p.start] for p in pieces]), whole)
    np.testing.assert_allclose(np.concatenate(rows), one_pass.window_dists, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_tracks_first_piece_is_cut_once_it_can_be_judged():
    """The first piece keeps MIN_JUDGED_FRAMES (4 s): the engines start on it sooner; later pieces keep 5 s."""
    media = load_media(CLIPS / "syncnet_example.avi")
    with faces.FaceTracker(crops=False) as tracker:
        pieces = [p for chunk in media_chunks(media) for p in tracker.add(chunk)] + tracker.finish()
    assert [p.keep for p in pieces] == [(0, faces.MIN_JUDGED_FRAMES), (100, 225), (225, 317)]
    assert faces.MIN_JUDGED_FRAMES == 100 and faces.PIECE_FRAMES == 125


@pytest.mark.slow
def test_joined_pieces_equal_one_longer_piece(monkeypatch):
    """Short pieces (for the crop engines) joined for the landmarks engine give exactly the longer piece."""
    media = load_media(CLIPS / "syncnet_example.avi")

    def pieces(frames_per_piece: int) -> list[faces.Piece]:
        monkeypatch.setattr(faces, "PIECE_FRAMES", frames_per_piece)
        monkeypatch.setattr(faces, "MIN_JUDGED_FRAMES", frames_per_piece)  # the first piece as long (one face here)
        with faces.FaceTracker(crops=True, blendshapes=True) as tracker:
            return [p for chunk in media_chunks(media) for p in tracker.add(chunk)] + tracker.finish()

    short, long = pieces(100), pieces(400)
    assert [p.last for p in short] == [False, False, False, True] and len(long) == 1 and long[0].last
    joined = pipeline.join_pieces(short)
    assert (joined.track, joined.start, joined.stop, joined.keep) == (long[0].track, long[0].start, long[0].stop,
                                                                      long[0].keep)
    for field in ("audio", "lips", "crops", "blendshapes"):
        assert np.array_equal(getattr(joined, field), getattr(long[0], field)), field


@pytest.mark.slow
def test_a_tail_piece_too_short_for_a_lip_window_is_left_out(monkeypatch, synthetic_weights):
    """A track's last piece keeping only its final 3 frames (in no 5-frame window) is not given to the SyncNet
    engines: the result has the rows of all the clip's 312 windows, as one pass over it would."""
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(synthetic_weights))
    monkeypatch.setattr(faces, "PIECE_FRAMES", 314)  # syncnet_example's 317 frames: keeps (0, 314) and (314, 317)
    monkeypatch.setattr(faces, "MIN_JUDGED_FRAMES", 314)  # the first piece as long (one face here)
    report = pipeline.analyze_file(CLIPS / "syncnet_example.avi", ["fcn"])
    assert report.results[0].engine == "fcn"
    assert list(report.result_frames["fcn"]) == list(range(317 - 5))


@pytest.mark.slow
def test_faces_every_other_frame_only_without_the_landmarks_engine(monkeypatch, synthetic_weights):
    """The landmarks engine reads the lips of every frame; the SyncNet engines alone let the tracker skip some."""
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(synthetic_weights))
    strides = []

    class Tracker(faces.FaceTracker):
        def __init__(self, **options):
            strides.append(options["stride"])
            super().__init__(**options)

    monkeypatch.setattr(pipeline, "FaceTracker", Tracker)
    for engines in (["fcn"], ["syncnet", "fcn"], ["landmarks"], ["landmarks", "fcn"]):
        report = pipeline.analyze_file(CLIPS / "pcavs_posesrc_00067.mp4", engines)
        assert [r.engine for r in report.results] == engines
    assert strides == [pipeline.FACE_STRIDE, pipeline.FACE_STRIDE, 1, 1] and pipeline.FACE_STRIDE > 1


def _mfcc(audio: np.ndarray) -> np.ndarray:
    from syncnet.audio import mfcc

    return mfcc(audio)


@pytest.mark.slow
def test_decoding_a_long_file_holds_one_chunk_at_a_time(tmp_path):
    """5 minutes of 224x224 video (1.1 GB of frames) decode chunk by chunk in a process that peaks far lower."""
    path = tmp_path / "long.mp4"
    ffmpeg("-stream_loop", "-1", "-i", str(CLIPS / "pcavs_posesrc_00067.mp4"), "-t", "300", "-c", "copy", str(path))
    script = (
        "import sys; from syncnet.media import open_media\n"
        "stream = open_media(sys.argv[1]); last = 0\n"
        "for chunk in stream:\n"
        "    assert chunk.start == last and len(chunk.frames) <= 25; last = chunk.stop\n"
        "print(stream.num_frames)\n"
        f"{PEAK_MB}\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                          cwd=ROOT)
    frames, peak_mb = map(int, done.stdout.split())
    assert abs(frames - 300 * 25) <= 2
    assert peak_mb < 400, peak_mb


@pytest.mark.slow
def test_memory_does_not_grow_with_length(tmp_path):
    """Peak memory of the CLI on 0.5 and 2 minutes of the same clip repeated: the same within 100 MB."""
    peaks = {}
    script = (
        "import contextlib, io, sys; from syncnet.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main([sys.argv[1], sys.argv[2], '--engine', 'landmarks', '--json']) == 0\n"
        f"{PEAK_MB}\n"
    )
    for minutes in (0.5, 2):
        path = tmp_path / f"long_{minutes}.mp4"
        ffmpeg("-stream_loop", "-1", "-i", str(CLIPS / "pcavs_posesrc_00067.mp4"), "-t", str(60 * minutes),
               "-c", "copy", str(path))
        done = subprocess.run([sys.executable, "-c", script, "detect", str(path)], capture_output=True, text=True,
                              check=True, cwd=ROOT)
        peaks[minutes] = int(done.stdout.split()[-1])
    assert peaks[2] - peaks[0.5] < 100, peaks


@pytest.mark.slow
def test_full_frame_protocol_feeds_whole_frames_to_the_crop_engines(tmp_path, monkeypatch, synthetic_weights):
    """crop="full-frame": fcn scores the resized whole frames, landmarks still the face track; the JSON says so."""
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(synthetic_weights))
    pipeline.unload_engines()
    clip = CLIPS / "pcavs_posesrc_00067.mp4"
    try:
        report = pipeline.analyze_file(clip, ["fcn", "landmarks"], crop="full-frame")
    finally:
        pipeline.unload_engines()
    data = report.to_dict()
    assert data["protocol"] == "full-frame"
    whole, face = report.tracks
    assert whole.face == "full frame" and [r.engine for r in whole.results] == ["fcn"]
    assert [r.engine for r in face.results] == ["landmarks"]
    media = load_media(clip)
    direct = load_engine("fcn").run(EngineInput(full_frame_crops(media.frames), media.audio, _mfcc(media.audio),
                                                np.zeros((media.num_frames, 5), np.float32)))
    np.testing.assert_allclose(whole.results[0].dists, direct.dists, rtol=1e-6)


def _step_scorer(signal: np.ndarray) -> pipeline._Scorer:
    """Landmarks rows over len(signal) frames: where ``signal``, sure of 0 frames up to 1500 and +2 after; elsewhere a
    faint minimum at +15 (600 ms), far below the no-signal threshold."""

    class Engine:
        name = "landmarks"
        calibration = Calibration()

    loaded: Future = Future()
    loaded.set_result(([Engine()], []))
    scorer = pipeline._Scorer(loaded, pipeline._Timing(), full_frame=False)
    frames = np.arange(len(signal))
    true_offset = np.where(frames < 1500, 0, 2)
    sure = np.abs(OFFSETS[None, :] - true_offset[:, None]).astype(float)  # V-shaped, minimum at the true offset
    faint = np.broadcast_to(1e-3 * np.abs(OFFSETS - 15.0), sure.shape)
    scorer.rows[(0, "landmarks")] = [(frames, np.where(signal[:, None], sure, faint))]
    scorer.settle({0: True})
    return scorer


def test_windows_and_drift_from_the_distance_rows():
    """Two minutes whose offset steps from 0 to +2 frames halfway: 30 s windows read 0, 0, 80, 80 ms (64 ms/min)."""
    windows, drift = pipeline._windows(_step_scorer(np.ones(3000, bool)), 3000, 30.0)
    assert [(w.t_start, w.t_end) for w in windows] == [(0, 30), (30, 60), (60, 90), (90, 120)]
    assert [w.results[0].calibrated_offset_ms for w in windows] == [0, 0, 80, 80]
    assert [(d.engine, d.windows) for d in drift] == [("landmarks", 4)]
    assert drift[0].ms_per_minute == pytest.approx(64.0)
    assert drift_ms_per_minute([0, 60, 120], [10, 20, 30]) == pytest.approx(10.0)


def test_drift_leaves_out_windows_without_a_sync_signal():
    """A fifth window with no signal reads +600 ms by chance: the drift and its window count stay as without it."""
    signal = np.arange(3750) < 3000
    windows, drift = pipeline._windows(_step_scorer(signal), len(signal), 30.0)
    chance = windows[4].results[0]
    assert chance.calibrated_offset_ms == pytest.approx(600) and verdict_of(chance) == NO_SIGNAL
    assert [(d.engine, d.windows) for d in drift] == [("landmarks", 4)]
    assert drift[0].ms_per_minute == pytest.approx(64.0)
    assert drift_ms_per_minute([15, 45, 75, 105, 135], [0, 0, 80, 80, 600]) > 200  # what the chance window would do
    shown = Report("clip.mp4", 150.0, 3750, [], {}, [], windows=windows, drift=drift).to_dict()["windows"]
    assert [w["results"][0]["verdict"] for w in shown] == [IN_SYNC, IN_SYNC, AUDIO_EARLY, AUDIO_EARLY, NO_SIGNAL]


def test_no_drift_from_fewer_signal_windows_than_the_minimum():
    signal = np.arange(3750) < 750 * (pipeline.MIN_DRIFT_WINDOWS - 1)
    windows, drift = pipeline._windows(_step_scorer(signal), len(signal), 30.0)
    assert all(w.results for w in windows) and drift == []


@pytest.mark.slow
def test_cli_window_and_max_duration_are_checked():
    def detect(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "syncnet", "detect", str(CLIPS / "pcavs_posesrc_00067.mp4"),
                               *args], capture_output=True, text=True, cwd=ROOT, timeout=300)

    short = detect("--window", "0.5")
    assert short.returncode == 2 and short.stderr.strip() == "syncnet: error: --window must be at least 1 s"
    long = detect("--max-duration", "2")
    assert long.returncode == 2 and "video too long: 4.6 s (limit 2 s)" in long.stderr
