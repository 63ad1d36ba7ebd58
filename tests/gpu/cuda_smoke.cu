// GPU smoke test: a kernel launched through the CUDA runtime this build links, checked element by
// element against the CPU. Exit 77 (ctest's skip code) with "skipped: no CUDA device" where no
// device is present, as on CI machines.
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

__global__ void axpy_f32_kernel(float *y, const float *x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

int main(void) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    const int n = 1 << 20;
    float *x = (float *)malloc(n * sizeof(float)), *y = (float *)malloc(n * sizeof(float)),
          *out = (float *)malloc(n * sizeof(float));
    for (int i = 0; i < n; i++) {
        x[i] = (float)(i % 1000) * 0.001f;
        y[i] = (float)(i % 7);
    }
    float *dx, *dy;
    if (cudaMalloc(&dx, n * sizeof(float)) != cudaSuccess || cudaMalloc(&dy, n * sizeof(float)) != cudaSuccess) {
        printf("FAIL: cudaMalloc\n");
        return 1;
    }
    cudaMemcpy(dx, x, n * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(dy, y, n * sizeof(float), cudaMemcpyHostToDevice);
    axpy_f32_kernel<<<(n + 255) / 256, 256>>>(dy, dx, 2.5f, n);
    cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        printf("FAIL: kernel: %s\n", cudaGetErrorString(e));
        return 1;
    }
    cudaMemcpy(out, dy, n * sizeof(float), cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(out[i] - (2.5f * x[i] + y[i])) > 1e-6f * fabsf(out[i]) + 1e-6f) bad++;
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    printf("%s (sm_%d%d): %d of %d elements differ from the CPU\n", p.name, p.major, p.minor, bad, n);
    cudaFree(dx);
    cudaFree(dy);
    free(x);
    free(y);
    free(out);
    return bad ? 1 : 0;
}
