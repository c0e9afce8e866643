"""Training: the loops for classification (proxy, batched, one-shot, out-of-domain and final)
and language modelling (proxy, stacked and final), with what they need around them -- recipes,
optimisers and schedules, checkpoints and weight files, the final training's folder
(train_folder), DDP, CUDA graphs."""
