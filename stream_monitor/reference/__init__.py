"""Reference profiles built from training data (``stream-monitor profile``).

A profile summarises a model's inputs and outputs from a training set into a small, versioned
JSON file that the live monitor loads as its reference, binned exactly as the monitor bins
production data. Build one with :func:`build_profile` (rows) or :func:`profile_file` (a CSV, JSON
Lines or Parquet file), save it with :meth:`Profile.write` and read it with :func:`load_profile`.
"""

from stream_monitor.reference.profile import (
    PROFILE_FORMAT,
    PROFILE_VERSION,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    Profile,
    ProfileBuilder,
    build_profile,
    load_profile,
    load_profiles,
    profile_file,
)
from stream_monitor.reference.readers import FORMATS, infer_format, read_rows

__all__ = [
    "FORMATS",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "CategoricalProfile",
    "FeatureProfile",
    "NumericProfile",
    "Profile",
    "ProfileBuilder",
    "build_profile",
    "infer_format",
    "load_profile",
    "load_profiles",
    "profile_file",
    "read_rows",
]
