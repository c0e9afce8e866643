"""Genotype -> torch.nn.Module: the CNN op factories, cells and macro networks; RNN cells and
their language models; NAS-Bench-201 and MobileNetV2 networks; the stacked engines that run a
step's candidates as one network (with their Triton kernels); weight inheritance between
cells; tied weights in safetensors files."""
