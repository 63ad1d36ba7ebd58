#!/usr/bin/env python3
"""Deterministic multilingual corpus for tokenizer parity tests and benchmarks.

Mixes Latin with accents (composed and NFD-decomposed), Cyrillic, Greek, Arabic, Hebrew, CJK,
Japanese kana, Korean, Devanagari, Thai, emoji (with skin tones, ZWJ sequences and flags),
odd whitespace (tabs, NBSP, ideographic space, runs of spaces, zero-width characters, control
characters), numbers in several scripts, URLs, e-mail addresses, code, contractions and the text
of special tokens. Lines never contain '\\n'; some are empty. With hard=True (the parity test)
about one line in ten is of a kind that broke parity before: random code points from every
block of every plane, and unassigned ones; long runs of one character; text that NFKC rewrites
(fullwidth forms, ligatures, superscripts, compatibility jamo, ...). Those lines come from their
own random stream, so the other lines stay the same with or without them. Usage:
    gen_corpus.py OUT [--lines N] [--seed S] [--hard]
"""
import argparse
import random
import unicodedata

LATIN = ("the quick brown fox jumps over the lazy dog while Zoë and Chloé sip café au lait near the "
         "fjord in Ærøskøbing Straße naïve façade résumé jalapeño Ångström coöperate déjà vu piñata "
         "Łódź Kraków Dvořák Erdős Müller São Paulo Hà Nội Việt Nam İstanbul ĳssel œuvre Ðakovo Þingvellir").split()
CYRILLIC = "Съешь же ещё этих мягких французских булок да выпей чаю Привет мир Київ Ёлка щука".split()
GREEK = "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία Καλημέρα κόσμε ΣΊΣΥΦΟΣ".split()
ARABIC = "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ومغلف بجلد أزرق السلام عليكم".split()
HEBREW = "דג סקרן שט בים מאוכזב ולפתע מצא חברה שלום".split()
CJK = ["我能吞下玻璃而不伤身体", "今天天气很好", "北京大学", "東京都", "机器学习模型", "漢字", "中文分词测试", "𠀋𡈽𡌛"]
KANA = ["いろはにほへと", "カタカナ", "ひらがなとカタカナ", "ｶﾀｶﾅ", "ＡＢＣ１２３"]
KOREAN = ["다람쥐 헌 쳇바퀴에 타고파", "안녕하세요", "한국어"]
DEVANAGARI = "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले नमस्ते दुनिया".split()
THAI = ["เป็นมนุษย์สุดประเสริฐเลิศคุณค่า", "สวัสดีครับ", "ภาษาไทย", "กรุงเทพมหานคร"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "🤖", "🚀✨", "🏳️‍🌈", "☕", "🙈🙉🙊", "👩🏿‍💻"]
NUMBERS = ["42", "3.14159", "1,000,000", "-17", "2024-05-01", "12:30", "0x1F", "1e-9", "٣٤٥", "१२३", "๑๒๓", "½", "²", "Ⅻ", "50%", "$19.99", "€5"]
URLS = ["https://example.com/path?q=1&lang=fr#top", "http://www.wikipedia.org/wiki/Tokenization",
        "ftp://files.example.org/pub/file.tar.gz", "user.name+tag@example.co.uk", "www.google.com", "C:\\Users\\me\\file.txt"]
CODE = ["def f(x): return x**2", "int main(void) { return 0; }", "a_b = c->d[i] + 1;", "<div class=\"x\">hi</div>", "SELECT * FROM t WHERE id=1;"]
SPECIAL = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "<s>", "</s>", "<pad>", "<unk>", "<mask>", "<|endoftext|>", "[CLS][SEP]", "x[MASK]y"]
CONTRACTIONS = ["don't", "I'll", "we're", "they've", "she'd", "it's", "I'm", "can't", "won't", "y'all", "O'Neill", "rock'n'roll"]
PUNCT = [",", ".", "!", "?", ";", ":", "...", "—", "–", "«", "»", "“", "”", "„", "¿", "¡", "、", "。", "「", "」", "(", ")", "-", "'", "\"", "…", "·"]
ODD_WS = ["  ", "\t", "\u00a0", "\u3000", "   ", "\u2009", "\u200b", "\u2028", "\r", "\x0b", "\x0c", "\x85", "\u200d", " \t ", "\ufeff"]
CONTROLS = ["\x00", "\x01", "\x1f", "\x7f", "\ufffd", "\u00ad", "\u0301", "\ue000"]

# characters that NFKC (and NFKD) rewrite, several of them into more than one character
NFKC_TEXT = ["ﬁnance", "ﬂour", "ﬀ", "ﬃ", "ﬄ", "ﬅ", "ﬆ", "x²+y³", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿ", "H₂O", "₀₁₂₃₄₅₆₇₈₉", "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎ",
             "ㅏㅑㅓㅕㅗㅛㅜㅠㅡㅣ", "\u3164", "ｱｲｳｴｵｶﾞｷﾞﾊﾟ", "ﾞﾟ", "①②③⑳", "ⓐⓑⓒ", "⑴⒜", "㍱㎏㎒㌀㋿", "ⅠⅡⅢⅳⅻ", "𝐀𝐁𝐂𝟎𝟏𝔄𝕬",
             "ℌℍ℡™℃℉ℹ", "¼½¾⅐", "ǅǈǋ", "ſ", "ẛ̣", "ﷺ", "ﻻ", "…", "‥", "µ", "Å", "K", "㈱", "㊤", "ｰ", "￥", "＄", "￡", "\u00a0", "\u2002",
             "ﹰ", "ﺀ", "︵", "︙", "ꟲꟳ", "ᵃᵇᶜ", "ʰʲ", "㉐", "🄰🅐", "🈁"]
RUN_CHARS = ["=", "-", ".", "!", "*", "_", "#", "~", "/", "0", "a", " ", "漢", "我", "あ", "ー", "😀", "👍🏽", "🇫🇷", "ab", "=-",
             "ﬁ", "①", "Ａ", "\u0301"]


def fullwidth(s):
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in s)


# Unassigned code points that stay so in every Unicode version up to 17.0: the gaps of the Thai
# block, where kiln's BERT once dropped what the package keeps (U+0E69, U+0E7A), and planes 4-13.
UNASSIGNED = [(0x0E3B, 0x0E3E), (0x0E5C, 0x0E7F), (0x40000, 0xDFFFF)]


def random_code_point(rng):
    """Any code point but surrogates and '\\n': a plane, weighted toward the ones with blocks in
    them, then a point anywhere in it, so every block comes up. Unassigned code points come from
    UNASSIGNED and the noncharacters (U+FDD0-U+FDEF, U+xFFFE, U+xFFFF) only: a new version of
    Unicode fills the others, and the package's Rust and Oniguruma know newer versions (16.0,
    17.0) than kiln's utf8proc (15.0) and PCRE2 (14.0), a difference no tokenizer rule makes up."""
    while True:
        r = rng.random()
        if r < 0.45:
            c = rng.randrange(0x10000)
        elif r < 0.75:
            c = rng.randrange(0x10000, 0x20000)
        elif r < 0.85:
            c = rng.randrange(0x20000, 0x40000)
        elif r < 0.92:
            c = rng.randrange(0xE0000, 0xE1000)
        elif r < 0.95:
            lo, hi = rng.choice(UNASSIGNED)
            c = rng.randint(lo, hi)
        elif r < 0.96:
            c = rng.choice([rng.randint(0xFDD0, 0xFDEF), rng.randrange(17) << 16 | rng.choice([0xFFFE, 0xFFFF])])
        else:
            c = rng.randrange(0xF0000, 0x110000)
        if not 0xD800 <= c <= 0xDFFF and c != 10 and known_code_point(c):
            return chr(c)


def known_code_point(c):
    """Assigned in this Python's Unicode (the corpus depends on its version), or unassigned for good
    (UNASSIGNED, noncharacters)."""
    return (unicodedata.category(chr(c)) != "Cn" or any(lo <= c <= hi for lo, hi in UNASSIGNED) or 0xFDD0 <= c <= 0xFDEF
            or c & 0xFFFE == 0xFFFE)


def hard_line(rng):
    kind = rng.random()
    if kind < 0.4:
        # random code points, alone, in runs, or between words
        out = []
        for _ in range(rng.randint(1, 30)):
            r = rng.random()
            if r < 0.5:
                out.append(random_code_point(rng))
            elif r < 0.6:
                out.append(random_code_point(rng) * rng.randint(2, 5))
            elif r < 0.8:
                out.append(word(rng))
            else:
                out.append(" ")
        return "".join(out)
    if kind < 0.7:
        # a long run of one character (equal-score segmentations in Unigram), maybe inside text
        run = rng.choice(RUN_CHARS) * rng.randint(2, 120)
        r = rng.random()
        if r < 0.4:
            return run
        if r < 0.7:
            return word(rng) + " " + run + " " + word(rng)
        return word(rng) + run + word(rng)
    out = []
    for _ in range(rng.randint(1, 20)):
        r = rng.random()
        if r < 0.5:
            out.append(rng.choice(NFKC_TEXT))
        elif r < 0.7:
            out.append(fullwidth(word(rng)))
        else:
            out.append(word(rng))
        out.append(rng.choice([" ", " ", " ", "", "\u3000"]))
    return "".join(out)


POOLS = [LATIN, LATIN, LATIN, CYRILLIC, GREEK, ARABIC, HEBREW, CJK, KANA, KOREAN, DEVANAGARI, THAI, EMOJI,
         NUMBERS, URLS, CODE, SPECIAL, CONTRACTIONS]


def word(rng):
    pool = rng.choice(POOLS)
    w = rng.choice(pool)
    r = rng.random()
    if r < 0.08:
        w = w.upper()
    elif r < 0.16:
        w = w.capitalize()
    elif r < 0.20:
        w = unicodedata.normalize("NFD", w)
    elif r < 0.22:
        w = w * rng.randint(2, 6)   # long words
    return w


def line(rng):
    kind = rng.random()
    if kind < 0.01:
        return ""
    if kind < 0.02:
        return rng.choice(ODD_WS) * rng.randint(1, 4)
    n = rng.randint(1, 40) if kind < 0.9 else rng.randint(40, 160)
    out = []
    if rng.random() < 0.1:
        out.append(rng.choice(ODD_WS))
    for i in range(n):
        out.append(word(rng))
        r = rng.random()
        if r < 0.12:
            out.append(rng.choice(PUNCT))
        if r < 0.03:
            out.append(rng.choice(CONTROLS))
        sep = " "
        r = rng.random()
        if r < 0.06:
            sep = rng.choice(ODD_WS)
        elif r < 0.10:
            sep = ""
        out.append(sep)
    s = "".join(out)
    if rng.random() < 0.5:
        s = s.rstrip(" ")
    if rng.random() < 0.05:
        s = unicodedata.normalize("NFD", s)
    return s.replace("\n", " ")


HARD_SHARE = 0.1


def generate(n_lines=12000, seed=1234, hard=False):
    rng = random.Random(seed)
    hrng = random.Random(seed + 1)
    return [hard_line(hrng) if hard and hrng.random() < HARD_SHARE else line(rng) for _ in range(n_lines)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--lines", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--hard", action="store_true", help="mix in the hard kinds of line, as the parity test does")
    a = ap.parse_args()
    lines = generate(a.lines, a.seed, a.hard)
    with open(a.out, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"wrote {len(lines)} lines to {a.out}")


if __name__ == "__main__":
    main()
