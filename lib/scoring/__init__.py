"""Uncertainty scoring of unlabelled images for active learning."""
