#!/usr/bin/env python3
"""Deterministic multilingual corpus for tokenizer parity tests and benchmarks.

Mixes Latin with accents (composed and NFD-decomposed), Cyrillic, Greek, Arabic, Hebrew, CJK,
Japanese kana, Korean, Devanagari, Thai, emoji (with skin tones, ZWJ sequences and flags),
odd whitespace (tabs, NBSP, ideographic space, runs of spaces, zero-width characters, control
characters), numbers in several scripts, URLs, e-mail addresses, code, contractions and the text
of special tokens. Lines never contain '\\n'; some are empty. Usage:
    gen_corpus.py OUT [--lines N] [--seed S]
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


def generate(n_lines=12000, seed=1234):
    rng = random.Random(seed)
    return [line(rng) for _ in range(n_lines)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--lines", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    lines = generate(a.lines, a.seed)
    with open(a.out, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"wrote {len(lines)} lines to {a.out}")


if __name__ == "__main__":
    main()
