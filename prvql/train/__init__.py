"""Training: the resumable loop (:func:`prvql.train.loop.fit`), per-stage losses and anchor assignment, validation,
optimiser schedule, data order, run log and training checkpoints. Never imports :mod:`prvql.infer`."""
