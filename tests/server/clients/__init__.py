"""Emulators of the stock MONAI Label clients, transcribed from their sources, for the server tests."""
