"""FCN-SyncNet: is the sound in sync with the lips, by how many frames, and how sure are we?"""

__version__ = "0.1.0"
