/* Sequence and optional ops. A sequence is a kn_tensor of kind SEQUENCE holding owned item
 * tensors; an empty optional is kind NONE; an optional with a value is the value itself. Their
 * sizes are known only at run time, so infer leaves outputs open and kernels allocate. */
#include "graph/ops.h"
#include <stdlib.h>
#include <string.h>

static kn_status *kn_open_outputs(kn_infer_ctx *c) {
    for (int i = 0; i < c->n_out; i++)
        if (c->out[i]) {
            c->out[i]->ndim = -1;
            c->out[i]->dtype = c->n_in && c->in[0] ? c->in[0]->dtype : KN_UNDEFINED;
        }
    return NULL;
}

static kn_status *kn_need_seq(const kn_node *n, const kn_tensor *t, int idx) {
    char buf[KN_DESC_LEN];
    KN_CHECK(t && t->kind == KN_KIND_SEQUENCE && t->data, KN_ERR_INVALID_ARGUMENT,
             "%s: input %d must be a sequence, got %s", n->op_type, idx, kn_tensor_desc(t, buf, sizeof buf));
    return NULL;
}

/* A position input (scalar int32/int64), wrapped into [0, limit]; allow_end admits == n. */
static kn_status *kn_seq_pos(const kn_node *n, const kn_tensor *p, int64_t len, bool allow_end, int64_t def,
                             int64_t *out) {
    if (!p) {
        *out = def;
        return NULL;
    }
    KN_CHECK(p->data && kn_numel(p) == 1, KN_ERR_INVALID_ARGUMENT, "%s: position must be a scalar", n->op_type);
    int64_t v = kn_get_i64(p, 0);
    int64_t w = v < 0 ? v + len : v;
    KN_CHECK(w >= 0 && (w < len || (allow_end && w == len)), KN_ERR_INVALID_ARGUMENT,
             "%s: position %lld out of range for a sequence of %lld", n->op_type, (long long)v, (long long)len);
    *out = w;
    return NULL;
}

static kn_status *kn_clone_into(kn_tensor *dst, const kn_tensor *src) {
    kn_tensor *c = NULL;
    KN_TRY(kn_tensor_clone(src, &c));
    *dst = *c;
    free(c);
    return NULL;
}

kn_status *kn_infer_SequenceEmpty(kn_infer_ctx *c) { return kn_open_outputs(c); }
kn_status *kn_cpu_SequenceEmpty(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    return kn_seq_init(out[0], (kn_dtype)KN_PARAMS(node, seq_empty)->dtype);
}

kn_status *kn_infer_SequenceConstruct(kn_infer_ctx *c) { return kn_open_outputs(c); }
kn_status *kn_cpu_SequenceConstruct(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                    kn_tensor *const *out, int n_out) {
    KN_CHECK(n_in >= 1 && in[0], KN_ERR_INVALID_ARGUMENT, "SequenceConstruct needs at least one tensor");
    KN_TRY(kn_seq_init(out[0], in[0]->dtype));
    for (int i = 0; i < n_in; i++) {
        KN_CHECK(in[i] && in[i]->dtype == in[0]->dtype && in[i]->kind == KN_KIND_TENSOR, KN_ERR_INVALID_ARGUMENT,
                 "SequenceConstruct: input %d is not a tensor of %s", i, kn_dtype_name(in[0]->dtype));
        kn_tensor *c = NULL;
        KN_TRY(kn_tensor_clone(in[i], &c));
        kn_status *st = kn_seq_insert(out[0], i, c);
        if (st) {
            kn_tensor_free(c);
            return st;
        }
    }
    return NULL;
}

kn_status *kn_infer_SequenceInsert(kn_infer_ctx *c) { return kn_open_outputs(c); }
kn_status *kn_cpu_SequenceInsert(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                 kn_tensor *const *out, int n_out) {
    KN_TRY(kn_need_seq(node, in[0], 0));
    KN_CHECK(n_in >= 2 && in[1] && in[1]->kind == KN_KIND_TENSOR, KN_ERR_INVALID_ARGUMENT,
             "SequenceInsert: input 1 must be a tensor");
    const kn_seq *q = in[0]->data;
    KN_CHECK(q->n == 0 || in[1]->dtype == in[0]->dtype, KN_ERR_INVALID_ARGUMENT,
             "SequenceInsert: %s into a sequence of %s", kn_dtype_name(in[1]->dtype), kn_dtype_name(in[0]->dtype));
    int64_t pos;
    KN_TRY(kn_seq_pos(node, n_in > 2 ? in[2] : NULL, q->n, true, q->n, &pos));
    KN_TRY(kn_clone_into(out[0], in[0]));
    out[0]->dtype = in[1]->dtype;
    kn_tensor *c = NULL;
    KN_TRY(kn_tensor_clone(in[1], &c));
    kn_status *st = kn_seq_insert(out[0], pos, c);
    if (st) kn_tensor_free(c);
    return st;
}

kn_status *kn_infer_SequenceAt(kn_infer_ctx *c) { return kn_open_outputs(c); }
kn_status *kn_cpu_SequenceAt(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                             kn_tensor *const *out, int n_out) {
    KN_TRY(kn_need_seq(node, in[0], 0));
    const kn_seq *q = in[0]->data;
    int64_t pos;
    KN_CHECK(n_in > 1 && in[1], KN_ERR_INVALID_ARGUMENT, "SequenceAt: position is required");
    KN_TRY(kn_seq_pos(node, in[1], q->n, false, 0, &pos));
    return kn_clone_into(out[0], q->items[pos]);
}

kn_status *kn_infer_SequenceErase(kn_infer_ctx *c) { return kn_open_outputs(c); }
kn_status *kn_cpu_SequenceErase(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                kn_tensor *const *out, int n_out) {
    KN_TRY(kn_need_seq(node, in[0], 0));
    const kn_seq *q = in[0]->data;
    KN_CHECK(q->n > 0, KN_ERR_INVALID_ARGUMENT, "SequenceErase on an empty sequence");
    int64_t pos;
    KN_TRY(kn_seq_pos(node, n_in > 1 ? in[1] : NULL, q->n, false, q->n - 1, &pos));
    KN_TRY(kn_clone_into(out[0], in[0]));
    kn_seq *o = out[0]->data;
    kn_tensor_free(o->items[pos]);
    memmove(o->items + pos, o->items + pos + 1, sizeof(kn_tensor *) * (size_t)(o->n - pos - 1));
    o->n--;
    return NULL;
}

kn_status *kn_infer_SequenceLength(kn_infer_ctx *c) {
    c->out[0]->dtype = KN_I64;
    c->out[0]->ndim = 0;
    return NULL;
}
kn_status *kn_cpu_SequenceLength(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                 kn_tensor *const *out, int n_out) {
    KN_TRY(kn_need_seq(node, in[0], 0));
    *(int64_t *)out[0]->data = ((const kn_seq *)in[0]->data)->n;
    return NULL;
}

/* Copy `src` (a tensor) into dst's block at element offset along axis; both dense. */
static void kn_copy_block(kn_tensor *dst, const kn_tensor *src, int axis, int64_t at, bool strings) {
    size_t es = kn_dtype_size(src->dtype);
    int64_t outer = 1, inner_src = 1, inner_dst = 1;
    for (int d = 0; d < axis; d++) outer *= dst->dims[d];
    for (int d = axis; d < src->ndim; d++) inner_src *= src->dims[d];
    for (int d = axis; d < dst->ndim; d++) inner_dst *= dst->dims[d];
    int64_t step = inner_src / (src->ndim > axis && src->dims[axis] ? src->dims[axis] : 1);
    for (int64_t o = 0; o < outer; o++) {
        char *to = (char *)dst->data + (o * inner_dst + at * step) * es;
        const char *from = (const char *)src->data + o * inner_src * es;
        if (strings)
            for (int64_t k = 0; k < inner_src; k++)
                ((char **)to)[k] = strdup(((char *const *)from)[k] ? ((char *const *)from)[k] : "");
        else memcpy(to, from, (size_t)inner_src * es);
    }
}

kn_status *kn_infer_ConcatFromSequence(kn_infer_ctx *c) { return kn_open_outputs(c); }
kn_status *kn_cpu_ConcatFromSequence(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                     kn_tensor *const *out, int n_out) {
    KN_TRY(kn_need_seq(node, in[0], 0));
    const kn_seq *q = in[0]->data;
    KN_CHECK(q->n > 0, KN_ERR_INVALID_ARGUMENT, "ConcatFromSequence on an empty sequence");
    bool new_axis = KN_PARAMS(node, seq_axis)->new_axis;
    const kn_tensor *t0 = q->items[0];
    int rank = t0->ndim + (new_axis ? 1 : 0);
    KN_CHECK(rank <= KN_MAX_DIMS, KN_ERR_UNSUPPORTED, "ConcatFromSequence: rank %d too large", rank);
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, seq_axis)->axis, rank, node, &axis));
    kn_tensor *o = out[0];
    memset(o, 0, sizeof *o);
    o->dtype = t0->dtype;
    o->ndim = rank;
    for (int d = 0, s = 0; d < rank; d++) o->dims[d] = (new_axis && d == axis) ? 1 : t0->dims[s++];
    o->dims[axis] = 0;
    for (int64_t i = 0; i < q->n; i++) {
        const kn_tensor *t = q->items[i];
        KN_CHECK(t->ndim == t0->ndim && t->dtype == t0->dtype, KN_ERR_INVALID_ARGUMENT,
                 "ConcatFromSequence: items differ in rank or dtype");
        for (int d = 0; d < t0->ndim; d++)
            KN_CHECK(new_axis ? t->dims[d] == t0->dims[d] : (d == axis || t->dims[d] == t0->dims[d]),
                     KN_ERR_INVALID_ARGUMENT,
                     "ConcatFromSequence: item %lld differs in shape off the concatenation axis", (long long)i);
        o->dims[axis] += new_axis ? 1 : t->dims[axis];
    }
    KN_TRY(kn_tensor_alloc_data(o));
    int64_t at = 0;
    for (int64_t i = 0; i < q->n; i++) {
        kn_tensor view = *q->items[i];
        if (new_axis) {
            /* an item is a slab of size 1 along the new axis */
            for (int d = view.ndim; d > axis; d--) view.dims[d] = view.dims[d - 1];
            view.dims[axis] = 1;
            view.ndim++;
        }
        kn_copy_block(o, &view, axis, at, o->dtype == KN_STRING);
        at += view.dims[axis];
    }
    return NULL;
}

kn_status *kn_infer_SplitToSequence(kn_infer_ctx *c) { return kn_open_outputs(c); }
kn_status *kn_cpu_SplitToSequence(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                  kn_tensor *const *out, int n_out) {
    const kn_tensor *x = in[0];
    KN_CHECK(x && x->kind == KN_KIND_TENSOR && x->ndim >= 1, KN_ERR_INVALID_ARGUMENT,
             "SplitToSequence needs a tensor of rank >= 1");
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(node, seq_axis)->axis, x->ndim, node, &axis));
    int64_t len = x->dims[axis], n_parts, *sizes = NULL;
    bool keepdims = KN_PARAMS(node, seq_axis)->keepdims;
    const kn_tensor *sp = n_in > 1 ? in[1] : NULL;
    if (!sp) {
        n_parts = len;
        sizes = malloc(sizeof(int64_t) * (size_t)(len ? len : 1));
        if (!sizes) return KN_OOM(0);
        for (int64_t i = 0; i < len; i++) sizes[i] = 1;
    } else if (sp->ndim == 0) {
        int64_t chunk = kn_get_i64(sp, 0);
        KN_CHECK(chunk > 0, KN_ERR_INVALID_ARGUMENT, "SplitToSequence: split %lld must be positive", (long long)chunk);
        n_parts = (len + chunk - 1) / chunk;
        sizes = malloc(sizeof(int64_t) * (size_t)(n_parts ? n_parts : 1));
        if (!sizes) return KN_OOM(0);
        for (int64_t i = 0; i < n_parts; i++) sizes[i] = i == n_parts - 1 ? len - chunk * i : chunk;
        keepdims = true;
    } else {
        KN_TRY(kn_tensor_to_i64(sp, &sizes, &n_parts));
        int64_t sum = 0;
        for (int64_t i = 0; i < n_parts; i++) {
            if (sizes[i] < 0) {
                free(sizes);
                return kn_error(KN_ERR_INVALID_ARGUMENT, "SplitToSequence: negative split");
            }
            sum += sizes[i];
        }
        if (sum != len) {
            free(sizes);
            return kn_error(KN_ERR_INVALID_ARGUMENT, "SplitToSequence: splits sum to %lld, axis has %lld",
                            (long long)sum, (long long)len);
        }
        keepdims = true;
    }
    kn_status *st = kn_seq_init(out[0], x->dtype);
    size_t es = kn_dtype_size(x->dtype);
    int64_t outer = 1, inner = 1, start = 0;
    for (int d = 0; d < axis; d++) outer *= x->dims[d];
    for (int d = axis + 1; d < x->ndim; d++) inner *= x->dims[d];
    for (int64_t p = 0; !st && p < n_parts; p++) {
        kn_tensor *part = NULL;
        int64_t dims[KN_MAX_DIMS];
        int r = 0;
        for (int d = 0; d < x->ndim; d++) {
            if (d == axis && !keepdims) continue;
            dims[r++] = d == axis ? sizes[p] : x->dims[d];
        }
        st = kn_tensor_new(x->dtype, r, dims, &part);
        if (st) break;
        for (int64_t o = 0; o < outer; o++) {
            const char *from = (const char *)x->data + ((o * len + start) * inner) * es;
            char *to = (char *)part->data + (o * sizes[p] * inner) * es;
            if (x->dtype == KN_STRING)
                for (int64_t k = 0; k < sizes[p] * inner; k++)
                    ((char **)to)[k] = strdup(((char *const *)from)[k] ? ((char *const *)from)[k] : "");
            else memcpy(to, from, (size_t)(sizes[p] * inner) * es);
        }
        start += sizes[p];
        st = kn_seq_insert(out[0], p, part);
        if (st) kn_tensor_free(part);
    }
    free(sizes);
    return st;
}

kn_status *kn_infer_SequenceMap(kn_infer_ctx *c) {
    KN_CHECK(KN_PARAMS(c->node, subgraph)->body, KN_ERR_INVALID_MODEL, "SequenceMap: body graph attribute is required");
    return kn_open_outputs(c);
}
kn_status *kn_cpu_SequenceMap(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                              kn_tensor *const *out, int n_out) {
    const kn_graph *body = KN_PARAMS(node, subgraph)->body;
    int n_exp = node->n_inputs - node->n_implicit;
    KN_TRY(kn_need_seq(node, in[0], 0));
    KN_CHECK(body->n_inputs == n_exp && body->n_outputs == n_out, KN_ERR_INVALID_MODEL,
             "SequenceMap: body has %d inputs / %d outputs for %d inputs / %d outputs", body->n_inputs, body->n_outputs,
             n_exp, n_out);
    int64_t len = ((const kn_seq *)in[0]->data)->n;
    for (int i = 1; i < n_exp; i++)
        if (in[i] && in[i]->kind == KN_KIND_SEQUENCE)
            KN_CHECK(((const kn_seq *)in[i]->data)->n == len, KN_ERR_INVALID_ARGUMENT,
                     "SequenceMap: sequence inputs differ in length");
    kn_status *st = NULL;
    for (int k = 0; k < n_out && !st; k++) {
        const kn_value *bv = &body->values[body->outputs[k]];
        st = kn_seq_init(out[k], bv->type.dtype ? bv->type.dtype : KN_F32);
    }
    const kn_tensor **bin = calloc((size_t)n_exp + 1, sizeof(kn_tensor *));
    kn_tensor *res = calloc((size_t)n_out + 1, sizeof(kn_tensor));
    if (!st && (!bin || !res)) st = KN_OOM(0);
    for (int64_t i = 0; !st && i < len; i++) {
        for (int j = 0; j < n_exp; j++)
            bin[j] = in[j] && in[j]->kind == KN_KIND_SEQUENCE ? ((const kn_seq *)in[j]->data)->items[i] : in[j];
        st = kn_exec_subgraph(ctx, body, bin, n_exp, res);
        for (int k = 0; !st && k < n_out; k++) {
            kn_tensor *item = malloc(sizeof *item);
            if (!item) {
                st = KN_OOM(0);
                break;
            }
            *item = res[k];
            memset(&res[k], 0, sizeof res[k]);
            out[k]->dtype = item->dtype;
            st = kn_seq_insert(out[k], i, item);
            if (st) kn_tensor_free(item);
        }
        for (int k = 0; k < n_out; k++) kn_tensor_release(&res[k]);
    }
    free(bin);
    free(res);
    return st;
}

kn_status *kn_infer_Optional(kn_infer_ctx *c) { return kn_open_outputs(c); }
kn_status *kn_cpu_Optional(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                           kn_tensor *const *out, int n_out) {
    if (n_in > 0 && in[0]) return kn_clone_into(out[0], in[0]);
    int elem = KN_PARAMS(node, optional)->elem_type;
    memset(out[0], 0, sizeof *out[0]);
    out[0]->kind = KN_KIND_NONE;
    out[0]->dtype = elem > 0 ? (kn_dtype)elem : KN_UNDEFINED;
    return NULL;
}

kn_status *kn_infer_OptionalHasElement(kn_infer_ctx *c) {
    c->out[0]->dtype = KN_BOOL;
    c->out[0]->ndim = 0;
    return NULL;
}
kn_status *kn_cpu_OptionalHasElement(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                     kn_tensor *const *out, int n_out) {
    *(uint8_t *)out[0]->data = n_in > 0 && in[0] && in[0]->kind != KN_KIND_NONE;
    return NULL;
}

kn_status *kn_infer_OptionalGetElement(kn_infer_ctx *c) { return kn_open_outputs(c); }
kn_status *kn_cpu_OptionalGetElement(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                     kn_tensor *const *out, int n_out) {
    KN_CHECK(n_in > 0 && in[0] && in[0]->kind != KN_KIND_NONE, KN_ERR_INVALID_ARGUMENT,
             "OptionalGetElement: the optional is empty");
    return kn_clone_into(out[0], in[0]);
}
