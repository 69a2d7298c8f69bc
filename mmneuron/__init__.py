"""mmneuron: domain-specific neurons in multimodal large language models."""

__version__ = "0.1.0"
