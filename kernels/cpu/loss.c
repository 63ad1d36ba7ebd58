/* CPU kernels for SoftmaxCrossEntropyLoss and NegativeLogLikelihoodLoss. Input is [N, C, D...]
 * with targets [N, D...]; the per-element loss is -w[t] * logp[n, t, d], with targets equal to
 * ignore_index contributing nothing (weight 0). "mean" divides by the sum of the weights used,
 * which is the element count when there are no weights. Computed in double. */
#include "graph/ops.h"
#include "kernels/cpu/rows.h"
#include <math.h>
#include <string.h>


static bool is_float(kn_dtype t) { return t == KN_F32 || t == KN_F64 || t == KN_F16 || t == KN_BF16; }

/* logp (N*C*D doubles) holds log-probabilities; writes out[0] per the reduction attribute. */
static kn_status *loss_from_logp(const kn_node *node, const kn_tensor *x, const double *logp, const kn_tensor *target,
                                 const kn_tensor *weight, kn_tensor *loss) {
    char buf[KN_DESC_LEN], buf2[KN_DESC_LEN];
    int64_t N = x->dims[0], C = x->dims[1], D = 1;
    for (int i = 2; i < x->ndim; i++) D *= x->dims[i];
    if (target->dtype != KN_I32 && target->dtype != KN_I64) return kn_err_dtype(node, target);
    bool shape_ok = target->ndim == x->ndim - 1 && target->dims[0] == N;
    for (int i = 1; shape_ok && i < target->ndim; i++) shape_ok = target->dims[i] == x->dims[i + 1];
    if (!shape_ok)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: target %s does not match input [N, C, D...] of %s", node->op_type,
                        kn_tensor_desc(target, buf, sizeof buf), kn_tensor_desc(x, buf2, sizeof buf2));
    if (weight && (kn_numel(weight) != C || !is_float(weight->dtype)))
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: weight must hold C=%lld floats, got %s", node->op_type,
                        (long long)C, kn_tensor_desc(weight, buf, sizeof buf));
    const kn_params_loss *p = KN_PARAMS(node, loss);
    bool none = p->reduction == KN_REDUCTION_NONE, mean = p->reduction == KN_REDUCTION_MEAN;
    bool has_ignore = p->has_ignore_index;
    int64_t ignore = p->ignore_index;
    double sum = 0, wsum = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            int64_t k = n * D + d;
            int64_t tv =
                target->dtype == KN_I64 ? ((const int64_t *)target->data)[k] : ((const int32_t *)target->data)[k];
            double l = 0, w = 0;
            if (!(has_ignore && tv == ignore)) {
                if (tv < 0 || tv >= C)
                    return kn_error(KN_ERR_RUNTIME, "%s: target %lld out of range [0, %lld)", node->op_type,
                                    (long long)tv, (long long)C);
                w = weight ? kn_red_ld(weight->data, weight->dtype, tv) : 1.0;
                l = -logp[(n * C + tv) * D + d] * w;
            }
            if (none) kn_red_st(loss->data, loss->dtype, k, l);
            sum += l;
            wsum += w;
        }
    if (!none) kn_red_st(loss->data, loss->dtype, 0, mean ? sum / wsum : sum);
    return NULL;
}

static kn_status *check_input(const kn_node *node, const kn_tensor *const *in, int n_in) {
    char buf[KN_DESC_LEN];
    const kn_tensor *x = in[0];
    if (!is_float(x->dtype)) return kn_err_dtype(node, x);
    if (x->ndim < 2)
        return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: input must be [N, C, ...], got %s", node->op_type,
                        kn_tensor_desc(x, buf, sizeof buf));
    if (n_in < 2 || !in[1]) return kn_error(KN_ERR_INVALID_ARGUMENT, "%s: target input is required", node->op_type);
    return NULL;
}

kn_status *kn_cpu_SoftmaxCrossEntropyLoss(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                          kn_tensor *const *out, int n_out) {
    KN_TRY(check_input(node, in, n_in));
    const kn_tensor *x = in[0];
    int64_t N = x->dims[0], C = x->dims[1], D = 1;
    for (int i = 2; i < x->ndim; i++) D *= x->dims[i];
    size_t bytes = sizeof(double) * (size_t)(N * C * D > 0 ? N * C * D : 1);
    double *logp = kn_scratch_alloc(ctx, bytes);
    if (!logp) return KN_OOM(bytes);
    kn_dtype t = x->dtype;
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            double m = -INFINITY, s = 0;
            for (int64_t c = 0; c < C; c++) {
                double v = kn_red_ld(x->data, t, (n * C + c) * D + d);
                if (v > m) m = v;
            }
            for (int64_t c = 0; c < C; c++) s += exp(kn_red_ld(x->data, t, (n * C + c) * D + d) - m);
            double ls = log(s);
            for (int64_t c = 0; c < C; c++) {
                int64_t k = (n * C + c) * D + d;
                logp[k] = kn_red_ld(x->data, t, k) - m - ls;
            }
        }
    if (n_out > 1 && out[1])
        for (int64_t k = 0; k < N * C * D; k++) kn_red_st(out[1]->data, out[1]->dtype, k, logp[k]);
    return loss_from_logp(node, x, logp, in[1], n_in > 2 ? in[2] : NULL, out[0]);
}

kn_status *kn_cpu_NegativeLogLikelihoodLoss(kn_exec_ctx *ctx, const kn_node *node, const kn_tensor *const *in, int n_in,
                                            kn_tensor *const *out, int n_out) {
    KN_TRY(check_input(node, in, n_in));
    const kn_tensor *x = in[0];
    int64_t total = kn_numel(x);
    size_t bytes = sizeof(double) * (size_t)(total > 0 ? total : 1);
    double *logp = kn_scratch_alloc(ctx, bytes);
    if (!logp) return KN_OOM(bytes);
    for (int64_t k = 0; k < total; k++) logp[k] = kn_red_ld(x->data, x->dtype, k);
    return loss_from_logp(node, x, logp, in[1], n_in > 2 ? in[2] : NULL, out[0]);
}
