"""Running a network fast: the served model (weights version, checksum, network per device), backends (torch,
AMP, torch.compile, AOTInductor, TorchScript, TensorRT) with an on-disk engine cache, and the coarse-to-fine
CPU path used by the segmentation infer task."""
