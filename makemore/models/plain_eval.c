/* The exact evaluation of one plain tanh layer (the lecture's MLP) on the CPU, around the output product that
   torch (MKL) does: plain_eval.py's docstring gives the math. Built and loaded by plain_eval.py (ctypes);
   threads through OpenMP, the runtime torch itself loaded. */
#include <stdint.h>
#include <math.h>

#include "../native_math.h" /* exp_approx */

/* s = sigmoid(bias + sum over positions p of T[p][x[i, p]]) for each row i of x (n x B): the first layer's
   product as B rows of per-position tables (T: B x V x H), its sigmoid in the same pass. Returns how many
   rows held an index outside [0, V) (those rows are left unwritten). */
long plain_hidden(const int64_t *restrict x, long n, long B, long V, const float *restrict T,
                  const float *restrict bias, long H, float *restrict s) {
    long bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad)
    for (long i = 0; i < n; i++) {
        const int64_t *xi = x + i * B;
        int ok = 1;
        for (long p = 0; p < B; p++) ok &= xi[p] >= 0 && xi[p] < V;
        if (!ok) {
            bad++;
            continue;
        }
        float *restrict si = s + i * H;
        for (long j = 0; j < H; j++) si[j] = bias[j];
        for (long p = 0; p < B; p++) {
            const float *restrict t = T + (p * V + xi[p]) * H;
            for (long j = 0; j < H; j++) si[j] += t[j];
        }
        for (long j = 0; j < H; j++) si[j] = 1.0f / (1.0f + exp_approx(-si[j]));
    }
    return bad;
}

/* Row r's cross-entropy against target t, max + log(sum exp(r - max)) - r[t], over its first V of W columns;
   W a constant at the call (the compiler then unrolls the loops into whole vectors). */
static inline float row_nll(const float *restrict r, long V, const long W, long t) {
    float m = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : m)
    for (long j = 0; j < W; j++) m = j < V && r[j] > m ? r[j] : m;
#pragma omp simd reduction(+ : sum)
    for (long j = 0; j < W; j++) sum += j < V ? exp_approx(r[j] - m) : 0.0f;
    return m + logf(sum) - r[t];
}

/* Each row's cross-entropy over the first V of `stride` columns into loss[i] (float, as torch's
   cross_entropy); returns their sum in double, added in row order (the same bits on any number of threads),
   or -1 if a target lies outside [0, V). */
double plain_nll_sum(const float *restrict logits, long n, long V, long stride, const int64_t *restrict y,
                     float *restrict loss) {
    long bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad)
    for (long i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= V) {
            bad++;
            continue;
        }
        const float *r = logits + i * stride;
        loss[i] = stride == 32 ? row_nll(r, V, 32, y[i]) : row_nll(r, V, stride, y[i]);
    }
    if (bad) return -1.0;
    double total = 0.0;
    for (long i = 0; i < n; i++) total += loss[i];
    return total;
}
