"""The reference profile: what the training data looked like, computed once and reused.

Import from here (``from inferwatch.reference import ReferenceProfile, build_profile``): the
modules behind it are the file format, the builder and the file readers.
"""

from .profile import (FORMAT, FORMAT_VERSION, CategoricalProfile, NumericProfile, ProfileBuilder, ReferenceProfile,
                      build_profile, build_profile_from_file, content_hash, iter_file_chunks)

__all__ = ["FORMAT", "FORMAT_VERSION", "CategoricalProfile", "NumericProfile", "ProfileBuilder", "ReferenceProfile",
           "build_profile", "build_profile_from_file", "content_hash", "iter_file_chunks"]
