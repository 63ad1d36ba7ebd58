/* kiln public C API: load an ONNX model, create sessions, run them with named tensors.
 * Every fallible call returns a kn_status* (NULL means success); the caller frees a non-NULL
 * status with kn_status_free. Messages name the file, node, op and shapes involved. */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KN_VERSION_MAJOR 0
#define KN_VERSION_MINOR 1
#define KN_VERSION_PATCH 0
#define KN_VERSION_STRING "0.1.0"

/* Element types: the numeric values are ONNX TensorProto.DataType, so no mapping is needed. */
typedef enum kn_dtype {
    KN_UNDEFINED = 0,
    KN_F32 = 1,
    KN_U8 = 2,
    KN_I8 = 3,
    KN_U16 = 4,
    KN_I16 = 5,
    KN_I32 = 6,
    KN_I64 = 7,
    KN_STRING = 8,
    KN_BOOL = 9,
    KN_F16 = 10,
    KN_F64 = 11,
    KN_U32 = 12,
    KN_U64 = 13,
    KN_C64 = 14,
    KN_C128 = 15,
    KN_BF16 = 16,
    KN_F8E4M3FN = 17,
    KN_F8E4M3FNUZ = 18,
    KN_F8E5M2 = 19,
    KN_F8E5M2FNUZ = 20,
    KN_U4 = 21,
    KN_I4 = 22,
    KN_F4E2M1 = 23,
    KN_F8E8M0 = 24,
    KN_U2 = 25,
    KN_I2 = 26,
    KN_DTYPE_COUNT
} kn_dtype;

typedef enum kn_status_code {
    KN_OK = 0,
    KN_ERR_INVALID_ARGUMENT = 1, /* bad input from the caller: names, dtypes, shapes */
    KN_ERR_INVALID_MODEL = 2,    /* the model file or graph is malformed */
    KN_ERR_UNSUPPORTED = 3,      /* an op, dtype or attribute kiln does not implement */
    KN_ERR_OUT_OF_MEMORY = 4,
    KN_ERR_IO = 5,
    KN_ERR_RUNTIME = 6, /* a failure while running (index out of range, ...) */
    KN_ERR_NO_DEVICE = 7,
    KN_ERR_NON_FINITE = 8, /* a training step met a NaN or infinite loss or gradient */
} kn_status_code;

typedef struct kn_status kn_status;
kn_status_code kn_status_get_code(const kn_status *st);
const char *kn_status_message(const kn_status *st);
void kn_status_free(kn_status *st);

typedef enum kn_device_kind { KN_DEVICE_CPU = 0, KN_DEVICE_CUDA = 1 } kn_device_kind;
typedef enum kn_precision {
    KN_PRECISION_FP32 = 0,
    KN_PRECISION_TF32,
    KN_PRECISION_FP16,
    KN_PRECISION_BF16
} kn_precision;

/* What the library has to say that is not an error (an op left to the CPU by a device backend,
 * ...), one line at a time without a trailing newline. The library never prints by itself: with
 * no callback set, messages go to kn_log_stderr, which writes "kiln: <msg>" to stderr. */
typedef enum kn_log_level { KN_LOG_INFO = 0, KN_LOG_WARNING = 1 } kn_log_level;
typedef void (*kn_log_fn)(void *user, kn_log_level level, const char *msg);
void kn_log_stderr(void *user, kn_log_level level, const char *msg);

typedef struct kn_session_options {
    kn_device_kind device;
    int device_index;       /* cuda:N */
    int num_threads;        /* 0: one per core */
    kn_precision precision; /* CUDA sessions: FP16/BF16 run float32 compute in that type (GEMMs,
                             * normalisations, softmax and reductions accumulate in float32;
                             * weights converted once per precision; outputs in the model's declared
                             * types), TF32 lets float32 GEMMs use TF32 tensor cores. CPU sessions
                             * compute in the model's own types and refuse anything but FP32. */
    int profile;            /* 1: time every node; read with kn_session_profile */
    kn_log_fn log;          /* NULL: kn_log_stderr */
    void *log_user;
    /* > 0: sequence-length buckets. A model with input_ids and attention_mask sharing a named
     * sequence dimension runs each length L padded (ids, mask and the other inputs of that
     * dimension with zeros) to the next multiple of seq_bucket, and outputs along that dimension
     * are cut back to L: a sweep of lengths reuses one plan (and CUDA graph) per bucket, and the
     * masked padding leaves the unpadded positions' results as they were (up to summation order).
     * Ignored (every length planned as it is) for models where that is not known to be exact: no
     * such inputs, or an output dimension without a size or a name. */
    int seq_bucket;
} kn_session_options;
void kn_session_options_init(kn_session_options *opt);
const char *kn_precision_name(kn_precision p); /* "fp32", "tf32", "fp16", "bf16" */

/* A loaded model: immutable after load, shareable by many sessions. Loading always folds constants
 * and drops dead nodes; the options choose what else is done to the graph then. */
typedef struct kn_model kn_model;
typedef struct kn_model_options {
    int fuse; /* 1 (default): replace attention blocks (MatMul, Softmax, MatMul) by
                             * kiln:KnSdpa, GELU subgraphs by com.microsoft BiasGelu / Gelu / FastGelu
                             * and Add + LayerNormalization by com.microsoft SkipLayerNormalization;
                             * 0 runs the file's ops as they are */
} kn_model_options;
void kn_model_options_init(kn_model_options *opt);
/* opt may be NULL (the defaults of kn_model_options_init). */
kn_status *kn_model_load(const char *path, kn_model **out);
kn_status *kn_model_load_ex(const char *path, const kn_model_options *opt, kn_model **out);
/* The buffer is copied unless the model can keep referring to it; external data is resolved
 * relative to base_dir (may be NULL). */
kn_status *kn_model_load_buffer(const void *data, size_t size, const char *base_dir, kn_model **out);
kn_status *kn_model_load_buffer_ex(const void *data, size_t size, const char *base_dir, const kn_model_options *opt,
                                   kn_model **out);
void kn_model_free(kn_model *m);

/* A tensor passed across the API: dense, row-major. dims[i] < 0 in a declared shape means a
 * symbolic or unknown dimension; dim_names[i] then holds its name when the model gives one. */
#define KN_MAX_DIMS 8
typedef struct kn_value_info {
    const char *name;
    kn_dtype dtype;
    int ndim; /* -1: unknown rank */
    int64_t dims[KN_MAX_DIMS];
    const char *dim_names[KN_MAX_DIMS];
} kn_value_info;

typedef struct kn_session kn_session;
kn_status *kn_session_create(const kn_model *model, const kn_session_options *opt, kn_session **out);
void kn_session_free(kn_session *s);
int kn_session_input_count(const kn_session *s);
int kn_session_output_count(const kn_session *s);
kn_status *kn_session_input_info(const kn_session *s, int index, kn_value_info *info);
kn_status *kn_session_output_info(const kn_session *s, int index, kn_value_info *info);

/* A named host tensor for kn_session_run. For inputs, data points to caller memory (read only).
 * For outputs, data == NULL asks the library to allocate (free with kn_free); otherwise the caller's
 * buffer of capacity bytes is used, and its shape must match. A CPU session may compute the output
 * in that buffer during the run, so it must not be an input's buffer, except where an op reads
 * and writes one buffer by design: GroupQueryAttention's present_key/value may be the very buffer
 * of its past_key/value (ONNX Runtime GenAI's past_present_share_buffer: only the new positions
 * are written).
 * Ownership on failure: when kn_session_run returns a status, every output that came in with
 * data == NULL has data == NULL and capacity == 0 again (the library freed what it allocated), and
 * caller buffers stay the caller's, their contents unspecified. On success the caller owns each
 * allocated output (for KN_STRING outputs, each element and then the array, all with kn_free). */
typedef struct kn_named_tensor {
    const char *name;
    kn_dtype dtype;
    int ndim;
    int64_t dims[KN_MAX_DIMS];
    void *data;
    size_t capacity;
} kn_named_tensor;

/* Thread-safe: many threads may call kn_session_run on one session at once. Outputs not named
 * are not computed unless needed; pass n_outputs = 0 with outputs = NULL to skip them. An output
 * may name any value of the graph, not only a graph output (an intermediate such as the embedding
 * sum before the first LayerNormalization): the plan for that set of names keeps those values
 * alive to the end of the run. A value that a fusion replaced is an error saying so; load with
 * kn_model_options.fuse = 0 to read every value of the file's graph. */
kn_status *kn_session_run(kn_session *s, const kn_named_tensor *inputs, int n_inputs, kn_named_tensor *outputs,
                          int n_outputs);
/* Statistics of the last plan built: peak arena bytes for one run. */
size_t kn_session_peak_bytes(const kn_session *s);
/* Host bytes held by the session's cached plans for values computed ahead of the runs (shape
 * arithmetic, masks built from input shapes), summed over the plans cached now. */
size_t kn_session_plan_bytes(const kn_session *s);
/* With options.profile set: time spent per op type over all runs so far, most expensive first,
 * as text lines "op  calls  total_ms  share%" into buf (truncated to len). Returns buf. */
const char *kn_session_profile(const kn_session *s, char *buf, size_t len);
/* The session's run counter, which seeds what a run draws (training-mode Dropout masks): a
 * resumed training run sets it to the count the interrupted one had reached, so it draws the
 * same masks as a run that never stopped. */
uint64_t kn_session_run_count(const kn_session *s);
void kn_session_set_run_count(kn_session *s, uint64_t runs);
void kn_free(void *p);

/* Helpers for callers. */
const char *kn_dtype_name(kn_dtype t);
size_t kn_dtype_size(kn_dtype t); /* bytes per element in memory (sub-byte types: 1) */
const char *kn_version(void);
/* "cpu(avx2,avx512f) cuda(sm_90a)": the backends compiled in and the features this machine has. */
const char *kn_build_info(void);

#ifdef __cplusplus
}
#endif
#endif
