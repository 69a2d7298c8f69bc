"""The deactivation experiment: conditions, answers under ablation, likelihoods and scores."""
