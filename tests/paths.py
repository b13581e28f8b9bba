"""Where the tests' own data lives (a fresh clone has no ../shared)."""
from pathlib import Path

DATA = Path(__file__).parent / "data"
SYNCNET_REF = DATA / "syncnet_ref"
CLIPS = DATA / "clips"
