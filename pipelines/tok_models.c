/* Tokenization models: WordPiece (greedy longest match), BPE (ranked merges through a heap, with
 * byte fallback and unknown fusion), Unigram (Viterbi over the lattice of vocabulary pieces) and
 * WordLevel, each following the Hugging Face Rust implementation step for step so ids and
 * offsets agree, including its corner cases. */
#include "pipelines/tok_internal.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tk_toks_push(tk_arena *a, tk_toks *t, int32_t id, int32_t s, int32_t e, const char *str, int32_t len) {
    if (t->n == t->cap) {
        int32_t cap = t->cap ? t->cap * 2 : 16;
        tk_tok *v = tk_alloc(a, sizeof(tk_tok) * (size_t)cap);
        if (!v) return -1;
        if (t->n) memcpy(v, t->v, sizeof(tk_tok) * (size_t)t->n);
        t->v = v;
        t->cap = cap;
    }
    tk_tok *k = &t->v[t->n++];
    k->id = id;
    k->s = s;
    k->e = e;
    k->str = str;
    k->len = len;
    return 0;
}

static int push_vocab(const tk_model *m, tk_arena *a, tk_toks *out, int32_t id, int32_t s, int32_t e) {
    const char *str = id >= 0 && id < m->n_vocab ? m->id2tok[id] : "";
    int32_t len = id >= 0 && id < m->n_vocab ? m->id2len[id] : 0;
    return tk_toks_push(a, out, id, s, e, str, len);
}

static int utf8_len(uint8_t b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

/* ---- WordPiece ---- */
static int wordpiece(const tk_model *m, tk_arena *a, const tk_nstr *p, tk_toks *out) {
    int32_t nchars = 0;
    for (int32_t i = 0; i < p->len; i++) nchars += ((uint8_t)p->s[i] & 0xC0) != 0x80;
    int first = out->n;
    if (nchars <= m->max_chars) {
        char *buf = tk_alloc(a, (size_t)(p->len + m->cont_prefix_len + 1));
        if (!buf) return -1;
        memcpy(buf, m->cont_prefix, (size_t)m->cont_prefix_len);
        int32_t start = 0;
        while (start < p->len) {
            int32_t end = p->len, id = -1;
            while (start < end) {
                if (start > 0) {
                    memcpy(buf + m->cont_prefix_len, p->s + start, (size_t)(end - start));
                    id = tk_strmap_get(&m->vocab, buf, (uint32_t)(m->cont_prefix_len + end - start));
                } else id = tk_strmap_get(&m->vocab, p->s, (uint32_t)end);
                if (id >= 0) break;
                end--;
                while (end > start && ((uint8_t)p->s[end] & 0xC0) == 0x80) end--;
            }
            if (id < 0) break;
            if (push_vocab(m, a, out, id, start, end)) return -1;
            start = end;
        }
        if (start >= p->len) return 0;
    }
    out->n = first;
    if (m->unk_id < 0) return -2;
    return push_vocab(m, a, out, m->unk_id, 0, p->len);
}

/* ---- BPE ---- */
typedef struct {
    int32_t id, prev, next, len;
} bsym;
typedef struct {
    int32_t rank, pos, new_id;
} bmerge;

static int heap_less(const bmerge *x, const bmerge *y) {
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}
static void heap_push(bmerge *h, int32_t *n, bmerge v) {
    int32_t i = (*n)++;
    while (i > 0) {
        int32_t p = (i - 1) / 2;
        if (!heap_less(&v, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}
static bmerge heap_pop(bmerge *h, int32_t *n) {
    bmerge top = h[0], last = h[--(*n)];
    int32_t i = 0;
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* ---- BPE word cache ----
 * Pre-tokenized words repeat heavily in real text, so the merge loop's result is memoized per
 * word. Shards cut contention between encode_batch threads; a shard whose lock is busy is simply
 * bypassed (the result is the same, only slower). Entries are immutable once published and live
 * until the tokenizer is freed, so a found entry may be read after its shard is unlocked. */
#define CACHE_SHARDS 16
#define CACHE_SHARD_CAP ((TK_BPE_CACHE_CAPACITY + CACHE_SHARDS - 1) / CACHE_SHARDS)
#define CACHE_SLOTS 2048 /* power of two, over 2x the shard capacity: probes stay short */

/* One cached word: its bytes, then ntok (id, len) pairs; lens rebuild the offsets. */
typedef struct cache_ent {
    uint32_t hash, klen;
    int32_t ntok;
    int32_t *toks;
    char key[];
} cache_ent;
typedef struct cache_shard {
    pthread_mutex_t mu;
    uint32_t n;
    cache_ent *slot[CACHE_SLOTS];
} cache_shard;
struct tk_bpe_cache {
    cache_shard shard[CACHE_SHARDS];
};

struct tk_bpe_cache *tk_bpe_cache_new(void) {
    struct tk_bpe_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    for (int i = 0; i < CACHE_SHARDS; i++) {
        if (pthread_mutex_init(&c->shard[i].mu, NULL)) {
            while (i--) pthread_mutex_destroy(&c->shard[i].mu);
            free(c);
            return NULL;
        }
    }
    return c;
}

void tk_bpe_cache_free(struct tk_bpe_cache *c) {
    if (!c) return;
    for (int i = 0; i < CACHE_SHARDS; i++) {
        for (int k = 0; k < CACHE_SLOTS; k++) free(c->shard[i].slot[k]);
        pthread_mutex_destroy(&c->shard[i].mu);
    }
    free(c);
}

uint32_t tk_bpe_cache_count(struct tk_bpe_cache *c) {
    uint32_t n = 0;
    for (int i = 0; c && i < CACHE_SHARDS; i++) {
        pthread_mutex_lock(&c->shard[i].mu);
        n += c->shard[i].n;
        pthread_mutex_unlock(&c->shard[i].mu);
    }
    return n;
}

/* The slot holding the word, or the empty slot where it would go. Caller holds the shard lock. */
static cache_ent **cache_probe(cache_shard *sh, const char *k, uint32_t len, uint32_t h) {
    /* the low hash bits pick the shard, so slots use the high ones */
    uint32_t i = (h >> 8) & (CACHE_SLOTS - 1);
    for (;;) {
        cache_ent *e = sh->slot[i];
        if (!e || (e->hash == h && e->klen == len && !memcmp(e->key, k, len))) return &sh->slot[i];
        i = (i + 1) & (CACHE_SLOTS - 1);
    }
}

static const cache_ent *cache_get(struct tk_bpe_cache *c, const char *k, uint32_t len, uint32_t h) {
    cache_shard *sh = &c->shard[h % CACHE_SHARDS];
    if (pthread_mutex_trylock(&sh->mu)) return NULL;
    const cache_ent *e = *cache_probe(sh, k, len, h);
    pthread_mutex_unlock(&sh->mu);
    return e;
}

/* Stores toks[first..] as the word's result; silently gives up when busy, full or out of memory
 * (the cache is an optimization only). */
static void cache_put(struct tk_bpe_cache *c, const char *k, uint32_t len, uint32_t h, const tk_toks *t,
                      int32_t first) {
    cache_shard *sh = &c->shard[h % CACHE_SHARDS];
    if (pthread_mutex_trylock(&sh->mu)) return;
    cache_ent **slot;
    if (sh->n < CACHE_SHARD_CAP && !*(slot = cache_probe(sh, k, len, h))) {
        int32_t ntok = t->n - first;
        size_t koff = (len + sizeof(int32_t) - 1) / sizeof(int32_t) * sizeof(int32_t);
        cache_ent *e = malloc(sizeof *e + koff + sizeof(int32_t) * 2 * (size_t)ntok);
        if (e) {
            e->hash = h;
            e->klen = len;
            e->ntok = ntok;
            memcpy(e->key, k, len);
            e->toks = (int32_t *)(void *)(e->key + koff);
            for (int32_t i = 0; i < ntok; i++) {
                const tk_tok *x = &t->v[first + i];
                e->toks[2 * i] = x->id;
                e->toks[2 * i + 1] = x->e - x->s;
            }
            *slot = e;
            sh->n++;
        }
    }
    pthread_mutex_unlock(&sh->mu);
}

static int bpe_merge(const tk_model *m, tk_arena *a, const tk_nstr *p, tk_toks *out);

static int bpe(const tk_model *m, tk_arena *a, const tk_nstr *p, tk_toks *out) {
    if (!p->len) return 0;
    /* A whole-word vocabulary hit costs one lookup already, no more than the cache would */
    if (m->ignore_merges) {
        int32_t id = tk_strmap_get(&m->vocab, p->s, (uint32_t)p->len);
        if (id >= 0) return push_vocab(m, a, out, id, 0, p->len);
    }
    if (!m->cache || p->len > TK_BPE_CACHE_MAX_WORD) return bpe_merge(m, a, p, out);
    uint32_t len = (uint32_t)p->len, h = tk_hash(p->s, len);
    const cache_ent *e = cache_get(m->cache, p->s, len, h);
    if (e) {
        int32_t off = 0;
        for (int32_t i = 0; i < e->ntok; i++) {
            int32_t tl = e->toks[2 * i + 1];
            if (push_vocab(m, a, out, e->toks[2 * i], off, off + tl)) return -1;
            off += tl;
        }
        return 0;
    }
    int32_t first = out->n;
    int rc = bpe_merge(m, a, p, out);
    if (!rc) cache_put(m->cache, p->s, len, h, out, first);
    return rc;
}

/* The merge loop proper; bpe() has already tried ignore_merges' whole-word lookup. */
static int bpe_merge(const tk_model *m, tk_arena *a, const tk_nstr *p, tk_toks *out) {
    bsym *sym = tk_alloc(a, sizeof(bsym) * (size_t)(p->len * 4 + 4));
    char *buf = tk_alloc(a, (size_t)(m->cont_prefix_len + m->eow_suffix_len + 8));
    if (!sym || !buf) return -1;
    int32_t ns = 0, unk_len = 0;
    int has_unk = 0;
#define ADD_SYM(ID, LEN) \
    do { \
        sym[ns].id = (ID); \
        sym[ns].len = (LEN); \
        sym[ns].prev = ns - 1; \
        sym[ns].next = -1; \
        if (ns) { sym[ns - 1].next = ns; } \
        ns++; \
    } while (0)
    for (int32_t i = 0; i < p->len;) {
        int k = utf8_len((uint8_t)p->s[i]);
        if (i + k > p->len) k = p->len - i;
        int32_t bl = 0;
        if (i > 0 && m->cont_prefix_len) {
            memcpy(buf, m->cont_prefix, (size_t)m->cont_prefix_len);
            bl = m->cont_prefix_len;
        }
        memcpy(buf + bl, p->s + i, (size_t)k);
        bl += k;
        if (i + k >= p->len && m->eow_suffix_len) {
            memcpy(buf + bl, m->eow_suffix, (size_t)m->eow_suffix_len);
            bl += m->eow_suffix_len;
        }
        int32_t id = tk_strmap_get(&m->vocab, buf, (uint32_t)bl);
        if (id >= 0) {
            if (has_unk) {
                ADD_SYM(m->unk_id, unk_len);
                has_unk = 0;
            }
            ADD_SYM(id, k);
        } else {
            int done = 0;
            if (m->byte_fallback) {
                int32_t ids[64];
                int ok = bl <= 64;
                for (int32_t j = 0; ok && j < bl; j++) {
                    char code[8];
                    snprintf(code, sizeof code, "<0x%02X>", (uint8_t)buf[j]);
                    ids[j] = tk_strmap_get(&m->vocab, code, 6);
                    if (ids[j] < 0) ok = 0;
                }
                if (ok) {
                    for (int32_t j = 0; j < bl; j++) ADD_SYM(ids[j], 1);
                    done = 1;
                }
            }
            if (!done && m->unk_id >= 0) {
                if (has_unk && m->fuse_unk) unk_len += k;
                else {
                    if (has_unk) ADD_SYM(m->unk_id, unk_len);
                    has_unk = 1;
                    unk_len = k;
                }
            }
        }
        i += k;
    }
    if (has_unk) ADD_SYM(m->unk_id, unk_len);
#undef ADD_SYM
    if (ns > 1) {
        bmerge *heap = tk_alloc(a, sizeof(bmerge) * (size_t)(ns * 3 + 4));
        if (!heap) return -1;
        int32_t nh = 0;
        for (int32_t i = 0; i + 1 < ns; i++) {
            const struct tk_pm_ent *e = tk_pairmap_get(&m->merges, sym[i].id, sym[i + 1].id);
            if (e) heap_push(heap, &nh, (bmerge){e->rank, i, e->new_id});
        }
        while (nh) {
            bmerge top = heap_pop(heap, &nh);
            bsym *s = &sym[top.pos];
            if (s->len == 0 || s->next < 0) continue;
            int32_t nx = s->next;
            const struct tk_pm_ent *e = tk_pairmap_get(&m->merges, s->id, sym[nx].id);
            if (!e || e->new_id != top.new_id) continue;
            s->id = top.new_id;
            s->len += sym[nx].len;
            s->next = sym[nx].next;
            sym[nx].len = 0;
            if (s->next >= 0) sym[s->next].prev = top.pos;
            if (s->prev >= 0) {
                const struct tk_pm_ent *q = tk_pairmap_get(&m->merges, sym[s->prev].id, s->id);
                if (q) heap_push(heap, &nh, (bmerge){q->rank, s->prev, q->new_id});
            }
            if (s->next >= 0) {
                const struct tk_pm_ent *q = tk_pairmap_get(&m->merges, s->id, sym[s->next].id);
                if (q) heap_push(heap, &nh, (bmerge){q->rank, top.pos, q->new_id});
            }
        }
    }
    int32_t off = 0;
    for (int32_t i = 0; i < ns; i++) {
        if (sym[i].len == 0) continue;
        if (push_vocab(m, a, out, sym[i].id, off, off + sym[i].len)) return -1;
        off += sym[i].len;
    }
    return 0;
}

/* ---- Unigram ---- */
typedef struct {
    int32_t id, start;
    double score;
} unode;

static int unigram(const tk_model *m, tk_arena *a, const tk_nstr *p, tk_toks *out) {
    int32_t n = p->len;
    if (!n) return 0;
    unode *best = tk_alloc(a, sizeof(unode) * (size_t)(n + 1));
    if (!best) return -1;
    for (int32_t i = 0; i <= n; i++) {
        best[i].id = -1;
        best[i].start = -1;
        best[i].score = 0;
    }
    double unk_score = m->min_score - 10.0;
    const tk_trie *t = &m->trie;
    for (int32_t st = 0; st < n;) {
        double base = best[st].score;
        int mblen = utf8_len((uint8_t)p->s[st]);
        if (st + mblen > n) mblen = n - st;
        int single = 0;
        int32_t node = t->n ? t->root_child[(uint8_t)p->s[st]] : -1;
        for (int32_t k = st + 1; node >= 0; k++) {
            if (t->val[node] >= 0) {
                int32_t id = t->val[node];
                double cand = base + m->scores[id];
                if (best[k].start < 0 || cand > best[k].score) {
                    best[k].score = cand;
                    best[k].start = st;
                    best[k].id = id;
                }
                if (k - st == mblen) single = 1;
            }
            if (k >= n) break;
            uint8_t b = (uint8_t)p->s[k];
            int32_t c = t->first[node];
            while (c >= 0 && t->label[c] != b) c = t->next[c];
            node = c;
        }
        if (!single) {
            if (m->unk_id < 0) return -3;
            double cand = base + unk_score;
            unode *tn = &best[st + mblen];
            if (tn->start < 0 || cand > tn->score) {
                tn->score = cand;
                tn->start = st;
                tn->id = m->unk_id;
            }
        }
        st += mblen;
    }
    /* backtrack into (start, end, id) triples, fusing runs of unknown pieces */
    int32_t *seg = tk_alloc(a, sizeof(int32_t) * 3 * (size_t)(n + 1));
    if (!seg) return -1;
    int32_t nseg = 0, end = n, unk_end = -1;
    while (end > 0) {
        unode *nd = &best[end];
        int32_t st = nd->start;
        if (nd->id == m->unk_id && m->unk_id >= 0) {
            if (unk_end < 0) unk_end = end;
        } else {
            if (unk_end >= 0) {
                seg[3 * nseg] = end;
                seg[3 * nseg + 1] = unk_end;
                seg[3 * nseg + 2] = -1;
                nseg++;
                unk_end = -1;
            }
            seg[3 * nseg] = st;
            seg[3 * nseg + 1] = end;
            seg[3 * nseg + 2] = nd->id;
            nseg++;
        }
        end = st;
    }
    if (unk_end >= 0) {
        seg[3 * nseg] = 0;
        seg[3 * nseg + 1] = unk_end;
        seg[3 * nseg + 2] = -1;
        nseg++;
    }
    for (int32_t i = nseg - 1; i >= 0; i--) {
        int32_t s = seg[3 * i], e = seg[3 * i + 1], id = seg[3 * i + 2];
        if (id < 0) id = tk_strmap_get(&m->vocab, p->s + s, (uint32_t)(e - s));
        if (id < 0 && m->byte_fallback) {
            int ok = 1;
            int32_t first = out->n;
            for (int32_t j = s; ok && j < e; j++) {
                char code[8];
                snprintf(code, sizeof code, "<0x%02X>", (uint8_t)p->s[j]);
                int32_t bid = tk_strmap_get(&m->vocab, code, 6);
                if (bid < 0) ok = 0;
                else if (push_vocab(m, a, out, bid, s, e)) return -1;
            }
            if (ok) continue;
            out->n = first;
        }
        if (id < 0) id = m->unk_id;
        if (tk_toks_push(a, out, id, s, e, p->s + s, e - s)) return -1;
    }
    return 0;
}

static int wordlevel(const tk_model *m, tk_arena *a, const tk_nstr *p, tk_toks *out) {
    int32_t id = tk_strmap_get(&m->vocab, p->s, (uint32_t)p->len);
    if (id >= 0) return tk_toks_push(a, out, id, 0, p->len, p->s, p->len);
    if (m->unk_id < 0) return -2;
    return push_vocab(m, a, out, m->unk_id, 0, p->len);
}

int tk_model_tokenize(const tk_model *m, tk_arena *a, const tk_nstr *piece, tk_toks *out) {
    switch (m->kind) {
    case MODEL_WORDPIECE: return wordpiece(m, a, piece, out);
    case MODEL_BPE: return bpe(m, a, piece, out);
    case MODEL_UNIGRAM: return unigram(m, a, piece, out);
    case MODEL_WORDLEVEL: return wordlevel(m, a, piece, out);
    }
    return -1;
}

void tk_model_clear(tk_model *m) {
    tk_strmap_free(&m->vocab);
    if (m->id2tok)
        for (int32_t i = 0; i < m->n_vocab; i++) free(m->id2tok[i]);
    free(m->id2tok);
    free(m->id2len);
    free(m->cont_prefix);
    free(m->eow_suffix);
    free(m->scores);
    tk_pairmap_free(&m->merges);
    tk_trie_free(&m->trie);
    tk_bpe_cache_free(m->cache);
    memset(m, 0, sizeof *m);
}
