"""Visual question answering: answer scoring and effect-size statistics."""
