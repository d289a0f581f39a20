"""The reference profile: what the training data looked like, computed once and reused.

Import from here (``from inferwatch.reference import ReferenceProfile, build_profile``): the
modules behind it are the file format (``format``), the streaming builder (``builder``) and the
file readers (``readers``); ``store`` owns the reference in use (file or warm-up).
"""

from .builder import ProfileBuilder, build_profile
from .format import (
    FORMAT, FORMAT_VERSION, CategoricalProfile, NumericProfile, ReferenceProfile, ScoreCalibration, content_hash,
)
from .readers import build_profile_from_file, iter_file_chunks
from .store import ReferenceStore

__all__ = ["FORMAT", "FORMAT_VERSION", "CategoricalProfile", "NumericProfile", "ProfileBuilder", "ReferenceProfile",
           "ReferenceStore", "ScoreCalibration", "build_profile", "build_profile_from_file", "content_hash",
           "iter_file_chunks"]
