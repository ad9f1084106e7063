"""Build the voice prompts and the music-on-hold tune (run at image build time).

    python -m pbx_core.media.prompts_build OUTDIR [--voice en-us] [--speed 150]

Each prompt in PROMPTS is spoken by espeak-ng, band-limited and resampled to 8 kHz
(sox when it is installed, else the windowed-sinc resampler below), normalised, and
written as OUTDIR/<name>.wav (8 kHz mono 16-bit PCM).  ``music-on-hold.wav`` is an
original tune synthesised here (so it is royalty-free by construction): a I-vi-IV-V
progression of soft plucked arpeggios over a pad, 32 s, which loops seamlessly.
``prompts.txt`` lists every name with its text.  Files are written under a temporary
name and renamed, so an interrupted build never leaves a half-written prompt; the
output is byte-for-byte reproducible for a given espeak-ng.  A custom recording with
the same name in the data partition's prompts directory overrides a built prompt.

Exit status: 0 done, 1 a prompt failed, 2 espeak-ng missing or bad arguments.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from pbx_core.media.wav import parse_wav, wav_bytes

__all__ = ["PROMPTS", "build", "main", "music_on_hold", "resample"]

_NUMBERS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
]  # fmt: skip
_TENS = ["thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

# name -> text.  Digits and numbers let features say "you have N new messages".
PROMPTS: dict[str, str] = {
    **{f"digit-{i}": w for i, w in enumerate(_NUMBERS[:10])},
    "digit-star": "star",
    "digit-pound": "pound",
    **{f"number-{i}": w for i, w in enumerate(_NUMBERS)},
    **{f"number-{30 + 10 * i}": w for i, w in enumerate(_TENS)},
    "number-hundred": "hundred",
    # voicemail
    "vm-leave-message": (
        "Please leave a message after the tone. When you are done, hang up, or press pound."
    ),
    "vm-unavailable": "The person you are calling is not available.",
    "vm-busy": "The person you are calling is on the phone.",
    "vm-extension": "Extension",
    "vm-you-have": "You have",
    "vm-new-message": "new message.",
    "vm-new-messages": "new messages.",
    "vm-old-messages": "saved messages.",
    "vm-no-messages": "You have no new messages.",
    "vm-enter-mailbox": "Please enter your mailbox number, followed by pound.",
    "vm-enter-password": "Please enter your password, followed by pound.",
    "vm-login-incorrect": "Login incorrect.",
    "vm-main-menu": (
        "To listen to your messages, press one. To record your greeting, press zero. "
        "To hang up, press pound."
    ),
    "vm-message-menu": (
        "To replay this message, press five. To delete it, press seven. "
        "To save it, press nine. For the next message, press six; for the previous one, "
        "four. For who called and when, press three. Pound goes back to the menu."
    ),
    "vm-first-message": "First message.",
    "vm-next-message": "Next message.",
    "vm-no-more-messages": "No more messages.",
    "vm-message-deleted": "Message deleted.",
    "vm-message-saved": "Message saved.",
    "vm-record-greeting": "Record your greeting after the tone, then press pound.",
    "vm-greeting-saved": "Your greeting has been saved.",
    "vm-greeting-menu": (
        "To record your unavailable greeting, press one. For your busy greeting, press two. "
        "To record your name, press three. For a temporary greeting, press four. "
        "To change your password, press five."
    ),
    "vm-greeting-removed": "Your greeting has been removed.",
    "vm-new-password": "Please enter your new password, four to ten digits, followed by pound.",
    "vm-reenter-password": "Please enter your new password again, followed by pound.",
    "vm-password-changed": "Your password has been changed.",
    "vm-password-mismatch": "The passwords do not match. Your password was not changed.",
    "vm-mailbox-full": "The mailbox is full. No message can be left.",
    "vm-message-from": "Message from",
    "vm-unknown-caller": "an unknown caller",
    "vm-received-on": "received on the",
    "vm-at": "at",
    "vm-length": "Length",
    "vm-seconds": "seconds.",
    # menus and general
    "welcome": "Welcome.",
    "goodbye": "Goodbye.",
    "please-hold": "Please hold.",
    "please-try-again": "Please try again.",
    "invalid-option": "That is not a valid option.",
    "enter-extension": "Please enter the extension you want to reach.",
    "transferring": "Transferring your call.",
    "not-available": "That number is not available.",
    "all-busy": "All lines are busy. Please try again later.",
    "call-parked-at": "Your call has been parked at",
    "conf-enter-pin": "Please enter the conference number, followed by pound.",
    "conf-only-person": "You are the only person in this conference.",
    "conf-joined": "You are now in the conference.",
    "echo-test": "Echo test. Speak, and you will hear yourself. Hang up when you are done.",
    "feature-on": "Activated.",
    "feature-off": "Deactivated.",
    "forward-set": "Call forwarding is set to",
    "forward-enter": "Please enter the number to forward your calls to, followed by pound.",
    "transfer-enter": "Transfer. Please enter the number, followed by pound.",
    "transfer-failed": "The transfer did not go through.",
    "park-slot": "Parked on",
    "park-nobody": "Nobody took your call. Please call again. Goodbye.",
    "followme-on": "Follow me is on.",
    "followme-off": "Follow me is off.",
    "followme-confirm": "You have a call. To accept it, press one.",
    "intercom-on": "Intercom calls are allowed.",
    "intercom-off": "Intercom calls are refused.",
    "dnd-on": "Do not disturb is on.",
    "dnd-off": "Do not disturb is off.",
    "you-are-calling-from": "You are calling from extension",
    "timecond-matched": (
        "Override on. Calls go to the day destination until the next scheduled change."
    ),
    "timecond-unmatched": (
        "Override on. Calls go to the night destination until the next scheduled change."
    ),
    "timecond-auto": "Override off. Calls follow the schedule.",
    "disa-enter-pin": "Please enter your PIN, followed by pound.",
    "conf-pin": "Please enter the conference PIN, followed by pound.",
    "conf-locked": "This conference is locked.",
    "conf-full": "This conference is full.",
    "conf-muted": "You are now muted.",
    "conf-unmuted": "You are no longer muted.",
    "conf-locked-now": "The conference is now locked.",
    "conf-unlocked-now": "The conference is now unlocked.",
    "conf-all-muted": "All participants have been muted.",
    "conf-all-unmuted": "All participants have been unmuted.",
    "conf-not-allowed": "Only the conference administrator may do that.",
    # call blocking and the last caller (features/blocking)
    "blocked": "The person you are calling does not accept your calls. Goodbye.",
    "blocking-enter": "Please enter the number to block, followed by pound.",
    "blocking-remove-enter": "Please enter the number to unblock, followed by pound.",
    "blocking-added": "Calls from this number are now blocked:",
    "blocking-removed": "Calls from this number are allowed again:",
    "blocking-not-listed": "That number is not on your block list.",
    "blocking-full": "Your block list is full.",
    "blocking-no-caller": "There is no number of a last caller to block.",
    "lastcaller-number": "The last call came from",
    "lastcaller-callback": "To call this number, press one.",
    "lastcaller-none": "No call has reached this extension yet.",
    "lastcaller-withheld": "The last caller withheld the number.",
    "speeddial-enter-location": "Please enter the two digit speed dial location.",
    "speeddial-enter-number": "Please enter the number for this speed dial, followed by pound.",
    "speeddial-set": "Speed dial",
    "campon-on": "You will be called back when the extension is free.",
    "campon-off": "Your callback request is cancelled.",
    "campon-full": "You have too many callback requests waiting.",
    "campon-offer": "The extension is busy. To be called back when it is free, press five.",
    "campon-busy-again": "The extension is busy again.",
    "broadcast-record": "Please record your broadcast after the tone, then press pound.",
    "broadcast-sent": "Your broadcast is being delivered.",
    "broadcast-nothing": "Nothing was recorded.",
    "broadcast-busy": "A broadcast is still being delivered. Please try later.",
    "broadcast-refused": "You are not allowed to broadcast to this group.",
    # call queues (features/queue)
    "queue-position": "You are caller number",
    "queue-wait": "Your estimated waiting time is",
    "queue-minutes": "minutes",
    "queue-less-minute": "less than a minute",
    "queue-agent-login": "Agent logged in.",
    "queue-agent-logout": "Agent logged out.",
    "queue-not-member": "You are not an agent of this queue.",
    # system recordings (features/sysrec) and the directory (features/directory)
    "sysrec-enter-number": "Please enter the recording number, followed by pound.",
    "sysrec-record": "Record after the tone, then press pound.",
    "sysrec-review": (
        "To keep this recording, press one. To record again, two. To listen again, three."
    ),
    "sysrec-saved": "The recording has been saved.",
    "sysrec-failed": "The recording could not be saved.",
    "sysrec-too-short": "That was too short.",
    "sysrec-cancelled": "Nothing was changed.",
    "sysrec-none": "There is no recording with that number.",
    "dir-enter-name": "Please enter the first three letters of the name.",
    "dir-extension": "Extension",
    "dir-menu": "To call, press one. For the next name, press two.",
    "dir-no-match": "No name matches.",
    "dir-no-more": "There are no more names.",
}  # fmt: skip

RATE = 8000
MOH_NAME = "music-on-hold"


# ---------------------------------------------------------------- resampling


def resample(samples: list[int], rate_in: int, rate_out: int = RATE, taps: int = 16) -> list[int]:
    """Windowed-sinc (Blackman) resampling with the cutoff at 0.9 of the lower
    Nyquist frequency: good enough for speech prompts, used when sox is missing."""
    if rate_in == rate_out:
        return list(samples)
    ratio = rate_out / rate_in
    cutoff = 0.9 * min(1.0, ratio)
    n_out = int(len(samples) * ratio)
    half = int(taps / cutoff)
    out = []
    for j in range(n_out):
        centre = j / ratio
        lo = max(0, int(centre) - half + 1)
        hi = min(len(samples), int(centre) + half + 1)
        acc = 0.0
        for i in range(lo, hi):
            x = i - centre
            if x == 0:
                s = cutoff
            else:
                s = math.sin(math.pi * cutoff * x) / (math.pi * x)
            w = 0.42 + 0.5 * math.cos(math.pi * x / half) + 0.08 * math.cos(2 * math.pi * x / half)
            acc += samples[i] * s * w
        out.append(round(acc))
    return out


def _normalise(samples: list[int], peak_dbfs: float = -3.0) -> list[int]:
    peak = max((abs(s) for s in samples), default=0)
    if peak == 0:
        return samples
    gain = 32767 * 10 ** (peak_dbfs / 20) / peak
    return [max(-32768, min(32767, round(s * gain))) for s in samples]


def _read_riff_pcm16(data: bytes) -> tuple[int, list[int]]:
    """Rate and samples of espeak-ng's WAV (mono 16-bit PCM at 22050 Hz)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not write a WAV file")
    pos = 12
    rate = 0
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if kind == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, pos + 8)
            if channels != 1 or bits != 16:
                raise ValueError("espeak-ng wrote something other than mono 16-bit")
        elif kind == b"data":
            body = data[pos + 8 : pos + 8 + size] if size < 0xFFFFFFF0 else data[pos + 8 :]
            body = body[: len(body) & ~1]
            return rate, list(struct.unpack(f"<{len(body) // 2}h", body))
        pos += 8 + size + (size & 1)
    raise ValueError("espeak-ng's WAV has no data chunk")


def _speak(text: str, voice: str, speed: int, work: Path) -> list[int]:
    raw = work / "raw.wav"
    espeak = shutil.which("espeak-ng") or "espeak-ng"
    # S603: fixed programs with arguments from our own table and command line.
    subprocess.run(  # noqa: S603
        [espeak, "-v", voice, "-s", str(speed), "-w", str(raw), text],
        check=True, capture_output=True,
    )  # fmt: skip
    sox = shutil.which("sox")
    if sox is not None:
        low = work / "low.wav"
        subprocess.run(  # noqa: S603 - as above
            [sox, str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(low),
             "highpass", "200", "lowpass", "3400", "rate", "-v", str(RATE)],
            check=True, capture_output=True,
        )  # fmt: skip
        pcm = parse_wav(low.read_bytes(), "sox output").pcm
        samples = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
    else:
        rate, samples = _read_riff_pcm16(raw.read_bytes())
        samples = resample(samples, rate)
    return _normalise(samples)


# ---------------------------------------------------------------- music on hold


def _note(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def music_on_hold(seconds_per_chord: float = 2.0, bars: int = 16) -> list[int]:
    """An original loop: I-vi-IV-V in C (C, Am, F, G) repeated, each chord a pad of
    soft sines under an arpeggio of plucked notes (decaying partials), kept below
    3.4 kHz so G.711 carries it cleanly.  Deterministic."""
    chords = [
        (60, 64, 67, 72),  # C
        (57, 60, 64, 69),  # Am
        (53, 57, 60, 65),  # F
        (55, 59, 62, 67),  # G
    ]
    per_chord = int(seconds_per_chord * RATE)
    total = per_chord * bars
    out = [0.0] * (total + per_chord)  # room for the last notes' tails
    step = per_chord // 8  # eighth-note arpeggio
    pattern = [0, 1, 2, 3, 2, 1, 2, 3]
    for bar in range(bars):
        chord = chords[bar % 4]
        base = bar * per_chord
        # Pad: root and fifth an octave down, slow attack and release.
        for midi in (chord[0] - 12, chord[2] - 12):
            w = 2 * math.pi * _note(midi) / RATE
            for i in range(per_chord):
                env = min(1.0, i / 2000, (per_chord - i) / 2000)
                out[base + i] += 1800 * env * math.sin(w * (base + i))
        # Arpeggio: plucked notes with two partials and an exponential decay.
        for k, idx in enumerate(pattern):
            midi = chord[idx] + (12 if bar % 8 >= 4 and k % 4 == 3 else 0)
            f = _note(midi)
            start = base + k * step
            length = step * 3
            w1, w2 = 2 * math.pi * f / RATE, 4 * math.pi * f / RATE
            for i in range(length):
                env = math.exp(-i / 1400) * min(1.0, i / 40)
                out[start + i] += env * (3600 * math.sin(w1 * i) + 900 * math.sin(w2 * i))
    # Fold the tails past the loop point into the start, so the loop is seamless.
    for i in range(total, len(out)):
        out[i - total] += out[i]
    return _normalise([round(v) for v in out[:total]], -6.0)


# ---------------------------------------------------------------- output


def _write(path: Path, pcm_samples: list[int]) -> None:
    data = wav_bytes(struct.pack(f"<{len(pcm_samples)}h", *pcm_samples))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build(out: Path, voice: str = "en-us", speed: int = 150, only: list[str] | None = None) -> int:
    """Write the prompts and the tune into ``out``; returns the number of failures."""
    out.mkdir(parents=True, exist_ok=True)
    names = only or [*PROMPTS, MOH_NAME]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in names:
            if name == MOH_NAME:
                _write(out / f"{name}.wav", music_on_hold())
                print(f"{name}.wav: synthesised", flush=True)
                continue
            text = PROMPTS.get(name)
            if text is None:
                print(f"{name}: no such prompt", file=sys.stderr)
                failures += 1
                continue
            try:
                _write(out / f"{name}.wav", _speak(text, voice, speed, work))
            except (subprocess.CalledProcessError, ValueError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                print(f"{name}: {exc} {detail.decode(errors='replace').strip()}", file=sys.stderr)
                failures += 1
    index = "".join(f"{n}\t{t}\n" for n, t in PROMPTS.items()) + f"{MOH_NAME}\t(music)\n"
    (out / "prompts.txt").write_text(index)
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Build the PBX's 8 kHz voice prompts and music on hold."
    )
    ap.add_argument("out", type=Path, help="directory to write the WAV files into")
    ap.add_argument("--voice", default="en-us", help="espeak-ng voice (default en-us)")
    ap.add_argument("--speed", type=int, default=150, help="words per minute (default 150)")
    ap.add_argument("--only", nargs="*", help="build only these names")
    args = ap.parse_args(argv)
    needs_speech = any(n != MOH_NAME for n in (args.only or PROMPTS))
    if needs_speech and shutil.which("espeak-ng") is None:
        print("prompts_build: espeak-ng is not installed (apt install espeak-ng)", file=sys.stderr)
        return 2
    try:
        failures = build(args.out, args.voice, args.speed, args.only)
    except OSError as exc:
        print(f"prompts_build: {exc}", file=sys.stderr)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
