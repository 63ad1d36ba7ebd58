/* Script look-up for the UnicodeScripts pre-tokenizer. Hugging Face splits on a fixed table of
 * Unicode 9.0 scripts (the one SentencePiece generated), so a character assigned later, or one
 * of a script that did not exist yet, counts as "Any" there and never starts a new piece. Here
 * the scripts come from PCRE2's Unicode data (\p{sc:...}, scanned once per tokenizer into a run
 * table), and the characters added after 9.0 are turned back into Any with the age table below,
 * generated from ICU's u_charAge (every assigned code point whose age is above 9.0, as
 * inclusive ranges): Unicode data, no part of either implementation. */
#include "pipelines/tok_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Code points assigned in Unicode 10.0 or later (through 15.0). */
static const uint32_t AFTER_9[][2] = {
    {0x560, 0x560},     {0x588, 0x588},     {0x5EF, 0x5EF},     {0x61D, 0x61D},     {0x7FD, 0x7FF},
    {0x860, 0x86A},     {0x870, 0x88E},     {0x890, 0x891},     {0x898, 0x89F},     {0x8B5, 0x8B5},
    {0x8BE, 0x8D3},     {0x9FC, 0x9FE},     {0xA76, 0xA76},     {0xAFA, 0xAFF},     {0xB55, 0xB55},
    {0xC04, 0xC04},     {0xC3C, 0xC3C},     {0xC5D, 0xC5D},     {0xC77, 0xC77},     {0xC84, 0xC84},
    {0xCDD, 0xCDD},     {0xCF3, 0xCF3},     {0xD00, 0xD00},     {0xD04, 0xD04},     {0xD3B, 0xD3C},
    {0xD81, 0xD81},     {0xE86, 0xE86},     {0xE89, 0xE89},     {0xE8C, 0xE8C},     {0xE8E, 0xE93},
    {0xE98, 0xE98},     {0xEA0, 0xEA0},     {0xEA8, 0xEA9},     {0xEAC, 0xEAC},     {0xEBA, 0xEBA},
    {0xECE, 0xECE},     {0x170D, 0x170D},   {0x1715, 0x1715},   {0x171F, 0x171F},   {0x180F, 0x180F},
    {0x1878, 0x1878},   {0x1ABF, 0x1ACE},   {0x1B4C, 0x1B4C},   {0x1B7D, 0x1B7E},   {0x1C90, 0x1CBA},
    {0x1CBD, 0x1CBF},   {0x1CF7, 0x1CF7},   {0x1CFA, 0x1CFA},   {0x1DF6, 0x1DFA},   {0x20BF, 0x20C0},
    {0x23FF, 0x23FF},   {0x2B97, 0x2B97},   {0x2BBA, 0x2BBC},   {0x2BC9, 0x2BC9},   {0x2BD2, 0x2BEB},
    {0x2BF0, 0x2BFF},   {0x2C2F, 0x2C2F},   {0x2C5F, 0x2C5F},   {0x2E45, 0x2E5D},   {0x312E, 0x312F},
    {0x31BB, 0x31BF},   {0x32FF, 0x32FF},   {0x4DB6, 0x4DBF},   {0x9FD6, 0x9FFF},   {0xA7AF, 0xA7AF},
    {0xA7B8, 0xA7CA},   {0xA7D0, 0xA7D1},   {0xA7D3, 0xA7D3},   {0xA7D5, 0xA7D9},   {0xA7F2, 0xA7F6},
    {0xA82C, 0xA82C},   {0xA8FE, 0xA8FF},   {0xAB66, 0xAB6B},   {0xFBC2, 0xFBC2},   {0xFD40, 0xFD4F},
    {0xFDCF, 0xFDCF},   {0xFDFE, 0xFDFF},   {0x1019C, 0x1019C}, {0x1032D, 0x1032F}, {0x10570, 0x1057A},
    {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595}, {0x10597, 0x105A1}, {0x105A3, 0x105B1},
    {0x105B3, 0x105B9}, {0x105BB, 0x105BC}, {0x10780, 0x10785}, {0x10787, 0x107B0}, {0x107B2, 0x107BA},
    {0x10A34, 0x10A35}, {0x10A48, 0x10A48}, {0x10D00, 0x10D27}, {0x10D30, 0x10D39}, {0x10E80, 0x10EA9},
    {0x10EAB, 0x10EAD}, {0x10EB0, 0x10EB1}, {0x10EFD, 0x10F27}, {0x10F30, 0x10F59}, {0x10F70, 0x10F89},
    {0x10FB0, 0x10FCB}, {0x10FE0, 0x10FF6}, {0x11070, 0x11075}, {0x110C2, 0x110C2}, {0x110CD, 0x110CD},
    {0x11144, 0x11147}, {0x111CE, 0x111CF}, {0x1123F, 0x11241}, {0x1133B, 0x1133B}, {0x1145A, 0x1145A},
    {0x1145E, 0x11461}, {0x116B8, 0x116B9}, {0x1171A, 0x1171A}, {0x11740, 0x11746}, {0x11800, 0x1183B},
    {0x11900, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913}, {0x11915, 0x11916}, {0x11918, 0x11935},
    {0x11937, 0x11938}, {0x1193B, 0x11946}, {0x11950, 0x11959}, {0x119A0, 0x119A7}, {0x119AA, 0x119D7},
    {0x119DA, 0x119E4}, {0x11A00, 0x11A47}, {0x11A50, 0x11AA2}, {0x11AB0, 0x11ABF}, {0x11B00, 0x11B09},
    {0x11D00, 0x11D06}, {0x11D08, 0x11D09}, {0x11D0B, 0x11D36}, {0x11D3A, 0x11D3A}, {0x11D3C, 0x11D3D},
    {0x11D3F, 0x11D47}, {0x11D50, 0x11D59}, {0x11D60, 0x11D65}, {0x11D67, 0x11D68}, {0x11D6A, 0x11D8E},
    {0x11D90, 0x11D91}, {0x11D93, 0x11D98}, {0x11DA0, 0x11DA9}, {0x11EE0, 0x11EF8}, {0x11F00, 0x11F10},
    {0x11F12, 0x11F3A}, {0x11F3E, 0x11F59}, {0x11FB0, 0x11FB0}, {0x11FC0, 0x11FF1}, {0x11FFF, 0x11FFF},
    {0x12F90, 0x12FF2}, {0x1342F, 0x13455}, {0x16A70, 0x16ABE}, {0x16AC0, 0x16AC9}, {0x16E40, 0x16E9A},
    {0x16F45, 0x16F4A}, {0x16F4F, 0x16F4F}, {0x16F7F, 0x16F87}, {0x16FE1, 0x16FE4}, {0x16FF0, 0x16FF1},
    {0x187ED, 0x187F7}, {0x18AF3, 0x18CD5}, {0x18D00, 0x18D08}, {0x1AFF0, 0x1AFF3}, {0x1AFF5, 0x1AFFB},
    {0x1AFFD, 0x1AFFE}, {0x1B002, 0x1B122}, {0x1B132, 0x1B132}, {0x1B150, 0x1B152}, {0x1B155, 0x1B155},
    {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1CF00, 0x1CF2D}, {0x1CF30, 0x1CF46}, {0x1CF50, 0x1CFC3},
    {0x1D1E9, 0x1D1EA}, {0x1D2C0, 0x1D2D3}, {0x1D2E0, 0x1D2F3}, {0x1D372, 0x1D378}, {0x1DF00, 0x1DF1E},
    {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D}, {0x1E08F, 0x1E08F}, {0x1E100, 0x1E12C}, {0x1E130, 0x1E13D},
    {0x1E140, 0x1E149}, {0x1E14E, 0x1E14F}, {0x1E290, 0x1E2AE}, {0x1E2C0, 0x1E2F9}, {0x1E2FF, 0x1E2FF},
    {0x1E4D0, 0x1E4F9}, {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB}, {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE},
    {0x1E94B, 0x1E94B}, {0x1EC71, 0x1ECB4}, {0x1ED01, 0x1ED3D}, {0x1F10D, 0x1F10F}, {0x1F12F, 0x1F12F},
    {0x1F16C, 0x1F16F}, {0x1F1AD, 0x1F1AD}, {0x1F260, 0x1F265}, {0x1F6D3, 0x1F6D7}, {0x1F6DC, 0x1F6DF},
    {0x1F6F7, 0x1F6FC}, {0x1F774, 0x1F776}, {0x1F77B, 0x1F77F}, {0x1F7D5, 0x1F7D9}, {0x1F7E0, 0x1F7EB},
    {0x1F7F0, 0x1F7F0}, {0x1F8B0, 0x1F8B1}, {0x1F900, 0x1F90F}, {0x1F91F, 0x1F91F}, {0x1F928, 0x1F92F},
    {0x1F931, 0x1F932}, {0x1F93F, 0x1F93F}, {0x1F94C, 0x1F94F}, {0x1F95F, 0x1F97F}, {0x1F992, 0x1F9BF},
    {0x1F9C1, 0x1FA53}, {0x1FA60, 0x1FA6D}, {0x1FA70, 0x1FA7C}, {0x1FA80, 0x1FA88}, {0x1FA90, 0x1FABD},
    {0x1FABF, 0x1FAC5}, {0x1FACE, 0x1FADB}, {0x1FAE0, 0x1FAE8}, {0x1FAF0, 0x1FAF8}, {0x1FB00, 0x1FB92},
    {0x1FB94, 0x1FBCA}, {0x1FBF0, 0x1FBF9}, {0x2A6D7, 0x2A6DF}, {0x2B735, 0x2B739}, {0x2CEB0, 0x2EBE0},
    {0x30000, 0x3134A}, {0x31350, 0x323AF},
};

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

static int after_9(uint32_t c) {
    int lo = 0, hi = (int)(sizeof AFTER_9 / sizeof AFTER_9[0]) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c < AFTER_9[mid][0]) hi = mid - 1;
        else if (c > AFTER_9[mid][1]) lo = mid + 1;
        else return 1;
    }
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
    if (after_9(c) || !s->n_runs) return 0;
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
