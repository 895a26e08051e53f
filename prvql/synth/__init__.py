"""The synthetic episode generator: VQ2D episodes and datasets in the official Ego4D layout, deterministic by seed
(:mod:`prvql.synth.episode`), rendered from a scene model (:mod:`~prvql.synth.scene`) with photographs and clips
(:mod:`~prvql.synth.imagery`), drawn objects (:mod:`~prvql.synth.generated`) and camera effects
(:mod:`~prvql.synth.effects`). Inference never needs it."""
