"""Training loops, and nothing else: classification (proxy and final) and language modelling."""
