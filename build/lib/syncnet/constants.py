"""Numbers every stage agrees on (SyncNet's input format). No heavy imports: any module may take them from here."""
from __future__ import annotations

FPS = 25.0  # video frames per second everything is resampled to
MS_PER_FRAME = 1000.0 / FPS  # 40 ms
SAMPLE_RATE = 16000  # audio samples per second
SAMPLES_PER_FRAME = int(SAMPLE_RATE / FPS)  # 640 audio samples per video frame
MFCC_HOP = 160  # samples between MFCC steps (10 ms)
MFCC_WINDOW_LENGTH = 400  # samples per MFCC analysis window (25 ms)
MFCC_STEPS_PER_FRAME = SAMPLES_PER_FRAME // MFCC_HOP  # 4 MFCC steps per video frame
LIP_WINDOW_FRAMES = 5  # video frames per SyncNet lip window
AUDIO_WINDOW_STEPS = LIP_WINDOW_FRAMES * MFCC_STEPS_PER_FRAME  # 20 MFCC steps per SyncNet audio window
MAX_OFFSET = 15  # offsets searched either way, in frames
NUM_OFFSETS = 2 * MAX_OFFSET + 1  # 31 candidate offsets, -15..+15
CROP_SIZE = 224  # side of a SyncNet face crop, pixels
MIN_TRACK_S = 1.0  # shortest face track (and shortest file) that is scored
CROP_PROTOCOLS = ("track", "full-frame")  # syncnet_python's tracked face crops; Wav2Lip's LRS full frames
DEFAULT_WINDOW_S = 5.0  # length of a stream window (and of a window of a long file), seconds
