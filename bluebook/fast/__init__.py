"""Fast paths: exact alternatives to the plain algorithm in :mod:`bluebook.core`, tested equal to it."""
