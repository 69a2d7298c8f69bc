"""Image-only processors for the Qwen2-VL family.

Without torchvision (which this project avoids) transformers can neither build nor load a
``Qwen2VLProcessor`` or ``Qwen2_5_VLProcessor``, because their video processors need it; images are
all we analyse. Importing this module registers the classes with ``AutoProcessor``, so that folders
saved with them load by the class name in ``processor_config.json``.
"""

from __future__ import annotations

from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLConfig, Qwen2VLProcessor


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # the processor's sub-processors are read off this signature, so no video_processor here
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without the video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


AutoProcessor.register(Qwen2VLConfig, Qwen2VLImageOnlyProcessor, exist_ok=True)
AutoProcessor.register(Qwen2_5_VLConfig, Qwen2_5_VLImageOnlyProcessor, exist_ok=True)

# By model type: the processor class to load a checkpoint with instead of AutoProcessor, whose
# choice (the saved class name) would need torchvision.
IMAGE_ONLY_PROCESSORS = {"qwen2_vl": Qwen2VLImageOnlyProcessor, "qwen2_5_vl": Qwen2_5_VLImageOnlyProcessor}
