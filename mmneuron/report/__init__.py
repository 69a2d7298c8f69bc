"""The reproduction report: claims as computed verdicts, every figure and table of a run."""
