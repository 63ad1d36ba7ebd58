/* CPU kernels for the data-movement and shape ops: reshape-like aliases, constants, Transpose,
 * Concat/Split, Slice, Pad, Expand/Tile, Trilu, DepthToSpace, Compress, NonZero, Unique, ...
 * They move whole elements by byte size, so every dtype works; string tensors (char* elements)
 * are deep-copied with strdup. Most ops reduce to one strided N-d copy (strided_copy), with a
 * blocked fast path for the transposes models actually use. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAXR KN_MAX_DIMS
#define MAXS (2 * KN_MAX_DIMS)


/* ---------------- element copies ---------------- */

static kn_status *dup_str(char **dst, const char *src) {
    *dst = strdup(src ? src : "");
    return *dst ? NULL : KN_OOM(src ? strlen(src) + 1 : 1);
}

kn_status *kn_shapeops_copy_elems(kn_dtype dt, void *dst, const void *src, int64_t n) {
    if (n <= 0 || dst == src) return NULL;
    if (dt == KN_STRING) {
        char **d = dst;
        char *const *s = src;
        for (int64_t i = 0; i < n; i++) KN_TRY(dup_str(&d[i], s[i]));
        return NULL;
    }
    memmove(dst, src, (size_t)n * kn_dtype_size(dt));
    return NULL;
}

/* n copies of one element: memset when its bytes are all equal, else doubling memcpy. */
static void fill_elems(void *dst, int64_t n, size_t es, const void *val) {
    if (n <= 0) return;
    const unsigned char *v = val;
    bool same = true;
    for (size_t k = 1; k < es; k++) same &= v[k] == v[0];
    if (same) {
        memset(dst, v[0], (size_t)n * es);
        return;
    }
    memcpy(dst, val, es);
    size_t done = es, total = (size_t)n * es;
    while (done < total) {
        size_t c = done < total - done ? done : total - done;
        memcpy((char *)dst + done, dst, c);
        done += c;
    }
}

/* Identity-like ops: the output is the input's bytes (skipped when the planner aliased them). */
static kn_status *copy_whole(const kn_tensor *x, kn_tensor *y) {
    if (!y || !y->data || y->data == x->data) return NULL;
    return kn_shapeops_copy_elems(x->dtype, y->data, x->data, kn_numel(y));
}

/* ---------------- strided N-d copy ---------------- */

typedef struct strided_job {
    kn_dtype dt;
    size_t es;
    char *dst;
    const char *src;
    int nd; /* outer dims (rows) */
    int64_t dims[MAXS], ss[MAXS], ds[MAXS];
    int64_t inner, iss, ids; /* innermost run: length and strides in elements */
} strided_job;

static void strided_rows(void *arg, int64_t begin, int64_t end) {
    const strided_job *j = arg;
    size_t es = j->es;
    for (int64_t row = begin; row < end; row++) {
        int64_t r = row, so = 0, dof = 0;
        for (int k = j->nd - 1; k >= 0; k--) {
            int64_t ix = r % j->dims[k];
            r /= j->dims[k];
            so += ix * j->ss[k];
            dof += ix * j->ds[k];
        }
        const char *s = j->src + so * (int64_t)es;
        char *d = j->dst + dof * (int64_t)es;
        if (j->iss == 1 && j->ids == 1) {
            memcpy(d, s, (size_t)j->inner * es);
            continue;
        }
        int64_t n = j->inner, a = j->iss, b = j->ids;
        switch (es) {
        case 1:
            for (int64_t i = 0; i < n; i++) d[i * b] = s[i * a];
            break;
        case 2:
            for (int64_t i = 0; i < n; i++) ((uint16_t *)d)[i * b] = ((const uint16_t *)s)[i * a];
            break;
        case 4:
            for (int64_t i = 0; i < n; i++) ((uint32_t *)d)[i * b] = ((const uint32_t *)s)[i * a];
            break;
        case 8:
            for (int64_t i = 0; i < n; i++) ((uint64_t *)d)[i * b] = ((const uint64_t *)s)[i * a];
            break;
        default:
            for (int64_t i = 0; i < n; i++) memcpy(d + i * b * (int64_t)es, s + i * a * (int64_t)es, es);
        }
    }
}

/* dst[sum i_k*dstr_k] = src[sum i_k*sstr_k] over the index box dims (strides in elements; src
 * strides may be 0 for broadcasting or negative for reversed slices; the pointers are the
 * positions of index 0). Strings are strdup'd. */
kn_status *kn_shapeops_strided_copy(kn_exec_ctx *ctx, kn_dtype dt, void *dst, const void *src, int nd,
                                    const int64_t *dims, const int64_t *sstr, const int64_t *dstr) {
    strided_job j = {.dt = dt, .es = kn_dtype_size(dt), .dst = dst, .src = src};
    int64_t total = 1;
    int m = 0;
    for (int k = 0; k < nd; k++) {
        if (dims[k] == 0) return NULL;
        total *= dims[k];
        if (dims[k] == 1) continue;
        /* merge into the previous dim when the two are one contiguous run on both sides */
        if (m > 0 && j.ss[m - 1] == sstr[k] * dims[k] && j.ds[m - 1] == dstr[k] * dims[k]) {
            j.dims[m - 1] *= dims[k];
            j.ss[m - 1] = sstr[k];
            j.ds[m - 1] = dstr[k];
            continue;
        }
        j.dims[m] = dims[k];
        j.ss[m] = sstr[k];
        j.ds[m] = dstr[k];
        m++;
    }
    if (m == 0) {
        j.dims[0] = 1;
        j.ss[0] = 1;
        j.ds[0] = 1;
        m = 1;
    }
    j.inner = j.dims[m - 1];
    j.iss = j.ss[m - 1];
    j.ids = j.ds[m - 1];
    j.nd = m - 1;
    int64_t rows = total / j.inner;
    if (dt == KN_STRING) {
        for (int64_t row = 0; row < rows; row++) {
            int64_t r = row, so = 0, dof = 0;
            for (int k = j.nd - 1; k >= 0; k--) {
                int64_t ix = r % j.dims[k];
                r /= j.dims[k];
                so += ix * j.ss[k];
                dof += ix * j.ds[k];
            }
            for (int64_t i = 0; i < j.inner; i++)
                KN_TRY(dup_str(&((char **)dst)[dof + i * j.ids], ((char *const *)src)[so + i * j.iss]));
        }
        return NULL;
    }
    int64_t grain = j.inner >= 4096 ? 1 : 4096 / j.inner;
    kn_parallel_for(ctx ? ctx->pool : NULL, rows, grain, strided_rows, &j);
    return NULL;
}

/* ---------------- transpose ---------------- */

kn_status *kn_shapeops_transpose_ref(kn_dtype dt, void *dst, const void *src, int nd, const int64_t *dims,
                                     const int *perm) {
    int64_t in_str[MAXR], od[MAXR], total = 1;
    size_t es = kn_dtype_size(dt);
    int64_t s = 1;
    for (int k = nd - 1; k >= 0; k--) {
        in_str[k] = s;
        s *= dims[k];
    }
    for (int k = 0; k < nd; k++) {
        od[k] = dims[perm[k]];
        total *= od[k];
    }
    int64_t idx[MAXR] = {0};
    for (int64_t o = 0; o < total; o++) {
        int64_t off = 0;
        for (int k = 0; k < nd; k++) off += idx[k] * in_str[perm[k]];
        if (dt == KN_STRING) KN_TRY(dup_str(&((char **)dst)[o], ((char *const *)src)[off]));
        else memcpy((char *)dst + o * (int64_t)es, (const char *)src + off * (int64_t)es, es);
        for (int k = nd - 1; k >= 0; k--) {
            if (++idx[k] < od[k]) break;
            idx[k] = 0;
        }
    }
    return NULL;
}

typedef struct tr2d_job {
    const char *src;
    char *dst;
    int64_t rows, cols;
    size_t es;
    int64_t tiles_r, tiles_c;
    bool avx2;
} tr2d_job;
void kn_transpose_tile32_avx2(const void *src, void *dst, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                              int64_t c0, int64_t c1);
#define TILE 32

/* One batch of [rows, cols] -> [cols, rows] in TILE x TILE blocks so both sides stay in cache. */
static void tr2d_tiles(void *arg, int64_t begin, int64_t end) {
    const tr2d_job *j = arg;
    int64_t per_batch = j->tiles_r * j->tiles_c;
    for (int64_t t = begin; t < end; t++) {
        int64_t b = t / per_batch, rem = t % per_batch;
        int64_t r0 = (rem / j->tiles_c) * TILE, c0 = (rem % j->tiles_c) * TILE;
        int64_t r1 = r0 + TILE < j->rows ? r0 + TILE : j->rows, c1 = c0 + TILE < j->cols ? c0 + TILE : j->cols;
        const char *s = j->src + b * j->rows * j->cols * (int64_t)j->es;
        char *d = j->dst + b * j->rows * j->cols * (int64_t)j->es;
        switch (j->es) {
        case 4:
            if (j->avx2) {
                kn_transpose_tile32_avx2(s, d, j->rows, j->cols, r0, r1, c0, c1);
                break;
            }
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    ((uint32_t *)d)[c * j->rows + r] = ((const uint32_t *)s)[r * j->cols + c];
            break;
        case 2:
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    ((uint16_t *)d)[c * j->rows + r] = ((const uint16_t *)s)[r * j->cols + c];
            break;
        case 8:
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    ((uint64_t *)d)[c * j->rows + r] = ((const uint64_t *)s)[r * j->cols + c];
            break;
        case 1:
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) d[c * j->rows + r] = s[r * j->cols + c];
            break;
        default:
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    memcpy(d + (c * j->rows + r) * j->es, s + (r * j->cols + c) * j->es, j->es);
        }
    }
}

/* Transpose: after merging axes that stay adjacent, a batched 2-D swap takes the blocked path
 * (covers 2-D, last-two-axes and similar); everything else (BERT's 0,2,1,3 keeps the last axis
 * contiguous, so its rows are memcpy'd) goes through strided_copy. */
static kn_status *transpose_run(kn_exec_ctx *ctx, kn_dtype dt, void *dst, const void *src, int nd, const int64_t *dims,
                                const int *perm) {
    /* squeeze out unit dims and merge runs i, i+1 that map to consecutive input axes */
    int64_t d2[MAXR];
    int p2[MAXR], keep[MAXR], n = 0;
    int newidx[MAXR];
    for (int k = 0; k < nd; k++) newidx[k] = -1;
    int nk = 0;
    for (int k = 0; k < nd; k++)
        if (dims[k] != 1) {
            newidx[k] = nk;
            keep[nk++] = k;
        }
    int pp[MAXR], np = 0;
    for (int k = 0; k < nd; k++)
        if (newidx[perm[k]] >= 0) pp[np++] = newidx[perm[k]];
    int64_t dd[MAXR];
    for (int k = 0; k < nk; k++) dd[k] = dims[keep[k]];
    /* merge: output positions k, k+1 with pp[k+1] == pp[k]+1 */
    int grp_of_in[MAXR];
    int64_t gsize[MAXR];
    int gstart[MAXR];
    for (int k = 0; k < np; k++) {
        if (n > 0 && pp[k] == pp[k - 1] + 1) {
            gsize[n - 1] *= dd[pp[k]];
            continue;
        }
        gstart[n] = pp[k];
        gsize[n] = dd[pp[k]];
        n++;
    }
    /* groups in input order give the merged input dims; p2 maps output group -> input group */
    int order[MAXR];
    for (int g = 0; g < n; g++) order[g] = g;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if (gstart[order[b]] < gstart[order[a]]) {
                int t = order[a];
                order[a] = order[b];
                order[b] = t;
            }
    for (int i = 0; i < n; i++) {
        grp_of_in[order[i]] = i;
        d2[i] = gsize[order[i]];
    }
    for (int g = 0; g < n; g++) p2[g] = grp_of_in[g];
    int64_t total = 1;
    for (int k = 0; k < nd; k++) total *= dims[k];
    if (total == 0) return NULL;
    bool identity = true;
    for (int g = 0; g < n; g++) identity &= p2[g] == g;
    if (identity) return kn_shapeops_copy_elems(dt, dst, src, total);
    if (dt != KN_STRING && n >= 2 && p2[n - 1] == n - 2 && p2[n - 2] == n - 1) {
        bool batch_ok = true;
        for (int g = 0; g < n - 2; g++) batch_ok &= p2[g] == g;
        if (batch_ok) {
            tr2d_job j = {.src = src,
                          .dst = dst,
                          .rows = d2[n - 2],
                          .cols = d2[n - 1],
                          .es = kn_dtype_size(dt),
                          .avx2 = __builtin_cpu_supports("avx2")};
            j.tiles_r = (j.rows + TILE - 1) / TILE;
            j.tiles_c = (j.cols + TILE - 1) / TILE;
            int64_t batches = total / (j.rows * j.cols);
            kn_parallel_for(ctx ? ctx->pool : NULL, batches * j.tiles_r * j.tiles_c, 4, tr2d_tiles, &j);
            return NULL;
        }
    }
    int64_t istr[MAXR], s = 1, od[MAXR], ss[MAXR], ds[MAXR];
    for (int k = n - 1; k >= 0; k--) {
        istr[k] = s;
        s *= d2[k];
    }
    s = 1;
    for (int k = n - 1; k >= 0; k--) {
        od[k] = d2[p2[k]];
        ss[k] = istr[p2[k]];
        ds[k] = s;
        s *= od[k];
    }
    return kn_shapeops_strided_copy(ctx, dt, dst, src, n, od, ss, ds);
}

kn_status *kn_cpu_Transpose(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    int perm[MAXR];
    const int64_t *p = KN_PARAMS(node, transpose)->perm;
    int k = KN_PARAMS(node, transpose)->n_perm;
    for (int i = 0; i < x->ndim; i++) perm[i] = k < 0 ? x->ndim - 1 - i : (int)(p[i] < 0 ? p[i] + x->ndim : p[i]);
    return transpose_run(ctx, x->dtype, out[0]->data, x->data, x->ndim, x->dims, perm);
}

/* ---------------- aliases ---------------- */

kn_status *kn_cpu_Identity(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out) {
    if (in[0]->kind != KN_KIND_TENSOR) {
        /* sequence or empty optional: a deep copy owned by the output (the executor allocates
         * nothing for these) */
        kn_tensor *c = NULL;
        KN_TRY(kn_tensor_clone(in[0], &c));
        *out[0] = *c;
        free(c);
        return NULL;
    }
    return copy_whole(in[0], out[0]);
}
kn_status *kn_cpu_Reshape(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    return copy_whole(in[0], out[0]);
}
kn_status *kn_cpu_Flatten(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    return copy_whole(in[0], out[0]);
}
kn_status *kn_cpu_Squeeze(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    return copy_whole(in[0], out[0]);
}
kn_status *kn_cpu_Unsqueeze(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                            kn_tensor *const *out, int n_out) {
    return copy_whole(in[0], out[0]);
}

/* MT19937 seeded like numpy's legacy np.random.seed(int), drawing doubles like
 * RandomState.uniform: with the node's seed, training-mode Dropout reproduces the ONNX
 * reference masks bit for bit. */
typedef struct mt19937 {
    uint32_t key[624];
    int pos;
} mt19937;

static void mt_seed(mt19937 *m, uint32_t seed) {
    for (int i = 0; i < 624; i++) {
        m->key[i] = seed;
        seed = 1812433253u * (seed ^ (seed >> 30)) + (uint32_t)i + 1u;
    }
    m->pos = 624;
}

static uint32_t mt_next(mt19937 *m) {
    if (m->pos >= 624) {
        for (int i = 0; i < 624; i++) {
            uint32_t y = (m->key[i] & 0x80000000u) | (m->key[(i + 1) % 624] & 0x7fffffffu);
            m->key[i] = m->key[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        m->pos = 0;
    }
    uint32_t y = m->key[m->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static double mt_double(mt19937 *m) {
    uint32_t a = mt_next(m) >> 5, b = mt_next(m) >> 6;
    return ((double)a * 67108864.0 + (double)b) / 9007199254740992.0;
}

kn_status *kn_cpu_Dropout(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *mask = n_out > 1 ? out[1] : NULL;
    double ratio = 0.5;
    bool training = false;
    if (node->opset >= 12) {
        if (n_in > 1 && in[1] && in[1]->data) ratio = kn_get_f64(in[1], 0);
        if (n_in > 2 && in[2] && in[2]->data) training = kn_get_i64(in[2], 0) != 0;
    } else {
        ratio = KN_PARAMS(node, dropout)->ratio;
        /* before opset 7, is_test=0 meant training */
        if (node->opset < 7) training = KN_PARAMS(node, dropout)->training_attr;
    }
    KN_CHECK(ratio >= 0 && ratio < 1, KN_ERR_INVALID_ARGUMENT, "Dropout: ratio %g not in [0, 1)", ratio);
    int64_t n = kn_numel(x);
    if (!training || ratio == 0) {
        KN_TRY(copy_whole(x, out[0]));
        if (mask && mask->data) {
            if (mask->dtype == KN_BOOL) memset(mask->data, 1, (size_t)n);
            else
                for (int64_t i = 0; i < n; i++) kn_set_f64(mask, i, 1.0);
        }
        return NULL;
    }
    if (!kn_dtype_is_float(x->dtype)) return kn_err_dtype(node, x);
    const kn_params_dropout *dp = KN_PARAMS(node, dropout);
    mt19937 *mt = kn_scratch_alloc(ctx, sizeof *mt);
    if (!mt) return KN_OOM(sizeof *mt);
    uint64_t seed = dp->has_seed ? (uint64_t)dp->seed : ctx->seed;
    if (dp->has_step_seed) { /* splitmix64 of the node's seed and the run's counter */
        uint64_t z = dp->step_seed + ctx->seed + 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        seed = (z ^ (z >> 31)) ^ ((z ^ (z >> 31)) >> 32);
    }
    mt_seed(mt, (uint32_t)seed);
    double scale = 1.0 / (1.0 - ratio);
    for (int64_t i = 0; i < n; i++) {
        double u = mt_double(mt);
        bool keep = u >= ratio;
        kn_set_f64(out[0], i, keep ? kn_get_f64(x, i) * scale : 0.0);
        if (mask && mask->data) kn_set_f64(mask, i, keep ? 1.0 : 0.0);
    }
    return NULL;
}

/* ---------------- shape queries and constants ---------------- */

kn_status *kn_cpu_Shape(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                        kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    int r = x->ndim;
    const kn_params_shape *sp = KN_PARAMS(node, shape);
    int64_t start = sp->start, end = sp->has_end ? sp->end : r;
    if (start < 0) start += r;
    if (end < 0) end += r;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < 0 ? 0 : end > r ? r : end;
    int64_t *o = out[0]->data;
    for (int64_t i = start; i < end; i++) o[i - start] = x->dims[i];
    return NULL;
}

kn_status *kn_cpu_Size(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    *(int64_t *)out[0]->data = kn_numel(in[0]);
    return NULL;
}

kn_status *kn_cpu_Constant(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out) {
    const kn_params_constant *p = KN_PARAMS(node, constant);
    const kn_tensor *t;
    kn_tensor *y = out[0];
    if ((t = p->value) || (t = p->sparse_value)) {
        KN_CHECK(t->data || kn_numel(t) == 0, KN_ERR_INVALID_MODEL, "Constant: value tensor has no data");
        return kn_shapeops_copy_elems(y->dtype, y->data, t->data, kn_numel(y));
    }
    if (p->has_float) {
        *(float *)y->data = p->value_float;
        return NULL;
    }
    if (p->has_int) {
        *(int64_t *)y->data = p->value_int;
        return NULL;
    }
    if (p->has_string) return dup_str((char **)y->data, p->value_string);
    if (p->has_floats) {
        if (p->n_floats) memcpy(y->data, p->value_floats, (size_t)p->n_floats * 4);
        return NULL;
    }
    if (p->has_ints) {
        if (p->n_ints) memcpy(y->data, p->value_ints, (size_t)p->n_ints * 8);
        return NULL;
    }
    if (p->has_strings) return kn_shapeops_copy_elems(KN_STRING, y->data, p->value_strings, p->n_strings);
    return kn_error(KN_ERR_UNSUPPORTED, "Constant: no supported value attribute");
}

kn_status *kn_cpu_ConstantOfShape(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                  kn_tensor *const *out, int n_out) {
    kn_tensor *y = out[0];
    const kn_tensor *v = KN_PARAMS(node, const_shape)->value;
    int64_t n = kn_numel(y);
    size_t es = kn_dtype_size(y->dtype);
    if (!v || !v->data) {
        memset(y->data, 0, (size_t)n * es);
        return NULL;
    }
    if (y->dtype == KN_STRING) {
        for (int64_t i = 0; i < n; i++) KN_TRY(dup_str(&((char **)y->data)[i], ((char *const *)v->data)[0]));
        return NULL;
    }
    fill_elems(y->data, n, es, v->data);
    return NULL;
}

kn_status *kn_cpu_EyeLike(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    kn_tensor *y = out[0];
    if (y->dtype == KN_STRING) return kn_err_dtype(node, y);
    int64_t k = KN_PARAMS(node, eyelike)->k, rows = y->dims[0], cols = y->dims[1];
    memset(y->data, 0, kn_nbytes(y));
    for (int64_t i = 0; i < rows; i++) {
        int64_t j = i + k;
        if (j >= 0 && j < cols) kn_set_f64(y, i * cols + j, 1.0);
    }
    return NULL;
}

kn_status *kn_cpu_Range(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                        kn_tensor *const *out, int n_out) {
    kn_tensor *y = out[0];
    int64_t n = y->dims[0];
    if (kn_dtype_is_int(y->dtype)) {
        int64_t s = kn_get_i64(in[0], 0), d = kn_get_i64(in[2], 0);
        /* unsigned: wraps instead of overflowing when n was rounded up near the int64 limits */
        for (int64_t i = 0; i < n; i++) kn_set_i64(y, i, (int64_t)((uint64_t)s + (uint64_t)i * (uint64_t)d));
        return NULL;
    }
    if (!kn_dtype_is_float(y->dtype)) return kn_err_dtype(node, y);
    double s = kn_get_f64(in[0], 0), d = kn_get_f64(in[2], 0);
    for (int64_t i = 0; i < n; i++) kn_set_f64(y, i, s + (double)i * d);
    return NULL;
}

/* ---------------- concat / split ---------------- */

kn_status *kn_cpu_Concat(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    kn_tensor *y = out[0];
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, axis)->axis, y->ndim, node, &axis));
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < axis; k++) outer *= y->dims[k];
    for (int k = axis + 1; k < y->ndim; k++) inner *= y->dims[k];
    int64_t ystride = y->dims[axis] * inner, off = 0;
    size_t es = kn_dtype_size(y->dtype);
    for (int i = 0; i < n_in; i++) {
        const kn_tensor *t = in[i];
        int64_t len = t->dims[axis] * inner;
        if (len > 0) {
            int64_t dims[2] = {outer, len}, ss[2] = {len, 1}, ds[2] = {ystride, 1};
            KN_TRY(
                kn_shapeops_strided_copy(ctx, y->dtype, (char *)y->data + off * (int64_t)es, t->data, 2, dims, ss, ds));
        }
        off += len;
    }
    return NULL;
}

kn_status *kn_cpu_Split(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                        kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, split)->axis, x->ndim, node, &axis));
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < axis; k++) outer *= x->dims[k];
    for (int k = axis + 1; k < x->ndim; k++) inner *= x->dims[k];
    int64_t xstride = x->dims[axis] * inner, off = 0;
    size_t es = kn_dtype_size(x->dtype);
    int64_t sizes[256];
    KN_TRY(kn_shapeops_split_sizes(node, in, n_in, n_out, axis, sizes));
    for (int i = 0; i < n_out; i++) {
        int64_t len = sizes[i] * inner;
        if (out[i] && out[i]->data && len > 0) {
            int64_t dims[2] = {outer, len}, ss[2] = {xstride, 1}, ds[2] = {len, 1};
            KN_TRY(kn_shapeops_strided_copy(ctx, x->dtype, out[i]->data, (const char *)x->data + off * (int64_t)es, 2,
                                            dims, ss, ds));
        }
        off += len;
    }
    return NULL;
}

/* ---------------- slice / pad / expand / tile ---------------- */

static void row_strides(int nd, const int64_t *dims, int64_t *str) {
    int64_t s = 1;
    for (int k = nd - 1; k >= 0; k--) {
        str[k] = s;
        s *= dims[k];
    }
}

kn_status *kn_cpu_Slice(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                        kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int64_t st[MAXR], sp[MAXR], od[MAXR], xs[MAXR], ys[MAXR], ss[MAXR];
    KN_TRY(kn_shapeops_slice_params(node, in, n_in, st, sp, od));
    row_strides(x->ndim, x->dims, xs);
    row_strides(y->ndim, y->dims, ys);
    int64_t off = 0;
    for (int k = 0; k < x->ndim; k++) {
        if (od[k] != y->dims[k])
            return kn_error(KN_ERR_RUNTIME, "Slice: output dim %d is %lld, expected %lld", k, (long long)y->dims[k],
                            (long long)od[k]);
        if (od[k] == 0) return NULL;
        off += st[k] * xs[k];
        ss[k] = od[k] > 1 ? sp[k] * xs[k] : 0; /* |step| < dim here, so no overflow */
    }
    size_t es = kn_dtype_size(x->dtype);
    return kn_shapeops_strided_copy(ctx, x->dtype, y->data, (const char *)x->data + off * (int64_t)es, x->ndim, od, ss,
                                    ys);
}

/* Source index for output coordinate o along an axis of length n padded by `before`; -1 means
 * the constant value. */
static int64_t pad_src(int64_t o, int64_t before, int64_t n, int mode) {
    int64_t i = o - before;
    if (i >= 0 && i < n) return i;
    if (n == 0) return -1;
    switch (mode) {
    case 1: /* reflect: mirror without repeating the edge */
        if (n == 1) return 0;
        {
            int64_t period = 2 * (n - 1);
            int64_t m = ((i % period) + period) % period;
            return m < n ? m : period - m;
        }
    case 2: return i < 0 ? 0 : n - 1; /* edge */
    case 3: return ((i % n) + n) % n; /* wrap */
    default: return -1;
    }
}

kn_status *kn_cpu_Pad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                      kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int r = x->ndim;
    int64_t pads[2 * MAXR];
    KN_TRY(kn_shapeops_pad_params(node, in, n_in, pads));
    static const char *const mode_names[] = {"constant", "reflect", "edge", "wrap"};
    int mode = (int)KN_PARAMS(node, pad)->mode; /* an unknown mode fails at load */
    const char *ms = mode_names[mode];
    size_t es = kn_dtype_size(x->dtype);
    int64_t ny = kn_numel(y), nx = kn_numel(x);
    if (ny == 0) return NULL;
    char b[KN_DESC_LEN];
    if (mode != 0)
        for (int k = 0; k < r; k++)
            KN_CHECK(x->dims[k] > 0 || y->dims[k] == 0, KN_ERR_INVALID_ARGUMENT,
                     "Pad: cannot %s-pad empty axis %d of %s", ms, k, kn_tensor_desc(x, b, sizeof b));
    /* the fill value as one element of the output type */
    unsigned char cv[16] = {0};
    const char *cs = NULL;
    if (mode == 0) {
        kn_tensor tmp = {.dtype = x->dtype, .ndim = 0, .data = cv};
        if (node->opset < 11) {
            if (x->dtype != KN_STRING) kn_set_f64(&tmp, 0, KN_PARAMS(node, pad)->value);
        } else if (n_in > 2 && in[2] && in[2]->data && kn_numel(in[2]) > 0) {
            if (x->dtype == KN_STRING) cs = ((char *const *)in[2]->data)[0];
            else memcpy(cv, in[2]->data, es);
        }
    }
    int64_t xs[MAXR], ys[MAXR];
    row_strides(r, x->dims, xs);
    row_strides(r, y->dims, ys);
    if (mode == 0) {
        /* fill, then copy the (possibly cropped) interior with one strided copy */
        if (x->dtype == KN_STRING)
            for (int64_t i = 0; i < ny; i++) KN_TRY(dup_str(&((char **)y->data)[i], cs));
        else fill_elems(y->data, ny, es, cv);
        int64_t box[MAXR], soff = 0, doff = 0;
        for (int k = 0; k < r; k++) {
            int64_t lo = pads[k] < 0 ? -pads[k] : 0; /* first source index kept */
            int64_t dlo = pads[k] > 0 ? pads[k] : 0; /* where it lands */
            int64_t hi = x->dims[k] + (pads[r + k] < 0 ? pads[r + k] : 0);
            box[k] = hi - lo;
            if (box[k] <= 0 || nx == 0) return NULL;
            soff += lo * xs[k];
            doff += dlo * ys[k];
        }
        if (x->dtype == KN_STRING) {
            /* the fill strdup'd every slot: free those about to be overwritten */
            int64_t idx[MAXR] = {0}, total = 1;
            for (int k = 0; k < r; k++) total *= box[k];
            for (int64_t t = 0; t < total; t++) {
                int64_t o = doff;
                for (int k = 0; k < r; k++) o += idx[k] * ys[k];
                free(((char **)y->data)[o]);
                ((char **)y->data)[o] = NULL;
                for (int k = r - 1; k >= 0; k--) {
                    if (++idx[k] < box[k]) break;
                    idx[k] = 0;
                }
            }
        }
        return kn_shapeops_strided_copy(ctx, x->dtype, (char *)y->data + doff * (int64_t)es,
                                        (const char *)x->data + soff * (int64_t)es, r, box, xs, ys);
    }
    int64_t idx[MAXR] = {0};
    for (int64_t o = 0; o < ny; o++) {
        int64_t s = 0;
        for (int k = 0; k < r; k++) s += pad_src(idx[k], pads[k], x->dims[k], mode) * xs[k];
        if (x->dtype == KN_STRING) KN_TRY(dup_str(&((char **)y->data)[o], ((char *const *)x->data)[s]));
        else memcpy((char *)y->data + o * (int64_t)es, (const char *)x->data + s * (int64_t)es, es);
        for (int k = r - 1; k >= 0; k--) {
            if (++idx[k] < y->dims[k]) break;
            idx[k] = 0;
        }
    }
    return NULL;
}

kn_status *kn_cpu_Expand(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int r = y->ndim, off = y->ndim - x->ndim;
    int64_t xs[MAXR], ys[MAXR], ss[MAXR];
    row_strides(x->ndim, x->dims, xs);
    row_strides(r, y->dims, ys);
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(off >= 0, KN_ERR_RUNTIME, "Expand: output %s has lower rank than input %s",
             kn_tensor_desc(y, b2, sizeof b2), kn_tensor_desc(x, b1, sizeof b1));
    for (int k = 0; k < r; k++) {
        int64_t xd = k >= off ? x->dims[k - off] : 1;
        KN_CHECK(xd == y->dims[k] || xd == 1, KN_ERR_RUNTIME, "Expand: %s cannot broadcast to %s",
                 kn_tensor_desc(x, b1, sizeof b1), kn_tensor_desc(y, b2, sizeof b2));
        ss[k] = (k >= off && xd != 1) ? xs[k - off] : 0;
    }
    if (kn_numel(y) == 0) return NULL;
    return kn_shapeops_strided_copy(ctx, x->dtype, y->data, x->data, r, y->dims, ss, ys);
}

kn_status *kn_cpu_Tile(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                       kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int r = x->ndim;
    /* output axis k of size rep*d splits row-major into (rep, d): a 2r-d strided copy with
     * source stride 0 over the repeats */
    int64_t dims[MAXS], ss[MAXS], ds[MAXS], xs[MAXR];
    row_strides(r, x->dims, xs);
    if (kn_numel(y) == 0) return NULL;
    for (int k = 0; k < r; k++) {
        KN_CHECK(x->dims[k] > 0 && y->dims[k] % x->dims[k] == 0, KN_ERR_RUNTIME, "Tile: output dim %d inconsistent", k);
        dims[2 * k] = y->dims[k] / x->dims[k];
        dims[2 * k + 1] = x->dims[k];
        ss[2 * k] = 0;
        ss[2 * k + 1] = xs[k];
    }
    int64_t s = 1;
    for (int k = 2 * r - 1; k >= 0; k--) {
        ds[k] = s;
        s *= dims[k];
    }
    return kn_shapeops_strided_copy(ctx, x->dtype, y->data, x->data, 2 * r, dims, ss, ds);
}

/* ---------------- Trilu, DepthToSpace, ReverseSequence ---------------- */

kn_status *kn_cpu_Trilu(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                        kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    if (x->dtype == KN_STRING) return kn_err_dtype(node, x);
    int64_t k = 0;
    if (n_in > 1 && in[1] && in[1]->data && kn_numel(in[1]) > 0) k = kn_get_i64(in[1], 0);
    bool upper = KN_PARAMS(node, trilu)->upper;
    KN_TRY(copy_whole(x, y));
    int64_t rows = x->dims[x->ndim - 2], cols = x->dims[x->ndim - 1];
    int64_t mats = (rows > 0 && cols > 0) ? kn_numel(x) / (rows * cols) : 0;
    size_t es = kn_dtype_size(x->dtype);
    for (int64_t m = 0; m < mats; m++) {
        char *base = (char *)y->data + m * rows * cols * (int64_t)es;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) {
                bool keep = upper ? j - i >= k : j - i <= k;
                if (!keep) memset(base + (i * cols + j) * (int64_t)es, 0, es);
            }
    }
    return NULL;
}

/* DepthToSpace / SpaceToDepth are a reshape to 6-d, a transpose and a reshape back. */
static kn_status *space_depth_run(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *x, kn_tensor *y,
                                  bool to_space) {
    const kn_params_space_depth *p = KN_PARAMS(node, space_depth);
    int64_t b = p->has_blocksize ? p->blocksize : 1;
    bool crd = p->crd; /* an unknown mode fails at load */
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    int64_t d6[6];
    int perm[6];
    if (to_space) {
        int64_t c = C / (b * b);
        if (crd) {
            int64_t d[6] = {N, c, b, b, H, W};
            int p[6] = {0, 1, 4, 2, 5, 3};
            memcpy(d6, d, sizeof d);
            memcpy(perm, p, sizeof p);
        } else {
            int64_t d[6] = {N, b, b, c, H, W};
            int p[6] = {0, 3, 4, 1, 5, 2};
            memcpy(d6, d, sizeof d);
            memcpy(perm, p, sizeof p);
        }
    } else {
        int64_t d[6] = {N, C, H / b, b, W / b, b};
        memcpy(d6, d, sizeof d);
        if (crd) {
            int p[6] = {0, 1, 3, 5, 2, 4};
            memcpy(perm, p, sizeof p);
        } else {
            int p[6] = {0, 3, 5, 1, 2, 4};
            memcpy(perm, p, sizeof p);
        }
    }
    return transpose_run(ctx, x->dtype, y->data, x->data, 6, d6, perm);
}

kn_status *kn_cpu_DepthToSpace(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                               kn_tensor *const *out, int n_out) {
    return space_depth_run(ctx, node, in[0], out[0], true);
}
kn_status *kn_cpu_SpaceToDepth(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                               kn_tensor *const *out, int n_out) {
    return space_depth_run(ctx, node, in[0], out[0], false);
}

kn_status *kn_cpu_ReverseSequence(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                  kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *lens = in[1];
    kn_tensor *y = out[0];
    int ba, ta;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, reverse_seq)->batch_axis, x->ndim, node, &ba));
    KN_TRY(kn_norm_axis(KN_PARAMS(node, reverse_seq)->time_axis, x->ndim, node, &ta));
    KN_CHECK(ba != ta && (ba <= 1 && ta <= 1), KN_ERR_INVALID_ARGUMENT,
             "ReverseSequence: batch_axis and time_axis must be 0 and 1");
    int64_t B = x->dims[ba], T = x->dims[ta];
    KN_CHECK(kn_numel(lens) == B, KN_ERR_INVALID_ARGUMENT, "ReverseSequence: %lld lengths for batch %lld",
             (long long)kn_numel(lens), (long long)B);
    int64_t inner = 1;
    for (int k = 2; k < x->ndim; k++) inner *= x->dims[k];
    size_t es = kn_dtype_size(x->dtype);
    for (int64_t bi = 0; bi < B; bi++) {
        int64_t L = kn_get_i64(lens, bi);
        KN_CHECK(L >= 0 && L <= T, KN_ERR_INVALID_ARGUMENT, "ReverseSequence: length %lld out of [0, %lld]",
                 (long long)L, (long long)T);
        for (int64_t t = 0; t < T; t++) {
            int64_t src_t = t < L ? L - 1 - t : t;
            int64_t so = (ba == 0 ? bi * T + src_t : src_t * B + bi) * inner;
            int64_t dof = (ba == 0 ? bi * T + t : t * B + bi) * inner;
            KN_TRY(kn_shapeops_copy_elems(x->dtype, (char *)y->data + dof * (int64_t)es,
                                          (const char *)x->data + so * (int64_t)es, inner));
        }
    }
    return NULL;
}

/* ---------------- Compress, NonZero, CenterCropPad ---------------- */

kn_status *kn_cpu_Compress(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0], *cond = in[1];
    kn_tensor *y = out[0];
    const kn_params_axis *ap = KN_PARAMS(node, axis);
    int axis = -1;
    if (ap->has_axis) KN_TRY(kn_norm_axis(ap->axis, x->ndim, node, &axis));
    int64_t outer = 1, len, inner = 1;
    if (axis < 0) len = kn_numel(x);
    else {
        for (int k = 0; k < axis; k++) outer *= x->dims[k];
        for (int k = axis + 1; k < x->ndim; k++) inner *= x->dims[k];
        len = x->dims[axis];
    }
    int64_t nc = kn_numel(cond), cnt = 0;
    for (int64_t i = 0; i < nc && i < len; i++) cnt += kn_get_i64(cond, i) != 0;
    int64_t ylen = axis < 0 ? y->dims[0] : y->dims[axis];
    KN_CHECK(cnt == ylen, KN_ERR_RUNTIME, "Compress: output has %lld slots for %lld selected", (long long)ylen,
             (long long)cnt);
    size_t es = kn_dtype_size(x->dtype);
    for (int64_t o = 0; o < outer; o++) {
        int64_t j = 0;
        for (int64_t i = 0; i < nc && i < len; i++) {
            if (kn_get_i64(cond, i) == 0) continue;
            KN_TRY(kn_shapeops_copy_elems(x->dtype, (char *)y->data + ((o * cnt + j) * inner) * (int64_t)es,
                                          (const char *)x->data + ((o * len + i) * inner) * (int64_t)es, inner));
            j++;
        }
    }
    return NULL;
}

static bool elem_nonzero(const kn_tensor *x, int64_t i) {
    if (x->dtype == KN_STRING) {
        const char *s = ((char *const *)x->data)[i];
        return s && s[0];
    }
    if (kn_dtype_is_float(x->dtype)) return kn_get_f64(x, i) != 0.0;
    size_t es = kn_dtype_size(x->dtype);
    const unsigned char *p = (const unsigned char *)x->data + i * (int64_t)es;
    for (size_t k = 0; k < es; k++)
        if (p[k]) return true;
    return false;
}

kn_status *kn_cpu_NonZero(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                          kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int64_t n = kn_numel(x), cnt = y->dims[1], j = 0, xs[MAXR];
    row_strides(x->ndim, x->dims, xs);
    int64_t *o = y->data;
    for (int64_t i = 0; i < n; i++) {
        if (!elem_nonzero(x, i)) continue;
        KN_CHECK(j < cnt, KN_ERR_RUNTIME, "NonZero: more non-zeros than the output holds");
        int64_t r = i;
        for (int k = 0; k < x->ndim; k++) {
            o[k * cnt + j] = r / xs[k];
            r %= xs[k];
        }
        j++;
    }
    KN_CHECK(j == cnt, KN_ERR_RUNTIME, "NonZero: found %lld non-zeros, output holds %lld", (long long)j,
             (long long)cnt);
    return NULL;
}

kn_status *kn_cpu_CenterCropPad(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    kn_tensor *y = out[0];
    int r = x->ndim;
    size_t es = kn_dtype_size(x->dtype);
    if (x->dtype == KN_STRING) return kn_err_dtype(node, x);
    memset(y->data, 0, kn_nbytes(y));
    int64_t xs[MAXR], ys[MAXR], box[MAXR], soff = 0, doff = 0;
    row_strides(r, x->dims, xs);
    row_strides(r, y->dims, ys);
    for (int k = 0; k < r; k++) {
        int64_t dx = x->dims[k], dy = y->dims[k];
        if (dy <= dx) {
            box[k] = dy;
            soff += ((dx - dy) / 2) * xs[k];
        } else {
            box[k] = dx;
            doff += ((dy - dx) / 2) * ys[k];
        }
        if (box[k] == 0) return NULL;
    }
    return kn_shapeops_strided_copy(ctx, x->dtype, (char *)y->data + doff * (int64_t)es,
                                    (const char *)x->data + soff * (int64_t)es, r, box, xs, ys);
}

/* ---------------- Unique ---------------- */

/* Items are the slices along axis (or single elements when flattening); they compare
 * lexicographically, element by element, in row-major order of the rest of the tensor. */
typedef struct uniq_view {
    const kn_tensor *x;
    int64_t n, outer, inner; /* item i, element (o, k) at (o * n + i) * inner + k */
} uniq_view;

static int elem_cmp(const kn_tensor *x, int64_t a, int64_t b) {
    switch (x->dtype) {
    case KN_STRING: {
        const char *sa = ((char *const *)x->data)[a], *sb = ((char *const *)x->data)[b];
        int c = strcmp(sa ? sa : "", sb ? sb : "");
        return (c > 0) - (c < 0);
    }
    case KN_U64: {
        uint64_t va = ((const uint64_t *)x->data)[a], vb = ((const uint64_t *)x->data)[b];
        return (va > vb) - (va < vb);
    }
    default:
        if (kn_dtype_is_float(x->dtype)) {
            double va = kn_get_f64(x, a), vb = kn_get_f64(x, b);
            return (va > vb) - (va < vb);
        }
        {
            int64_t va = kn_get_i64(x, a), vb = kn_get_i64(x, b);
            return (va > vb) - (va < vb);
        }
    }
}

static int item_cmp(const uniq_view *v, int64_t a, int64_t b) {
    for (int64_t o = 0; o < v->outer; o++)
        for (int64_t k = 0; k < v->inner; k++) {
            int c = elem_cmp(v->x, (o * v->n + a) * v->inner + k, (o * v->n + b) * v->inner + k);
            if (c) return c;
        }
    return 0;
}

static int item_qcmp(const void *pa, const void *pb, void *arg) {
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    int c = item_cmp(arg, a, b);
    if (c) return c;
    return (a > b) - (a < b); /* ties by position, so each group starts at its first occurrence */
}

/* order[]: items sorted; group_of[item]: index of its group in sorted order. Returns #groups. */
static kn_status *unique_groups(const kn_node *node, const kn_tensor *x, uniq_view *v, int64_t **order,
                                int64_t **group_of, int64_t *n_groups) {
    const kn_params_unique *up = KN_PARAMS(node, unique);
    v->x = x;
    if (up->has_axis) {
        int axis;
        KN_TRY(kn_norm_axis(up->axis, x->ndim, node, &axis));
        v->outer = 1;
        v->inner = 1;
        for (int k = 0; k < axis; k++) v->outer *= x->dims[k];
        for (int k = axis + 1; k < x->ndim; k++) v->inner *= x->dims[k];
        v->n = x->dims[axis];
    } else {
        v->outer = 1;
        v->inner = 1;
        v->n = kn_numel(x);
    }
    int64_t n = v->n;
    *order = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    *group_of = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (!*order || !*group_of) {
        free(*order);
        free(*group_of);
        return KN_OOM(n * 16);
    }
    for (int64_t i = 0; i < n; i++) (*order)[i] = i;
    qsort_r(*order, (size_t)n, sizeof(int64_t), item_qcmp, v);
    int64_t g = -1;
    for (int64_t i = 0; i < n; i++) {
        if (i == 0 || item_cmp(v, (*order)[i - 1], (*order)[i]) != 0) g++;
        (*group_of)[(*order)[i]] = g;
    }
    *n_groups = g + 1;
    return NULL;
}

kn_status *kn_shapeops_unique_count(const kn_node *node, const kn_tensor *x, int64_t *n_unique) {
    uniq_view v;
    int64_t *order, *group_of;
    KN_TRY(unique_groups(node, x, &v, &order, &group_of, n_unique));
    free(order);
    free(group_of);
    return NULL;
}

kn_status *kn_cpu_Unique(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                         kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    uniq_view v;
    int64_t *order, *group_of, ng;
    KN_TRY(unique_groups(node, x, &v, &order, &group_of, &ng));
    bool sorted = KN_PARAMS(node, unique)->sorted;
    /* first[g]: first occurrence of sorted group g; pos[g]: its place in the output */
    int64_t *first = malloc((size_t)(ng ? ng : 1) * sizeof(int64_t) * 3);
    if (!first) {
        free(order);
        free(group_of);
        return KN_OOM(ng * 24);
    }
    int64_t *pos = first + ng, *count = first + 2 * ng;
    for (int64_t g = 0; g < ng; g++) {
        first[g] = -1;
        count[g] = 0;
    }
    for (int64_t i = 0; i < v.n; i++) {
        int64_t g = group_of[i];
        if (first[g] < 0) first[g] = i;
        count[g]++;
    }
    for (int64_t g = 0; g < ng; g++) pos[g] = g;
    if (!sorted) {
        /* output order = order of first occurrence */
        int64_t k = 0;
        for (int64_t i = 0; i < v.n; i++) {
            int64_t g = group_of[i];
            if (first[g] == i) pos[g] = k++;
        }
    }
    kn_status *st = NULL;
    kn_tensor *y = out[0], *oi = n_out > 1 ? out[1] : NULL, *inv = n_out > 2 ? out[2] : NULL,
              *cnt = n_out > 3 ? out[3] : NULL;
    size_t es = kn_dtype_size(x->dtype);
    if (y && y->data) {
        for (int64_t g = 0; g < ng && !st; g++)
            for (int64_t o = 0; o < v.outer && !st; o++)
                st = kn_shapeops_copy_elems(x->dtype, (char *)y->data + ((o * ng + pos[g]) * v.inner) * (int64_t)es,
                                            (const char *)x->data + ((o * v.n + first[g]) * v.inner) * (int64_t)es,
                                            v.inner);
    }
    for (int64_t g = 0; g < ng; g++) {
        if (oi && oi->data) ((int64_t *)oi->data)[pos[g]] = first[g];
        if (cnt && cnt->data) ((int64_t *)cnt->data)[pos[g]] = count[g];
    }
    if (inv && inv->data)
        for (int64_t i = 0; i < v.n; i++) ((int64_t *)inv->data)[i] = pos[group_of[i]];
    free(first);
    free(order);
    free(group_of);
    return st;
}
