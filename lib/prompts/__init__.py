"""Prompt-driven, class-agnostic segmentation: what the annotator points at (points, a box, scribbles), found from
the image's own evidence (:mod:`lib.prompts.walker`), and the requests of the stock clients that carry the
prompts (:mod:`lib.prompts.requests`)."""
