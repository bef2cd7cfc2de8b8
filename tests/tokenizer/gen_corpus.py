#!/usr/bin/env python3
"""Writes the tokenizer test corpus: a JSON list of strings (deterministic, seeded).

Usage: gen_corpus.py OUT.json [--lines N]

The corpus mixes English, CJK, Arabic, emoji (ZWJ sequences, flags, skin tones), code, runs of
whitespace and newlines, digits, special tokens inside text, combining marks that NFC changes
(decomposed input), and unusual but valid UTF-8 (noncharacters, private use, 4-byte planes,
lone combining marks, control characters). Strings may hold newlines, hence JSON not lines.
"""
import json
import os
import random
import sys
import unicodedata

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A man in a red jacket walks across a crowded street while cars pass by.",
    "It's raining; they're sure we'll see what I'd called 'the storm' — isn't it?",
    "DON'T SHOUT, you'RE loud. We've I'M He'LL she'D",
    "The camera pans slowly to the left, revealing a wide valley at sunset.",
    "Mr. O'Neil's 3rd-floor apartment (unit #12B) costs $1,250.00/month.",
    "e-mail: someone@example.com, URL: https://example.org/path?q=1&x=%20",
]
CJK = [
    "一个穿着红色夹克的男人走过拥挤的街道。",
    "视频中，一只猫坐在窗台上看着外面的雨。",
    "東京の夜景はとても美しいです。カメラがゆっくりと右に動く。",
    "한국어 문장도 토큰화해야 합니다. 서울의 밤거리.",
    "中文English混合mixed文本123个字",
    "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３",
]
ARABIC = [
    "رجل يرتدي سترة حمراء يمشي في شارع مزدحم.",
    "مرحبا بالعالم! كيف حالك اليوم؟ ١٢٣٤٥",
    "שלום עולם, זהו משפט בעברית.",
    "नमस्ते दुनिया, यह एक वाक्य है।",
    "Привет, мир! Ёжик в тумане. Ελληνικά γράμματα.",
    "ไทย ภาษา การทดสอบ",
]
EMOJI = [
    "😀😃😄 family: 👨‍👩‍👧‍👦 flags: 🇺🇸🇯🇵🇩🇪 skin: 👍🏽👋🏿",
    "🔥🔥🔥 hot take 💯 — ❤️ (heart with VS16) ☺︎ text style",
    "🧑🏻‍💻 coding at night 🌙✨",
]
CODE = [
    "def main(argv):\n    for i in range(10):\n        print(f\"{i:03d}\")\n    return 0\n",
    "int main(void) {\n\tchar *p = malloc(16);\n\tif (!p) return -1;\n\tfree(p);\n}\n",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id DESC;",
    "const x = a?.b ?? c; x => x ** 2; /* comment */ // line\n",
    "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
    "    if x:\n\n\n        pass\r\n\r\n\treturn  \n",
]
SPECIALS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>",
    "<|video_pad|>", "<|image_pad|>", "<tool_call>", "</tool_call>", "<think>", "</think>",
    "<|fim_prefix|>", "<|im_start", "im_end|>", "<|video_pad|", "<<|im_end|>>",
]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000",
              "\u2003", "\u0085", "\u2028", "\u000b", "\u000c", "        "]
# Strings whose NFC form differs from the input (decomposed accents, compatibility left as is).
NFC_CHANGES = [
    unicodedata.normalize("NFD", "Café déjà vu, naïve façade, Ångström, Ñandú"),
    unicodedata.normalize("NFD", "Việt Nam, tiếng Việt có dấu"),
    unicodedata.normalize("NFD", "한국어"),  # Hangul jamo that compose into syllables
    "e\u0301 a\u030a o\u0308 n\u0303 A\u0328\u0301",
    "\u212b \u2126 \u1e9b\u0323",  # singletons that NFC maps to other code points
]
ODD_VALID = [
    "\ufeffBOM at start", "\ufffe\uffff noncharacters", "\U0010fffd\U000f0000 private use",
    "\U0001d400\U0001d401 math bold", "\u0301 lone combining mark", "\u0000 NUL and \u001f",
    "\u200b zero\u200cwidth\u200d joiners", "\U0001f3fb lone skin tone", "\ud7ff\ue000",
    "A\u0300\u0301\u0302\u0303\u0304\u0305\u0306 stacked marks", "\u202e right-to-left override",
]
DIGITS = ["0", "7", "42", "123456789", "3.14159", "1,000,000", "2024-11-23", "0x7fffffff",
          "١٢٣", "½ ¾ ²³", "10⁹", "①②③"]


def random_text(rng):
    pools = [ENGLISH, CJK, ARABIC, EMOJI, CODE, NFC_CHANGES, ODD_VALID]
    parts = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.45:
            text = rng.choice(rng.choice(pools))
            if rng.random() < 0.5:  # a fragment, cut at a code point
                a = rng.randint(0, len(text))
                b = rng.randint(a, len(text))
                text = text[a:b]
            parts.append(text)
        elif kind < 0.6:
            parts.append(rng.choice(WHITESPACE) * rng.randint(1, 5))
        elif kind < 0.72:
            parts.append(rng.choice(DIGITS))
        elif kind < 0.82:
            parts.append(rng.choice(SPECIALS))
        elif kind < 0.92:
            parts.append("".join(chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0x24f),
                                                 rng.randint(0x370, 0x52f),
                                                 rng.randint(0x4e00, 0x9fff),
                                                 rng.randint(0x1f300, 0x1f6ff)]))
                                 for _ in range(rng.randint(1, 12))))
        else:
            parts.append(rng.choice(ENGLISH).upper())
    return rng.choice(["", " ", "\n"]).join(parts)


def corpus(lines):
    rng = random.Random(20261123)
    fixed = ENGLISH + CJK + ARABIC + EMOJI + CODE + NFC_CHANGES + ODD_VALID + DIGITS + SPECIALS
    fixed += ["", " ", "\n", "a", "é", "😀", " " * 64, "\n" * 40, "x" * 3000,
              "ab" * 2000, "🙂" * 500, "0123456789" * 50, "supercalifragilisticexpialidocious",
              "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"]
    fixed += [w + s for w in WHITESPACE for s in ("word", "\n", "!", "")]
    out = list(fixed)
    while len(out) < lines:
        out.append(random_text(rng))
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: gen_corpus.py OUT.json [--lines N]")
    lines = 2500
    if "--lines" in sys.argv:
        lines = int(sys.argv[sys.argv.index("--lines") + 1])
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[1])), exist_ok=True)
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        f.write(json.dumps(corpus(lines), ensure_ascii=False))


if __name__ == "__main__":
    main()
