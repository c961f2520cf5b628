"""Active-learning strategies (next sample to label)."""
