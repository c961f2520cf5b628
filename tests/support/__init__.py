"""Helpers shared by more than one kind of test (unit, server, e2e): repository paths and private copies of the
shipped files (``repo``), the real server process (``server``), labels and file hashes (``safety_helpers``),
orientation variants of a volume (``orientations``) and tiny synthetic training data (``training``)."""
