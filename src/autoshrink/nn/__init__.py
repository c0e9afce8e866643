"""Genotype -> torch.nn.Module: the op registry, CNN cells and macro networks."""
