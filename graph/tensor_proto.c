/* ONNX TensorProto <-> kn_tensor: every typed data field, raw_data, the packed 4-bit and 2-bit
 * layouts, external data (mapped into the model, never copied when aligned), sparse tensors, and
 * the single-tensor .pb files of the ONNX test layout. Every length is checked against the dims
 * before anything is allocated, so a hostile file cannot ask for more memory than it carries. */
#include "graph/onnx_internal.h"
#include "runtime/core/dtype.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "raw_data is little-endian; kiln copies it verbatim and so needs a little-endian host"
#endif

/* How far a sparse tensor may expand: up to 16 MB freely, beyond that at most 1024 times the bytes
 * its values and indices occupy, so a tiny file cannot ask for a huge zeroed buffer. */
#define KN_SPARSE_FREE_BYTES ((size_t)16 << 20)
#define KN_SPARSE_MAX_RATIO 1024

static const char *kn_pb_name(const Onnx__TensorProto *tp) { return tp->name && tp->name[0] ? tp->name : "<unnamed>"; }

/* Bits per element as stored in TensorProto (in memory every type takes at least a byte). */
static int kn_pb_bits(kn_dtype t) {
    switch (t) {
    case KN_U4:
    case KN_I4:
    case KN_F4E2M1: return 4;
    case KN_U2:
    case KN_I2: return 2;
    default: return 8;
    }
}

static size_t kn_pb_packed_bytes(kn_dtype t, int64_t n) {
    int bits = kn_pb_bits(t);
    if (bits == 4) return (size_t)(n + 1) / 2;
    if (bits == 2) return (size_t)(n + 3) / 4;
    return (size_t)n * kn_dtype_size(t);
}

/* Low bits first, as the spec says; signed types are sign-extended into their int8 byte. */
static void kn_pb_unpack(kn_dtype t, const uint8_t *src, uint8_t *dst, int64_t n) {
    int bits = kn_pb_bits(t), per = 8 / bits;
    uint8_t mask = (uint8_t)((1u << bits) - 1);
    for (int64_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)((src[i / per] >> ((i % per) * bits)) & mask);
        if (t == KN_I4) v = (uint8_t)(int8_t)((v ^ 8) - 8);
        else if (t == KN_I2) v = (uint8_t)(int8_t)((v ^ 2) - 2);
        dst[i] = v;
    }
}

static void kn_pb_pack(kn_dtype t, const uint8_t *src, uint8_t *dst, int64_t n) {
    int bits = kn_pb_bits(t), per = 8 / bits;
    uint8_t mask = (uint8_t)((1u << bits) - 1);
    memset(dst, 0, kn_pb_packed_bytes(t, n));
    for (int64_t i = 0; i < n; i++) dst[i / per] |= (uint8_t)((src[i] & mask) << ((i % per) * bits));
}

/* Checked shape: rank within KN_MAX_DIMS, no negative dims, element count within KN_MAX_NUMEL. */
static kn_status *kn_pb_shape(const char *what, const int64_t *dims, size_t n_dims, kn_tensor *t, int64_t *numel) {
    if (n_dims > KN_MAX_DIMS)
        return kn_error(KN_ERR_UNSUPPORTED, "tensor '%s' has rank %zu (kiln supports up to %d)", what, n_dims,
                        KN_MAX_DIMS);
    int64_t n = 1;
    bool zero = false;
    for (size_t i = 0; i < n_dims; i++) {
        int64_t d = dims[i];
        if (d < 0)
            return kn_error(KN_ERR_INVALID_MODEL, "tensor '%s' has negative dimension %lld at axis %zu", what,
                            (long long)d, i);
        if (d == 0) zero = true;
        else if (!zero && n > KN_MAX_NUMEL / d)
            return kn_error(KN_ERR_INVALID_MODEL,
                            "tensor '%s' claims more than %lld elements (dimension %lld at axis %zu)", what,
                            (long long)KN_MAX_NUMEL, (long long)d, i);
        else if (!zero) n *= d;
        t->dims[i] = d;
    }
    t->ndim = (int)n_dims;
    *numel = zero ? 0 : n;
    return NULL;
}

static kn_status *kn_pb_count(const char *what, kn_dtype dt, const char *field, size_t have, size_t need) {
    if (have == need) return NULL;
    return kn_error(KN_ERR_INVALID_MODEL, "tensor '%s' (%s): %s holds %zu values but its dims need %zu", what,
                    kn_dtype_name(dt), field, have, need);
}

static kn_status *kn_pb_parse_i64(const char *what, const char *key, const char *s, int64_t *v) {
    char *end = NULL;
    errno = 0;
    long long x = s && *s >= '0' && *s <= '9' ? strtoll(s, &end, 10) : -1;
    if (x < 0 || errno || !end || *end)
        return kn_error(KN_ERR_INVALID_MODEL, "tensor '%s': external data %s '%s' is not a non-negative integer", what,
                        key, s ? s : "");
    *v = x;
    return NULL;
}

/* Relative, and no '..' component: external data may not reach outside the model's directory. */
static kn_status *kn_pb_check_location(const char *what, const char *loc) {
    if (!loc || !*loc) return kn_error(KN_ERR_INVALID_MODEL, "tensor '%s': external data has no location", what);
    if (loc[0] == '/' || loc[0] == '\\' || (loc[0] && loc[1] == ':'))
        return kn_error(
            KN_ERR_INVALID_MODEL,
            "tensor '%s': external data location '%s' is absolute; it must be relative to the model's directory", what,
            loc);
    for (const char *p = loc; *p;) {
        size_t n = strcspn(p, "/\\");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return kn_error(KN_ERR_INVALID_MODEL,
                            "tensor '%s': external data location '%s' escapes the model's directory", what, loc);
        p += n;
        if (*p) p++;
    }
    return NULL;
}

/* Maps path once per model; the mapping is private and writable so that a stray write lands in a
 * copy-on-write page instead of faulting or changing the file (MAP_NORESERVE: no swap is reserved
 * for pages that are only ever read). */
static kn_status *kn_pb_map(kn_onnx_src *src, const char *what, const char *path, const uint8_t **base, size_t *len) {
    kn_model *m = src->m;
    for (int i = 0; i < m->n_maps; i++)
        if (strcmp(src->map_paths[i], path) == 0) {
            *base = m->maps[i];
            *len = m->map_lens[i];
            return NULL;
        }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kn_error(KN_ERR_IO, "tensor '%s': cannot open external data file '%s': %s", what, path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return kn_error(KN_ERR_IO, "tensor '%s': external data '%s' is not a regular file", what, path);
    }
    size_t sz = (size_t)sb.st_size;
    void *p = NULL;
    if (sz > 0) {
        p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return kn_error(KN_ERR_IO, "tensor '%s': cannot map external data file '%s': %s", what, path, strerror(e));
        }
    }
    close(fd);
    void **maps = realloc(m->maps, sizeof(void *) * (size_t)(m->n_maps + 1));
    if (maps) m->maps = maps;
    size_t *lens = maps ? realloc(m->map_lens, sizeof(size_t) * (size_t)(m->n_maps + 1)) : NULL;
    if (lens) m->map_lens = lens;
    char **paths = lens ? realloc(src->map_paths, sizeof(char *) * (size_t)(m->n_maps + 1)) : NULL;
    if (paths) src->map_paths = paths;
    char *pc = paths ? strdup(path) : NULL;
    if (!pc) {
        if (p) munmap(p, sz);
        return KN_OOM(strlen(path));
    }
    m->maps[m->n_maps] = p;
    m->map_lens[m->n_maps] = sz;
    src->map_paths[m->n_maps] = pc;
    m->n_maps++;
    *base = p;
    *len = sz;
    return NULL;
}

void kn_onnx_src_release(kn_onnx_src *src) {
    if (src->m)
        for (int i = 0; i < src->m->n_maps && src->map_paths; i++) free(src->map_paths[i]);
    free(src->map_paths);
    src->map_paths = NULL;
}

static kn_status *kn_pb_external(kn_onnx_src *src, const Onnx__TensorProto *tp, kn_tensor *t, int64_t n) {
    const char *what = kn_pb_name(tp);
    if (t->dtype == KN_STRING)
        return kn_error(KN_ERR_INVALID_MODEL, "tensor '%s': string tensors cannot use external data", what);
    const char *loc = NULL;
    int64_t off = 0, length = -1;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = tp->external_data[i];
        if (!e->key) continue;
        if (strcmp(e->key, "location") == 0) loc = e->value;
        else if (strcmp(e->key, "offset") == 0) KN_TRY(kn_pb_parse_i64(what, "offset", e->value, &off));
        else if (strcmp(e->key, "length") == 0) KN_TRY(kn_pb_parse_i64(what, "length", e->value, &length));
    }
    KN_TRY(kn_pb_check_location(what, loc));
    if (!src->base_dir)
        return kn_error(
            KN_ERR_INVALID_ARGUMENT,
            "tensor '%s': external data '%s' needs the model's directory (load from a file, or pass base_dir)", what,
            loc);
    size_t need = kn_pb_packed_bytes(t->dtype, n);
    if (length >= 0 && (uint64_t)length != need)
        return kn_error(KN_ERR_INVALID_MODEL,
                        "tensor '%s' (%s): external data length %lld disagrees with its dims (%zu bytes)", what,
                        kn_dtype_name(t->dtype), (long long)length, need);
    size_t pl = strlen(src->base_dir) + strlen(loc) + 2;
    char *path = malloc(pl);
    if (!path) return KN_OOM(pl);
    snprintf(path, pl, "%s/%s", src->base_dir, loc);

    kn_status *st = NULL;
    const uint8_t *base = NULL;
    size_t flen = 0;
    uint8_t *copy = NULL;
    if (src->m) {
        st = kn_pb_map(src, what, path, &base, &flen);
    } else {
        /* No model to own a mapping (a lone .pb file): read just the bytes needed. */
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            st = kn_error(KN_ERR_IO, "tensor '%s': cannot open external data file '%s'", what, path);
        } else {
            flen = (size_t)sb.st_size;
            if ((uint64_t)off <= flen && need <= flen - (size_t)off) {
                copy = malloc(need ? need : 1);
                if (!copy) st = KN_OOM(need);
                else if (need && pread(fd, copy, need, off) != (ssize_t)need)
                    st = kn_error(KN_ERR_IO, "tensor '%s': short read from external data file '%s'", what, path);
            }
        }
        if (fd >= 0) close(fd);
    }
    if (!st && ((uint64_t)off > flen || need > flen - (size_t)off))
        st = kn_error(KN_ERR_INVALID_MODEL,
                      "tensor '%s': external data at offset %lld (+%zu bytes) extends past the end of '%s' (%zu bytes)",
                      what, (long long)off, need, path, flen);
    free(path);
    if (st) {
        free(copy);
        return st;
    }
    const uint8_t *p = copy ? copy : base ? base + off : NULL;
    size_t esz = kn_dtype_size(t->dtype);
    if (kn_pb_bits(t->dtype) < 8) {
        uint8_t *d = malloc(n ? (size_t)n : 1);
        if (!d) {
            free(copy);
            return KN_OOM(n);
        }
        kn_pb_unpack(t->dtype, p, d, n);
        free(copy);
        t->data = d;
        t->owns = true;
    } else if (copy) {
        t->data = copy;
        t->owns = true;
    } else if (need > 0 && ((uintptr_t)p % (esz < 16 ? esz : 16)) == 0) {
        t->data = (void *)p; /* points into the model's mapping: no copy */
        t->owns = false;
    } else {
        /* Misaligned (or empty) data is copied so that kernels may assume natural alignment. */
        void *d = malloc(need ? need : 1);
        if (!d) return KN_OOM(need);
        if (need) memcpy(d, p, need);
        t->data = d;
        t->owns = true;
    }
    return NULL;
}

/* Typed-field storage: one field per dtype, as onnx.proto assigns them. */
static kn_status *kn_pb_typed(const Onnx__TensorProto *tp, kn_tensor *t, int64_t n) {
    const char *what = kn_pb_name(tp);
    kn_dtype dt = t->dtype;
    size_t esz = kn_dtype_size(dt), un = (size_t)n;
    size_t bytes = un * esz;
    if (dt == KN_STRING) {
        KN_TRY(kn_pb_count(what, dt, "string_data", tp->n_string_data, un));
        char **s = calloc(un ? un : 1, sizeof(char *));
        if (!s) return KN_OOM(un * sizeof(char *));
        t->data = s;
        t->owns = true;
        for (size_t i = 0; i < un; i++) {
            const ProtobufCBinaryData *b = &tp->string_data[i];
            if (!(s[i] = malloc(b->len + 1))) return KN_OOM(b->len + 1); /* caller frees t */
            if (b->len) memcpy(s[i], b->data, b->len);
            s[i][b->len] = 0;
        }
        return NULL;
    }
    /* The count check comes before the allocation: dims alone must not decide how much to allocate. */
    const char *field = "int32_data";
    size_t have = tp->n_int32_data, need = un;
    switch (dt) {
    case KN_F32:
    case KN_C64:
        field = "float_data";
        have = tp->n_float_data;
        need = dt == KN_C64 ? 2 * un : un;
        break;
    case KN_F64:
    case KN_C128:
        field = "double_data";
        have = tp->n_double_data;
        need = dt == KN_C128 ? 2 * un : un;
        break;
    case KN_I64:
        field = "int64_data";
        have = tp->n_int64_data;
        break;
    case KN_U64:
    case KN_U32:
        field = "uint64_data";
        have = tp->n_uint64_data;
        break;
    case KN_U4:
    case KN_I4:
    case KN_F4E2M1:
    case KN_U2:
    case KN_I2:
        field = "int32_data (packed)";
        need = kn_pb_packed_bytes(dt, n);
        break;
    default: break;
    }
    KN_TRY(kn_pb_count(what, dt, field, have, need));
    uint8_t *d = malloc(bytes ? bytes : 1);
    if (!d) return KN_OOM(bytes);
    t->data = d;
    t->owns = true;
    switch (dt) {
    case KN_F32:
    case KN_C64:
        if (bytes) memcpy(d, tp->float_data, bytes);
        return NULL;
    case KN_F64:
    case KN_C128:
        if (bytes) memcpy(d, tp->double_data, bytes);
        return NULL;
    case KN_I64:
        if (bytes) memcpy(d, tp->int64_data, bytes);
        return NULL;
    case KN_U64:
        if (bytes) memcpy(d, tp->uint64_data, bytes);
        return NULL;
    case KN_U32:
        for (size_t i = 0; i < un; i++) ((uint32_t *)d)[i] = (uint32_t)tp->uint64_data[i];
        return NULL;
    case KN_I32:
        if (bytes) memcpy(d, tp->int32_data, bytes);
        return NULL;
    case KN_I16:
    case KN_U16:
    case KN_F16:
    case KN_BF16:
        for (size_t i = 0; i < un; i++) ((uint16_t *)d)[i] = (uint16_t)tp->int32_data[i];
        return NULL;
    case KN_BOOL:
        for (size_t i = 0; i < un; i++) d[i] = tp->int32_data[i] != 0;
        return NULL;
    case KN_I8:
    case KN_U8:
    case KN_F8E4M3FN:
    case KN_F8E4M3FNUZ:
    case KN_F8E5M2:
    case KN_F8E5M2FNUZ:
    case KN_F8E8M0:
        for (size_t i = 0; i < un; i++) d[i] = (uint8_t)tp->int32_data[i];
        return NULL;
    case KN_U4:
    case KN_I4:
    case KN_F4E2M1:
    case KN_U2:
    case KN_I2: {
        /* Each int32 holds one packed byte (two 4-bit or four 2-bit elements). */
        size_t pb = need;
        uint8_t *packed = malloc(pb ? pb : 1);
        if (!packed) return KN_OOM(pb);
        for (size_t i = 0; i < pb; i++) packed[i] = (uint8_t)tp->int32_data[i];
        kn_pb_unpack(dt, packed, d, n);
        free(packed);
        return NULL;
    }
    default:
        return kn_error(KN_ERR_UNSUPPORTED, "tensor '%s': data type %s cannot be stored in typed fields", what,
                        kn_dtype_name(dt));
    }
}

kn_status *kn_onnx_tensor_from_pb(kn_onnx_src *src, Onnx__TensorProto *tp, bool steal, kn_tensor **out) {
    *out = NULL;
    const char *what = kn_pb_name(tp);
    if (!tp->has_data_type || !kn_dtype_valid(tp->data_type))
        return kn_error(tp->has_data_type && tp->data_type > 0 ? KN_ERR_UNSUPPORTED : KN_ERR_INVALID_MODEL,
                        "tensor '%s': unknown or unsupported data type %d", what,
                        tp->has_data_type ? (int)tp->data_type : 0);
    if (tp->segment)
        return kn_error(KN_ERR_UNSUPPORTED,
                        "tensor '%s': segmented tensors are not supported (a SequenceProto or OptionalProto "
                        "read as a TensorProto looks like one)",
                        what);
    kn_tensor *t = calloc(1, sizeof *t);
    if (!t) return KN_OOM(sizeof *t);
    t->dtype = (kn_dtype)tp->data_type;
    t->device = KN_DEVICE_CPU;
    int64_t n = 0;
    kn_status *st = kn_pb_shape(what, tp->dims, tp->n_dims, t, &n);
    if (st) {
        free(t);
        return st;
    }
    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        st = kn_pb_external(src, tp, t, n);
    } else if (tp->has_raw_data && t->dtype != KN_STRING) {
        size_t need = kn_pb_packed_bytes(t->dtype, n);
        if (tp->raw_data.len != need) {
            st = kn_error(KN_ERR_INVALID_MODEL, "tensor '%s' (%s): raw_data holds %zu bytes but its dims need %zu",
                          what, kn_dtype_name(t->dtype), tp->raw_data.len, need);
        } else if (kn_pb_bits(t->dtype) < 8) {
            uint8_t *d = malloc(n ? (size_t)n : 1);
            if (!d) st = KN_OOM(n);
            else {
                kn_pb_unpack(t->dtype, tp->raw_data.data, d, n);
                t->data = d;
                t->owns = true;
            }
        } else if (steal && need > 0 && tp->raw_data.data) {
            /* protobuf-c allocated it with malloc: take it over instead of copying the weights. */
            t->data = tp->raw_data.data;
            t->owns = true;
            tp->raw_data.data = NULL;
            tp->raw_data.len = 0;
            tp->has_raw_data = 0;
        } else {
            void *d = malloc(need ? need : 1);
            if (!d) st = KN_OOM(need);
            else {
                if (need) memcpy(d, tp->raw_data.data, need);
                t->data = d;
                t->owns = true;
            }
        }
    } else if (tp->has_raw_data) {
        st = kn_error(KN_ERR_INVALID_MODEL, "tensor '%s': string tensors must use string_data, not raw_data", what);
    } else {
        st = kn_pb_typed(tp, t, n);
    }
    if (st) {
        kn_tensor_free(t);
        return st;
    }
    *out = t;
    return NULL;
}

kn_status *kn_onnx_sparse_from_pb(kn_onnx_src *src, Onnx__SparseTensorProto *sp, kn_tensor **out) {
    *out = NULL;
    const char *what = sp->values ? kn_pb_name(sp->values) : "<unnamed>";
    if (!sp->values || !sp->indices)
        return kn_error(KN_ERR_INVALID_MODEL, "sparse tensor '%s' lacks values or indices", what);
    kn_tensor shape = {0};
    int64_t numel = 0;
    KN_TRY(kn_pb_shape(what, sp->dims, sp->n_dims, &shape, &numel));
    kn_tensor *vals = NULL, *idx = NULL, *dense = NULL;
    kn_status *st = kn_onnx_tensor_from_pb(src, sp->values, false, &vals);
    if (!st) st = kn_onnx_tensor_from_pb(src, sp->indices, false, &idx);
    if (st) goto done;
    int64_t nnz = vals->ndim == 1 ? vals->dims[0] : -1;
    bool linear = idx->ndim == 1 && idx->dims[0] == nnz;
    bool coords = idx->ndim == 2 && idx->dims[0] == nnz && idx->dims[1] == shape.ndim;
    if (nnz < 0 || (idx->dtype != KN_I64 && idx->dtype != KN_I32) || (!linear && !coords)) {
        st = kn_error(KN_ERR_INVALID_MODEL,
                      "sparse tensor '%s': values must be 1-D and indices int64 [nnz] or [nnz, rank]", what);
        goto done;
    }
    size_t esz = kn_dtype_size(vals->dtype);
    size_t dense_bytes = (size_t)numel * esz, sparse_bytes = kn_nbytes(vals) + kn_nbytes(idx);
    if (dense_bytes > KN_SPARSE_FREE_BYTES && dense_bytes / KN_SPARSE_MAX_RATIO > sparse_bytes) {
        st = kn_error(KN_ERR_UNSUPPORTED, "sparse tensor '%s' would densify from %zu to %zu bytes", what, sparse_bytes,
                      dense_bytes);
        goto done;
    }
    st = kn_tensor_new(vals->dtype, shape.ndim, shape.dims, &dense);
    if (st) goto done;
    for (int64_t k = 0; k < nnz; k++) {
        int64_t pos = 0;
        bool ok = true;
        if (linear) {
            pos = kn_get_i64(idx, k);
            ok = pos >= 0 && pos < numel;
        } else {
            for (int r = 0; r < shape.ndim; r++) {
                int64_t c = kn_get_i64(idx, k * shape.ndim + r);
                if (c < 0 || c >= shape.dims[r]) {
                    ok = false;
                    break;
                }
                pos = pos * shape.dims[r] + c;
            }
        }
        if (!ok) {
            st = kn_error(KN_ERR_INVALID_MODEL, "sparse tensor '%s': index of element %lld is out of range", what,
                          (long long)k);
            goto done;
        }
        if (vals->dtype == KN_STRING) {
            char **d = dense->data;
            free(d[pos]);
            if (!(d[pos] = strdup(((char **)vals->data)[k]))) {
                st = KN_OOM(0);
                goto done;
            }
        } else {
            memcpy((uint8_t *)dense->data + (size_t)pos * esz, (uint8_t *)vals->data + (size_t)k * esz, esz);
        }
    }
    if (vals->dtype == KN_STRING) {
        /* Unset string elements are empty strings, not NULL pointers. */
        char **d = dense->data;
        for (int64_t i = 0; i < numel; i++)
            if (!d[i] && !(d[i] = strdup(""))) {
                st = KN_OOM(1);
                goto done;
            }
    }
done:
    kn_tensor_free(vals);
    kn_tensor_free(idx);
    if (st) kn_tensor_free(dense);
    else *out = dense;
    return st;
}

/* ---- single-tensor .pb files ---- */

static kn_status *kn_pb_read(kn_onnx_src *src, const void *buf, size_t len, kn_tensor **out, char **name) {
    *out = NULL;
    if (name) *name = NULL;
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, buf);
    if (!tp) return kn_error(KN_ERR_INVALID_MODEL, "%s: not a valid TensorProto (protobuf parse failed)", src->file);
    kn_status *st = kn_onnx_tensor_from_pb(src, tp, true, out);
    if (!st && name && !(*name = strdup(tp->name ? tp->name : ""))) {
        kn_tensor_free(*out);
        *out = NULL;
        st = KN_OOM(0);
    }
    onnx__tensor_proto__free_unpacked(tp, NULL);
    return st ? kn_error_wrap(st, "%s: ", src->file) : NULL;
}

kn_status *kn_tensor_proto_read(const void *buf, size_t len, kn_tensor **out, char **name) {
    kn_onnx_src src = {.file = "<buffer>"};
    return kn_pb_read(&src, buf, len, out, name);
}

kn_status *kn_onnx_map_file(const char *path, void **p, size_t *len, char **dir) {
    *p = NULL;
    *len = 0;
    *dir = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kn_error(KN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return kn_error(KN_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    void *m = n ? mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return kn_error(KN_ERR_IO, "%s: cannot map: %s", path, strerror(e));
    char *d = strdup(path);
    if (!d) {
        if (m) munmap(m, n);
        return KN_OOM(strlen(path));
    }
    char *slash = strrchr(d, '/');
    if (slash) *(slash == d ? slash + 1 : slash) = 0;
    else strcpy(d, ".");
    *p = m;
    *len = n;
    *dir = d;
    return NULL;
}

void kn_onnx_unmap_file(void *p, size_t len, char *dir) {
    if (p) munmap(p, len);
    free(dir);
}

kn_status *kn_tensor_proto_read_file(const char *path, kn_tensor **out, char **name) {
    *out = NULL;
    if (name) *name = NULL;
    void *p;
    size_t len;
    char *dir;
    KN_TRY(kn_onnx_map_file(path, &p, &len, &dir));
    kn_onnx_src src = {.file = path, .base_dir = dir};
    kn_status *st = kn_pb_read(&src, p ? p : "", len, out, name);
    kn_onnx_unmap_file(p, len, dir);
    return st;
}

kn_status *kn_tp_out_fill(kn_tp_out *o, const kn_tensor *t, const char *name, const char *path) {
    char desc[KN_DESC_LEN];
    memset(o, 0, sizeof *o);
    KN_CHECK(t && t->kind == KN_KIND_TENSOR && t->ndim >= 0 && t->ndim <= KN_MAX_DIMS && kn_dtype_valid((int)t->dtype),
             KN_ERR_INVALID_ARGUMENT, "%s: cannot write tensor %s", path,
             t ? kn_tensor_desc(t, desc, sizeof desc) : "-");
    KN_CHECK(t->device == KN_DEVICE_CPU, KN_ERR_INVALID_ARGUMENT, "%s: tensor must be on the host to be written", path);
    int64_t n = kn_numel(t);
    KN_CHECK(n >= 0 && n <= KN_MAX_NUMEL && (n == 0 || t->data), KN_ERR_INVALID_ARGUMENT,
             "%s: tensor %s has no data or an unknown shape", path, kn_tensor_desc(t, desc, sizeof desc));
    Onnx__TensorProto init = ONNX__TENSOR_PROTO__INIT;
    o->tp = init;
    for (int i = 0; i < t->ndim; i++) o->dims[i] = t->dims[i];
    o->tp.n_dims = (size_t)t->ndim;
    o->tp.dims = o->dims;
    o->tp.has_data_type = 1;
    o->tp.data_type = (int32_t)t->dtype;
    o->tp.name = (char *)(name ? name : "");
    if (t->dtype == KN_STRING) {
        o->strs = calloc(n ? (size_t)n : 1, sizeof *o->strs);
        if (!o->strs) return KN_OOM(n);
        char **s = t->data;
        for (int64_t i = 0; i < n; i++) {
            o->strs[i].data = (uint8_t *)(s[i] ? s[i] : "");
            o->strs[i].len = strlen((const char *)o->strs[i].data);
        }
        o->tp.n_string_data = (size_t)n;
        o->tp.string_data = o->strs;
    } else {
        o->tp.has_raw_data = 1;
        o->tp.raw_data.len = kn_pb_packed_bytes(t->dtype, n);
        if (kn_pb_bits(t->dtype) < 8) {
            o->packed = malloc(o->tp.raw_data.len ? o->tp.raw_data.len : 1);
            if (!o->packed) return KN_OOM(o->tp.raw_data.len);
            kn_pb_pack(t->dtype, t->data, o->packed, n);
            o->tp.raw_data.data = o->packed;
        } else {
            o->tp.raw_data.data = t->data;
        }
    }
    return NULL;
}

void kn_tp_out_release(kn_tp_out *o) {
    free(o->packed);
    free(o->strs);
    o->packed = NULL;
    o->strs = NULL;
}

kn_status *kn_pb_write_bytes(const char *path, const uint8_t *buf, size_t sz) {
    FILE *f = fopen(path, "wb");
    if (!f) return kn_error(KN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    kn_status *st = NULL;
    if (fwrite(buf, 1, sz, f) != sz) st = kn_error(KN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (fclose(f) != 0 && !st) st = kn_error(KN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return st;
}

kn_status *kn_tensor_proto_write_file(const char *path, const kn_tensor *t, const char *name) {
    kn_tp_out o;
    kn_status *st = kn_tp_out_fill(&o, t, name, path);
    if (st) {
        kn_tp_out_release(&o);
        return st;
    }
    size_t sz = onnx__tensor_proto__get_packed_size(&o.tp);
    uint8_t *buf = malloc(sz ? sz : 1);
    if (!buf) st = KN_OOM(sz);
    else {
        onnx__tensor_proto__pack(&o.tp, buf);
        st = kn_pb_write_bytes(path, buf, sz);
    }
    free(buf);
    kn_tp_out_release(&o);
    return st;
}
