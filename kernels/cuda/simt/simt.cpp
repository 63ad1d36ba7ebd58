// The SIMT interpreter's engine: runs a kernel grid on the calling OS thread, one block at a time
// in a seeded shuffled order, each CUDA thread of the block a cooperative fiber with its own stack
// (64 KiB, pooled and reused: a thread that never waits hands its stack to the next one). Fibers
// switch only at barriers and warp collectives, which are checked rendezvous:
//   - __syncthreads completes when every thread of the block arrived at the same call site;
//     threads that exited or wait elsewhere make it a deadlock, reported as such;
//   - a warp collective completes when every lane named in its mask arrived with the same mask
//     and operation; a lane naming a mask without itself, an exited lane, or lanes that disagree
//     are reported;
//   - shared memory is bounds-checked per declared array, and with KILN_SIM_RACECHECK=1 every
//     byte remembers its last writer and readers since the last barrier, so that a read and a
//     write (or two writes) by different threads with no barrier between them are reported.
// A failure ends the launch (no further fiber of it runs) and is returned as a cudaError_t whose
// string names the kernel, the block, the thread and the problem.
//
// State: per OS thread, the running launch (cur_launch) and CUDA thread (cur_thread), and the
// stack pool; KILN_SIM_SEED and KILN_SIM_RACECHECK are read at each launch.
#include "simt.h"
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <deque>
#include <memory>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <vector>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define KN_SIM_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define KN_SIM_TSAN 1
#endif

extern "C" void kn_sim_set_launch_error(cudaError_t e, const char *msg); // runtime.cpp
extern "C" int kn_sim_max_dynamic_smem(const void *fn);                  // runtime.cpp

namespace kn_sim {

thread_local thread *cur_thread;

#if defined(KN_SIM_ASAN)
static const size_t STACK_BYTES = 256 << 10; // ASan's redzones make frames several times larger
#else
static const size_t STACK_BYTES = 64 << 10;
#endif
static const size_t SMEM_STATIC_MAX = 48 << 10; // per block, as on the hardware
static const size_t SMEM_TOTAL_MAX = 227 << 10; // sm_90 opt-in maximum

// ---- fibers ----
#if defined(__x86_64__)
extern "C" void kn_sim_switch(void **save_sp, void *to_sp);
asm(".text\n"
    ".globl kn_sim_switch\n"
    ".hidden kn_sim_switch\n"
    ".type kn_sim_switch,@function\n"
    "kn_sim_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size kn_sim_switch,.-kn_sim_switch\n");
#endif

struct stack_mem {
    unsigned char *lo; // usable range [lo, lo + STACK_BYTES); a guard page sits below lo
    bool abandoned;    // last used by a fiber that never finished (a failed launch)
};

// Pool per OS thread: stacks are mapped once and reused for the life of the thread.
struct stack_pool {
    std::vector<stack_mem> free_list;
    ~stack_pool() {
        long pg = sysconf(_SC_PAGESIZE);
        for (auto &s : free_list) munmap(s.lo - pg, STACK_BYTES + (size_t)pg);
    }
    stack_mem get() {
        if (!free_list.empty()) {
            stack_mem s = free_list.back();
            free_list.pop_back();
            return s;
        }
        long pg = sysconf(_SC_PAGESIZE);
        void *p = mmap(NULL, STACK_BYTES + (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
                       -1, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "kiln SIMT interpreter: cannot map a fiber stack\n");
            abort();
        }
        mprotect(p, (size_t)pg, PROT_NONE); // overflow faults instead of corrupting a neighbour
        return stack_mem{(unsigned char *)p + pg, false};
    }
    void put(stack_mem s) { free_list.push_back(s); }
};
static thread_local stack_pool pool;

enum { T_NEW, T_READY, T_WAIT_BAR, T_WAIT_WARP, T_DONE };

struct sim_thread : thread {
#if defined(__x86_64__)
    void *sp;
#else
    ucontext_t uc;
#endif
    stack_mem stack;
    bool has_stack;
#if defined(KN_SIM_TSAN)
    void *tsan_fiber; // ThreadSanitizer's view of this fiber
#endif
    int state;
    const char *bar_file;
    int bar_line, bar_pred, bar_kind, bar_result;
    // warp collective in progress
    int w_kind, w_arg, w_width, *w_flag;
    unsigned w_mask;
    uint64_t w_v, w_result;
    void *w_p;
};

struct wgroup {
    unsigned mask, arrived;
    int kind;
};

struct shadow { // racecheck, per shared byte
    int32_t w_tid, r_tid;
    uint32_t w_ep, r_ep, w_wep, r_wep;
    uint32_t a_ep; // last atomic access: initializes, never races with another atomic
};

struct block {
    uint3 bid;
    int n;
    std::vector<sim_thread> th;
    int done, n_bar, bar_mixed;
    const char *bar_file;
    int bar_line;
    const char *bar_file2;
    int bar_line2;
    uint32_t epoch, first_epoch;         // first_epoch: the block's start (older shadow entries are other blocks')
    std::vector<std::vector<wgroup>> wg; // per warp
    std::vector<uint32_t> wep;           // per warp: collectives completed
};

struct launch_state {
    const char *name;
    dim3 grid, bdim;
    size_t smem_dyn, smem_static, smem_max;
    thread_entry entry;
    void *args;
    block *blk;
    bool failed;
    std::string msg;
    unsigned seed;
    bool racecheck;
    std::vector<unsigned char> arena;
    std::vector<shadow> sh;
    size_t arena_used;
    std::deque<region> regions;
    std::vector<const void *> keys;
    region dyn;
#if defined(__x86_64__)
    void *sched_sp;
#else
    ucontext_t sched_uc;
#endif
#if defined(KN_SIM_ASAN)
    const void *sched_bottom;
    size_t sched_size;
#endif
#if defined(KN_SIM_TSAN)
    void *tsan_sched;
#endif
};
static thread_local launch_state *cur_launch;

static const char *const kind_names[W_KIND_COUNT] = {
    "__syncwarp",        "__shfl_sync",       "__shfl_up_sync",    "__shfl_down_sync",   "__shfl_xor_sync",
    "__ballot_sync",     "__any_sync",        "__all_sync",        "__match_any_sync",   "__match_all_sync",
    "__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync", "__reduce_min_sync",  "__reduce_max_sync",
    "__reduce_and_sync", "__reduce_or_sync",  "__reduce_xor_sync", "mma.m16n8k16 (f16)", "mma.m16n8k16 (bf16)",
    "ldmatrix"};

// ---- switching ----
static void to_scheduler(sim_thread *t) {
    launch_state *L = cur_launch;
#if defined(KN_SIM_ASAN)
    void *fake = NULL;
    __sanitizer_start_switch_fiber(t->state == T_DONE || L->failed ? NULL : &fake, L->sched_bottom, L->sched_size);
#endif
#if defined(KN_SIM_TSAN)
    __tsan_switch_to_fiber(L->tsan_sched, 0);
#endif
#if defined(__x86_64__)
    kn_sim_switch(&t->sp, L->sched_sp);
#else
    swapcontext(&t->uc, &L->sched_uc);
#endif
#if defined(KN_SIM_ASAN)
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

static void fiber_main() {
#if defined(KN_SIM_ASAN)
    __sanitizer_finish_switch_fiber(NULL, &cur_launch->sched_bottom, &cur_launch->sched_size);
#endif
    sim_thread *t = (sim_thread *)cur_thread;
    cur_launch->entry(cur_launch->args);
    // exit: lanes waiting for this one in a collective can never complete
    block *b = t->blk;
    t->state = T_DONE;
    b->done++;
    for (auto &g : b->wg[t->warp])
        if (g.mask >> t->lane & 1)
            fail("thread exits while lanes 0x%08x of its warp wait for it in %s (mask 0x%08x)", g.arrived,
                 kind_names[g.kind], g.mask);
    if (b->n_bar && b->done + b->n_bar == b->n)
        fail("__syncthreads at %s:%d is never reached by %d thread(s) that exited (%d waiting)", b->bar_file,
             b->bar_line, b->done, b->n_bar);
    to_scheduler(t);
    abort(); // never resumed
}

#if !defined(__x86_64__)
static void fiber_main_uc() { fiber_main(); }
#endif

static void resume(launch_state *L, sim_thread *t) {
    cur_thread = t;
    if (t->state == T_NEW) {
        t->stack = pool.get();
        t->has_stack = true;
#if defined(KN_SIM_ASAN)
        // an abandoned fiber's frames never returned, so their redzones are still poisoned
        if (t->stack.abandoned) __asan_unpoison_memory_region(t->stack.lo, STACK_BYTES);
#endif
        t->stack.abandoned = false;
#if defined(__x86_64__)
        uintptr_t top = ((uintptr_t)t->stack.lo + STACK_BYTES) & ~(uintptr_t)15;
        void **sp = (void **)(top - 8 * sizeof(void *));
        for (int i = 0; i < 6; i++) sp[i] = NULL;
        sp[6] = (void *)&fiber_main;
        sp[7] = NULL;
        t->sp = sp;
#else
        getcontext(&t->uc);
        t->uc.uc_stack.ss_sp = t->stack.lo;
        t->uc.uc_stack.ss_size = STACK_BYTES;
        t->uc.uc_link = NULL;
        makecontext(&t->uc, fiber_main_uc, 0);
#endif
    }
    t->state = T_READY;
#if defined(KN_SIM_ASAN)
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, t->stack.lo, STACK_BYTES);
#endif
#if defined(KN_SIM_TSAN)
    if (!t->tsan_fiber) t->tsan_fiber = __tsan_create_fiber(0);
    __tsan_switch_to_fiber(t->tsan_fiber, 0);
#endif
#if defined(__x86_64__)
    kn_sim_switch(&L->sched_sp, t->sp);
#else
    swapcontext(&L->sched_uc, &t->uc);
#endif
#if defined(KN_SIM_ASAN)
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
    cur_thread = NULL;
}

// ---- failures ----
void fail(const char *fmt, ...) {
    launch_state *L = cur_launch;
    sim_thread *t = (sim_thread *)cur_thread;
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (!L || !t) {
        fprintf(stderr, "kiln SIMT interpreter: %s (outside a kernel)\n", buf);
        abort();
    }
    if (!L->failed) {
        char head[512];
        snprintf(head, sizeof head, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u): ", L->name, t->bid.x, t->bid.y,
                 t->bid.z, t->tid.x, t->tid.y, t->tid.z);
        L->msg = std::string(head) + buf;
        L->failed = true;
    }
    to_scheduler(t);
    abort();
}

// ---- barriers ----
static void bar_wait(sim_thread *t, const char *file, int line, int pred, int kind) {
    block *b = t->blk;
    t->bar_file = file;
    t->bar_line = line;
    t->bar_pred = pred;
    t->bar_kind = kind;
    for (auto &g : b->wg[t->warp])
        if (g.mask >> t->lane & 1)
            fail("__syncthreads at %s:%d while lanes 0x%08x of its warp wait for this one in %s (mask 0x%08x)", file,
                 line, g.arrived, kind_names[g.kind], g.mask);
    if (b->n_bar == 0) {
        b->bar_file = file;
        b->bar_line = line;
        b->bar_mixed = 0;
    } else if ((b->bar_line != line || strcmp(b->bar_file, file) != 0) && !b->bar_mixed) {
        b->bar_mixed = 1;
        b->bar_file2 = file;
        b->bar_line2 = line;
    }
    b->n_bar++;
    if (b->done && b->done + b->n_bar == b->n)
        fail("__syncthreads at %s:%d is never reached by %d thread(s) that exited (%d waiting)", file, line, b->done,
             b->n_bar);
    if (b->n_bar == b->n) {
        if (b->bar_mixed)
            fail("threads wait at different __syncthreads (%s:%d and %s:%d): a deadlock on the GPU", b->bar_file,
                 b->bar_line, b->bar_file2, b->bar_line2);
        int cnt = 0, all = 1, any = 0;
        for (auto &o : b->th) {
            cnt += o.bar_pred;
            all &= o.bar_pred;
            any |= o.bar_pred;
        }
        for (auto &o : b->th) {
            o.bar_result = o.bar_kind == 0 ? cnt : o.bar_kind == 1 ? all : any;
            if (&o != t) o.state = T_READY;
        }
        b->n_bar = 0;
        b->epoch++;
        return;
    }
    t->state = T_WAIT_BAR;
    to_scheduler(t);
}

void syncthreads(const char *file, int line) { bar_wait((sim_thread *)cur_thread, file, line, 0, 0); }
int syncthreads_count(int pred, int kind, const char *file, int line) {
    sim_thread *t = (sim_thread *)cur_thread;
    bar_wait(t, file, line, pred, kind);
    return t->bar_result;
}

// ---- warp collectives ----
static float h2f(uint16_t h) { return kn_sim_h2f(h); }
static float bf2f(uint16_t h) { return kn_sim_bf2f(h); }

static void mma_complete(block *b, int base, bool bf16) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const mma_lane *m = (const mma_lane *)b->th[base + l].w_p;
        int g = l >> 2, t = l & 3;
        for (int j = 0; j < 8; j++) { // a: 4 registers of 2 halves
            uint32_t reg = m->a[j >> 1];
            uint16_t h = (uint16_t)(j & 1 ? reg >> 16 : reg & 0xffffu);
            int r = g + ((j >> 1) & 1) * 8, c = 2 * t + (j & 1) + (j >> 2) * 8;
            A[r][c] = bf16 ? bf2f(h) : h2f(h);
        }
        for (int j = 0; j < 4; j++) {
            uint32_t reg = m->b[j >> 1];
            uint16_t h = (uint16_t)(j & 1 ? reg >> 16 : reg & 0xffffu);
            B[2 * t + (j & 1) + (j >> 1) * 8][g] = bf16 ? bf2f(h) : h2f(h);
        }
        for (int j = 0; j < 4; j++) C[g + (j >> 1) * 8][2 * t + (j & 1)] = m->c[j];
    }
    for (int l = 0; l < 32; l++) {
        const mma_lane *m = (const mma_lane *)b->th[base + l].w_p;
        int g = l >> 2, t = l & 3;
        for (int j = 0; j < 4; j++) {
            int r = g + (j >> 1) * 8, c = 2 * t + (j & 1);
            double s = C[r][c];
            for (int k = 0; k < 16; k++) s += (double)A[r][k] * (double)B[k][c];
            m->d[j] = (float)s;
        }
    }
}

static void ldsm_complete(block *b, int base) {
    const ldsm_lane *l0 = (const ldsm_lane *)b->th[base].w_p;
    for (int l = 0; l < 32; l++) {
        const ldsm_lane *m = (const ldsm_lane *)b->th[base + l].w_p;
        if (m->n != l0->n || m->trans != l0->trans) {
            cur_thread = &b->th[base + l];
            fail("ldmatrix: lanes disagree on the shape (.x%d%s vs .x%d%s)", m->n, m->trans ? ".trans" : "", l0->n,
                 l0->trans ? ".trans" : "");
        }
    }
    for (int l = 0; l < 32; l++) {
        const ldsm_lane *m = (const ldsm_lane *)b->th[base + l].w_p;
        for (int i = 0; i < m->n; i++) {
            uint16_t e[2];
            for (int j = 0; j < 2; j++) {
                int row = m->trans ? 2 * (l & 3) + j : l >> 2, col = m->trans ? l >> 2 : 2 * (l & 3) + j;
                const unsigned char *rp = ((const ldsm_lane *)b->th[base + 8 * i + row].w_p)->row;
                memcpy(&e[j], rp + 2 * col, 2);
            }
            m->r[i] = (uint32_t)e[0] | (uint32_t)e[1] << 16;
        }
    }
}

static int shfl_src(int kind, int lane, int arg, int width) {
    int seg = lane & ~(width - 1);
    switch (kind) {
    case W_SHFL: return seg + (arg & (width - 1));
    case W_SHFL_UP: return (lane & (width - 1)) < arg ? lane : lane - arg;
    case W_SHFL_DOWN: return (lane & (width - 1)) + arg >= width ? lane : lane + arg;
    default: {
        int s = lane ^ arg;
        return s >= seg + width ? lane : s;
    }
    }
}

static void complete(block *b, sim_thread *me, const wgroup &g) {
    int base = me->warp * 32;
    auto lane = [&](int l) -> sim_thread & { return b->th[base + l]; };
    switch (g.kind) {
    case W_MMA_F16:
    case W_MMA_BF16: mma_complete(b, base, g.kind == W_MMA_BF16); break;
    case W_LDSM: ldsm_complete(b, base); break;
    case W_SYNC: break;
    case W_SHFL:
    case W_SHFL_UP:
    case W_SHFL_DOWN:
    case W_SHFL_XOR:
        for (int l = 0; l < 32; l++) {
            if (!(g.mask >> l & 1)) continue;
            sim_thread &t = lane(l);
            int s = shfl_src(g.kind, l, t.w_arg, t.w_width);
            if (s < 0 || s > 31 || !(g.mask >> s & 1)) {
                cur_thread = &t;
                fail("%s reads lane %d, which is not in the mask 0x%08x (its value is undefined)", kind_names[g.kind],
                     s, g.mask);
            }
            t.w_result = lane(s).w_v;
        }
        break;
    default: {
        uint64_t ballot = 0, add = 0, band = ~0ull, bor = 0, bxor = 0;
        int32_t smin = INT32_MAX, smax = INT32_MIN;
        uint32_t umin = UINT32_MAX, umax = 0;
        for (int l = 0; l < 32; l++) {
            if (!(g.mask >> l & 1)) continue;
            uint64_t v = lane(l).w_v;
            if (v) ballot |= 1ull << l;
            add += (uint32_t)v;
            band &= v;
            bor |= v;
            bxor ^= v;
            if ((int32_t)v < smin) smin = (int32_t)v;
            if ((int32_t)v > smax) smax = (int32_t)v;
            if ((uint32_t)v < umin) umin = (uint32_t)v;
            if ((uint32_t)v > umax) umax = (uint32_t)v;
        }
        for (int l = 0; l < 32; l++) {
            if (!(g.mask >> l & 1)) continue;
            sim_thread &t = lane(l);
            uint64_t r = 0;
            switch (g.kind) {
            case W_BALLOT: r = ballot; break;
            case W_ANY: r = ballot != 0; break;
            case W_ALL: r = ballot == g.mask; break;
            case W_MATCH_ANY:
            case W_MATCH_ALL:
                for (int k = 0; k < 32; k++)
                    if ((g.mask >> k & 1) && lane(k).w_v == t.w_v) r |= 1ull << k;
                if (g.kind == W_MATCH_ALL) {
                    bool all = r == g.mask;
                    if (t.w_flag) *t.w_flag = all;
                    r = all ? g.mask : 0;
                }
                break;
            case W_REDUCE_ADD: r = (uint32_t)add; break;
            case W_REDUCE_MIN: r = (uint32_t)smin; break;
            case W_REDUCE_MAX: r = (uint32_t)smax; break;
            case W_REDUCE_UMIN: r = umin; break;
            case W_REDUCE_UMAX: r = umax; break;
            case W_REDUCE_AND: r = (uint32_t)band; break;
            case W_REDUCE_OR: r = (uint32_t)bor; break;
            case W_REDUCE_XOR: r = (uint32_t)bxor; break;
            }
            t.w_result = r;
        }
    }
    }
    cur_thread = me;
}

uint64_t warp_collective(int kind, unsigned mask, uint64_t v, int arg, int width, void *p, int *flag) {
    sim_thread *t = (sim_thread *)cur_thread;
    block *b = t->blk;
    const char *nm = kind_names[kind];
    if (!(mask >> t->lane & 1)) fail("%s with mask 0x%08x, which does not name the calling lane %d", nm, mask, t->lane);
    if (width < 1 || width > 32 || (width & (width - 1)))
        fail("%s with width %d (must be a power of 2 up to 32)", nm, width);
    int base = t->warp * 32;
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        if (base + l >= b->n)
            fail("%s with mask 0x%08x names lane %d, which does not exist (block of %d threads)", nm, mask, l, b->n);
        if (b->th[base + l].state == T_DONE) fail("%s with mask 0x%08x names lane %d, which has exited", nm, mask, l);
    }
    t->w_kind = kind;
    t->w_mask = mask;
    t->w_v = v;
    t->w_arg = arg;
    t->w_width = width;
    t->w_p = p;
    t->w_flag = flag;
    // join the pending collective of this kind and mask that waits for this lane; lanes of one
    // warp may be at different collectives for a while (independent thread scheduling), so a
    // disagreement only shows once nothing can move (see run_block)
    auto &groups = b->wg[t->warp];
    wgroup *g = NULL;
    for (auto &o : groups)
        if (o.kind == kind && o.mask == mask && !(o.arrived >> t->lane & 1)) {
            g = &o;
            break;
        }
    if (!g) {
        groups.push_back(wgroup{mask, 0, kind});
        g = &groups.back();
    }
    g->arrived |= 1u << t->lane;
    if (g->arrived == g->mask) {
        wgroup done = *g;
        groups.erase(groups.begin() + (g - groups.data()));
        complete(b, t, done);
        for (int l = 0; l < 32; l++)
            if ((done.mask >> l & 1) && l != t->lane) b->th[base + l].state = T_READY;
        b->wep[t->warp]++;
        return t->w_result;
    }
    t->state = T_WAIT_WARP;
    to_scheduler(t);
    return t->w_result;
}

unsigned int activemask_impl() {
    sim_thread *t = (sim_thread *)cur_thread;
    unsigned m = 0;
    for (int l = 0; l < 32; l++) {
        int i = t->warp * 32 + l;
        if (i < t->blk->n && t->blk->th[i].state != T_DONE) m |= 1u << l;
    }
    return m;
}

// ---- shared memory ----
region *shared_static_region(const char *name, size_t bytes, size_t align, const void *key) {
    launch_state *L = cur_launch;
    for (size_t i = 0; i < L->keys.size(); i++)
        if (L->keys[i] == key) return &L->regions[i];
    size_t off = (L->arena_used + align - 1) & ~(align - 1);
    if (L->smem_static + bytes > SMEM_STATIC_MAX || off + bytes > L->arena.size())
        fail("static shared memory over the 48 KiB limit: '%s' (%zu bytes) after %zu bytes", name, bytes,
             L->smem_static);
    L->smem_static += bytes;
    L->arena_used = off + bytes;
    if (L->racecheck && L->sh.size() < L->arena_used)
        L->sh.resize(L->arena_used, shadow{}); // indices, never pointers, are kept
    memset(&L->arena[off], 0xff, bytes);
    L->keys.push_back(key);
    L->regions.push_back(region{&L->arena[off], bytes, name, off});
    return &L->regions.back();
}

region *shared_dynamic_region(const char *name) {
    cur_launch->dyn.name = name;
    return &cur_launch->dyn;
}

static void report_race(const region *r, ptrdiff_t off, size_t n, int how, int other, bool other_wrote) {
    sim_thread *t = (sim_thread *)cur_thread;
    const sim_thread &o = t->blk->th[other < 0 ? 0 : other];
    char who[64];
    if (other >= 0) snprintf(who, sizeof who, "thread (%u,%u,%u)", o.tid.x, o.tid.y, o.tid.z);
    else snprintf(who, sizeof who, "several other threads");
    fail("shared-memory race on '%s'[%td] (byte %td): this thread %s it and %s %s it with no __syncthreads between",
         r->name, off / (ptrdiff_t)n, off, how == ACC_READ ? "reads" : "writes", who, other_wrote ? "wrote" : "read");
}

void shared_access(const region *r, ptrdiff_t off, size_t n, int how) {
    if (off < 0 || (size_t)off + n > r->bytes)
        fail("shared-memory %s out of bounds: '%s'[%td] (byte %td, %zu bytes) of %zu elements (%zu bytes)",
             how == ACC_READ        ? "read"
                 : how == ACC_WRITE ? "write"
                                    : "atomic",
             r->name, off / (ptrdiff_t)n, off, n, r->bytes / n, r->bytes);
    launch_state *L = cur_launch;
    if (!L->racecheck) return;
    sim_thread *t = (sim_thread *)cur_thread;
    block *b = t->blk;
    if (how == ACC_ATOMIC) {
        for (size_t i = 0; i < n; i++) {
            shadow &s = L->sh[r->arena_off + (size_t)off + i];
            if (s.w_ep < b->first_epoch && s.a_ep < b->first_epoch)
                fail("shared-memory atomic on '%s'[%td] (byte %td), which no thread of this block has written "
                     "(uninitialized)",
                     r->name, off / (ptrdiff_t)n, off);
            s.a_ep = b->epoch;
        }
        return;
    }
    uint32_t ep = b->epoch, wep = b->wep[t->warp];
    int me = t->linear;
    auto ordered = [&](int other, uint32_t other_wep) { // same warp, a collective between
        return other >= 0 && b->th[other].warp == t->warp && other_wep != wep;
    };
    for (size_t i = 0; i < n; i++) {
        shadow &s = L->sh[r->arena_off + (size_t)off + i];
        if (s.w_ep == ep && s.w_tid != me && !ordered(s.w_tid, s.w_wep)) report_race(r, off, n, how, s.w_tid, true);
        if (how == ACC_READ && s.w_ep < b->first_epoch && s.a_ep < b->first_epoch)
            fail(
                "shared-memory read of '%s'[%td] (byte %td), which no thread of this block has written (uninitialized)",
                r->name, off / (ptrdiff_t)n, off);
        if (how == ACC_READ) {
            if (s.r_ep != ep) {
                s.r_ep = ep;
                s.r_tid = me;
                s.r_wep = wep;
            } else if (s.r_tid != me) {
                s.r_tid = -1;
                s.r_wep = wep;
            }
        } else {
            if (s.r_ep == ep && s.r_tid != me && !(s.r_tid >= 0 && ordered(s.r_tid, s.r_wep)))
                report_race(r, off, n, how, s.r_tid, false);
            s.w_ep = ep;
            s.w_tid = me;
            s.w_wep = wep;
        }
    }
}

// ---- the grid ----
static unsigned env_uint(const char *name, unsigned dflt) {
    const char *v = getenv(name);
    return v && *v ? (unsigned)strtoul(v, NULL, 0) : dflt;
}

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void release_stack(sim_thread *t) {
    t->stack.abandoned = t->state != T_DONE;
    pool.put(t->stack);
    t->has_stack = false;
#if defined(KN_SIM_TSAN)
    if (t->tsan_fiber) __tsan_destroy_fiber(t->tsan_fiber);
    t->tsan_fiber = NULL;
#endif
}

static void run_block(launch_state *L, block *b, const std::vector<int> &warp_order) {
    b->done = b->n_bar = 0;
    b->epoch++; // racecheck epochs run on across blocks, so old shadow entries never match
    b->first_epoch = b->epoch;
    for (auto &g : b->wg) g.clear();
    for (auto &w : b->wep) w = 0;
    for (int i = 0; i < b->n; i++) {
        sim_thread &t = b->th[i];
        t.bid = b->bid;
        t.state = T_NEW;
        t.has_stack = false;
    }
    // fresh shared memory: poisoned (0xff bytes, NaN as float) so reads before writes stand out
    if (L->smem_dyn) memset(L->dyn.base, 0xff, L->smem_dyn);
    for (auto &r : L->regions) memset(r.base, 0xff, r.bytes);
    for (;;) {
        bool progress = false;
        for (int w : warp_order)
            for (int i = w * 32; i < b->n && i < w * 32 + 32; i++) {
                sim_thread &t = b->th[i];
                if (t.state != T_NEW && t.state != T_READY) continue;
                resume(L, &t);
                progress = true;
                if (t.state == T_DONE && t.has_stack) { release_stack(&t); }
                if (L->failed) goto out;
            }
        if (b->done == b->n) break;
        if (!progress) { // everyone waits: say for what
            sim_thread *t = NULL;
            for (auto &o : b->th)
                if (o.state == T_WAIT_WARP) {
                    t = &o;
                    break;
                }
            char buf[512];
            if (t) {
                // a lane waiting in one collective while another collective of its warp names it:
                // the lanes disagree on the mask or the operation
                const wgroup *ga = NULL, *gb = NULL;
                int lane_x = -1;
                for (auto &ws : b->wg)
                    for (auto &x : ws)
                        for (auto &y : ws)
                            if (&x != &y && !ga)
                                for (int l = 0; l < 32; l++)
                                    if ((x.arrived >> l & 1) && (y.mask >> l & 1) && !(y.arrived >> l & 1)) {
                                        ga = &x;
                                        gb = &y;
                                        lane_x = l;
                                        break;
                                    }
                if (ga) {
                    t = &b->th[t->warp * 32 + lane_x];
                    for (auto &o : b->th)
                        if (o.state == T_WAIT_WARP && o.lane == lane_x && o.w_mask == ga->mask &&
                            o.w_kind == ga->kind) {
                            t = &o;
                            break;
                        }
                    snprintf(buf, sizeof buf,
                             "inconsistent warp masks: lane %d waits in %s with mask 0x%08x while lanes 0x%08x wait "
                             "for it in %s with mask 0x%08x",
                             lane_x, kind_names[ga->kind], ga->mask, gb->arrived, kind_names[gb->kind], gb->mask);
                } else {
                    unsigned missing = 0;
                    const char *where = "has exited";
                    for (int l = 0; l < 32; l++) {
                        if (!(t->w_mask >> l & 1)) continue;
                        sim_thread &o = b->th[t->warp * 32 + l];
                        if (o.state == T_WAIT_WARP) continue;
                        missing |= 1u << l;
                        if (o.state == T_WAIT_BAR) where = "waits at a __syncthreads";
                    }
                    snprintf(buf, sizeof buf,
                             "%s with mask 0x%08x never completes: lanes 0x%08x of the mask do not arrive (one %s)",
                             kind_names[t->w_kind], t->w_mask, missing, where);
                }
            } else {
                for (auto &o : b->th)
                    if (o.state == T_WAIT_BAR) {
                        t = &o;
                        break;
                    }
                snprintf(buf, sizeof buf,
                         "__syncthreads at %s:%d is reached by %d of %d threads; the rest exited or wait elsewhere",
                         t ? t->bar_file : "?", t ? t->bar_line : 0, b->n_bar, b->n);
            }
            if (!t) t = &b->th[0];
            char head[512];
            snprintf(head, sizeof head, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u): ", L->name, b->bid.x, b->bid.y,
                     b->bid.z, t->tid.x, t->tid.y, t->tid.z);
            L->msg = std::string(head) + "deadlock: " + buf;
            L->failed = true;
            goto out;
        }
    }
out:
    for (auto &t : b->th)
        if (t.has_stack) release_stack(&t); // abandoned fibers: stacks reused
}

cudaError_t run_grid(const char *name, const void *fn, dim3 grid, dim3 bd, size_t smem, cudaStream_t stream,
                     thread_entry entry, void *args, const void *const *ptr_args, int n_ptr_args) {
    char msg[1024];
    if (cur_launch) {
        kn_sim_set_launch_error(cudaErrorInvalidConfiguration,
                                "a kernel launched from inside a kernel (dynamic parallelism is not supported)");
        return cudaErrorInvalidConfiguration;
    }
    uint64_t nthreads = (uint64_t)bd.x * bd.y * bd.z;
    if (!grid.x || !grid.y || !grid.z || !nthreads || nthreads > 1024 || bd.x > 1024 || bd.y > 1024 || bd.z > 64 ||
        grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        snprintf(msg, sizeof msg, "kernel %s: invalid configuration: grid (%u,%u,%u), block (%u,%u,%u)", name, grid.x,
                 grid.y, grid.z, bd.x, bd.y, bd.z);
        kn_sim_set_launch_error(cudaErrorInvalidConfiguration, msg);
        return cudaErrorInvalidConfiguration;
    }
    size_t dyn_max = (size_t)kn_sim_max_dynamic_smem(fn);
    if (smem > dyn_max) {
        snprintf(msg, sizeof msg,
                 "kernel %s: %zu bytes of dynamic shared memory asked, %zu allowed (cudaFuncSetAttribute raises it)",
                 name, smem, dyn_max);
        kn_sim_set_launch_error(cudaErrorInvalidValue, msg);
        return cudaErrorInvalidValue;
    }
    for (int i = 0; i < n_ptr_args; i++) {
        const void *base;
        size_t bytes;
        if (ptr_args[i] && !kn_sim_device_accessible(ptr_args[i], &base, &bytes)) {
            snprintf(msg, sizeof msg,
                     "kernel %s: pointer argument %p is not device memory (pageable host memory or freed): "
                     "the kernel would fault on a GPU",
                     name, ptr_args[i]);
            kn_sim_set_launch_error(cudaErrorIllegalAddress, msg);
            return cudaErrorIllegalAddress;
        }
    }
    // the launch's place in the stream order (KILN_SIM_STREAMCHECK); the message is already set
    cudaError_t ord = kn_sim_stream_launch(stream, ptr_args, n_ptr_args, name);
    if (ord != cudaSuccess) return ord;
    launch_state L;
    L.name = name;
    L.grid = grid;
    L.bdim = bd;
    L.smem_dyn = smem;
    L.smem_static = 0;
    L.entry = entry;
    L.args = args;
    L.failed = false;
    L.seed = env_uint("KILN_SIM_SEED", 1);
    L.racecheck = env_uint("KILN_SIM_RACECHECK", 0) != 0;
    L.arena.assign(SMEM_TOTAL_MAX + smem + 64, 0xff);
    L.arena_used = (smem + 15) & ~(size_t)15;
    L.dyn = region{L.arena.data(), smem, "extern __shared__", 0};
    if (L.racecheck) L.sh.assign(L.arena_used, shadow{}); // grown as static arrays are declared
    block b;
    b.epoch = 0;
    b.n = (int)nthreads;
    b.th.resize(nthreads);
    int nwarps = (b.n + 31) / 32;
    b.wg.resize(nwarps);
    b.wep.resize(nwarps);
    for (int i = 0; i < b.n; i++) {
        sim_thread &t = b.th[i];
        t.tid = uint3{(unsigned)i % bd.x, (unsigned)i / bd.x % bd.y, (unsigned)i / (bd.x * bd.y)};
        t.bdim = bd;
        t.gdim = grid;
        t.linear = i;
        t.lane = i & 31;
        t.warp = i >> 5;
        t.blk = &b;
    }
    // blocks in a shuffled order (Fisher-Yates over the linear block index, seeded), warps of each
    // block started in a shuffled order too: code that depends on either is wrong on a GPU
    uint64_t nblocks = (uint64_t)grid.x * grid.y * grid.z;
    std::vector<uint32_t> order(nblocks);
    for (uint64_t i = 0; i < nblocks; i++) order[i] = (uint32_t)i;
    uint64_t rs = mix(L.seed * 0x9e3779b97f4a7c15ull + nblocks);
    if (L.seed)
        for (uint64_t i = nblocks - 1; i > 0; i--) {
            rs = mix(rs + i);
            uint64_t j = rs % (i + 1);
            std::swap(order[i], order[j]);
        }
    std::vector<int> warp_order(nwarps);
    for (int w = 0; w < nwarps; w++) warp_order[w] = w;
#if defined(KN_SIM_TSAN)
    L.tsan_sched = __tsan_get_current_fiber();
    for (auto &t : b.th) t.tsan_fiber = NULL;
#endif
    launch_state *saved = cur_launch;
    cur_launch = &L;
    for (uint64_t k = 0; k < nblocks && !L.failed; k++) {
        uint32_t lin = order[k];
        b.bid = uint3{lin % grid.x, lin / grid.x % grid.y, lin / (grid.x * grid.y)};
        if (L.seed && nwarps > 1)
            for (int w = nwarps - 1; w > 0; w--) {
                rs = mix(rs + (uint64_t)w);
                std::swap(warp_order[w], warp_order[rs % (uint64_t)(w + 1)]);
            }
        run_block(&L, &b, warp_order);
    }
    cur_launch = saved;
    if (L.failed) {
        L.msg += " [KILN_SIM_SEED=" + std::to_string(L.seed) + "]";
        kn_sim_set_launch_error(cudaErrorLaunchFailure, L.msg.c_str());
        return cudaErrorLaunchFailure;
    }
    return cudaSuccess;
}

} // namespace kn_sim

unsigned __activemask(void) { return kn_sim::activemask_impl(); }
long long clock64(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}
