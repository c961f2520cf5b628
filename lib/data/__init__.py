"""Synthetic CT phantoms, the sample datastore writer and the real-data importer."""
