/* libFuzzer harness for the ONNX loader: any byte string must load or fail with a status, never
 * crash, hang, leak or allocate beyond what the input justifies. External data is refused (no
 * base directory), so the fuzzer cannot make the loader read files. Build: tests/fuzz/README.md. */
#include "graph/model.h"
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct kn_model *m = NULL;
    kn_status *st = kn_onnx_load_buffer(data, size, NULL, &m);
    if (st) kn_status_free(st);
    else kn_model_release(m);
    /* The same bytes as a lone TensorProto exercise the tensor decoder without a graph around it. */
    kn_tensor *t = NULL;
    st = kn_tensor_proto_read(data, size, &t, NULL);
    if (st) kn_status_free(st);
    else kn_tensor_free(t);
    return 0;
}
