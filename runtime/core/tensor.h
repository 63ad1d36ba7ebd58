/* The one tensor struct of the runtime: dtype, shape, data pointer, device. Always dense and
 * row-major; views are made by copying, which keeps every kernel's indexing simple. Sub-byte
 * types (int4, uint4, float4, int2, uint2) hold one element per byte in memory and are packed
 * only in TensorProto files. String tensors hold char* elements, each malloc'd.
 * The same struct carries the two non-tensor values of ONNX: a sequence (kind SEQUENCE, data a
 * kn_seq, dtype its element type) and an empty optional (kind NONE, no data). An optional that
 * holds a value is simply that value. A map (kind MAP, data a kn_map, dtype its value type) is the
 * dictionary of the ai.onnx.ml ops: two 1-D tensors of one length, keys and values. */
#ifndef KN_TENSOR_H
#define KN_TENSOR_H
#include "kiln.h"
#include "runtime/core/status.h"
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

typedef enum kn_tensor_kind {
    KN_KIND_TENSOR = 0,
    KN_KIND_SEQUENCE = 1,
    KN_KIND_NONE = 2,
    KN_KIND_MAP = 3
} kn_tensor_kind;

typedef struct kn_tensor {
    kn_dtype dtype;
    int ndim;                  /* -1: rank unknown (static inference only) */
    int64_t dims[KN_MAX_DIMS]; /* -1: dimension unknown (static inference only) */
    void *data;                /* NULL: not materialised */
    kn_device_kind device;
    bool owns; /* data (and string elements) are freed with the tensor */
    kn_tensor_kind kind;
} kn_tensor;

/* A sequence value: items owned by the sequence. */
typedef struct kn_seq {
    int64_t n, cap;
    struct kn_tensor **items;
} kn_seq;
/* Make t an empty owned sequence of element type dtype. */
kn_status *kn_seq_init(kn_tensor *t, kn_dtype dtype);
/* Insert item (ownership taken) at position pos (pos == n appends). */
kn_status *kn_seq_insert(kn_tensor *seq, int64_t pos, kn_tensor *item);

/* A map value: entry i is keys[i] -> values[i]. keys hold an integer type or string and are
 * unique; values are scalars of the map's value type. Both are owned, host, 1-D of length n. */
typedef struct kn_map {
    struct kn_tensor keys, values;
} kn_map;
/* Make t an owned map of n entries (keys and values allocated, zeroed; strings NULL). */
kn_status *kn_map_init(kn_tensor *t, kn_dtype key_dtype, kn_dtype value_dtype, int64_t n);

int64_t kn_numel(const kn_tensor *t); /* -1 if any dim unknown */
size_t kn_nbytes(const kn_tensor *t); /* numel * element size */
bool kn_shape_known(const kn_tensor *t);
bool kn_same_shape(const kn_tensor *a, const kn_tensor *b);
void kn_tensor_set_shape(kn_tensor *t, int ndim, const int64_t *dims);
/* Host tensor with its own zeroed storage; guards against absurd sizes (returns an error). */
kn_status *kn_tensor_new(kn_dtype dtype, int ndim, const int64_t *dims, kn_tensor **out);
kn_status *kn_tensor_alloc_data(kn_tensor *t);                   /* allocate t->data for its shape, owned */
void kn_tensor_free(kn_tensor *t);                               /* frees data if owned, then t */
void kn_tensor_release(kn_tensor *t);                            /* frees owned data only (t is embedded) */
kn_status *kn_tensor_clone(const kn_tensor *t, kn_tensor **out); /* deep host copy */
/* "float32[2,3,?]" into buf; returns buf. */
const char *kn_tensor_desc(const kn_tensor *t, char *buf, size_t n);
#define KN_DESC_LEN 128

/* Element read/write through double / int64 for generic reference code (slow, any dtype). */
double kn_get_f64(const kn_tensor *t, int64_t i);
int64_t kn_get_i64(const kn_tensor *t, int64_t i);
void kn_set_f64(kn_tensor *t, int64_t i, double v);
void kn_set_i64(kn_tensor *t, int64_t i, int64_t v);

/* Largest total element count any tensor may have: bad models claiming 10^12 elements are
 * refused before allocation. */
#define KN_MAX_NUMEL ((int64_t)1 << 34)

#endif
