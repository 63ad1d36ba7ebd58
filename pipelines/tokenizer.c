/* The encode pipeline: split out added tokens, normalize, split normalized added tokens,
 * pre-tokenize, run the model, convert offsets to characters, truncate, post-process, pad.
 * Also batch encoding on threads, decoding, and vocabulary look-ups. */
#include "pipelines/tok_internal.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

void kn_encode_options_init(kn_encode_options *o) {
    memset(o, 0, sizeof *o); /* fields added later start at 0 */
    o->add_special_tokens = 1;
    o->max_length = 0;
    o->strategy = KN_TRUNCATE_LONGEST_FIRST;
    o->stride = 0;
    o->per_call = 0;
}

static int is_word_char(uint32_t c) {
    if (c == '_') return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
        (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* Builds the first-byte buckets and normalized contents once, at load. */
int tk_tokenizer_finish(kn_tokenizer *t, char *err, size_t err_len) {
    int32_t maxid = -1;
    for (int i = 0; i < t->n_added; i++) {
        tk_added *x = &t->added[i];
        if (tk_strmap_put(&t->added_map, x->content, (uint32_t)x->len, i)) goto oom;
        if (x->id > maxid) maxid = x->id;
        if (x->normalized && t->normalizer && x->len) {
            tk_arena a = {0};
            tk_nstr s;
            tk_ns_init(&s);
            if (tk_ns_push_bytes(&a, &s, x->content, x->len, 0, x->len) || tk_normalize(t->normalizer, &a, &s)) {
                tk_arena_free(&a);
                goto oom;
            }
            x->ncontent = malloc((size_t)s.len + 1);
            if (!x->ncontent) {
                tk_arena_free(&a);
                goto oom;
            }
            memcpy(x->ncontent, s.s, (size_t)s.len);
            x->ncontent[s.len] = 0;
            x->nlen = s.len;
            tk_arena_free(&a);
        } else {
            x->ncontent = strdup(x->content);
            if (!x->ncontent) goto oom;
            x->nlen = x->len;
        }
    }
    t->added_by_id_len = maxid + 1;
    t->added_by_id = malloc(sizeof(int32_t) * (size_t)(maxid + 2));
    if (!t->added_by_id) goto oom;
    for (int32_t i = 0; i <= maxid; i++) t->added_by_id[i] = -1;
    for (int i = 0; i < t->n_added; i++) t->added_by_id[t->added[i].id] = i;
    for (int set = 0; set < 2; set++) {
        int32_t cnt[257] = {0};
        for (int i = 0; i < t->n_added; i++) {
            tk_added *x = &t->added[i];
            if (x->normalized != set || (set ? x->nlen : x->len) == 0) continue;
            cnt[(uint8_t)(set ? x->ncontent : x->content)[0]]++;
        }
        t->bucket_start[set][0] = 0;
        for (int b = 0; b < 256; b++) t->bucket_start[set][b + 1] = t->bucket_start[set][b] + cnt[b];
        t->bucket_items[set] = malloc(sizeof(int32_t) * (size_t)(t->bucket_start[set][256] + 1));
        if (!t->bucket_items[set]) goto oom;
        int32_t fill[256];
        memcpy(fill, t->bucket_start[set], sizeof fill);
        for (int i = 0; i < t->n_added; i++) {
            tk_added *x = &t->added[i];
            if (x->normalized != set || (set ? x->nlen : x->len) == 0) continue;
            t->bucket_items[set][fill[(uint8_t)(set ? x->ncontent : x->content)[0]]++] = i;
        }
    }
    return 0;
oom:
    tk_errf(err, err_len, "out of memory preparing added_tokens");
    return -1;
}

void kn_tokenizer_free(kn_tokenizer *t) {
    if (!t) return;
    tk_normalizer_free(t->normalizer);
    tk_pretok_free(t->pretok);
    tk_model_clear(&t->model);
    tk_post_free(t->post);
    tk_decoder_free(t->decoder);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].ncontent);
    }
    free(t->added);
    tk_strmap_free(&t->added_map);
    free(t->bucket_items[0]);
    free(t->bucket_items[1]);
    free(t->added_by_id);
    free(t->pad_token);
    free(t);
}

static int seg_push(tk_arena *a, const tk_nstr *p, int32_t s, int32_t e, int32_t fid, tk_nstr **out, int *n, int *cap) {
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        tk_nstr *v = tk_alloc(a, sizeof(tk_nstr) * (size_t)nc);
        if (!v) return -1;
        if (*n) memcpy(v, *out, sizeof(tk_nstr) * (size_t)*n);
        *out = v;
        *cap = nc;
    }
    tk_ns_slice(a, p, s, e, &(*out)[*n]);
    (*out)[*n].fixed_id = fid;
    (*n)++;
    return 0;
}

/* Splits piece p around added tokens of one set (leftmost-longest, like the Aho-Corasick
 * matcher of AddedVocabulary), applying single_word, lstrip and rstrip. */
static int split_added(const kn_tokenizer *t, int set, tk_arena *a, const tk_nstr *p, tk_nstr **out, int *n, int *cap) {
    const int32_t *bs = t->bucket_start[set];
    int32_t start_off = 0, pos = 0;
    if (bs[256] > 0) {
        while (pos < p->len) {
            uint8_t b = (uint8_t)p->s[pos];
            int32_t best = -1, blen = 0;
            for (int32_t k = bs[b]; k < bs[b + 1]; k++) {
                const tk_added *x = &t->added[t->bucket_items[set][k]];
                const char *c = set ? x->ncontent : x->content;
                int32_t cl = set ? x->nlen : x->len;
                if (cl > blen && cl <= p->len - pos && !memcmp(p->s + pos, c, (size_t)cl)) {
                    best = t->bucket_items[set][k];
                    blen = cl;
                }
            }
            if (best < 0) {
                pos++;
                continue;
            }
            const tk_added *x = &t->added[best];
            int32_t s = pos, e = pos + blen;
            pos = e;
            if (x->single_word) {
                int ok = 1;
                if (s > 0) {
                    int32_t q = s - 1;
                    while (q > 0 && ((uint8_t)p->s[q] & 0xC0) == 0x80) q--;
                    uint32_t c;
                    tk_utf8_dec(p->s, p->len, q, &c);
                    if (is_word_char(c)) ok = 0;
                }
                if (e < p->len) {
                    uint32_t c;
                    tk_utf8_dec(p->s, p->len, e, &c);
                    if (is_word_char(c)) ok = 0;
                }
                if (!ok) continue;
            }
            if (x->lstrip) {
                int32_t q = s;
                while (q > 0) {
                    int32_t r = q - 1;
                    while (r > 0 && ((uint8_t)p->s[r] & 0xC0) == 0x80) r--;
                    uint32_t c;
                    tk_utf8_dec(p->s, p->len, r, &c);
                    if (!tk_is_whitespace(c)) break;
                    q = r;
                }
                s = q > start_off ? q : start_off;
            }
            if (x->rstrip)
                while (e < p->len) {
                    uint32_t c;
                    int k = tk_utf8_dec(p->s, p->len, e, &c);
                    if (!tk_is_whitespace(c)) break;
                    e += k;
                }
            if (start_off < s) {
                if (seg_push(a, p, start_off, s, -1, out, n, cap)) return -1;
            };
            if (seg_push(a, p, s, e, x->id, out, n, cap)) return -1;
            start_off = e;
            if (pos < e) pos = e;
        }
    }
    if (start_off < p->len || p->len == 0) {
        if (seg_push(a, p, start_off, p->len, -1, out, n, cap)) return -1;
    }
    return 0;
}

/* Encodes one sequence into e with character offsets; returns 0, -1 (oom) or -2.. (model errors). */
static int encode_seq(const kn_tokenizer *t, tk_arena *a, const char *text, int32_t len, int32_t type_id, tk_enc *e) {
    tk_nstr whole;
    tk_ns_init(&whole);
    int32_t *cidx = tk_alloc(a, sizeof(int32_t) * (size_t)(len + 1));
    if (tk_ns_reserve(a, &whole, len + 1) || !cidx) return -1;
    memcpy(whole.s, text, (size_t)len);
    int32_t nch = 0;
    for (int32_t i = 0; i < len;) {
        uint32_t c;
        int k = tk_utf8_dec(text, len, i, &c);
        for (int j = 0; j < k; j++) {
            whole.a0[i + j] = i;
            whole.a1[i + j] = i + k;
            cidx[i + j] = nch;
        }
        nch++;
        i += k;
    }
    cidx[len] = nch;
    whole.len = len;

    tk_nstr *segs = NULL;
    int nseg = 0, capseg = 0;
    if (split_added(t, 0, a, &whole, &segs, &nseg, &capseg)) return -1;
    tk_nstr *pieces = NULL;
    int np = 0, capp = 0;
    for (int i = 0; i < nseg; i++) {
        tk_nstr s = segs[i];
        if (s.fixed_id >= 0) {
            if (np == capp) {
                int nc = capp ? capp * 2 : 16;
                tk_nstr *v = tk_alloc(a, sizeof(tk_nstr) * (size_t)nc);
                if (!v) return -1;
                if (np) memcpy(v, pieces, sizeof(tk_nstr) * (size_t)np);
                pieces = v;
                capp = nc;
            }
            pieces[np++] = s;
            continue;
        }
        if (tk_normalize(t->normalizer, a, &s)) return -1;
        if (split_added(t, 1, a, &s, &pieces, &np, &capp)) return -1;
    }
    if (tk_pretokenize(t->pretok, a, &pieces, &np)) return -1;
    tk_toks toks = {0};
    for (int i = 0; i < np; i++) {
        const tk_nstr *p = &pieces[i];
        if (!p->len) continue;
        if (p->fixed_id >= 0) {
            int32_t ai = p->fixed_id < t->added_by_id_len ? t->added_by_id[p->fixed_id] : -1;
            const char *str = ai >= 0 ? t->added[ai].content : "";
            if (tk_enc_push(a, e, p->fixed_id, type_id, cidx[p->a0[0]], cidx[p->a1[p->len - 1]], 0, str,
                            ai >= 0 ? t->added[ai].len : 0))
                return -1;
            continue;
        }
        toks.n = 0;
        int rc = tk_model_tokenize(&t->model, a, p, &toks);
        if (rc) return rc;
        for (int32_t k = 0; k < toks.n; k++) {
            const tk_tok *tk = &toks.v[k];
            int32_t s = tk->s < tk->e ? cidx[p->a0[tk->s]] : 0, en = tk->s < tk->e ? cidx[p->a1[tk->e - 1]] : 0;
            if (tk_enc_push(a, e, tk->id, type_id, s, en, 0, tk->str, tk->len)) return -1;
        }
    }
    return 0;
}

static void enc_truncate(tk_enc *e, int32_t n, int left) {
    if (n < 0) n = 0;
    if (e->n <= n) return;
    if (left) {
        int32_t d = e->n - n;
        memmove(e->ids, e->ids + d, sizeof(int32_t) * (size_t)n);
        memmove(e->type_ids, e->type_ids + d, sizeof(int32_t) * (size_t)n);
        memmove(e->off, e->off + 2 * d, sizeof(int32_t) * 2 * (size_t)n);
        memmove(e->special, e->special + d, (size_t)n);
        memmove(e->tok, e->tok + d, sizeof(char *) * (size_t)n);
        memmove(e->tok_len, e->tok_len + d, sizeof(int32_t) * (size_t)n);
    }
    e->n = n;
}

/* The lengths truncate_encodings (tokenizers' utils/truncation.rs) cuts a text or pair to. A
 * sequence too short for only_first/only_second is left whole (the package raises instead). */
static void trunc_targets(int32_t na, int32_t nb, int has_pair, int32_t max, int strategy, int32_t *ta, int32_t *tb) {
    if (max < 0) max = 0;
    *ta = na;
    *tb = has_pair ? nb : 0;
    int32_t total = na + *tb;
    if (total <= max) return;
    if (!has_pair) {
        *ta = max;
        return;
    }
    if (strategy == TRUNC_ONLY_FIRST) {
        if (na > total - max) *ta = na - (total - max);
        return;
    }
    if (strategy == TRUNC_ONLY_SECOND) {
        if (nb > total - max) *tb = nb - (total - max);
        return;
    }
    int32_t n1 = na, n2 = nb, swap = 0, tmp;
    if (n1 > n2) {
        swap = 1;
        tmp = n1;
        n1 = n2;
        n2 = tmp;
    }
    if (n1 > max) n2 = n1;
    else n2 = n1 > max - n1 ? n1 : max - n1;
    if (n1 + n2 > max) {
        n1 = max / 2;
        n2 = n1 + max % 2;
    }
    if (swap) {
        tmp = n1;
        n1 = n2;
        n2 = tmp;
    }
    *ta = n1 < na ? n1 : na;
    *tb = n2 < nb ? n2 : nb;
}

static int enc_copy(tk_arena *a, const tk_enc *src, int32_t from, int32_t to, tk_enc *dst) {
    memset(dst, 0, sizeof *dst);
    for (int32_t i = from; i < to; i++)
        if (tk_enc_push(a, dst, src->ids[i], src->type_ids[i], src->off[2 * i], src->off[2 * i + 1], src->special[i],
                        src->tok[i], src->tok_len[i]))
            return -1;
    return 0;
}

/* Encoding::truncate(max, stride, direction): windows of max tokens stepping by max - stride;
 * the first one is what the encoding keeps (e is cut to it), the others come back as overflow.
 * max 0 moves the whole encoding into a single overflow. Returns 0, -1 (oom) or -4 (stride). */
static int truncate_windows(tk_arena *a, tk_enc *e, int32_t max, int32_t stride, int left, int keep_overflow,
                            tk_enc **out, int32_t *nout) {
    *out = NULL;
    *nout = 0;
    if (e->n <= max) return 0;
    if (!keep_overflow) {
        /* the caller keeps the first window only: nothing else is built */
        if (max > 0 && stride >= max) return -4;
        if (max <= 0) e->n = 0;
        else enc_truncate(e, max, left);
        return 0;
    }
    if (max <= 0) {
        tk_enc *w = tk_alloc(a, sizeof(tk_enc));
        if (!w || enc_copy(a, e, 0, e->n, w)) return -1;
        *out = w;
        *nout = 1;
        e->n = 0;
        return 0;
    }
    if (stride >= max) return -4;
    int32_t step = max - stride, len = e->n, cnt = 0;
    int32_t *rs = tk_alloc(a, sizeof(int32_t) * 2 * (size_t)(len / step + 2));
    if (!rs) return -1;
    if (!left) {
        for (int32_t s = 0; s < len; s += step) {
            int32_t stop = s + max < len ? s + max : len;
            rs[2 * cnt] = s;
            rs[2 * cnt + 1] = stop;
            cnt++;
            if (stop == len) break;
        }
    } else {
        for (int32_t st = len - 1; st >= 0; st -= step) {
            int32_t stop = st + 1, s = stop > max ? stop - max : 0;
            rs[2 * cnt] = s;
            rs[2 * cnt + 1] = stop;
            cnt++;
            if (s == 0) break;
        }
    }
    if (cnt > 1) {
        tk_enc *w = tk_alloc(a, sizeof(tk_enc) * (size_t)(cnt - 1));
        if (!w) return -1;
        for (int32_t k = 1; k < cnt; k++)
            if (enc_copy(a, e, rs[2 * k], rs[2 * k + 1], &w[k - 1])) return -1;
        *out = w;
        *nout = cnt - 1;
    }
    enc_truncate(e, max, left);
    return 0;
}

static int to_public(const kn_tokenizer *t, const tk_enc *e, int32_t pad_to, kn_encoding *out) {
    memset(out, 0, sizeof *out);
    int32_t n = e->n > pad_to ? e->n : pad_to, npad = n - e->n;
    size_t tl = 0;
    const char *pt = t->pad_token ? t->pad_token : "";
    for (int32_t i = 0; i < e->n; i++) tl += (size_t)e->tok_len[i] + 1;
    tl += (strlen(pt) + 1) * (size_t)npad;
    out->n = n;
    out->ids = malloc(sizeof(int32_t) * (size_t)(n + 1));
    out->type_ids = malloc(sizeof(int32_t) * (size_t)(n + 1));
    out->offsets = malloc(sizeof(int32_t) * 2 * (size_t)(n + 1));
    out->special_mask = malloc((size_t)n + 1);
    out->attention_mask = malloc((size_t)n + 1);
    out->tokens = malloc(sizeof(char *) * (size_t)(n + 1) + tl + 1);
    out->token_lens = malloc(sizeof(int32_t) * (size_t)(n + 1));
    if (!out->token_lens || !out->ids || !out->type_ids || !out->offsets || !out->special_mask ||
        !out->attention_mask || !out->tokens) {
        kn_encoding_free(out);
        return -1;
    }
    char *w = (char *)(out->tokens + n + 1);
    int32_t base = t->pad_left ? npad : 0;
    for (int32_t k = 0; k < n; k++) {
        int32_t i = k - base;
        if (i < 0 || i >= e->n) {
            out->ids[k] = t->pad_id;
            out->type_ids[k] = t->pad_type_id;
            out->offsets[2 * k] = out->offsets[2 * k + 1] = 0;
            out->special_mask[k] = 1;
            out->attention_mask[k] = 0;
            out->tokens[k] = w;
            strcpy(w, pt);
            w += strlen(pt) + 1;
            out->token_lens[k] = (int32_t)strlen(pt);
            continue;
        }
        out->ids[k] = e->ids[i];
        out->type_ids[k] = e->type_ids[i];
        out->offsets[2 * k] = e->off[2 * i];
        out->offsets[2 * k + 1] = e->off[2 * i + 1];
        out->special_mask[k] = e->special[i];
        out->attention_mask[k] = 1;
        out->tokens[k] = w;
        memcpy(w, e->tok[i], (size_t)e->tok_len[i]);
        w[e->tok_len[i]] = 0;
        w += e->tok_len[i] + 1;
        out->token_lens[k] = e->tok_len[i];
    }
    return 0;
}

static int32_t round_up(int32_t n, int32_t m) { return m > 0 && n % m ? n + m - n % m : n; }

/* Encodes and post-processes; *len_out gets the unpadded length for batch padding. */
static int encode_impl(const kn_tokenizer *t, const char *text, size_t len, const char *pair, size_t pair_len,
                       const kn_encode_options *opt, int32_t pad_to, kn_encoding *out, char *err, size_t err_len) {
    kn_encode_options dflt;
    if (!opt) {
        kn_encode_options_init(&dflt);
        opt = &dflt;
    }
    memset(out, 0, sizeof *out);
    if (len > (size_t)INT32_MAX / 8 || pair_len > (size_t)INT32_MAX / 8) {
        tk_errf(err, err_len, "text of %zu bytes is too long", len);
        return -1;
    }
    size_t l1 = 0, l2 = 0;
    char *t1 = tk_utf8_lossy(text ? text : "", text ? len : 0, &l1, NULL), *t2 = NULL;
    if (t1 && pair) t2 = tk_utf8_lossy(pair, pair_len, &l2, NULL);
    if (!t1 || (pair && !t2)) {
        free(t1);
        free(t2);
        tk_errf(err, err_len, "out of memory");
        return -1;
    }
    tk_arena a = {0};
    tk_enc A = {0}, B = {0}, R = {0};
    int rc = encode_seq(t, &a, t1, (int32_t)l1, 0, &A);
    if (!rc && pair) rc = encode_seq(t, &a, t2, (int32_t)l2, 1, &B);
    tk_enc *wa = NULL, *wb = NULL; /* overflowing windows of A and B beyond the kept ones */
    int32_t nwa = 0, nwb = 0;
    int truncated = 0;
    if (!rc) {
        int own = opt->max_length > 0;
        int32_t max = own ? opt->max_length : (t->trunc_on && !opt->per_call ? t->trunc_max : -1);
        if (max >= 0) {
            int added = opt->add_special_tokens ? tk_post_added_tokens(t->post, pair != NULL) : 0;
            int left = own ? 0 : t->trunc_left;
            int32_t stride = own ? opt->stride : t->trunc_stride, ta, tb;
            int strategy = !own                            ? t->trunc_strategy
                : opt->strategy == KN_TRUNCATE_ONLY_FIRST  ? TRUNC_ONLY_FIRST
                : opt->strategy == KN_TRUNCATE_ONLY_SECOND ? TRUNC_ONLY_SECOND
                                                           : TRUNC_LONGEST_FIRST;
            trunc_targets(A.n, B.n, pair != NULL, max - added, strategy, &ta, &tb);
            int32_t cut = ta;
            truncated = A.n > ta || (pair && B.n > tb);
            rc = truncate_windows(&a, &A, ta, stride, left, !opt->no_overflow, &wa, &nwa);
            if (!rc && pair) {
                cut = tb;
                rc = truncate_windows(&a, &B, tb, stride, left, !opt->no_overflow, &wb, &nwb);
            }
            if (rc == -4)
                tk_errf(err, err_len,
                        "truncation.stride %d must be less than the %d tokens a sequence is cut to "
                        "(max_length %d minus %d special tokens, shared by a pair)",
                        stride, cut, max, added);
        }
    }
    /* the post-processor works on copies: byte-level offset trimming is not idempotent and
     * the kept windows take part in several overflow combinations */
    tk_enc A0 = {0}, B0 = {0};
    if (!rc && (nwa || nwb)) rc = enc_copy(&a, &A, 0, A.n, &A0) || enc_copy(&a, &B, 0, B.n, &B0) ? -1 : 0;
    if (!rc) rc = tk_post_process(t, t->post, &a, &A, &B, pair != NULL, opt->add_special_tokens, &R);
    if (!rc) {
        int32_t target = pad_to;
        int pad = opt->per_call ? PAD_NONE : t->pad;
        if (pad == PAD_FIXED && target < t->pad_len) target = t->pad_len;
        if (pad != PAD_NONE) target = round_up(target > R.n ? target : R.n, t->pad_multiple);
        rc = to_public(t, &R, target, out);
        if (!rc) out->truncated = truncated;
        /* Encoding::merge_with's order: each further window of the first text with the kept
         * window and then every further window of the second, then the kept first window with
         * every further window of the second; each gets its own special tokens and padding
         * (the package also nests windows inside these; only this top level is kept) */
        int32_t nover = nwa * (1 + nwb) + nwb;
        if (!rc && nover > 0) {
            out->overflow = calloc((size_t)nover, sizeof *out->overflow);
            if (!out->overflow) rc = -1;
            for (int32_t k = 0; !rc && k < nover; k++) {
                const tk_enc *x, *y;
                if (k < nwa * (1 + nwb)) {
                    int32_t j = k % (1 + nwb);
                    x = &wa[k / (1 + nwb)];
                    y = j == 0 ? &B0 : &wb[j - 1];
                } else {
                    x = &A0;
                    y = &wb[k - nwa * (1 + nwb)];
                }
                tk_enc X, Y, W = {0};
                rc = enc_copy(&a, x, 0, x->n, &X) || enc_copy(&a, y, 0, y->n, &Y) ? -1 : 0;
                if (!rc) rc = tk_post_process(t, t->post, &a, &X, &Y, pair != NULL, opt->add_special_tokens, &W);
                if (!rc) rc = to_public(t, &W, pad != PAD_NONE ? target : 0, &out->overflow[k]);
                if (!rc) out->n_overflow = k + 1;
            }
            if (rc) kn_encoding_free(out);
        }
    }
    if (rc == -4) { /* message already written */
    } else if (rc == -2) tk_errf(err, err_len, "model: unknown token and no usable unk_token");
    else if (rc == -3) tk_errf(err, err_len, "model: Unigram piece without a match and no unk_id");
    else if (rc || a.oom) tk_errf(err, err_len, "out of memory encoding %zu bytes", len);
    if (!rc && a.oom) {
        kn_encoding_free(out);
        rc = -1;
    }
    tk_arena_free(&a);
    free(t1);
    free(t2);
    return rc ? -1 : 0;
}

int kn_tokenizer_encode(const kn_tokenizer *t, const char *text, size_t len, const char *pair, size_t pair_len,
                        const kn_encode_options *opt, kn_encoding *out, char *err, size_t err_len) {
    return encode_impl(t, text, len, pair, pair_len, opt, 0, out, err, err_len);
}

typedef struct {
    const kn_tokenizer *t;
    int n, nthreads, tid;
    const char *const *texts;
    const size_t *lens;
    const char *const *pairs;
    const size_t *pair_lens;
    const kn_encode_options *opt;
    kn_encoding *out;
    int failed;
    char err[256];
} batch_job;

static void *batch_worker(void *arg) {
    batch_job *j = arg;
    for (int i = j->tid; i < j->n; i += j->nthreads) {
        const char *p = j->pairs ? j->pairs[i] : NULL;
        if (encode_impl(j->t, j->texts[i], j->lens ? j->lens[i] : strlen(j->texts[i]), p,
                        p ? (j->pair_lens ? j->pair_lens[i] : strlen(p)) : 0, j->opt, 0, &j->out[i], j->err,
                        sizeof j->err)) {
            j->failed = 1;
            break;
        }
    }
    return NULL;
}

int kn_tokenizer_encode_batch(const kn_tokenizer *t, int n, const char *const *texts, const size_t *lens,
                              const char *const *pairs, const size_t *pair_lens, const kn_encode_options *opt,
                              int n_threads, kn_encoding *out, char *err, size_t err_len) {
    if (n_threads <= 0) n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n_threads < 1) n_threads = 1;
    if (n_threads > n) n_threads = n > 0 ? n : 1;
    memset(out, 0, sizeof *out * (size_t)(n > 0 ? n : 0));
    batch_job *jobs = calloc((size_t)n_threads, sizeof *jobs);
    pthread_t *th = calloc((size_t)n_threads, sizeof *th);
    if (!jobs || !th) {
        free(jobs);
        free(th);
        tk_errf(err, err_len, "out of memory");
        return -1;
    }
    char *running = calloc((size_t)n_threads, 1);
    if (!running) {
        free(jobs);
        free(th);
        tk_errf(err, err_len, "out of memory");
        return -1;
    }
    for (int k = 0; k < n_threads; k++) {
        jobs[k] = (batch_job){t, n, n_threads, k, texts, lens, pairs, pair_lens, opt, out, 0, {0}};
        if (k > 0) running[k] = !pthread_create(&th[k], NULL, batch_worker, &jobs[k]);
    }
    batch_worker(&jobs[0]);
    for (int k = 1; k < n_threads; k++) {
        if (running[k]) pthread_join(th[k], NULL);
        else batch_worker(&jobs[k]); /* no thread could be started: do its share here */
    }
    free(running);
    int failed = 0;
    for (int k = 0; k < n_threads; k++)
        if (jobs[k].failed && !failed) {
            failed = 1;
            tk_errf(err, err_len, "%s", jobs[k].err);
        }
    free(jobs);
    free(th);
    if (failed) {
        for (int i = 0; i < n; i++) kn_encoding_free(&out[i]);
        return -1;
    }
    if (t->pad == PAD_LONGEST && n > 1 && !(opt && opt->per_call)) { /* BatchLongest: pad everyone to the longest */
        int32_t longest = 0;
        for (int i = 0; i < n; i++)
            if (out[i].n > longest) longest = out[i].n;
        longest = round_up(longest, t->pad_multiple);
        for (int i = 0; i < n; i++) {
            if (out[i].n >= longest) continue;
            kn_encoding e = out[i];
            tk_enc tmp = {0};
            tk_arena a = {0};
            int rc = 0;
            for (int32_t k = 0; k < e.n && !rc; k++)
                if (e.attention_mask[k])
                    rc = tk_enc_push(&a, &tmp, e.ids[k], e.type_ids[k], e.offsets[2 * k], e.offsets[2 * k + 1],
                                     e.special_mask[k], e.tokens[k], e.token_lens[k]);
            if (!rc) rc = to_public(t, &tmp, longest, &out[i]);
            tk_arena_free(&a);
            if (rc) {
                out[i] = e;
                tk_errf(err, err_len, "out of memory padding the batch");
                return -1;
            }
            kn_encoding_free(&e);
        }
    }
    return 0;
}

void kn_encoding_free(kn_encoding *e) {
    if (!e) return;
    free(e->ids);
    free(e->type_ids);
    free(e->offsets);
    free(e->special_mask);
    free(e->attention_mask);
    free(e->tokens);
    free(e->token_lens);
    for (int32_t i = 0; i < e->n_overflow; i++) kn_encoding_free(&e->overflow[i]);
    free(e->overflow);
    memset(e, 0, sizeof *e);
}

const char *kn_tokenizer_id_to_token(const kn_tokenizer *t, int32_t id) {
    if (id < 0) return NULL;
    if (id < t->added_by_id_len && t->added_by_id[id] >= 0) return t->added[t->added_by_id[id]].content;
    if (id < t->model.n_vocab) return t->model.id2tok[id];
    return NULL;
}

int32_t kn_tokenizer_token_to_id(const kn_tokenizer *t, const char *token) {
    int32_t i = tk_strmap_get(&t->added_map, token, (uint32_t)strlen(token));
    if (i >= 0) return t->added[i].id;
    return tk_strmap_get(&t->model.vocab, token, (uint32_t)strlen(token));
}

int32_t kn_tokenizer_vocab_size(const kn_tokenizer *t) {
    int32_t n = t->model.n_vocab;
    return t->added_by_id_len > n ? t->added_by_id_len : n;
}

/* The highest code point of plane 16 that none of the tokens holds. */
static uint32_t pick_sentinel(char **toks, const int32_t *lens, int m) {
    for (uint32_t c = 0x10FFFF; c > 0x100000; c--) {
        char sb[4];
        tk_utf8_enc(c, sb);
        int used = 0;
        for (int i = 0; !used && i < m; i++) used = memmem(toks[i], (size_t)lens[i], sb, 4) != NULL;
        if (!used) return c;
    }
    return 0x100000;
}

char *kn_tokenizer_decode(const kn_tokenizer *t, const int32_t *ids, int n, int skip_special, size_t *out_len,
                          char *err, size_t err_len) {
    char **toks = calloc((size_t)n + 1, sizeof(char *));
    int32_t *lens = calloc((size_t)n + 1, sizeof(int32_t));
    char *r = NULL;
    int m = 0, ok = toks && lens;
    for (int i = 0; ok && i < n; i++) {
        int32_t id = ids[i], len;
        const char *s;
        if (id < 0) continue;
        if (id < t->added_by_id_len && t->added_by_id[id] >= 0) {
            const tk_added *x = &t->added[t->added_by_id[id]];
            if (skip_special && x->special) continue;
            s = x->content;
            len = x->len;
        } else if (id < t->model.n_vocab && t->model.id2tok[id]) {
            s = t->model.id2tok[id];
            len = t->model.id2len[id];
        } else continue;
        toks[m] = malloc((size_t)len * 4 + 1);
        if (!toks[m]) {
            ok = 0;
            break;
        }
        memcpy(toks[m], s, (size_t)len);
        toks[m][len] = 0;
        lens[m++] = len;
    }
    /* NUL inside a token becomes the sentinel for the C-string decoder steps */
    char sb[4];
    if (ok) {
        tk_decode_sentinel = pick_sentinel(toks, lens, m);
        tk_decode_nuls = 0;
        tk_utf8_enc(tk_decode_sentinel, sb);
        for (int i = 0; i < m; i++) {
            if ((int32_t)strlen(toks[i]) == lens[i]) continue;
            tk_decode_nuls = 1;
            char *c = malloc((size_t)lens[i] * 4 + 1), *w = c;
            if (!c) {
                ok = 0;
                break;
            }
            for (int32_t k = 0; k < lens[i]; k++) {
                if (toks[i][k]) *w++ = toks[i][k];
                else {
                    memcpy(w, sb, 4);
                    w += 4;
                }
            }
            *w = 0;
            free(toks[i]);
            toks[i] = c;
        }
    }
    if (ok) r = tk_decode_tokens(t->decoder, toks, m);
    for (int i = 0; i < m; i++) free(toks[i]);
    free(toks);
    free(lens);
    if (!r) {
        tk_errf(err, err_len, "out of memory decoding");
        return NULL;
    }
    size_t w = 0, len = strlen(r);
    for (size_t i = 0; i < len;) {
        if (tk_decode_nuls && i + 4 <= len && !memcmp(r + i, sb, 4)) {
            r[w++] = 0;
            i += 4;
        } else r[w++] = r[i++];
    }
    r[w] = 0;
    if (out_len) *out_len = w;
    return r;
}
