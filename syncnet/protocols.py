"""The scoring protocols: which 224x224 frames the SyncNet engines see (``CROP_PROTOCOLS``).

- ``track`` (joonson/syncnet_python ``run_pipeline.py``, the default): faces are found and tracked and each frame
  is cut out in SyncNet's crop convention (``syncnet.faces.crop_faces``).
- ``full-frame`` (Wav2Lip ``evaluation/scores_LSE/calculate_scores_LRS.py`` with ``SyncNetInstance_calc_scores.py``,
  its LRS2/LRS3 tables): no face detection; every frame is resized to 224x224 with ``cv2.resize(img, (224, 224))``
  (bilinear). Meant for videos that are already face crops.

Both original pipelines score frames that ffmpeg wrote as JPEG files with the image2 muxer's defaults
(``ffmpeg -i VIDEO -threads 1 -f image2 %06d.jpg``) and ``cv2.imread`` read back. With no ``-q:v`` ffmpeg's MJPEG
encoder runs its rate control at the default 200 kb/s (quantiser 2..31, chosen per frame), which for a 224x224 face
video means heavy quantisation. ``JpegRoundTrip`` does the same in memory: the same encoder (ffmpeg's, through PyAV)
with the same settings, decoded by ``cv2.imdecode``; on the same RGB frames it gives the pixels of the files exactly
(tests/test_protocols.py). It reproduces the original's input only from frames decoded with an exact YUV -> RGB
conversion, which ``syncnet.media`` does not do (its fast conversion is about 1.4 levels darker in luma);
``benchmarks/jpeg_roundtrip.py`` measures both effects on LSE-C / LSE-D.

Frame rate: Wav2Lip's LRS script takes the file's frames as they are (image2 keeps the file's own rate) and pairs
frame i with audio samples 640*i..640*(i+1), i.e. it assumes 25 fps. This project resamples every file to 25 fps
first. For 25 fps files (LRS2, LRS3, and what most lip-sync models write) both see the same frames; for any other
rate the original's pairing drifts (``frame_rate_warning``) and its numbers are not comparable with these.
"""
from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np

from syncnet.constants import CROP_SIZE, FPS
from syncnet.errors import EngineInputError

# ffmpeg's command-line defaults for `-f image2 %06d.jpg` with no quality option
FFMPEG_DEFAULT_BIT_RATE = 200_000  # bits per second (AVCodecContext "b"), shared out over the frames by rate control
FFMPEG_ENCODER_THREADS = 1  # both original commands pass `-threads 1`; rate control depends on it
FFMPEG_SCALER = "BICUBIC"  # libswscale flags ffmpeg's automatic RGB -> YUV conversion uses
JPEG_PIXEL_FORMAT = "yuvj420p"  # full-range 4:2:0, what ffmpeg encodes a yuv420p video to
RATE_TOLERANCE = 0.01  # frames per second within which a file counts as 25 fps


class JpegRoundTrip:
    """RGB frames through ffmpeg's MJPEG encoder at its image2 defaults and back through OpenCV's decoder.

    One object follows one clip: the encoder's rate control carries over from frame to frame, and from call to call,
    as it does over a file, so a clip handed over in chunks gives the same frames as in one piece.
    """

    def __init__(self, fps: float = FPS):
        self.fps = Fraction(fps).limit_denominator(1001)
        self._encoder: av.CodecContext | None = None
        self._frames = 0

    def __call__(self, frames_rgb: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) RGB -> the same frames after the JPEG round trip (uint8 RGB)."""
        frames_rgb = _check_frames(frames_rgb)
        encoder = self._encoder_for(frames_rgb.shape[2], frames_rgb.shape[1])
        out = np.empty_like(frames_rgb)
        for i, rgb in enumerate(frames_rgb):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame = frame.reformat(format=JPEG_PIXEL_FORMAT, interpolation=FFMPEG_SCALER)
            frame.pts = self._frames
            self._frames += 1
            (packet,) = encoder.encode(frame)  # MJPEG is intra-only: one picture in, one JPEG out
            bgr = cv2.imdecode(np.frombuffer(bytes(packet), np.uint8), cv2.IMREAD_COLOR)
            out[i] = bgr[..., ::-1]
        return out

    def _encoder_for(self, width: int, height: int) -> av.CodecContext:
        if self._encoder is None:
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height = width, height
            encoder.pix_fmt = JPEG_PIXEL_FORMAT
            encoder.time_base = 1 / self.fps
            encoder.framerate = self.fps
            encoder.bit_rate = FFMPEG_DEFAULT_BIT_RATE
            encoder.thread_count = FFMPEG_ENCODER_THREADS
            encoder.open()
            self._encoder = encoder
        elif (self._encoder.width, self._encoder.height) != (width, height):
            raise EngineInputError(
                f"frames changed size within a clip: {self._encoder.width}x{self._encoder.height} then {width}x{height}"
            )
        return self._encoder


def full_frame_crops(frames_rgb: np.ndarray, jpeg: JpegRoundTrip | None = None) -> np.ndarray:
    """Wav2Lip's LRS protocol: uint8 (T, H, W, 3) RGB frames -> uint8 (T, 224, 224, 3) RGB, no face detection.

    Each frame is resized as ``cv2.resize(img, (224, 224))`` (bilinear). The engines flip the result to BGR, and
    because the resize treats the channels alike they then see exactly what the original fed the network from the
    BGR image ``cv2.imread`` gave. ``jpeg``: pass the frames through this JPEG round trip first, as the original
    did through its JPEG files (None: the decoded frames as they are).
    """
    frames_rgb = _check_frames(frames_rgb)
    if jpeg is not None:
        frames_rgb = jpeg(frames_rgb)
    crops = np.empty((len(frames_rgb), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for i, frame in enumerate(frames_rgb):
        crops[i] = cv2.resize(frame, (CROP_SIZE, CROP_SIZE))
    return crops


def frame_rate_warning(source_fps: float | None) -> str | None:
    """A one-line note when a file is not 25 fps, where Wav2Lip's LRS script and this project see different frames."""
    if source_fps is None or abs(source_fps - FPS) <= RATE_TOLERANCE:
        return None
    drift_ms = abs(1000 / source_fps - 1000 / FPS) * source_fps  # per second of video
    return (
        f"the video is {source_fps:.4g} fps: it was resampled to {FPS:.0f} fps, while Wav2Lip's LRS script would pair "
        f"its frames with the sound as if they were {FPS:.0f} fps (drifting {drift_ms:.0f} ms per second), so its "
        "numbers for this file are not comparable"
    )


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise EngineInputError(f"frames must be uint8 (T, H, W, 3) with T, H, W > 0, got {frames.dtype} {frames.shape}")
    return np.ascontiguousarray(frames)
