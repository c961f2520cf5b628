"""Fast inference: model backends (torch, AMP, torch.compile, TorchScript, TensorRT) with an on-disk
engine cache, and the coarse-to-fine CPU path used by the ``dints_pancreas`` infer task."""
