"""Evaluators turn a candidate into metrics: proxy training, or a lookup in a tabular benchmark."""
