"""Shipping a found network without autoshrink: the ONNX / safetensors / ``model.py`` bundle
(:mod:`.bundle`) and the standalone PyTorch source it contains (:mod:`.source`)."""
