"""Procedures around the model: training, validation, inference over clips, post-processing, predictions files."""
