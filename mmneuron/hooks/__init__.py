"""Forward hooks on activation modules: recording activation statistics."""

from mmneuron.hooks.record import ActivationRecorder, RecordingError

__all__ = ["ActivationRecorder", "RecordingError"]
