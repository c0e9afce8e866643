"""Genotype -> torch.nn.Module: the op factories, CNN cells and macro networks."""
