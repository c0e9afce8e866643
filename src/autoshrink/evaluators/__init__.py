"""Evaluators turn a candidate into metrics: proxy training (one by one, or a step's candidates
stacked), one-shot training with inherited weights, zero-cost proxies, out-of-domain accuracy,
and a measured or tabulated cost added to any of them. (A tabular benchmark's lookup lives in
:mod:`autoshrink.tabular`.)"""
