"""Torch-free facts and limits every layer uses: view slots, checkpoint file names, bounds on hostile input."""

NUM_VIEWS = 3  # view slots of the model; an absent view still feeds zero features to the action transformer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"  # a sharded checkpoint's weight map
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
ADAPTER_CONFIG = "adapter_config.json"  # a PEFT LoRA adapter directory: its options ...
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # ... and its tensors
MAX_LORA_RANK = 4096

# action mode → the channels of the action vector that are gripper commands (zeroed in x_t and proprio,
# squashed by a sigmoid after the last step); the other modes have none
GRIPPER_CHANNELS = {"ee6d": (9, 19), "joint": (6, 13), "agibot_ee6d": (), "auto": ()}

# Bounds on input from outside (manifests, configs, requests), so that nothing hangs or exhausts memory
MAX_STEPS = 100  # denoising steps of one chunk (the published models use 10); 1e9 would never return
MAX_IMAGE_SIDE = 4096  # pixels per side of a camera image (4K cameras fit); larger ones are refused, not resized
