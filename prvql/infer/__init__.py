"""Inference: the Predictor (per-frame scores and boxes), post-processing into a response track, colour
verification, one query in a video (:mod:`prvql.infer.locate`) and its outputs, a whole annotation file into the
challenge predictions JSON (:mod:`prvql.infer.challenge`), model loading. Never imports :mod:`prvql.train`."""
