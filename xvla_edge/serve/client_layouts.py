"""Other clients' websocket observations read as this server's own (``serve --ws-layout NAME|FILE``).

openpi's ``WebsocketClientPolicy`` and its examples send keys of their own (``observation/image``, ``prompt``,
...) and read ``actions``; the websocket's own messages name ``image0`` ... ``image2``, ``language_instruction``,
``proprio`` and ``domain_id``, and its replies ``action``. A :class:`ClientLayout` says where each field is in a
client's message: a *key path* is one key (openpi's keys hold ``/`` and are used whole) or a list of keys into
nested maps (``["images", "cam_high"]``). With a layout, a message that carries none of the websocket's own
fields is translated (:meth:`ClientLayout.native`) and then checked by the same code as every other message;
the reply names the chunk ``actions`` (the layout's ``actions`` key). Messages with the own fields, such as
``RemotePolicy``'s, are read as before.

Presets, from openpi's example clients (``examples/simple_client``, ``libero``, ``droid``, ``aloha_sim``,
``aloha_real``; Physical-Intelligence/openpi at 15a9616): :data:`PRESETS`. Their states are openpi's (LIBERO:
end-effector position, axis-angle and two finger positions, 8 values; DROID: 7 joint positions and the gripper;
ALOHA: 14 joint positions), not the layouts X-VLA's domains were trained on, so the presets zero-pad a shorter
state to the bundle's width (``pad_proprio``); the chunk is the bundle's, ``[chunk_length, output_dim]``.

A layout file is a JSON object with the keys of :class:`ClientLayout` (``images``, ``proprio``,
``instruction`` required), e.g. the LIBERO preset::

    {"images": ["observation/image", "observation/wrist_image"], "proprio": ["observation/state"],
     "instruction": "prompt", "pad_proprio": true}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from xvla.constants import NUM_VIEWS
from xvla.errors import InputError, XVLAError
from xvla.instruction import check_instruction
from xvla.validation import Field, Problems, Table, show
from xvla_edge.serve.request import IMAGE_KEYS, RequestError

KeyPath = Union[str, tuple[str, ...]]
NATIVE_KEYS = (*IMAGE_KEYS, "language_instruction", "proprio")  # a message with any of them is read as sent
PASSED_ON = ("steps", "seed", "noise", "prefix")  # the websocket's optional fields, taken as they are
MAX_FILE_BYTES = 64 << 10
MAX_KEY_CHARS = 256
MAX_DEPTH = 8


class LayoutError(XVLAError, ValueError):
    """A layout that cannot be used: an unknown preset, or a layout file's problems, each named."""


@dataclass(frozen=True)
class ClientLayout:
    """Where a client's message holds each field. ``images``: key paths of view slots 0, 1, ... (None: slot left
    empty); ``channels_first``: images come as 3xHxW (openpi's ALOHA examples); ``proprio``: key paths of arrays
    joined in order; ``pad_proprio``: zero-pad a shorter state to the bundle's width; ``instruction``: key path
    of the text (``default_instruction`` when a message lacks it); ``actions``: the reply's key for the chunk;
    ``domain_id``: the domain of every translated message (set by ``serve``)."""

    name: str
    images: tuple[Optional[KeyPath], ...]
    proprio: tuple[KeyPath, ...]
    instruction: KeyPath
    channels_first: bool = False
    pad_proprio: bool = False
    default_instruction: Optional[str] = None
    actions: str = "actions"
    domain_id: Optional[int] = None

    def applies_to(self, message: Any) -> bool:
        """Whether ``message`` is to be translated: a map with none of the websocket's own fields."""
        return isinstance(message, dict) and not any(key in message for key in NATIVE_KEYS)

    def native(self, message: dict, state_dims: Mapping[int, int]) -> dict[str, Any]:
        """``message`` as the websocket's own fields (``state_dims``: the state width of each served domain, for
        ``pad_proprio``); a missing or malformed field is a :class:`RequestError` naming the client's key."""
        out: dict[str, Any] = {"domain_id": self.domain_id}
        for slot, path in enumerate(self.images):
            if path is not None:
                image = self._required(message, path)
                out[f"image{slot}"] = _channels_last(image, path) if self.channels_first else image
        text = _lookup(message, self.instruction)
        out["language_instruction"] = self.default_instruction if text is None else text
        if out["language_instruction"] is None:
            raise RequestError(f"{_named(self.instruction)}: missing (layout {self.name} reads the instruction "
                               "from it)")
        state = np.concatenate([_state_part(self._required(message, path), path) for path in self.proprio])
        width = state_dims.get(self.domain_id)  # type: ignore[arg-type] - None: no domain, nothing to pad to
        if self.pad_proprio and width is not None and state.size < width:
            state = np.concatenate([state, np.zeros(width - state.size)])
        out["proprio"] = state
        out.update({key: message[key] for key in PASSED_ON if key in message})
        return out

    def _required(self, message: dict, path: KeyPath) -> Any:
        value = _lookup(message, path)
        if value is None:
            raise RequestError(f"{_named(path)}: missing (layout {self.name} reads a field from it)")
        return value


def _lookup(message: Any, path: KeyPath) -> Any:
    for key in (path,) if isinstance(path, str) else path:
        if not isinstance(message, dict):
            return None
        message = message.get(key)
    return message


def _named(path: KeyPath) -> str:
    """A key path as error messages show it: ``observation/image``, ``images["cam_high"]``."""
    if isinstance(path, str):
        return path
    return path[0] + "".join(f"[{json.dumps(key)}]" for key in path[1:])


def _channels_last(value: Any, path: KeyPath) -> np.ndarray:
    if not (isinstance(value, np.ndarray) and value.ndim == 3 and value.shape[0] == 3):
        raise RequestError(f"{_named(path)}: expected a 3xHxW uint8 array (channels first), got {show(value)}")
    return np.ascontiguousarray(value.transpose(1, 2, 0))


def _state_part(value: Any, path: KeyPath) -> np.ndarray:
    """One array of the state, as 1-D float64 (a number is one value); its values are checked with the rest."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = np.array([value], np.float64)
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        value = np.array(value, np.float64)
    if not (isinstance(value, np.ndarray) and value.dtype.kind in "iuf" and value.ndim <= 1):
        raise RequestError(f"{_named(path)}: expected a 1-D numeric array, got {show(value)}")
    return value.reshape(-1).astype(np.float64)


# ------------------------------------------------------------------------------------------------ presets
PRESETS: dict[str, ClientLayout] = {
    # examples/libero/main.py: 224x224x3 uint8 views, state = eef pos (3) + axis-angle (3) + gripper qpos (2)
    "openpi-libero": ClientLayout("openpi-libero", images=("observation/image", "observation/wrist_image"),
                                  proprio=("observation/state",), instruction="prompt", pad_proprio=True),
    # examples/droid/main.py: 224x224x3 uint8 views, 7 joint positions + 1 gripper position
    "openpi-droid": ClientLayout(
        "openpi-droid", images=("observation/exterior_image_1_left", "observation/wrist_image_left"),
        proprio=("observation/joint_position", "observation/gripper_position"), instruction="prompt",
        pad_proprio=True),
    # examples/aloha_sim, aloha_real: {"state": 14 joints, "images": {camera: 3x224x224 uint8}}; X-VLA takes three
    # views: the top and the two wrist cameras (cam_low is not read)
    "openpi-aloha": ClientLayout(
        "openpi-aloha", images=(("images", "cam_high"), ("images", "cam_left_wrist"), ("images", "cam_right_wrist")),
        proprio=("state",), instruction="prompt", channels_first=True, pad_proprio=True),
}


# ------------------------------------------------------------------------------------------------ files
def load_layout(spec: str) -> ClientLayout:
    """The preset named ``spec``, or the layout in the JSON file at ``spec``."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise LayoutError(f"--ws-layout {spec}: neither a preset ({', '.join(PRESETS)}) nor a file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise LayoutError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise LayoutError(f"{path}: larger than {MAX_FILE_BYTES} bytes; expected a small JSON object")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise LayoutError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{path}: expected a JSON object, got {show(data)}")
    return parse_layout(data, str(path))


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _is_path(value: Any) -> bool:
    if isinstance(value, list):
        return 1 <= len(value) <= MAX_DEPTH and all(map(_is_key, value))
    return _is_key(value)


def _is_key(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_KEY_CHARS


def _path(value: Any) -> KeyPath:
    return value if isinstance(value, str) else tuple(value)


PATH = Field((str, list), check=_is_path, expected=f"a key (a string of 1 ... {MAX_KEY_CHARS} characters) or a "
             f"list of 1 ... {MAX_DEPTH} keys into nested maps")


def parse_layout(data: Mapping[str, Any], name: str) -> ClientLayout:
    """A layout from a JSON object (``name``: where it came from, for messages); every problem named at once."""
    problems = Problems(name)
    t = Table(problems, "", data)
    images = t.take("images", list, [], required=True, check=lambda v: 1 <= len(v) <= NUM_VIEWS,
                    expected=f"a list of 1 ... {NUM_VIEWS} key paths (null: the slot stays empty)")
    for i, image in enumerate(images):
        if image is not None and not PATH.accepts(image):
            problems.value(f"images[{i}]", image, f"expected {PATH.words()}, or null")
    if images and all(image is None for image in images):
        problems.other("images", "expected at least one key path")
    proprio = t.take("proprio", (str, list), [], required=True, expected="a key path or a list of key paths")
    proprio = [proprio] if isinstance(proprio, str) else proprio
    if not 1 <= len(proprio) <= 16:
        problems.value("proprio", proprio, "expected 1 ... 16 key paths, joined in order")
    for i, part in enumerate(proprio):
        if not PATH.accepts(part):
            problems.value(f"proprio[{i}]", part, f"expected {PATH.words()}")
    instruction = t.field("instruction", PATH, "", required=True)
    default = t.take("default_instruction", (str, type(None)), None, expected="an instruction (a string), or null")
    if default is not None:
        try:
            check_instruction(default, "default_instruction")
        except InputError as exc:
            problems.other("default_instruction", str(exc).removeprefix("default_instruction: "))
    layout = dict(channels_first=t.take("channels_first", bool, False), pad_proprio=t.take("pad_proprio", bool, False),
                  actions=t.take("actions", str, "actions", check=_is_key, expected=f"a key of 1 ... "
                                 f"{MAX_KEY_CHARS} characters"))
    t.finish()
    if problems:
        raise LayoutError("\n".join(problems.lines()))
    return ClientLayout(name, images=tuple(None if i is None else _path(i) for i in images),
                        proprio=tuple(_path(p) for p in proprio), instruction=_path(instruction),
                        default_instruction=default, **layout)


def for_domain(layout: ClientLayout, requested: Optional[int], served: Sequence[int]) -> ClientLayout:
    """``layout`` with the domain of its messages: ``requested`` (``--ws-domain``), else the one domain served."""
    if requested is None and len(served) != 1:
        raise LayoutError(f"--ws-layout {layout.name}: this server serves domains {', '.join(map(str, served))}; "
                          "name the one its clients use with --ws-domain")
    domain = served[0] if requested is None else requested
    if domain not in served:
        raise LayoutError(f"--ws-domain {domain}: not served here; domains served: {', '.join(map(str, served))}")
    return dataclasses.replace(layout, domain_id=domain)


def state_dims(metadata: Mapping[str, Any]) -> dict[int, int]:
    """The state width of each domain in a server's websocket metadata (``inputs.state_dim``, else
    ``proprio_dim``, as ``Policy.state_dim``)."""
    out = {}
    for domain, entry in metadata["domains"].items():
        inputs = entry["manifest"]["inputs"]
        out[int(domain)] = int(inputs.get("state_dim", inputs["proprio_dim"]))
    return out
