"""Parameter and MAC counts from a genotype alone (no torch), each by its published convention:
AutoShrink cells in a macro network (:mod:`.cells`), RNN language models (:mod:`.rnn`),
MobileNetV2 (:mod:`.mobilenetv2`) and the NAS-Bench-201 networks (:mod:`.nb201`)."""
