/* Post-processing: wraps the encoded sequence (or pair) in special tokens with the type ids of
 * TemplateProcessing, BertProcessing and RobertaProcessing, and trims byte-level offsets the way
 * Hugging Face's ByteLevel/Roberta processors do. Offsets here are already in characters. */
#include "pipelines/tok_internal.h"
#include <stdlib.h>
#include <string.h>

int tk_enc_push(tk_arena *a, tk_enc *e, int32_t id, int32_t type_id, int32_t s, int32_t e_, int special,
                const char *tok, int32_t tok_len) {
    if (e->n == e->cap) {
        int32_t cap = e->cap ? e->cap * 2 : 32;
        int32_t *ids = tk_alloc(a, sizeof(int32_t) * (size_t)cap), *ty = tk_alloc(a, sizeof(int32_t) * (size_t)cap);
        int32_t *off = tk_alloc(a, sizeof(int32_t) * 2 * (size_t)cap), *tl = tk_alloc(a, sizeof(int32_t) * (size_t)cap);
        uint8_t *sp = tk_alloc(a, (size_t)cap);
        const char **tk = tk_alloc(a, sizeof(char *) * (size_t)cap);
        if (!ids || !ty || !off || !tl || !sp || !tk) return -1;
        if (e->n) {
            memcpy(ids, e->ids, sizeof(int32_t) * (size_t)e->n);
            memcpy(ty, e->type_ids, sizeof(int32_t) * (size_t)e->n);
            memcpy(off, e->off, sizeof(int32_t) * 2 * (size_t)e->n);
            memcpy(tl, e->tok_len, sizeof(int32_t) * (size_t)e->n);
            memcpy(sp, e->special, (size_t)e->n);
            memcpy(tk, e->tok, sizeof(char *) * (size_t)e->n);
        }
        e->ids = ids;
        e->type_ids = ty;
        e->off = off;
        e->tok_len = tl;
        e->special = sp;
        e->tok = tk;
        e->cap = cap;
    }
    int32_t i = e->n++;
    e->ids[i] = id;
    e->type_ids[i] = type_id;
    e->off[2 * i] = s;
    e->off[2 * i + 1] = e_;
    e->special[i] = (uint8_t)special;
    e->tok[i] = tok;
    e->tok_len[i] = tok_len;
    return 0;
}

static int append(tk_arena *a, tk_enc *dst, const tk_enc *src, int type_override) {
    for (int32_t i = 0; i < src->n; i++)
        if (tk_enc_push(a, dst, src->ids[i], type_override >= 0 ? type_override : src->type_ids[i], src->off[2 * i],
                        src->off[2 * i + 1], src->special[i], src->tok[i], src->tok_len[i]))
            return -1;
    return 0;
}

static int push_special(const kn_tokenizer *t, tk_arena *a, tk_enc *dst, int32_t id, const char *tok, int32_t type_id) {
    (void)t;
    return tk_enc_push(a, dst, id, type_id, 0, 0, 1, tok, (int32_t)strlen(tok));
}

/* The byte-level offset trim: drop the leading/trailing spaces ('Ġ' or whitespace) a token
 * carries, except the one space add_prefix_space put in front of the first token. */
static void trim_offsets(tk_enc *e, int add_prefix_space) {
    for (int32_t i = 0; i < e->n; i++) {
        const char *s = e->tok[i];
        int32_t len = e->tok_len[i];
        int32_t lead = 0, trail = 0, p = 0;
        while (p < len) {
            uint32_t c;
            int k = tk_utf8_dec(s, len, p, &c);
            if (c != 0x120 && !tk_is_whitespace(c)) break;
            lead++;
            p += k;
        }
        if (p < len || lead == 0) {
            int32_t q = len;
            while (q > 0) {
                int32_t b = q - 1;
                while (b > 0 && ((uint8_t)s[b] & 0xC0) == 0x80) b--;
                uint32_t c;
                tk_utf8_dec(s, len, b, &c);
                if (c != 0x120 && !tk_is_whitespace(c)) break;
                trail++;
                q = b;
            }
        } else trail = lead;
        int32_t *o = &e->off[2 * i];
        if (lead > 0) {
            int is_first = i == 0 || o[0] == 0;
            if (is_first && add_prefix_space && lead == 1) lead = 0;
            o[0] = o[0] + lead < o[1] ? o[0] + lead : o[1];
        }
        if (trail > 0 && o[1] >= trail) o[1] = o[1] - trail > o[0] ? o[1] - trail : o[0];
    }
}


static int apply(const kn_tokenizer *t, const tk_post *p, tk_arena *a, tk_enc *A, tk_enc *B, int has_pair,
                 int add_special, tk_enc *out, int *merged) {
    switch (p->kind) {
    case POST_BYTELEVEL:
        if (p->trim_offsets) {
            if (*merged) trim_offsets(out, p->add_prefix_space);
            else {
                trim_offsets(A, p->add_prefix_space);
                if (has_pair) trim_offsets(B, p->add_prefix_space);
            }
        }
        return 0;
    case POST_SEQ:
        for (int i = 0; i < p->n_seq; i++)
            if (apply(t, p->seq[i], a, A, B, has_pair, add_special, out, merged)) return -1;
        return 0;
    default: break;
    }
    if (*merged) return 0; /* a second wrapping processor has nothing left to wrap */
    *merged = 1;
    if (p->kind == POST_ROBERTA && p->trim_offsets) {
        trim_offsets(A, p->add_prefix_space);
        if (has_pair) trim_offsets(B, p->add_prefix_space);
    }
    if (!add_special && p->kind != POST_TEMPLATE) {
        if (append(a, out, A, -1)) return -1;
        return has_pair ? append(a, out, B, -1) : 0;
    }
    if (p->kind == POST_BERT || p->kind == POST_ROBERTA) {
        int rob = p->kind == POST_ROBERTA;
        if (push_special(t, a, out, p->cls_id, p->cls, 0) || append(a, out, A, rob ? 0 : -1) ||
            push_special(t, a, out, p->sep_id, p->sep, 0))
            return -1;
        if (has_pair) {
            int ty = rob ? 0 : 1;
            if (rob && push_special(t, a, out, p->sep_id, p->sep, 0)) return -1;
            if (append(a, out, B, rob ? 0 : -1) || push_special(t, a, out, p->sep_id, p->sep, ty)) return -1;
        }
        return 0;
    }
    /* TemplateProcessing */
    const tk_tpl_item *it = has_pair ? p->pair : p->single;
    int n = has_pair ? p->n_pair : p->n_single;
    for (int i = 0; i < n; i++) {
        if (it[i].is_seq) {
            if (append(a, out, it[i].seq ? B : A, it[i].type_id)) return -1;
            continue;
        }
        if (!add_special) continue;
        for (int s = 0; s < p->n_specials; s++) {
            if (strcmp(p->specials[s].name, it[i].special)) continue;
            for (int k = 0; k < p->specials[s].n; k++)
                if (push_special(t, a, out, p->specials[s].ids[k], p->specials[s].tokens[k], it[i].type_id)) return -1;
            break;
        }
    }
    return 0;
}

int tk_post_process(const kn_tokenizer *t, const tk_post *p, tk_arena *a, tk_enc *A, tk_enc *B, int has_pair,
                    int add_special, tk_enc *out) {
    int merged = 0;
    if (p && apply(t, p, a, A, B, has_pair, add_special, out, &merged)) return -1;
    if (!merged) {
        if (append(a, out, A, -1)) return -1;
        if (has_pair && append(a, out, B, -1)) return -1;
    }
    return 0;
}

int tk_post_added_tokens(const tk_post *p, int is_pair) {
    if (!p) return 0;
    switch (p->kind) {
    case POST_BERT: return is_pair ? 3 : 2;
    case POST_ROBERTA: return is_pair ? 4 : 2;
    case POST_BYTELEVEL: return 0;
    case POST_SEQ: {
        int n = 0;
        for (int i = 0; i < p->n_seq; i++) n += tk_post_added_tokens(p->seq[i], is_pair);
        return n;
    }
    case POST_TEMPLATE: {
        const tk_tpl_item *it = is_pair ? p->pair : p->single;
        int n = 0, m = is_pair ? p->n_pair : p->n_single;
        for (int i = 0; i < m; i++) {
            if (it[i].is_seq) continue;
            for (int s = 0; s < p->n_specials; s++)
                if (!strcmp(p->specials[s].name, it[i].special)) {
                    n += p->specials[s].n;
                    break;
                }
        }
        return n;
    }
    }
    return 0;
}

void tk_post_free(tk_post *p) {
    if (!p) return;
    for (int i = 0; i < p->n_seq; i++) tk_post_free(p->seq[i]);
    free(p->seq);
    free(p->cls);
    free(p->sep);
    for (int i = 0; i < p->n_single; i++) free(p->single[i].special);
    for (int i = 0; i < p->n_pair; i++) free(p->pair[i].special);
    free(p->single);
    free(p->pair);
    for (int s = 0; s < p->n_specials; s++) {
        free(p->specials[s].name);
        free(p->specials[s].ids);
        for (int k = 0; k < p->specials[s].n; k++) free(p->specials[s].tokens[k]);
        free(p->specials[s].tokens);
    }
    free(p->specials);
    free(p);
}
