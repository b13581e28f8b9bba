"""The one root of every error a user can cause, and the tree beneath it.

```
SyncNetError                      bad input or an unusable setting; the message is one line for the user
 +-- BadArgument                  an argument or option that cannot be used (engine name, window length...)
 +-- MediaError                   the file cannot be used (missing, unreadable, no audio, too short, too long...)
 |    +-- NoFaceError             no face, or none visible long enough
 |    +-- SilentAudioError        the soundtrack is silent
 +-- EngineInputError             crops, audio or lip series an engine cannot score
 +-- NetworkError                 a URL refused by the network guard, or a fetch that failed
 |    +-- HlsError                a playlist or segment that cannot be used
 +-- WeightsError                 the SyncNet weights cannot be had or do not check out
 +-- FaceModelError               the face model is missing or corrupt
```
Anything else that escapes the library is a bug: the CLI and the app log its traceback and say "internal error".
"""
from __future__ import annotations


class SyncNetError(Exception):
    """Root of every error a user can cause; ``str(error)`` is a one-line message for them."""

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class BadArgument(SyncNetError):
    """An argument or option that cannot be used."""


class MediaError(SyncNetError):
    """The file cannot be used: unreadable, missing a stream, too short, too long or too large."""


class NoFaceError(MediaError):
    """No face (or none visible long enough) to judge lip sync."""


class SilentAudioError(MediaError):
    """The soundtrack is silent: there is nothing to sync the lips with."""


class EngineInputError(SyncNetError):
    """The crops, audio, MFCC or lip series handed to an engine cannot be scored."""


class NetworkError(SyncNetError):
    """A URL refused by the network guard (scheme, address, size, time) or a fetch that failed."""


class HlsError(NetworkError):
    """An HLS playlist or segment that cannot be used."""


class WeightsError(SyncNetError):
    """The SyncNet weights cannot be used; the message says why."""


class FaceModelError(SyncNetError):
    """The face model is corrupt or cannot be fetched."""
