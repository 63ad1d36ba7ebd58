/* Shape and type inference for the data-movement and shape ops (Reshape, Slice, Gather, Resize,
 * ...). These run at plan time on shape subgraphs too, so every function works from whatever
 * is known: values when in[i]->data is set, -1 dims otherwise. A few parameter helpers
 * (kn_shapeops_*) are shared with the CPU kernels so both sides agree on clamping rules. */
#include "graph/ops.h"
#include "graph/op_helpers.h"
#include "runtime/core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>


#define MAXR KN_MAX_DIMS

/* Every output shape passes here, so absurd element counts (overflowing int64 included) are
 * refused before anything is allocated. */
static kn_status *set_out(kn_infer_ctx *c, int i, kn_dtype dt, int ndim, const int64_t *dims) {
    if (i >= c->n_out || !c->out[i]) return NULL;
    KN_CHECK(ndim <= MAXR, KN_ERR_UNSUPPORTED, "%s: output rank %d exceeds %d", c->node->op_type, ndim, MAXR);
    int64_t total = 1;
    for (int k = 0; k < ndim; k++) {
        if (dims[k] < 0) continue;
        KN_CHECK(dims[k] == 0 || total <= KN_MAX_NUMEL / dims[k], KN_ERR_INVALID_ARGUMENT,
                 "%s: output %d would have more than %lld elements", c->node->op_type, i, (long long)KN_MAX_NUMEL);
        total = dims[k] == 0 ? total : total * dims[k];
    }
    c->out[i]->dtype = dt;
    c->out[i]->ndim = ndim;
    for (int k = 0; k < ndim; k++) c->out[i]->dims[k] = dims[k];
    return NULL;
}

static void set_unknown(kn_infer_ctx *c, int i, kn_dtype dt) {
    if (i >= c->n_out || !c->out[i]) return;
    c->out[i]->dtype = dt;
    c->out[i]->ndim = -1;
}

static const kn_tensor *opt_in(kn_infer_ctx *c, int i) { return i < c->n_in ? c->in[i] : NULL; }

static bool has_value(const kn_tensor *t) { return t && t->data && t->ndim >= 0 && kn_numel(t) >= 0; }

static const char *op_name(const kn_node *n) { return n && n->op_type ? n->op_type : "?"; }

static kn_status *need_input(kn_infer_ctx *c, int i) {
    if (i >= c->n_in || !c->in[i])
        return kn_error(KN_ERR_INVALID_MODEL, "%s: missing required input %d", op_name(c->node), i);
    return NULL;
}

static kn_status *need_rank(kn_infer_ctx *c, const kn_tensor *t, int min, int max) {
    char b[KN_DESC_LEN];
    if (t->ndim >= 0 && (t->ndim < min || t->ndim > max))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input %s must have rank in [%d, %d]", op_name(c->node),
                        kn_tensor_desc(t, b, sizeof b), min, max);
    return NULL;
}

kn_status *kn_shapeops_read_ints(const kn_tensor *t, int64_t *vals, int64_t max, int64_t *n, const char *op) {
    char b[KN_DESC_LEN];
    int64_t cnt = kn_numel(t);
    if (!t->data || cnt < 0)
        return kn_error(KN_ERR_RUNTIME, "%s: integer input %s has no value", op, kn_tensor_desc(t, b, sizeof b));
    if (!kn_dtype_is_int(t->dtype))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: expected an integer tensor, got %s", op,
                        kn_tensor_desc(t, b, sizeof b));
    if (cnt > max)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: integer input %s has more than %lld values", op,
                        kn_tensor_desc(t, b, sizeof b), (long long)max);
    for (int64_t i = 0; i < cnt; i++) vals[i] = kn_get_i64(t, i);
    *n = cnt;
    return NULL;
}

/* Axes list from an attribute (old opsets) or input `idx` (new ones). *known false when the
 * input exists but its value is not known yet; *n = -1 when no axes were given at all. */
static kn_status *axes_from(kn_infer_ctx *c, int from_input, int idx, int64_t *axes, int64_t *n, bool *known) {
    *known = true;
    *n = -1;
    if (!from_input) {
        const kn_params_axes *p = KN_PARAMS(c->node, axes);
        int k = p->n_axes;
        if (k < 0) return NULL;
        if (k > 2 * MAXR) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: too many axes (%d)", op_name(c->node), k);
        memcpy(axes, p->axes, (size_t)k * sizeof *axes);
        *n = k;
        return NULL;
    }
    const kn_tensor *t = opt_in(c, idx);
    if (!t) return NULL;
    if (!has_value(t)) {
        *known = false;
        return NULL;
    }
    return kn_shapeops_read_ints(t, axes, 2 * MAXR, n, op_name(c->node));
}

static int64_t mul_dims(const int64_t *d, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) {
        if (d[i] < 0) return -1;
        p *= d[i];
    }
    return p;
}

/* ---- params decoders (graph/params.h), run once per node at load ---- */

/* An ints attribute: its length (-1 when absent) and at most cap of its values. */
static int dec_ints(const kn_node *n, const char *name, int64_t *vals, int cap) {
    const int64_t *v;
    int k = kn_attr_ints(n, name, &v);
    for (int i = 0; i < k && i < cap; i++) vals[i] = v[i];
    return k;
}

kn_status *kn_params_decode_axis(const kn_node *n, void *out) {
    kn_params_axis *p = out;
    int64_t def = 0;
    switch (n->op) {
    case KN_OP_Flatten: def = 1; break;
    case KN_OP_Concat: def = n->opset < 4 ? 1 : 0; break;
    case KN_OP_OneHot: def = -1; break;
    default: break;
    }
    p->has_axis = kn_node_attr(n, "axis") != NULL;
    p->axis = kn_attr_int(n, "axis", def);
    if (n->op == KN_OP_Compress && p->has_axis) p->axis = kn_node_attr(n, "axis")->i;
    return NULL;
}

kn_status *kn_params_decode_axes(const kn_node *n, void *out) {
    kn_params_axes *p = out;
    /* Squeeze and Unsqueeze take axes as an input from opset 13 */
    if ((n->op == KN_OP_Squeeze || n->op == KN_OP_Unsqueeze) && n->opset >= 13) {
        p->n_axes = -1;
        return NULL;
    }
    p->n_axes = dec_ints(n, "axes", p->axes, KN_PARAMS_MAX_LIST);
    return NULL;
}

kn_status *kn_params_decode_reshape(const kn_node *n, void *out) {
    kn_params_reshape *p = out;
    p->n_shape = -1;
    if (n->opset < 5) {
        int k = dec_ints(n, "shape", p->shape, MAXR);
        p->n_shape = k <= MAXR ? k : -1;
    }
    p->allowzero = kn_attr_int(n, "allowzero", 0) != 0;
    return NULL;
}

kn_status *kn_params_decode_dropout(const kn_node *n, void *out) {
    kn_params_dropout *p = out;
    p->ratio = kn_attr_float(n, "ratio", 0.5f);
    /* before opset 7, is_test=0 meant training */
    p->training_attr = n->opset < 7 && kn_attr_int(n, "is_test", 0) == 0;
    const kn_attr *sa = kn_node_attr(n, "seed");
    p->has_seed = sa != NULL;
    p->seed = sa ? sa->i : 0;
    const kn_attr *ss = kn_node_attr(n, "kiln_step_seed");
    p->has_step_seed = ss != NULL;
    p->step_seed = ss ? (uint64_t)ss->i : 0;
    return NULL;
}

kn_status *kn_params_decode_shape(const kn_node *n, void *out) {
    kn_params_shape *p = out;
    p->start = kn_attr_int(n, "start", 0);
    p->has_end = kn_node_attr(n, "end") != NULL;
    p->end = kn_attr_int(n, "end", 0);
    return NULL;
}

kn_status *kn_params_decode_constant(const kn_node *n, void *out) {
    kn_params_constant *p = out;
    const kn_attr *a;
    if ((a = kn_node_attr(n, "value"))) p->value = a->t;
    if ((a = kn_node_attr(n, "sparse_value"))) p->sparse_value = a->t;
    if ((a = kn_node_attr(n, "value_float"))) {
        p->has_float = true;
        p->value_float = a->f;
    }
    if ((a = kn_node_attr(n, "value_int"))) {
        p->has_int = true;
        p->value_int = a->i;
    }
    if ((a = kn_node_attr(n, "value_string"))) {
        p->has_string = true;
        p->value_string = a->s;
    }
    if ((a = kn_node_attr(n, "value_floats"))) {
        p->has_floats = true;
        p->n_floats = a->n_floats;
        p->value_floats = a->floats;
    }
    if ((a = kn_node_attr(n, "value_ints"))) {
        p->has_ints = true;
        p->n_ints = a->n_ints;
        p->value_ints = a->ints;
    }
    if ((a = kn_node_attr(n, "value_strings"))) {
        p->has_strings = true;
        p->n_strings = a->n_strings;
        p->value_strings = a->strings;
    }
    return NULL;
}

kn_status *kn_params_decode_const_shape(const kn_node *n, void *out) {
    const kn_attr *a = kn_node_attr(n, "value");
    ((kn_params_const_shape *)out)->value = a ? a->t : NULL;
    return NULL;
}

kn_status *kn_params_decode_eyelike(const kn_node *n, void *out) {
    kn_params_eyelike *p = out;
    p->dtype = kn_attr_int(n, "dtype", 0);
    p->k = kn_attr_int(n, "k", 0);
    return NULL;
}

kn_status *kn_params_decode_transpose(const kn_node *n, void *out) {
    kn_params_transpose *p = out;
    p->n_perm = dec_ints(n, "perm", p->perm, MAXR);
    return NULL;
}

kn_status *kn_params_decode_split(const kn_node *n, void *out) {
    kn_params_split *p = out;
    p->axis = kn_attr_int(n, "axis", 0);
    p->n_split = n->opset < 13 ? dec_ints(n, "split", p->split, KN_PARAMS_MAX_SPLIT) : -1;
    p->has_num_outputs = kn_node_attr(n, "num_outputs") != NULL;
    p->num_outputs = kn_attr_int(n, "num_outputs", 0);
    return NULL;
}

kn_status *kn_params_decode_slice(const kn_node *n, void *out) {
    kn_params_slice *p = out;
    p->n_starts = p->n_ends = p->n_axes = -1;
    if (n->opset < 10) {
        p->n_starts = dec_ints(n, "starts", p->starts, KN_PARAMS_MAX_LIST);
        p->n_ends = dec_ints(n, "ends", p->ends, KN_PARAMS_MAX_LIST);
        p->n_axes = dec_ints(n, "axes", p->axes, KN_PARAMS_MAX_LIST);
    }
    return NULL;
}

static const char *const pad_mode_names[] = {"constant", "reflect", "edge", "wrap"};

kn_status *kn_params_decode_pad(const kn_node *n, void *out) {
    kn_params_pad *p = out;
    const char *ms = kn_attr_str(n, "mode", "constant");
    int mode = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(ms, pad_mode_names[i])) mode = i;
    KN_CHECK(mode >= 0, KN_ERR_INVALID_MODEL, "Pad: unknown mode '%s'", ms);
    p->mode = (kn_pad_mode)mode;
    p->n_pads = -1;
    if (n->opset < 11) {
        p->n_pads = dec_ints(n, "pads", p->pads, 4 * MAXR);
        if (p->n_pads < 0) p->n_pads = dec_ints(n, "paddings", p->pads, 4 * MAXR);
        p->value = kn_attr_float(n, "value", 0.0f);
    }
    return NULL;
}

kn_status *kn_params_decode_gathernd(const kn_node *n, void *out) {
    ((kn_params_gathernd *)out)->batch_dims = kn_attr_int(n, "batch_dims", 0);
    return NULL;
}

kn_status *kn_params_decode_scatter(const kn_node *n, void *out) {
    kn_params_scatter *p = out;
    p->axis = kn_attr_int(n, "axis", 0);
    p->reduction = KN_SCATTER_NONE;
    if (n->op == KN_OP_Scatter) return NULL; /* no reduction */
    const char *s = kn_attr_str(n, "reduction", "none");
    if (!strcmp(s, "none")) p->reduction = KN_SCATTER_NONE;
    else if (!strcmp(s, "add")) p->reduction = KN_SCATTER_ADD;
    else if (!strcmp(s, "mul")) p->reduction = KN_SCATTER_MUL;
    else if (!strcmp(s, "max")) p->reduction = KN_SCATTER_MAX;
    else if (!strcmp(s, "min")) p->reduction = KN_SCATTER_MIN;
    else return kn_error(KN_ERR_INVALID_MODEL, "%s: unknown reduction '%s'", n->op_type, s);
    return NULL;
}

kn_status *kn_params_decode_tensor_scatter(const kn_node *n, void *out) {
    kn_params_tensor_scatter *p = out;
    p->axis = kn_attr_int(n, "axis", -2);
    const char *mode = kn_attr_str(n, "mode", "linear");
    p->circular = !strcmp(mode, "circular");
    KN_CHECK(p->circular || !strcmp(mode, "linear"), KN_ERR_INVALID_MODEL, "TensorScatter: unknown mode '%s'", mode);
    return NULL;
}

kn_status *kn_params_decode_trilu(const kn_node *n, void *out) {
    ((kn_params_trilu *)out)->upper = kn_attr_int(n, "upper", 1) != 0;
    return NULL;
}

kn_status *kn_params_decode_space_depth(const kn_node *n, void *out) {
    kn_params_space_depth *p = out;
    p->has_blocksize = kn_node_attr(n, "blocksize") != NULL;
    p->blocksize = kn_attr_int(n, "blocksize", 0);
    const char *mode = kn_attr_str(n, "mode", "DCR");
    p->crd = !strcmp(mode, "CRD");
    KN_CHECK(p->crd || !strcmp(mode, "DCR"), KN_ERR_INVALID_MODEL, "%s: unknown mode '%s'", op_name(n), mode);
    return NULL;
}

kn_status *kn_params_decode_reverse_seq(const kn_node *n, void *out) {
    kn_params_reverse_seq *p = out;
    p->batch_axis = kn_attr_int(n, "batch_axis", 1);
    p->time_axis = kn_attr_int(n, "time_axis", 0);
    return NULL;
}

kn_status *kn_params_decode_unique(const kn_node *n, void *out) {
    kn_params_unique *p = out;
    const kn_attr *aa = kn_node_attr(n, "axis");
    p->has_axis = aa != NULL;
    p->axis = aa ? aa->i : 0;
    p->sorted = kn_attr_int(n, "sorted", 1) != 0;
    return NULL;
}

kn_status *kn_params_decode_resize(const kn_node *n, void *out) {
    kn_params_resize *p = out;
    bool up = n->op == KN_OP_Upsample;
    const char *m = kn_attr_str(n, "mode", "nearest");
    if (!strcmp(m, "nearest")) p->mode = KN_RESIZE_NEAREST;
    else if (!strcmp(m, "linear") || !strcmp(m, "bilinear") || !strcmp(m, "trilinear")) p->mode = KN_RESIZE_LINEAR;
    else if (!strcmp(m, "cubic")) p->mode = KN_RESIZE_CUBIC;
    else return kn_error(KN_ERR_INVALID_MODEL, "%s: unknown mode '%s'", n->op_type, m);
    p->cubic_coeff_a = kn_attr_float(n, "cubic_coeff_a", -0.75f);
    p->exclude_outside = kn_attr_int(n, "exclude_outside", 0) != 0;
    p->antialias = kn_attr_int(n, "antialias", 0) != 0 && p->mode != KN_RESIZE_NEAREST;
    p->extrapolation_value = kn_attr_float(n, "extrapolation_value", 0.0f);
    p->n_axes = n->opset >= 18 ? dec_ints(n, "axes", p->axes, MAXR) : -1;
    p->n_scales = -1;
    if (up && n->opset < 9) {
        const kn_attr *a = kn_node_attr(n, "scales");
        if (a) {
            p->n_scales = a->n_floats;
            for (int i = 0; i < a->n_floats && i < MAXR; i++) p->scales[i] = a->floats[i];
        }
    }
    const char *pol = kn_attr_str(n, "keep_aspect_ratio_policy", "stretch");
    if (!strcmp(pol, "stretch")) p->keep_aspect = KN_KEEP_STRETCH;
    else if (!strcmp(pol, "not_smaller")) p->keep_aspect = KN_KEEP_NOT_SMALLER;
    else if (!strcmp(pol, "not_larger")) p->keep_aspect = KN_KEEP_NOT_LARGER;
    else return kn_error(KN_ERR_INVALID_MODEL, "%s: unknown keep_aspect_ratio_policy '%s'", n->op_type, pol);
    if (up || n->opset < 11) {
        /* Upsample and Resize-10: asymmetric coordinates; nearest picks floor when enlarging */
        p->coord = KN_COORD_ASYMMETRIC;
        p->nearest = up ? KN_NEAREST_FLOOR : KN_NEAREST_SIMPLE;
        return NULL;
    }
    const char *c = kn_attr_str(n, "coordinate_transformation_mode", "half_pixel");
    if (!strcmp(c, "half_pixel")) p->coord = KN_COORD_HALF_PIXEL;
    else if (!strcmp(c, "half_pixel_symmetric")) p->coord = KN_COORD_HALF_PIXEL_SYM;
    else if (!strcmp(c, "pytorch_half_pixel")) p->coord = KN_COORD_PYTORCH_HALF_PIXEL;
    else if (!strcmp(c, "align_corners")) p->coord = KN_COORD_ALIGN_CORNERS;
    else if (!strcmp(c, "asymmetric")) p->coord = KN_COORD_ASYMMETRIC;
    else if (!strcmp(c, "tf_crop_and_resize")) p->coord = KN_COORD_TF_CROP;
    else return kn_error(KN_ERR_INVALID_MODEL, "Resize: unknown coordinate_transformation_mode '%s'", c);
    const char *nm = kn_attr_str(n, "nearest_mode", "round_prefer_floor");
    if (!strcmp(nm, "round_prefer_floor")) p->nearest = KN_NEAREST_ROUND_FLOOR;
    else if (!strcmp(nm, "round_prefer_ceil")) p->nearest = KN_NEAREST_ROUND_CEIL;
    else if (!strcmp(nm, "floor")) p->nearest = KN_NEAREST_FLOOR;
    else if (!strcmp(nm, "ceil")) p->nearest = KN_NEAREST_CEIL;
    else return kn_error(KN_ERR_INVALID_MODEL, "Resize: unknown nearest_mode '%s'", nm);
    return NULL;
}

kn_status *kn_params_decode_grid(const kn_node *n, void *out) {
    kn_params_grid *p = out;
    p->align_corners = kn_attr_int(n, "align_corners", 0) != 0;
    if (n->op != KN_OP_GridSample) return NULL;
    const char *ms = kn_attr_str(n, "mode", n->opset >= 20 ? "linear" : "bilinear");
    p->mode = !strcmp(ms, "nearest")                         ? 0
        : (!strcmp(ms, "linear") || !strcmp(ms, "bilinear")) ? 1
        : (!strcmp(ms, "cubic") || !strcmp(ms, "bicubic"))   ? 2
                                                             : -1;
    const char *ps = kn_attr_str(n, "padding_mode", "zeros");
    p->padding = !strcmp(ps, "zeros") ? 0 : !strcmp(ps, "border") ? 1 : !strcmp(ps, "reflection") ? 2 : -1;
    KN_CHECK(p->mode >= 0 && p->padding >= 0, KN_ERR_INVALID_MODEL,
             "GridSample: unknown mode '%s' or padding_mode '%s'", ms, ps);
    return NULL;
}

kn_status *kn_params_decode_roi_align(const kn_node *n, void *out) {
    kn_params_roi_align *p = out;
    const char *ms = kn_attr_str(n, "mode", "avg");
    p->avg = !strcmp(ms, "avg");
    KN_CHECK(p->avg || !strcmp(ms, "max"), KN_ERR_INVALID_MODEL, "RoiAlign: unknown mode '%s'", ms);
    const char *cts =
        kn_attr_str(n, "coordinate_transformation_mode", n->opset >= 16 ? "half_pixel" : "output_half_pixel");
    p->half_pixel = !strcmp(cts, "half_pixel");
    p->spatial_scale = kn_attr_float(n, "spatial_scale", 1.0f);
    p->sampling_ratio = kn_attr_int(n, "sampling_ratio", 0);
    p->output_height = kn_attr_int(n, "output_height", 1);
    p->output_width = kn_attr_int(n, "output_width", 1);
    return NULL;
}

kn_status *kn_params_decode_nms(const kn_node *n, void *out) {
    ((kn_params_nms *)out)->center_point_box = kn_attr_int(n, "center_point_box", 0) != 0;
    return NULL;
}

/* ---- decoders of the sequence, optional and control-flow ops, whose shape rules and kernels
 * are in kernels/cpu/sequence.c and kernels/cpu/control_flow.c ---- */

kn_status *kn_params_decode_seq_empty(const kn_node *n, void *out) {
    ((kn_params_seq_empty *)out)->dtype = kn_attr_int(n, "dtype", KN_F32);
    return NULL;
}

kn_status *kn_params_decode_seq_axis(const kn_node *n, void *out) {
    kn_params_seq_axis *p = out;
    p->axis = kn_attr_int(n, "axis", 0);
    p->new_axis = kn_attr_int(n, "new_axis", 0) != 0;
    p->keepdims = kn_attr_int(n, "keepdims", 1) != 0;
    return NULL;
}

kn_status *kn_params_decode_optional(const kn_node *n, void *out) {
    const kn_attr *a = kn_node_attr(n, "type");
    ((kn_params_optional *)out)->elem_type = a && a->tp_elem_type > 0 ? a->tp_elem_type : 0;
    return NULL;
}

static const kn_graph *kn_graph_attr(const kn_node *n, const char *name) {
    const kn_attr *a = kn_node_attr(n, name);
    return a && a->type == KN_ATTR_GRAPH ? a->g : NULL;
}

/* Scan's list attributes: the count (-1 when absent) and at most KN_PARAMS_MAX_SCAN values. */
static void kn_scan_list(const kn_node *n, const char *name, int *count, int64_t *vals) {
    const int64_t *v;
    int k = kn_attr_ints(n, name, &v);
    *count = k;
    for (int i = 0; i < k && i < KN_PARAMS_MAX_SCAN; i++) vals[i] = v[i];
}

/* If, Loop, Scan, and SequenceMap, whose body need not be typed GRAPH. */
kn_status *kn_params_decode_subgraph(const kn_node *n, void *out) {
    kn_params_subgraph *p = out;
    if (n->op == KN_OP_If) {
        p->then_branch = kn_graph_attr(n, "then_branch");
        p->else_branch = kn_graph_attr(n, "else_branch");
    } else if (n->op == KN_OP_SequenceMap) {
        const kn_attr *a = kn_node_attr(n, "body");
        p->body = a ? a->g : NULL;
    } else {
        p->body = kn_graph_attr(n, "body");
    }
    if (n->op == KN_OP_Scan) {
        p->num_scan_inputs = kn_attr_int(n, "num_scan_inputs", -1);
        kn_scan_list(n, "scan_input_axes", &p->n_in_axes, p->in_axes);
        kn_scan_list(n, "scan_input_directions", &p->n_in_dirs, p->in_dirs);
        kn_scan_list(n, "scan_output_axes", &p->n_out_axes, p->out_axes);
        kn_scan_list(n, "scan_output_directions", &p->n_out_dirs, p->out_dirs);
    }
    return NULL;
}


/* ---------------- simple aliases ---------------- */

kn_status *kn_infer_Identity(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    /* sequences and empty optionals pass through too: their size is known only when the kernel
     * clones them */
    if (x->kind != KN_KIND_TENSOR) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, x->dims));
    return NULL;
}

kn_status *kn_infer_Reshape(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    int64_t shape[MAXR], n = 0;
    char b1[KN_DESC_LEN];
    const kn_params_reshape *rp = KN_PARAMS(c->node, reshape);
    if (c->node->opset < 5) {
        int k = rp->n_shape; /* -1 when missing or oversized */
        KN_CHECK(k >= 0 && k <= MAXR, KN_ERR_INVALID_MODEL, "Reshape: missing or oversized shape attribute");
        memcpy(shape, rp->shape, (size_t)k * sizeof *shape);
        n = k;
    } else {
        KN_TRY(need_input(c, 1));
        if (!has_value(c->in[1])) {
            /* the rank is the length of the shape vector even when its values come at run time
             * (heads split by a shape built from Shape): later rules, and autograd's sweep of
             * which values are float, need a known rank */
            const kn_tensor *s = c->in[1];
            if (s->ndim == 1 && s->dims[0] >= 0 && s->dims[0] <= MAXR && c->n_out > 0 && c->out[0]) {
                int64_t d[MAXR];
                for (int i = 0; i < s->dims[0]; i++) d[i] = -1;
                c->out[0]->dtype = x->dtype;
                kn_tensor_set_shape(c->out[0], (int)s->dims[0], d);
            } else {
                set_unknown(c, 0, x->dtype);
            }
            return NULL;
        }
        KN_TRY(kn_shapeops_read_ints(c->in[1], shape, MAXR, &n, "Reshape"));
    }
    int allowzero = rp->allowzero;
    int64_t out[MAXR];
    int neg = -1;
    int64_t known_prod = 1;
    bool unknown = false;
    for (int i = 0; i < n; i++) {
        int64_t d = shape[i];
        if (d == 0 && !allowzero) {
            KN_CHECK(x->ndim < 0 || i < x->ndim, KN_ERR_INVALID_ARGUMENT,
                     "Reshape: shape[%d] = 0 copies a dimension the input %s lacks", i,
                     kn_tensor_desc(x, b1, sizeof b1));
            d = x->ndim < 0 ? -1 : x->dims[i];
            if (d < 0) unknown = true;
        } else if (d == -1) {
            KN_CHECK(neg < 0, KN_ERR_INVALID_ARGUMENT, "Reshape: more than one -1 in the target shape");
            neg = i;
        } else if (d < -1) {
            return kn_error(KN_ERR_INVALID_ARGUMENT, "Reshape: invalid target dimension %lld", (long long)d);
        }
        out[i] = d;
        if (i != neg && d > 0) {
            KN_CHECK(known_prod <= KN_MAX_NUMEL / d, KN_ERR_INVALID_ARGUMENT, "Reshape: target shape too large");
            known_prod *= d;
        } else if (i != neg && d == 0) known_prod = 0;
    }
    int64_t total = x->ndim < 0 ? -1 : kn_numel(x);
    if (neg >= 0) {
        if (total < 0 || unknown) out[neg] = -1;
        else {
            if (known_prod == 0) {
                KN_CHECK(total == 0, KN_ERR_INVALID_ARGUMENT,
                         "Reshape: cannot reshape %s to a shape with a zero dim and -1",
                         kn_tensor_desc(x, b1, sizeof b1));
                out[neg] = 0;
            } else {
                KN_CHECK(total % known_prod == 0, KN_ERR_INVALID_ARGUMENT,
                         "Reshape: cannot reshape %s (%lld elements) with -1 into a multiple of %lld",
                         kn_tensor_desc(x, b1, sizeof b1), (long long)total, (long long)known_prod);
                out[neg] = total / known_prod;
            }
        }
    } else if (total >= 0 && !unknown) {
        KN_CHECK(known_prod == total, KN_ERR_INVALID_ARGUMENT,
                 "Reshape: cannot reshape %s (%lld elements) to %lld elements", kn_tensor_desc(x, b1, sizeof b1),
                 (long long)total, (long long)known_prod);
    }
    KN_TRY(set_out(c, 0, x->dtype, (int)n, out));
    return NULL;
}

kn_status *kn_infer_Flatten(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    int64_t axis = KN_PARAMS(c->node, axis)->axis;
    if (x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    if (axis < 0) axis += x->ndim;
    KN_CHECK(axis >= 0 && axis <= x->ndim, KN_ERR_INVALID_ARGUMENT, "Flatten: axis %lld out of range for rank %d",
             (long long)KN_PARAMS(c->node, axis)->axis, x->ndim);
    int64_t d[2] = {mul_dims(x->dims, 0, (int)axis), mul_dims(x->dims, (int)axis, x->ndim)};
    KN_TRY(set_out(c, 0, x->dtype, 2, d));
    return NULL;
}

kn_status *kn_infer_Squeeze(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    int64_t axes[2 * MAXR], n;
    bool known;
    KN_TRY(axes_from(c, c->node->opset >= 13, 1, axes, &n, &known));
    if (!known || x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    bool drop[MAXR] = {false};
    char b[KN_DESC_LEN];
    if (n <= 0) { /* an empty axes list squeezes every 1, as onnxruntime does */
        for (int i = 0; i < x->ndim; i++) {
            if (x->dims[i] < 0) {
                set_unknown(c, 0, x->dtype);
                return NULL;
            }
            drop[i] = x->dims[i] == 1;
        }
    } else {
        for (int64_t k = 0; k < n; k++) {
            int a;
            KN_TRY(kn_norm_axis(axes[k], x->ndim, c->node, &a));
            KN_CHECK(x->dims[a] == 1 || x->dims[a] < 0, KN_ERR_INVALID_ARGUMENT, "Squeeze: axis %d of %s is not 1", a,
                     kn_tensor_desc(x, b, sizeof b));
            drop[a] = true;
        }
    }
    int64_t d[MAXR];
    int r = 0;
    for (int i = 0; i < x->ndim; i++)
        if (!drop[i]) d[r++] = x->dims[i];
    KN_TRY(set_out(c, 0, x->dtype, r, d));
    return NULL;
}

kn_status *kn_infer_Unsqueeze(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    int64_t axes[2 * MAXR], n;
    bool known;
    KN_TRY(axes_from(c, c->node->opset >= 13, 1, axes, &n, &known));
    if (!known || x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    KN_CHECK(n >= 0, KN_ERR_INVALID_MODEL, "Unsqueeze: axes are required");
    int r = x->ndim + (int)n;
    KN_CHECK(r <= MAXR, KN_ERR_UNSUPPORTED, "Unsqueeze: output rank %d exceeds %d", r, MAXR);
    bool ins[MAXR] = {false};
    for (int64_t k = 0; k < n; k++) {
        int a;
        KN_TRY(kn_norm_axis(axes[k], r, c->node, &a));
        KN_CHECK(!ins[a], KN_ERR_INVALID_ARGUMENT, "Unsqueeze: axis %d repeated", a);
        ins[a] = true;
    }
    int64_t d[MAXR];
    int j = 0;
    for (int i = 0; i < r; i++) d[i] = ins[i] ? 1 : x->dims[j++];
    KN_TRY(set_out(c, 0, x->dtype, r, d));
    return NULL;
}

kn_status *kn_infer_Dropout(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, x->dims));
    /* The mask was typed like the data before opset 10. */
    KN_TRY(set_out(c, 1, c->node->opset < 10 ? x->dtype : KN_BOOL, x->ndim, x->dims));
    return NULL;
}

/* ---------------- shape queries and constants ---------------- */

static void shape_range(const kn_node *n, int rank, int64_t *s, int64_t *e) {
    const kn_params_shape *p = KN_PARAMS(n, shape);
    int64_t start = p->start, end = p->has_end ? p->end : rank;
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = start < 0 ? 0 : start > rank ? rank : start;
    end = end < 0 ? 0 : end > rank ? rank : end;
    if (end < start) end = start;
    *s = start;
    *e = end;
}

kn_status *kn_infer_Shape(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    int64_t d[1] = {-1};
    if (x->ndim >= 0) {
        int64_t s, e;
        shape_range(c->node, x->ndim, &s, &e);
        d[0] = e - s;
    }
    KN_TRY(set_out(c, 0, KN_I64, 1, d));
    return NULL;
}

kn_status *kn_infer_Size(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(set_out(c, 0, KN_I64, 0, NULL));
    return NULL;
}

kn_status *kn_infer_Constant(kn_infer_ctx *c) {
    const kn_params_constant *p = KN_PARAMS(c->node, constant);
    const kn_tensor *t;
    if ((t = p->value)) {
        KN_TRY(set_out(c, 0, t->dtype, t->ndim, t->dims));
        return NULL;
    }
    int64_t d[1] = {0};
    if (p->has_float) {
        KN_TRY(set_out(c, 0, KN_F32, 0, d));
        return NULL;
    }
    if (p->has_int) {
        KN_TRY(set_out(c, 0, KN_I64, 0, d));
        return NULL;
    }
    if (p->has_string) {
        KN_TRY(set_out(c, 0, KN_STRING, 0, d));
        return NULL;
    }
    if (p->has_floats) {
        d[0] = p->n_floats;
        KN_TRY(set_out(c, 0, KN_F32, 1, d));
        return NULL;
    }
    if (p->has_ints) {
        d[0] = p->n_ints;
        KN_TRY(set_out(c, 0, KN_I64, 1, d));
        return NULL;
    }
    if (p->has_strings) {
        d[0] = p->n_strings;
        KN_TRY(set_out(c, 0, KN_STRING, 1, d));
        return NULL;
    }
    /* the loader densifies sparse_value into a tensor */
    if ((t = p->sparse_value)) {
        KN_TRY(set_out(c, 0, t->dtype, t->ndim, t->dims));
        return NULL;
    }
    return kn_error(KN_ERR_INVALID_MODEL, "Constant: no value attribute");
}

kn_status *kn_infer_ConstantOfShape(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *v = KN_PARAMS(c->node, const_shape)->value;
    kn_dtype dt = v ? v->dtype : KN_F32;
    if (v) KN_CHECK(kn_numel(v) == 1, KN_ERR_INVALID_MODEL, "ConstantOfShape: value must hold one element");
    const kn_tensor *s = c->in[0];
    if (!has_value(s)) {
        if (s->ndim == 1 && s->dims[0] >= 0 && s->dims[0] <= MAXR) {
            int64_t d[MAXR];
            for (int i = 0; i < s->dims[0]; i++) d[i] = -1;
            KN_TRY(set_out(c, 0, dt, (int)s->dims[0], d));
        } else set_unknown(c, 0, dt);
        return NULL;
    }
    int64_t d[MAXR], n;
    KN_TRY(kn_shapeops_read_ints(s, d, MAXR, &n, "ConstantOfShape"));
    int64_t total = 1;
    for (int i = 0; i < n; i++) {
        KN_CHECK(d[i] >= 0, KN_ERR_INVALID_ARGUMENT, "ConstantOfShape: negative dimension %lld", (long long)d[i]);
        KN_CHECK(d[i] == 0 || total <= KN_MAX_NUMEL / d[i], KN_ERR_INVALID_ARGUMENT,
                 "ConstantOfShape: shape too large");
        total *= d[i];
    }
    KN_TRY(set_out(c, 0, dt, (int)n, d));
    return NULL;
}

kn_status *kn_infer_EyeLike(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    KN_TRY(need_rank(c, x, 2, 2));
    int64_t dt = KN_PARAMS(c->node, eyelike)->dtype;
    KN_CHECK(dt == 0 || kn_dtype_valid((int)dt), KN_ERR_INVALID_MODEL, "EyeLike: invalid dtype %lld", (long long)dt);
    KN_TRY(set_out(c, 0, dt ? (kn_dtype)dt : x->dtype, 2, x->dims));
    return NULL;
}

kn_status *kn_infer_Range(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    KN_TRY(need_input(c, 2));
    kn_dtype dt = c->in[0]->dtype;
    int64_t d[1] = {-1};
    if (has_value(c->in[0]) && has_value(c->in[1]) && has_value(c->in[2])) {
        KN_CHECK(kn_numel(c->in[0]) == 1 && kn_numel(c->in[1]) == 1 && kn_numel(c->in[2]) == 1, KN_ERR_INVALID_ARGUMENT,
                 "Range: start, limit and delta must be scalars");
        double n;
        if (kn_dtype_is_int(dt)) {
            int64_t s = kn_get_i64(c->in[0], 0), l = kn_get_i64(c->in[1], 0), dl = kn_get_i64(c->in[2], 0);
            KN_CHECK(dl != 0, KN_ERR_INVALID_ARGUMENT, "Range: delta is zero");
            n = ceil(((double)l - (double)s) / (double)dl);
        } else {
            double s = kn_get_f64(c->in[0], 0), l = kn_get_f64(c->in[1], 0), dl = kn_get_f64(c->in[2], 0);
            KN_CHECK(dl != 0 && isfinite(s) && isfinite(l) && isfinite(dl), KN_ERR_INVALID_ARGUMENT,
                     "Range: delta is zero or a bound is not finite");
            n = ceil((l - s) / dl);
        }
        if (n < 0) n = 0;
        KN_CHECK(n <= (double)KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "Range: %g elements is too many", n);
        d[0] = (int64_t)n;
    }
    KN_TRY(set_out(c, 0, dt, 1, d));
    return NULL;
}

/* ---------------- layout ---------------- */

static kn_status *get_perm(const kn_node *node, int rank, int *perm) {
    const int64_t *p = KN_PARAMS(node, transpose)->perm;
    int k = KN_PARAMS(node, transpose)->n_perm;
    if (k < 0) {
        for (int i = 0; i < rank; i++) perm[i] = rank - 1 - i;
        return NULL;
    }
    KN_CHECK(k == rank, KN_ERR_INVALID_ARGUMENT, "Transpose: perm has %d entries for rank %d", k, rank);
    bool seen[MAXR] = {false};
    for (int i = 0; i < k; i++) {
        int64_t a = p[i] < 0 ? p[i] + rank : p[i];
        KN_CHECK(a >= 0 && a < rank && !seen[a], KN_ERR_INVALID_ARGUMENT,
                 "Transpose: perm is not a permutation of rank %d", rank);
        seen[a] = true;
        perm[i] = (int)a;
    }
    return NULL;
}

kn_status *kn_infer_Transpose(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    if (x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    int perm[MAXR];
    KN_TRY(get_perm(c->node, x->ndim, perm));
    int64_t d[MAXR];
    for (int i = 0; i < x->ndim; i++) d[i] = x->dims[perm[i]];
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
    return NULL;
}

kn_status *kn_infer_Concat(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    /* inputs from untyped subgraph values may still have an undefined dtype: take the first known */
    const kn_tensor *x = c->in[0];
    for (int i = 0; i < c->n_in; i++)
        if (c->in[i] && c->in[i]->dtype != KN_UNDEFINED) {
            x = c->in[i];
            break;
        }
    int rank = -1;
    for (int i = 0; i < c->n_in; i++)
        if (c->in[i] && c->in[i]->ndim >= 0) rank = c->in[i]->ndim;
    if (rank < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(c->node, axis)->axis, rank, c->node, &axis));
    int64_t d[MAXR];
    for (int k = 0; k < rank; k++) d[k] = k == axis ? 0 : -1;
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    for (int i = 0; i < c->n_in; i++) {
        const kn_tensor *t = c->in[i];
        KN_CHECK(t, KN_ERR_INVALID_MODEL, "Concat: input %d is missing", i);
        KN_CHECK(t->dtype == x->dtype || t->dtype == KN_UNDEFINED, KN_ERR_INVALID_ARGUMENT,
                 "Concat: dtype mismatch between %s and %s", kn_tensor_desc(x, b1, sizeof b1),
                 kn_tensor_desc(t, b2, sizeof b2));
        if (t->ndim < 0) {
            d[axis] = -1;
            continue;
        }
        KN_CHECK(t->ndim == rank, KN_ERR_INVALID_ARGUMENT, "Concat: rank mismatch between %s and %s",
                 kn_tensor_desc(x, b1, sizeof b1), kn_tensor_desc(t, b2, sizeof b2));
        for (int k = 0; k < rank; k++) {
            if (k == axis) {
                if (d[k] >= 0) d[k] = t->dims[k] < 0 ? -1 : d[k] + t->dims[k];
            } else if (t->dims[k] >= 0) {
                KN_CHECK(d[k] < 0 || d[k] == t->dims[k], KN_ERR_INVALID_ARGUMENT,
                         "Concat: dim %d differs between inputs (%s)", k, kn_tensor_desc(t, b2, sizeof b2));
                d[k] = t->dims[k];
            }
        }
    }
    KN_TRY(set_out(c, 0, x->dtype, rank, d));
    return NULL;
}

/* Sizes of each of n_out chunks along axis, from the split input/attribute, num_outputs or an
 * even split (the last chunk smaller when it does not divide). sizes[i] = -1 when unknown. */
kn_status *kn_shapeops_split_sizes(const kn_node *node, const kn_tensor *const *in, int n_in, int n_out, int axis,
                                   int64_t *sizes) {
    const kn_tensor *x = in[0];
    int64_t dim = x->ndim > axis ? x->dims[axis] : -1;
    int64_t sp[256], ns = -1;
    KN_CHECK(n_out >= 1 && n_out <= 256, KN_ERR_UNSUPPORTED, "Split: %d outputs", n_out);
    /* split is an input from opset 13 on (and an optional input in Split-1) */
    if (node->opset >= 13 || (node->opset < 2 && n_in > 1 && in[1])) {
        const kn_tensor *s = n_in > 1 ? in[1] : NULL;
        if (s) {
            if (!has_value(s)) {
                for (int i = 0; i < n_out; i++) sizes[i] = -1;
                return NULL;
            }
            KN_TRY(kn_shapeops_read_ints(s, sp, 256, &ns, "Split"));
        }
    } else {
        const kn_params_split *p = KN_PARAMS(node, split);
        int k = p->n_split;
        if (k >= 0) {
            KN_CHECK(k <= 256, KN_ERR_UNSUPPORTED, "Split: too many parts");
            memcpy(sp, p->split, (size_t)k * sizeof *sp);
            ns = k;
        }
    }
    if (ns >= 0) {
        KN_CHECK(ns == n_out, KN_ERR_INVALID_ARGUMENT, "Split: %lld split sizes for %d outputs", (long long)ns, n_out);
        int64_t sum = 0;
        for (int i = 0; i < n_out; i++) {
            KN_CHECK(sp[i] >= 0 && sp[i] <= KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "Split: invalid split size %lld",
                     (long long)sp[i]);
            sizes[i] = sp[i];
            sum += sp[i];
        }
        KN_CHECK(dim < 0 || sum == dim, KN_ERR_INVALID_ARGUMENT, "Split: split sizes sum to %lld, axis has %lld",
                 (long long)sum, (long long)dim);
        return NULL;
    }
    int64_t parts = KN_PARAMS(node, split)->has_num_outputs ? KN_PARAMS(node, split)->num_outputs : n_out;
    KN_CHECK(parts == n_out, KN_ERR_INVALID_MODEL, "Split: num_outputs %lld but %d outputs", (long long)parts, n_out);
    if (dim < 0) {
        for (int i = 0; i < n_out; i++) sizes[i] = -1;
        return NULL;
    }
    int64_t chunk = (dim + n_out - 1) / n_out;
    KN_CHECK(node->opset >= 18 || dim % n_out == 0, KN_ERR_INVALID_ARGUMENT,
             "Split: axis of %lld does not split evenly into %d parts", (long long)dim, n_out);
    int64_t left = dim;
    for (int i = 0; i < n_out; i++) {
        sizes[i] = chunk < left ? chunk : left;
        left -= sizes[i];
    }
    return NULL;
}

kn_status *kn_infer_Split(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    if (x->ndim < 0) {
        for (int i = 0; i < c->n_out; i++) set_unknown(c, i, x->dtype);
        return NULL;
    }
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(c->node, split)->axis, x->ndim, c->node, &axis));
    int64_t sizes[256];
    KN_TRY(kn_shapeops_split_sizes(c->node, c->in, c->n_in, c->n_out, axis, sizes));
    for (int i = 0; i < c->n_out; i++) {
        int64_t d[MAXR];
        memcpy(d, x->dims, sizeof d);
        d[axis] = sizes[i];
        KN_TRY(set_out(c, i, x->dtype, x->ndim, d));
    }
    return NULL;
}

/* Per-axis start/step/count over the full rank (untouched axes: 0, 1, dim), following the
 * ONNX clamping rules: starts/ends are clamped to [0, dim] for positive steps and [-1, dim-1]
 * for negative ones, so huge or negative values are fine. */
kn_status *kn_shapeops_slice_params(const kn_node *node, const kn_tensor *const *in, int n_in, int64_t *starts,
                                    int64_t *steps, int64_t *out_dims) {
    const kn_tensor *x = in[0];
    int r = x->ndim;
    int64_t st[2 * MAXR], en[2 * MAXR], ax[2 * MAXR], sp[2 * MAXR];
    int64_t ns, ne, na = -1, nsp = -1;
    if (node->opset < 10) {
        const kn_params_slice *p = KN_PARAMS(node, slice);
        int k = p->n_starts;
        KN_CHECK(k >= 0 && k <= 2 * MAXR, KN_ERR_INVALID_MODEL, "Slice: bad starts attribute");
        memcpy(st, p->starts, (size_t)k * 8);
        ns = k;
        k = p->n_ends;
        KN_CHECK(k >= 0 && k <= 2 * MAXR, KN_ERR_INVALID_MODEL, "Slice: bad ends attribute");
        memcpy(en, p->ends, (size_t)k * 8);
        ne = k;
        k = p->n_axes;
        if (k >= 0) {
            KN_CHECK(k <= 2 * MAXR, KN_ERR_INVALID_MODEL, "Slice: bad axes");
            memcpy(ax, p->axes, (size_t)k * 8);
            na = k;
        }
    } else {
        KN_CHECK(n_in >= 3 && in[1] && in[2], KN_ERR_INVALID_MODEL, "Slice: starts and ends are required");
        KN_TRY(kn_shapeops_read_ints(in[1], st, 2 * MAXR, &ns, "Slice"));
        KN_TRY(kn_shapeops_read_ints(in[2], en, 2 * MAXR, &ne, "Slice"));
        if (n_in > 3 && in[3]) KN_TRY(kn_shapeops_read_ints(in[3], ax, 2 * MAXR, &na, "Slice"));
        if (n_in > 4 && in[4]) KN_TRY(kn_shapeops_read_ints(in[4], sp, 2 * MAXR, &nsp, "Slice"));
    }
    KN_CHECK(ns == ne && (na < 0 || na == ns) && (nsp < 0 || nsp == ns), KN_ERR_INVALID_ARGUMENT,
             "Slice: starts/ends/axes/steps lengths differ (%lld, %lld, %lld, %lld)", (long long)ns, (long long)ne,
             (long long)na, (long long)nsp);
    for (int i = 0; i < r; i++) {
        starts[i] = 0;
        steps[i] = 1;
        out_dims[i] = x->dims[i];
    }
    bool seen[MAXR] = {false};
    for (int64_t k = 0; k < ns; k++) {
        int a;
        KN_TRY(kn_norm_axis(na < 0 ? k : ax[k], r, node, &a));
        KN_CHECK(!seen[a], KN_ERR_INVALID_ARGUMENT, "Slice: axis %d repeated", a);
        seen[a] = true;
        int64_t step = nsp < 0 ? 1 : sp[k];
        KN_CHECK(step != 0, KN_ERR_INVALID_ARGUMENT, "Slice: step is zero on axis %d", a);
        int64_t dim = x->dims[a];
        steps[a] = step;
        if (dim < 0) {
            out_dims[a] = -1;
            continue;
        }
        int64_t s = st[k], e = en[k];
        if (s < 0) s += dim; /* cannot overflow: dim >= 0 */
        if (e < 0) e += dim;
        if (step > 0) {
            s = s < 0 ? 0 : s > dim ? dim : s;
            e = e < 0 ? 0 : e > dim ? dim : e;
            out_dims[a] = e > s ? 1 + (e - s - 1) / step : 0; /* no overflow with steps near INT64_MAX */
        } else {
            s = s < 0 ? 0 : s > dim - 1 ? dim - 1 : s;
            e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
            out_dims[a] = s > e ? 1 + (int64_t)((uint64_t)(s - e - 1) / ((uint64_t)0 - (uint64_t)step)) : 0;
        }
        starts[a] = s;
    }
    return NULL;
}

kn_status *kn_infer_Slice(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    if (x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    if (c->node->opset >= 10) {
        for (int i = 1; i < 5 && i < c->n_in; i++)
            if (c->in[i] && !has_value(c->in[i])) {
                /* Without the values only the rank is known. */
                int64_t d[MAXR];
                for (int k = 0; k < x->ndim; k++) d[k] = -1;
                KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
                return NULL;
            }
    }
    int64_t st[MAXR], sp[MAXR], d[MAXR];
    KN_TRY(kn_shapeops_slice_params(c->node, c->in, c->n_in, st, sp, d));
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
    return NULL;
}

/* pads[0..r) begins, pads[r..2r) ends over the full rank. */
kn_status *kn_shapeops_pad_params(const kn_node *node, const kn_tensor *const *in, int n_in, int64_t *pads) {
    const kn_tensor *x = in[0];
    int r = x->ndim;
    int64_t p[4 * MAXR], np, ax[2 * MAXR], na = -1;
    if (node->opset < 11) {
        int k = KN_PARAMS(node, pad)->n_pads; /* pads, or paddings */
        KN_CHECK(k >= 0 && k <= 4 * MAXR, KN_ERR_INVALID_MODEL, "Pad: bad pads attribute");
        memcpy(p, KN_PARAMS(node, pad)->pads, (size_t)k * 8);
        np = k;
    } else {
        KN_CHECK(n_in > 1 && in[1], KN_ERR_INVALID_MODEL, "Pad: pads input is required");
        KN_TRY(kn_shapeops_read_ints(in[1], p, 4 * MAXR, &np, "Pad"));
        if (n_in > 3 && in[3]) KN_TRY(kn_shapeops_read_ints(in[3], ax, 2 * MAXR, &na, "Pad"));
    }
    for (int i = 0; i < 2 * r; i++) pads[i] = 0;
    if (na < 0) {
        KN_CHECK(np == 2 * r, KN_ERR_INVALID_ARGUMENT, "Pad: %lld pads for rank %d", (long long)np, r);
        memcpy(pads, p, (size_t)np * 8);
    } else {
        KN_CHECK(np == 2 * na, KN_ERR_INVALID_ARGUMENT, "Pad: %lld pads for %lld axes", (long long)np, (long long)na);
        for (int64_t k = 0; k < na; k++) {
            int a;
            KN_TRY(kn_norm_axis(ax[k], r, node, &a));
            pads[a] = p[k];
            pads[r + a] = p[na + k];
        }
    }
    return NULL;
}

kn_status *kn_infer_Pad(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    if (x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    int64_t d[MAXR];
    if (c->node->opset >= 11 && (!has_value(opt_in(c, 1)) || (opt_in(c, 3) && !has_value(opt_in(c, 3))))) {
        for (int k = 0; k < x->ndim; k++) d[k] = -1;
        KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
        return NULL;
    }
    int64_t pads[2 * MAXR];
    KN_TRY(kn_shapeops_pad_params(c->node, c->in, c->n_in, pads));
    char b[KN_DESC_LEN];
    for (int k = 0; k < x->ndim; k++) {
        KN_CHECK(pads[k] >= -KN_MAX_NUMEL && pads[k] <= KN_MAX_NUMEL && pads[x->ndim + k] >= -KN_MAX_NUMEL &&
                     pads[x->ndim + k] <= KN_MAX_NUMEL,
                 KN_ERR_INVALID_ARGUMENT, "Pad: pads on axis %d are absurdly large", k);
        d[k] = x->dims[k] < 0 ? -1 : x->dims[k] + pads[k] + pads[x->ndim + k];
        KN_CHECK(x->dims[k] < 0 || d[k] >= 0, KN_ERR_INVALID_ARGUMENT,
                 "Pad: negative pads crop %s below zero on axis %d", kn_tensor_desc(x, b, sizeof b), k);
    }
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
    return NULL;
}

kn_status *kn_infer_Expand(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    const kn_tensor *x = c->in[0];
    const kn_tensor *sh = c->in[1];
    if (!has_value(sh) && x->ndim >= 0 && sh->ndim == 1 && sh->dims[0] >= 0 && sh->dims[0] <= MAXR) {
        /* the values come at run time; the rank is known (as for Reshape) and a dimension of x
         * above 1 is kept, the rest unknown */
        int r = x->ndim > (int)sh->dims[0] ? x->ndim : (int)sh->dims[0];
        int64_t d[MAXR];
        for (int i = 0; i < r; i++) {
            int xi = i - (r - x->ndim);
            d[i] = xi >= 0 && x->dims[xi] > 1 ? x->dims[xi] : -1;
        }
        return set_out(c, 0, x->dtype, r, d);
    }
    if (!has_value(sh) || x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    kn_tensor s = {0};
    int64_t n;
    KN_TRY(kn_shapeops_read_ints(c->in[1], s.dims, MAXR, &n, "Expand"));
    s.ndim = (int)n;
    for (int i = 0; i < n; i++)
        KN_CHECK(s.dims[i] >= 0, KN_ERR_INVALID_ARGUMENT, "Expand: negative dimension %lld in shape",
                 (long long)s.dims[i]);
    kn_tensor o = {0};
    KN_TRY(kn_broadcast_shape(x, &s, &o));
    KN_TRY(set_out(c, 0, x->dtype, o.ndim, o.dims));
    return NULL;
}

kn_status *kn_infer_Tile(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    const kn_tensor *x = c->in[0];
    if (x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    int64_t d[MAXR];
    if (!has_value(c->in[1])) {
        for (int k = 0; k < x->ndim; k++) d[k] = -1;
        KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
        return NULL;
    }
    int64_t rep[MAXR], n;
    KN_TRY(kn_shapeops_read_ints(c->in[1], rep, MAXR, &n, "Tile"));
    KN_CHECK(n == x->ndim, KN_ERR_INVALID_ARGUMENT, "Tile: %lld repeats for rank %d", (long long)n, x->ndim);
    int64_t total = 1;
    for (int k = 0; k < x->ndim; k++) {
        KN_CHECK(rep[k] >= 0 && rep[k] <= KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "Tile: invalid repeat %lld",
                 (long long)rep[k]);
        KN_CHECK(x->dims[k] <= 0 || rep[k] <= KN_MAX_NUMEL / x->dims[k], KN_ERR_INVALID_ARGUMENT,
                 "Tile: output too large");
        d[k] = x->dims[k] < 0 ? -1 : x->dims[k] * rep[k];
        if (d[k] > 0 && total > 0) {
            KN_CHECK(d[k] <= KN_MAX_NUMEL && total <= KN_MAX_NUMEL / d[k], KN_ERR_INVALID_ARGUMENT,
                     "Tile: output too large");
            total *= d[k];
        }
    }
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
    return NULL;
}

/* ---------------- gather / scatter ---------------- */

kn_status *kn_infer_Gather(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    const kn_tensor *x = c->in[0], *idx = c->in[1];
    if (x->ndim < 0 || idx->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    KN_CHECK(x->ndim >= 1, KN_ERR_INVALID_ARGUMENT, "Gather: data must have rank >= 1");
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(c->node, axis)->axis, x->ndim, c->node, &axis));
    int r = x->ndim - 1 + idx->ndim;
    KN_CHECK(r <= MAXR, KN_ERR_UNSUPPORTED, "Gather: output rank %d exceeds %d", r, MAXR);
    int64_t d[MAXR];
    int j = 0;
    for (int i = 0; i < axis; i++) d[j++] = x->dims[i];
    for (int i = 0; i < idx->ndim; i++) d[j++] = idx->dims[i];
    for (int i = axis + 1; i < x->ndim; i++) d[j++] = x->dims[i];
    KN_TRY(set_out(c, 0, x->dtype, r, d));
    return NULL;
}

kn_status *kn_infer_GatherElements(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    const kn_tensor *x = c->in[0], *idx = c->in[1];
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    if (x->ndim >= 0 && idx->ndim >= 0)
        KN_CHECK(x->ndim == idx->ndim, KN_ERR_INVALID_ARGUMENT, "GatherElements: rank of %s and indices %s differ",
                 kn_tensor_desc(x, b1, sizeof b1), kn_tensor_desc(idx, b2, sizeof b2));
    KN_TRY(set_out(c, 0, x->dtype, idx->ndim, idx->dims));
    return NULL;
}

kn_status *kn_infer_GatherND(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    const kn_tensor *x = c->in[0], *idx = c->in[1];
    if (x->ndim < 0 || idx->ndim < 0 || idx->dims[idx->ndim - 1] < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    int64_t b = KN_PARAMS(c->node, gathernd)->batch_dims;
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(idx->ndim >= 1 && b >= 0 && b < idx->ndim && b < x->ndim, KN_ERR_INVALID_ARGUMENT,
             "GatherND: batch_dims %lld invalid for data %s, indices %s", (long long)b,
             kn_tensor_desc(x, b1, sizeof b1), kn_tensor_desc(idx, b2, sizeof b2));
    int64_t last = idx->dims[idx->ndim - 1];
    KN_CHECK(last >= 1 && last <= x->ndim - b, KN_ERR_INVALID_ARGUMENT,
             "GatherND: indices %s index too many dims of %s", kn_tensor_desc(idx, b2, sizeof b2),
             kn_tensor_desc(x, b1, sizeof b1));
    int r = idx->ndim - 1 + x->ndim - (int)b - (int)last;
    KN_CHECK(r <= MAXR, KN_ERR_UNSUPPORTED, "GatherND: output rank too large");
    int64_t d[MAXR];
    int j = 0;
    for (int i = 0; i < idx->ndim - 1; i++) d[j++] = idx->dims[i];
    for (int i = (int)(b + last); i < x->ndim; i++) d[j++] = x->dims[i];
    KN_TRY(set_out(c, 0, x->dtype, r, d));
    return NULL;
}

kn_status *kn_infer_Scatter(kn_infer_ctx *c) { return kn_infer_Identity(c); }
kn_status *kn_infer_ScatterElements(kn_infer_ctx *c) { return kn_infer_Identity(c); }
kn_status *kn_infer_ScatterND(kn_infer_ctx *c) { return kn_infer_Identity(c); }
kn_status *kn_infer_TensorScatter(kn_infer_ctx *c) { return kn_infer_Identity(c); }

kn_status *kn_infer_OneHot(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    KN_TRY(need_input(c, 2));
    const kn_tensor *idx = c->in[0], *depth = c->in[1], *vals = c->in[2];
    if (idx->ndim < 0) {
        set_unknown(c, 0, vals->dtype);
        return NULL;
    }
    int r = idx->ndim + 1;
    KN_CHECK(r <= MAXR, KN_ERR_UNSUPPORTED, "OneHot: output rank too large");
    int axis;
    KN_TRY(kn_norm_axis(KN_PARAMS(c->node, axis)->axis, r, c->node, &axis));
    int64_t dep = -1;
    if (has_value(depth)) {
        KN_CHECK(kn_numel(depth) == 1, KN_ERR_INVALID_ARGUMENT, "OneHot: depth must hold one value");
        double dv = kn_get_f64(depth, 0);
        KN_CHECK(dv >= 1 && dv <= (double)KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "OneHot: invalid depth %g", dv);
        dep = (int64_t)dv;
    }
    int64_t d[MAXR];
    int j = 0;
    for (int i = 0; i < r; i++) d[i] = i == axis ? dep : idx->dims[j++];
    KN_TRY(set_out(c, 0, vals->dtype, r, d));
    return NULL;
}

kn_status *kn_infer_Trilu(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_rank(c, c->in[0], 2, MAXR));
    return kn_infer_Identity(c);
}

static kn_status *space_depth(kn_infer_ctx *c, bool to_space) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    KN_TRY(need_rank(c, x, 4, 4));
    if (x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    int64_t bs = KN_PARAMS(c->node, space_depth)->has_blocksize ? KN_PARAMS(c->node, space_depth)->blocksize : 0;
    KN_CHECK(bs >= 1 && bs <= 65536, KN_ERR_INVALID_MODEL, "%s: invalid blocksize %lld", op_name(c->node),
             (long long)bs);
    int64_t d[4] = {x->dims[0], x->dims[1], x->dims[2], x->dims[3]};
    char b[KN_DESC_LEN];
    if (to_space) {
        KN_CHECK(d[1] < 0 || d[1] % (bs * bs) == 0, KN_ERR_INVALID_ARGUMENT,
                 "DepthToSpace: channels of %s not divisible by %lld", kn_tensor_desc(x, b, sizeof b),
                 (long long)(bs * bs));
        if (d[1] >= 0) d[1] /= bs * bs;
        if (d[2] >= 0) d[2] *= bs;
        if (d[3] >= 0) d[3] *= bs;
    } else {
        KN_CHECK((d[2] < 0 || d[2] % bs == 0) && (d[3] < 0 || d[3] % bs == 0), KN_ERR_INVALID_ARGUMENT,
                 "SpaceToDepth: spatial dims of %s not divisible by %lld", kn_tensor_desc(x, b, sizeof b),
                 (long long)bs);
        if (d[1] >= 0) d[1] *= bs * bs;
        if (d[2] >= 0) d[2] /= bs;
        if (d[3] >= 0) d[3] /= bs;
    }
    KN_TRY(set_out(c, 0, x->dtype, 4, d));
    return NULL;
}
kn_status *kn_infer_DepthToSpace(kn_infer_ctx *c) { return space_depth(c, true); }
kn_status *kn_infer_SpaceToDepth(kn_infer_ctx *c) { return space_depth(c, false); }

kn_status *kn_infer_ReverseSequence(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    KN_TRY(need_rank(c, c->in[0], 2, MAXR));
    return kn_infer_Identity(c);
}

/* ---------------- data-dependent shapes ---------------- */

kn_status *kn_infer_Compress(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    const kn_tensor *x = c->in[0], *cond = c->in[1];
    if (x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    const kn_params_axis *ap = KN_PARAMS(c->node, axis);
    int axis = -1;
    if (ap->has_axis) KN_TRY(kn_norm_axis(ap->axis, x->ndim, c->node, &axis));
    int64_t len = axis < 0 ? kn_numel(x) : x->dims[axis];
    int64_t cnt = -1;
    if (has_value(cond) && len >= 0) {
        int64_t n = kn_numel(cond);
        cnt = 0;
        for (int64_t i = 0; i < n && i < len; i++) cnt += kn_get_i64(cond, i) != 0;
    } else if (!has_value(cond)) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    if (axis < 0) {
        KN_TRY(set_out(c, 0, x->dtype, 1, &cnt));
        return NULL;
    }
    int64_t d[MAXR];
    memcpy(d, x->dims, sizeof d);
    d[axis] = cnt;
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
    return NULL;
}

kn_status *kn_infer_NonZero(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    if (!has_value(x)) {
        set_unknown(c, 0, KN_I64);
        return NULL;
    }
    int64_t n = kn_numel(x), cnt = 0;
    size_t es = kn_dtype_size(x->dtype);
    const unsigned char *p = x->data;
    if (x->dtype == KN_STRING) {
        for (int64_t i = 0; i < n; i++) {
            const char *s = ((char *const *)x->data)[i];
            cnt += s && s[0];
        }
    } else if (kn_dtype_is_float(x->dtype)) {
        for (int64_t i = 0; i < n; i++) cnt += kn_get_f64(x, i) != 0.0;
    } else {
        for (int64_t i = 0; i < n; i++) {
            bool nz = false;
            for (size_t k = 0; k < es; k++) nz |= p[i * es + k] != 0;
            cnt += nz;
        }
    }
    int64_t d[2] = {x->ndim, cnt};
    KN_TRY(set_out(c, 0, KN_I64, 2, d));
    return NULL;
}

kn_status *kn_infer_Unique(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    const kn_params_unique *up = KN_PARAMS(c->node, unique);
    int axis = -1;
    if (up->has_axis && x->ndim >= 0) KN_TRY(kn_norm_axis(up->axis, x->ndim, c->node, &axis));
    int64_t dn[1] = {-1};
    /* inverse_indices has one entry per input element (or per slice along axis) */
    if (x->ndim >= 0) dn[0] = axis < 0 ? kn_numel(x) : x->dims[axis];
    KN_TRY(set_out(c, 2, KN_I64, 1, dn));
    if (!has_value(x)) {
        set_unknown(c, 0, x->dtype);
        set_unknown(c, 1, KN_I64);
        set_unknown(c, 3, KN_I64);
        return NULL;
    }
    int64_t u;
    KN_TRY(kn_shapeops_unique_count(c->node, x, &u));
    if (axis < 0) KN_TRY(set_out(c, 0, x->dtype, 1, &u));
    else {
        int64_t d[MAXR];
        memcpy(d, x->dims, sizeof d);
        d[axis] = u;
        KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
    }
    KN_TRY(set_out(c, 1, KN_I64, 1, &u));
    KN_TRY(set_out(c, 3, KN_I64, 1, &u));
    return NULL;
}

kn_status *kn_infer_NonMaxSuppression(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    for (int i = 0; i < c->n_in && i < 5; i++)
        if (c->in[i] && !has_value(c->in[i])) {
            set_unknown(c, 0, KN_I64);
            return NULL;
        }
    int64_t d[2] = {0, 3};
    KN_TRY(kn_shapeops_nms_count(c->node, c->in, c->n_in, &d[0]));
    KN_TRY(set_out(c, 0, KN_I64, 2, d));
    return NULL;
}

/* ---------------- resampling ---------------- */

/* Output sizes, per-axis scales and the full-rank roi (starts then ends) for Resize and
 * Upsample, as the ONNX reference computes them (floor of scale*dim for scales; sizes with
 * keep_aspect_ratio_policy rounding half up). */
kn_status *kn_shapeops_resize_params(const kn_node *node, const kn_tensor *const *in, int n_in, double *scales,
                                     int64_t *out_dims, double *roi) {
    const kn_tensor *x = in[0];
    int r = x->ndim;
    bool upsample = node->op == KN_OP_Upsample;
    const kn_tensor *ts = NULL, *tz = NULL, *troi = NULL;
    double sc[MAXR];
    int64_t sz[MAXR];
    int nsc = -1, nsz = -1;
    const kn_params_resize *rp = KN_PARAMS(node, resize);
    if (upsample) {
        if (node->opset < 9) {
            KN_CHECK(rp->n_scales == r, KN_ERR_INVALID_MODEL, "Upsample: scales attribute must have %d values", r);
            for (int i = 0; i < r; i++) sc[i] = rp->scales[i];
            nsc = r;
        } else ts = n_in > 1 ? in[1] : NULL;
    } else if (node->opset < 11) {
        ts = n_in > 1 ? in[1] : NULL;
    } else {
        troi = n_in > 1 ? in[1] : NULL;
        ts = n_in > 2 ? in[2] : NULL;
        tz = n_in > 3 ? in[3] : NULL;
    }
    if (ts && kn_numel(ts) > 0) {
        KN_CHECK(ts->data && kn_numel(ts) <= MAXR, KN_ERR_INVALID_ARGUMENT, "%s: scales unknown or too long",
                 node->op_type);
        nsc = (int)kn_numel(ts);
        for (int i = 0; i < nsc; i++) sc[i] = kn_get_f64(ts, i);
    }
    if (tz && kn_numel(tz) > 0) {
        int64_t n;
        KN_TRY(kn_shapeops_read_ints(tz, sz, MAXR, &n, node->op_type));
        nsz = (int)n;
    }
    KN_CHECK((nsc >= 0) != (nsz >= 0), KN_ERR_INVALID_ARGUMENT, "%s: exactly one of scales and sizes must be given",
             node->op_type);
    const int64_t *axv = rp->axes;
    int nax = rp->n_axes; /* opset 18's axes, -1 before */
    int axes[MAXR];
    int na = nax < 0 ? r : nax;
    KN_CHECK(na <= r, KN_ERR_INVALID_ARGUMENT, "%s: too many axes", node->op_type);
    for (int i = 0; i < na; i++) {
        if (nax < 0) axes[i] = i;
        else KN_TRY(kn_norm_axis(axv[i], r, node, &axes[i]));
    }
    int nvals = nsc >= 0 ? nsc : nsz;
    KN_CHECK(nvals == na, KN_ERR_INVALID_ARGUMENT, "%s: %d scales/sizes for %d axes", node->op_type, nvals, na);
    for (int i = 0; i < r; i++) {
        scales[i] = 1.0;
        out_dims[i] = x->dims[i];
        roi[i] = 0.0;
        roi[r + i] = 1.0;
    }
    if (troi && kn_numel(troi) > 0) {
        KN_CHECK(troi->data && kn_numel(troi) == 2 * na, KN_ERR_INVALID_ARGUMENT, "%s: roi must have %d values",
                 node->op_type, 2 * na);
        for (int i = 0; i < na; i++) {
            roi[axes[i]] = kn_get_f64(troi, i);
            roi[r + axes[i]] = kn_get_f64(troi, na + i);
        }
    }
    if (nsc >= 0) {
        for (int i = 0; i < na; i++) {
            int a = axes[i];
            KN_CHECK(sc[i] > 0 && isfinite(sc[i]), KN_ERR_INVALID_ARGUMENT, "%s: invalid scale %g", node->op_type,
                     sc[i]);
            scales[a] = sc[i];
            if (x->dims[a] < 0) {
                out_dims[a] = -1;
                continue;
            }
            double o = floor(sc[i] * (double)x->dims[a]);
            KN_CHECK(o <= (double)KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "%s: output too large", node->op_type);
            out_dims[a] = (int64_t)o;
        }
        return NULL;
    }
    kn_keep_aspect pol = rp->keep_aspect;
    bool dims_known = true;
    for (int i = 0; i < na; i++) {
        KN_CHECK(sz[i] >= 0 && sz[i] <= KN_MAX_NUMEL, KN_ERR_INVALID_ARGUMENT, "%s: invalid size %lld", node->op_type,
                 (long long)sz[i]);
        dims_known &= x->dims[axes[i]] > 0;
    }
    if (pol == KN_KEEP_STRETCH) {
        /* the output shape is the sizes themselves; scales matter only to the kernel */
        for (int i = 0; i < na; i++) {
            int a = axes[i];
            out_dims[a] = sz[i];
            scales[a] = x->dims[a] > 0 ? (double)sz[i] / (double)x->dims[a] : 1.0;
        }
        return NULL;
    }
    if (!dims_known) {
        for (int i = 0; i < na; i++) out_dims[axes[i]] = x->dims[axes[i]] == 0 ? 0 : -1;
        return NULL;
    }
    bool larger = pol == KN_KEEP_NOT_SMALLER; /* an unknown policy fails at load */
    double s = larger ? 0 : INFINITY;
    for (int i = 0; i < na; i++) {
        double v = (double)sz[i] / (double)x->dims[axes[i]];
        s = larger ? fmax(s, v) : fmin(s, v);
    }
    for (int i = 0; i < na; i++) {
        int a = axes[i];
        scales[a] = s;
        out_dims[a] = (int64_t)(s * (double)x->dims[a] + 0.5);
    }
    return NULL;
}

static kn_status *infer_resize(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    const kn_tensor *x = c->in[0];
    if (x->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    for (int i = 1; i < c->n_in; i++)
        if (c->in[i] && kn_numel(c->in[i]) != 0 && !has_value(c->in[i])) {
            int64_t d[MAXR];
            for (int k = 0; k < x->ndim; k++) d[k] = -1;
            KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
            return NULL;
        }
    double sc[MAXR], roi[2 * MAXR];
    int64_t d[MAXR];
    KN_TRY(kn_shapeops_resize_params(c->node, c->in, c->n_in, sc, d, roi));
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
    return NULL;
}
kn_status *kn_infer_Resize(kn_infer_ctx *c) { return infer_resize(c); }
kn_status *kn_infer_Upsample(kn_infer_ctx *c) { return infer_resize(c); }

kn_status *kn_infer_CenterCropPad(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    const kn_tensor *x = c->in[0];
    if (x->ndim < 0 || !has_value(c->in[1])) {
        if (x->ndim >= 0) {
            int64_t d[MAXR];
            for (int k = 0; k < x->ndim; k++) d[k] = -1;
            KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
        } else set_unknown(c, 0, x->dtype);
        return NULL;
    }
    int64_t sh[MAXR], ns;
    KN_TRY(kn_shapeops_read_ints(c->in[1], sh, MAXR, &ns, "CenterCropPad"));
    const int64_t *ax = KN_PARAMS(c->node, axes)->axes;
    int na = KN_PARAMS(c->node, axes)->n_axes; /* ns <= MAXR values are read, after ns == na */
    int64_t d[MAXR];
    memcpy(d, x->dims, sizeof d);
    KN_CHECK(ns == (na < 0 ? x->ndim : na), KN_ERR_INVALID_ARGUMENT, "CenterCropPad: %lld shape values for %d axes",
             (long long)ns, na < 0 ? x->ndim : na);
    for (int i = 0; i < ns; i++) {
        int a = i;
        if (na >= 0) KN_TRY(kn_norm_axis(ax[i], x->ndim, c->node, &a));
        KN_CHECK(sh[i] >= 0, KN_ERR_INVALID_ARGUMENT, "CenterCropPad: negative size %lld", (long long)sh[i]);
        d[a] = sh[i];
    }
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
    return NULL;
}

kn_status *kn_infer_GridSample(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    const kn_tensor *x = c->in[0], *g = c->in[1];
    if (x->ndim < 0 || g->ndim < 0) {
        set_unknown(c, 0, x->dtype);
        return NULL;
    }
    char b1[KN_DESC_LEN], b2[KN_DESC_LEN];
    KN_CHECK(x->ndim >= 3 && g->ndim == x->ndim && (g->dims[g->ndim - 1] < 0 || g->dims[g->ndim - 1] == x->ndim - 2) &&
                 (g->dims[0] < 0 || x->dims[0] < 0 || g->dims[0] == x->dims[0]),
             KN_ERR_INVALID_ARGUMENT, "GridSample: grid %s does not match input %s", kn_tensor_desc(g, b2, sizeof b2),
             kn_tensor_desc(x, b1, sizeof b1));
    int64_t d[MAXR];
    d[0] = x->dims[0];
    d[1] = x->dims[1];
    for (int i = 2; i < x->ndim; i++) d[i] = g->dims[i - 1];
    KN_TRY(set_out(c, 0, x->dtype, x->ndim, d));
    return NULL;
}

kn_status *kn_infer_AffineGrid(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    const kn_tensor *th = c->in[0], *sz = c->in[1];
    if (!has_value(sz)) {
        set_unknown(c, 0, th->dtype);
        return NULL;
    }
    int64_t s[MAXR], n;
    KN_TRY(kn_shapeops_read_ints(sz, s, MAXR, &n, "AffineGrid"));
    KN_CHECK(n == 4 || n == 5, KN_ERR_INVALID_ARGUMENT, "AffineGrid: size must have 4 or 5 values, got %lld",
             (long long)n);
    int64_t d[MAXR];
    int sp = (int)n - 2;
    d[0] = s[0];
    for (int i = 0; i < sp; i++) {
        KN_CHECK(s[2 + i] >= 0, KN_ERR_INVALID_ARGUMENT, "AffineGrid: negative size");
        d[1 + i] = s[2 + i];
    }
    d[1 + sp] = sp;
    KN_TRY(set_out(c, 0, th->dtype, sp + 2, d));
    return NULL;
}

kn_status *kn_infer_RoiAlign(kn_infer_ctx *c) {
    KN_TRY(need_input(c, 0));
    KN_TRY(need_input(c, 1));
    KN_TRY(need_input(c, 2));
    const kn_tensor *x = c->in[0], *rois = c->in[1];
    KN_TRY(need_rank(c, x, 4, 4));
    KN_TRY(need_rank(c, rois, 2, 2));
    int64_t oh = KN_PARAMS(c->node, roi_align)->output_height, ow = KN_PARAMS(c->node, roi_align)->output_width;
    KN_CHECK(oh >= 1 && ow >= 1 && oh <= 1 << 20 && ow <= 1 << 20, KN_ERR_INVALID_MODEL,
             "RoiAlign: invalid output size");
    int64_t d[4] = {rois->ndim == 2 ? rois->dims[0] : -1, x->ndim == 4 ? x->dims[1] : -1, oh, ow};
    KN_TRY(set_out(c, 0, x->dtype, 4, d));
    return NULL;
}
