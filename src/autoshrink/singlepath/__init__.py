"""Single-Path NAS (Stamoulis et al., 2019): one superkernel per MobileNetV2 layer, searched
against a measured per-layer latency table in one training run."""
