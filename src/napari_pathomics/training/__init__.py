"""Training: the patch tissue classifier (``training.patch``) and a signature from slides and
outcomes (``training.signature``). torch loads only when training starts."""
