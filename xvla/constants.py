"""Torch-free facts of X-VLA's layout that every layer uses: view slots and checkpoint file names."""

NUM_VIEWS = 3  # view slots of the model; an absent view still feeds zero features to the action transformer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"  # a sharded checkpoint's weight map
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")

# action mode → the channels of the action vector that are gripper commands (zeroed in x_t and proprio,
# squashed by a sigmoid after the last step); the other modes have none
GRIPPER_CHANNELS = {"ee6d": (9, 19), "joint": (6, 13), "agibot_ee6d": (), "auto": ()}
