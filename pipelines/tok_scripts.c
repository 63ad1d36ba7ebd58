/* Script look-up for the UnicodeScripts pre-tokenizer. Hugging Face splits on a fixed table of
 * Unicode 9.0 scripts (the one SentencePiece generated), so a character assigned later, or one
 * of a script that did not exist yet, counts as "Any" there and never starts a new piece. Here
 * the scripts come from PCRE2's Unicode data (\p{sc:...}, scanned once per tokenizer into a run
 * table), and the characters added after 9.0 are turned back into Any with the age table of
 * tok_ucd_age.c. */
#include "pipelines/tok_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* The scripts of Unicode 9.0, most frequent first since the scan tries them in order; a
 * character's id is its index + 1 (0 is Any). */
static const char *const SCRIPTS[] = {
    "Common",
    "Latin",
    "Han",
    "Inherited",
    "Cyrillic",
    "Arabic",
    "Greek",
    "Hangul",
    "Hiragana",
    "Katakana",
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Armenian",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bengali",
    "Bhaiksuki",
    "Bopomofo",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Chakma",
    "Cham",
    "Cherokee",
    "Coptic",
    "Cuneiform",
    "Cypriot",
    "Deseret",
    "Devanagari",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Ethiopic",
    "Georgian",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Gujarati",
    "Gurmukhi",
    "Hanunoo",
    "Hatran",
    "Hebrew",
    "Imperial_Aramaic",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kannada",
    "Kayah_Li",
    "Kharoshthi",
    "Khmer",
    "Khojki",
    "Khudawadi",
    "Lao",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Lycian",
    "Lydian",
    "Mahajani",
    "Malayalam",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Myanmar",
    "Nabataean",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Ogham",
    "Ol_Chiki",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Oriya",
    "Osage",
    "Osmanya",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Phags_Pa",
    "Phoenician",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "Samaritan",
    "Saurashtra",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sinhala",
    "Sora_Sompeng",
    "Sundanese",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tamil",
    "Tangut",
    "Telugu",
    "Thaana",
    "Thai",
    "Tibetan",
    "Tifinagh",
    "Tirhuta",
    "Ugaritic",
    "Vai",
    "Warang_Citi",
    "Yi",
};
#define N_SCRIPTS ((int)(sizeof SCRIPTS / sizeof SCRIPTS[0]))

/* Characters whose Script value changed after Unicode 9.0 (Scripts.txt 9.0 against 14.0, which
 * PCRE2 carries): they keep their 9.0 script. */
static const struct {
    uint32_t lo, hi;
    const char *script;
} CHANGED_AFTER_9[] = {
    {0x0589, 0x0589, "Common"},     /* ARMENIAN FULL STOP, Armenian since 11.0 */
    {0x061C, 0x061C, "Common"},     /* ARABIC LETTER MARK, Arabic since 11.0 */
    {0x0953, 0x0954, "Devanagari"}, /* DEVANAGARI GRAVE and ACUTE ACCENT, Inherited since 10.0 */
};

_Static_assert(sizeof CHANGED_AFTER_9 / sizeof CHANGED_AFTER_9[0] <= sizeof((tk_scripts *)0)->changed,
               "tk_scripts.changed must hold an id per CHANGED_AFTER_9 entry");

static int script_id(const char *name) {
    for (int i = 0; i < N_SCRIPTS; i++)
        if (!strcmp(SCRIPTS[i], name)) return i + 1;
    return 0;
}

static int runs_push(tk_scripts *s, uint32_t start, uint8_t id) {
    if (s->n_runs && s->run_id[s->n_runs - 1] == id) return 0;
    if (s->n_runs == s->cap) {
        int32_t cap = s->cap ? s->cap * 2 : 1024;
        uint32_t *st = realloc(s->run_start, sizeof(uint32_t) * (size_t)cap);
        if (!st) return -1;
        s->run_start = st;
        uint8_t *id2 = realloc(s->run_id, (size_t)cap);
        if (!id2) return -1;
        s->run_id = id2;
        s->cap = cap;
    }
    s->run_start[s->n_runs] = start;
    s->run_id[s->n_runs] = id;
    s->n_runs++;
    return 0;
}

/* Walks every code point (a plane at a time, as UTF-8) with one pattern whose alternatives are
 * "unassigned, private or surrogate" then each script, and records the runs: the alternative
 * that matched names the run, and text no alternative matches is of a later script (Any). */
int tk_scripts_build(tk_scripts *s, char *err, size_t err_len) {
    memset(s, 0, sizeof *s);
    size_t plen = 64;
    for (int i = 0; i < N_SCRIPTS; i++) plen += strlen(SCRIPTS[i]) + 16;
    char *pat = malloc(plen), *w = pat;
    if (!pat) {
        tk_errf(err, err_len, "out of memory");
        return -1;
    }
    w += sprintf(w, "([\\p{Cn}\\p{Co}]+)");
    for (int i = 0; i < N_SCRIPTS; i++) w += sprintf(w, "|(\\p{sc:%s}+)", SCRIPTS[i]);
    pcre2_code *re = tk_regex_compile(pat, (size_t)(w - pat), err, err_len);
    free(pat);
    if (!re) return -1;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    /* a plane of code points as UTF-8, plus the first code point of each byte offset */
    char *buf = malloc(0x10000 * 4 + 4);
    uint32_t *cp_at = malloc(sizeof(uint32_t) * (0x10000 * 4 + 4));
    int rc = md && buf && cp_at ? 0 : -1;
    for (uint32_t plane = 0; !rc && plane < 17; plane++) {
        int32_t len = 0;
        for (uint32_t c = plane << 16; c < ((plane + 1) << 16); c++) {
            if (c >= 0xD800 && c <= 0xDFFF) continue; /* not encodable; never in valid text */
            int k = tk_utf8_enc(c, buf + len);
            for (int j = 0; j < k; j++) cp_at[len + j] = c;
            len += k;
        }
        cp_at[len] = (plane + 1) << 16;
        int32_t pos = 0;
        while (!rc && pos < len) {
            int r = pcre2_match(re, (PCRE2_SPTR)buf, (PCRE2_SIZE)len, (PCRE2_SIZE)pos, PCRE2_NO_UTF_CHECK, md, NULL);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            int32_t ms = r < 0 ? len : (int32_t)ov[0], me = r < 0 ? len : (int32_t)ov[1];
            if (ms > pos && runs_push(s, cp_at[pos], 0)) rc = -1;
            if (r < 0) break;
            int id = r > 2 ? r - 2 : 0; /* only the matching alternative's group is set */
            if (!rc && runs_push(s, cp_at[ms], (uint8_t)id)) rc = -1;
            pos = me > ms ? me : ms + 1;
        }
    }
    free(buf);
    free(cp_at);
    if (md) pcre2_match_data_free(md);
    pcre2_code_free(re);
    for (size_t i = 0; i < sizeof CHANGED_AFTER_9 / sizeof CHANGED_AFTER_9[0]; i++)
        s->changed[i] = (uint8_t)script_id(CHANGED_AFTER_9[i].script);
    s->han = (uint8_t)script_id("Han");
    s->hiragana = (uint8_t)script_id("Hiragana");
    s->katakana = (uint8_t)script_id("Katakana");
    if (rc) {
        tk_scripts_free(s);
        tk_errf(err, err_len, "out of memory building the script table");
    }
    return rc;
}

void tk_scripts_free(tk_scripts *s) {
    free(s->run_start);
    free(s->run_id);
    memset(s, 0, sizeof *s);
}

/* fixed_script of the package: Hiragana, Katakana and U+30FC count as Han, ' ' as Any. */
int tk_script_of(const tk_scripts *s, uint32_t c) {
    if (c == ' ') return 0;
    if (c == 0x30FC) return s->han;
    if (tk_assigned_after_9(c) || !s->n_runs) return 0;
    for (size_t i = 0; i < sizeof CHANGED_AFTER_9 / sizeof CHANGED_AFTER_9[0]; i++)
        if (c >= CHANGED_AFTER_9[i].lo && c <= CHANGED_AFTER_9[i].hi) return s->changed[i];
    int32_t lo = 0, hi = s->n_runs - 1;
    while (lo < hi) { /* last run starting at or before c */
        int32_t mid = (lo + hi + 1) / 2;
        if (s->run_start[mid] <= c) lo = mid;
        else hi = mid - 1;
    }
    int id = s->run_id[lo];
    return id == s->hiragana || id == s->katakana ? s->han : id;
}
