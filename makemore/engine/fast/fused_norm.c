/* Layer norm and tanh of the fast step's hidden layer, fused: one pass over the rows forward and one backward,
   instead of torch's conversion, native_layer_norm, sigmoid and 2s - 1 (forward) and conversion,
   sigmoid_backward, native_layer_norm_backward, gain and shift updates and conversion (backward).
   Built and loaded by fused.py (ctypes); threads through OpenMP, the runtime torch itself loaded.

   The math is step.py's (its docstring): y = xhat * gain + shift with xhat = (x - mean) * rstd per row,
   s = sigmoid(2y), h = tanh(y) = 2s - 1; backward t = dh * s (1 - s) (= dL/dy / 4),
   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) with dxhat = t * gain; gain and shift get
   alpha * sum over rows of t * xhat and t. bf16 operands are the upper halves of fp32 (read exactly);
   bf16 results round to nearest even, as torch's conversions do. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <omp.h>

#include "../../native_math.h" /* exp_approx */

static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* row i of h = 2s - 1 = tanh(y), written as bf16 or fp32 at row stride h_stride (the buffer the layer above reads) */
static inline void store_h(void *h, int h_bf16, long h_stride, long i, const float *si, long H) {
    if (h_bf16) {
        uint16_t *hi = (uint16_t *)h + i * h_stride;
        for (long j = 0; j < H; j++) hi[j] = f32_to_bf16(2.0f * si[j] - 1.0f);
    } else {
        float *hi = (float *)h + i * h_stride;
        for (long j = 0; j < H; j++) hi[j] = 2.0f * si[j] - 1.0f;
    }
}

static inline void load_row(float *dst, const void *src, int bf16, long i, long H) {
    if (bf16) {
        const uint16_t *x = (const uint16_t *)src + i * H;
        for (long j = 0; j < H; j++) dst[j] = bf16_to_f32(x[j]);
    } else {
        memcpy(dst, (const float *)src + i * H, H * sizeof(float));
    }
}

/* x: N rows of H (bf16 if x_bf16), contiguous; gain_shift: gain then shift (H each).
   Writes s (N x H, fp32), h = 2s - 1 (bf16 if h_bf16; row stride h_stride), mean and rstd (N). */
void fused_norm_tanh_forward(const void *x, int x_bf16, const float *gain_shift, float eps, float *s, void *h,
                             int h_bf16, long h_stride, float *mean, float *rstd, long N, long H) {
    const float *gain = gain_shift, *shift = gain_shift + H;
#pragma omp parallel
    {
        float *xr = malloc(H * sizeof(float));
#pragma omp for schedule(static)
        for (long i = 0; i < N; i++) {
            load_row(xr, x, x_bf16, i, H);
            float sum = 0.f, var = 0.f;
#pragma omp simd reduction(+ : sum)
            for (long j = 0; j < H; j++) sum += xr[j];
            float mu = sum / H;
#pragma omp simd reduction(+ : var)
            for (long j = 0; j < H; j++) var += (xr[j] - mu) * (xr[j] - mu);
            float rs = 1.0f / sqrtf(var / H + eps);
            mean[i] = mu;
            rstd[i] = rs;
            float *si = s + i * H;
#pragma omp simd
            for (long j = 0; j < H; j++) {
                float y2 = 2.0f * ((xr[j] - mu) * rs * gain[j] + shift[j]);
                si[j] = 1.0f / (1.0f + exp_approx(-y2));
            }
            store_h(h, h_bf16, h_stride, i, si, H);
        }
        free(xr);
    }
}

/* dh: N x H (bf16 if dh_bf16), contiguous; s, mean, rstd: the forward's; x: its input; gain: H.
   Writes dx (N x H, bf16 if dx_bf16, contiguous) and adds alpha * (the gradients of gain and shift) to
   gain_out and shift_out (H each) after every row has read gain. The column sums are summed per thread, then
   in thread order: the same threads give the same bits. */
void fused_norm_tanh_backward(const void *dh, int dh_bf16, const float *s, const void *x, int x_bf16,
                              const float *mean, const float *rstd, const float *gain, float alpha, float *gain_out,
                              float *shift_out, void *dx, int dx_bf16, long N, long H) {
    int T = omp_get_max_threads();
    float *partial = calloc((size_t)T * 2 * H, sizeof(float)); /* per thread: sum t * xhat, sum t */
#pragma omp parallel num_threads(T)
    {
        float *t = malloc(2 * H * sizeof(float)), *xhat = t + H;
        float *dgain = partial + (size_t)omp_get_thread_num() * 2 * H, *dshift = dgain + H;
#pragma omp for schedule(static)
        for (long i = 0; i < N; i++) {
            load_row(t, dh, dh_bf16, i, H);
            load_row(xhat, x, x_bf16, i, H);
            const float *si = s + i * H;
            float mu = mean[i], rs = rstd[i], a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
            for (long j = 0; j < H; j++) {
                t[j] *= si[j] * (1.0f - si[j]);
                xhat[j] = (xhat[j] - mu) * rs;
                float d = t[j] * gain[j];
                a += d;
                b += d * xhat[j];
                dgain[j] += t[j] * xhat[j];
                dshift[j] += t[j];
            }
            a /= H;
            b /= H;
            if (dx_bf16) {
                uint16_t *o = (uint16_t *)dx + i * H;
                for (long j = 0; j < H; j++) o[j] = f32_to_bf16(rs * (t[j] * gain[j] - a - xhat[j] * b));
            } else {
                float *o = (float *)dx + i * H;
#pragma omp simd
                for (long j = 0; j < H; j++) o[j] = rs * (t[j] * gain[j] - a - xhat[j] * b);
            }
        }
        free(t);
    }
    for (long j = 0; j < H; j++) {
        float g = 0.f, b = 0.f;
        for (int k = 0; k < T; k++) {
            g += partial[(size_t)k * 2 * H + j];
            b += partial[(size_t)k * 2 * H + H + j];
        }
        gain_out[j] += alpha * g;
        shift_out[j] += alpha * b;
    }
    free(partial);
}

/* Batch norm and tanh: the statistics are each column's over the N rows (the batch), so each pass is split by rows
   among the threads, their column sums (in double: var = E[x^2] - E[x]^2 keeps its digits) combined in thread
   order: the same threads give the same bits. */

/* x: N rows of H (bf16 if x_bf16), contiguous; gain_shift: gain then shift (H each). Writes s (N x H), h = 2s - 1
   (row stride h_stride), mean and rstd (H), and moves running_mean and running_var (H) towards the batch's mean
   and unbiased variance by momentum. */
void fused_batchnorm_tanh_forward(const void *x, int x_bf16, const float *gain_shift, float eps, float momentum,
                                  float *running_mean, float *running_var, float *s, void *h, int h_bf16,
                                  long h_stride, float *mean, float *rstd, long N, long H) {
    const float *gain = gain_shift, *shift = gain_shift + H;
    int T = omp_get_max_threads();
    double *partial = calloc((size_t)T * 2 * H, sizeof(double)); /* per thread: sum x, sum x^2 */
#pragma omp parallel num_threads(T)
    {
        float *xr = malloc(H * sizeof(float));
        double *sum = partial + (size_t)omp_get_thread_num() * 2 * H, *sum2 = sum + H;
#pragma omp for schedule(static)
        for (long i = 0; i < N; i++) {
            load_row(xr, x, x_bf16, i, H);
            for (long j = 0; j < H; j++) {
                sum[j] += xr[j];
                sum2[j] += (double)xr[j] * xr[j];
            }
        }
#pragma omp single
        for (long j = 0; j < H; j++) {
            double a = 0, b = 0;
            for (int k = 0; k < T; k++) {
                a += partial[(size_t)k * 2 * H + j];
                b += partial[(size_t)k * 2 * H + H + j];
            }
            double mu = a / N, var = b / N - mu * mu;
            var = var > 0 ? var : 0;
            mean[j] = (float)mu;
            rstd[j] = (float)(1.0 / sqrt(var + eps));
            running_mean[j] += momentum * ((float)mu - running_mean[j]);
            running_var[j] += momentum * ((float)(var * N / (N > 1 ? N - 1 : 1)) - running_var[j]);
        }
#pragma omp for schedule(static)
        for (long i = 0; i < N; i++) {
            load_row(xr, x, x_bf16, i, H);
            float *si = s + i * H;
#pragma omp simd
            for (long j = 0; j < H; j++) {
                float y2 = 2.0f * ((xr[j] - mean[j]) * rstd[j] * gain[j] + shift[j]);
                si[j] = 1.0f / (1.0f + exp_approx(-y2));
            }
            store_h(h, h_bf16, h_stride, i, si, H);
        }
        free(xr);
    }
    free(partial);
}

/* dh: N x H (bf16 if dh_bf16), contiguous; s, mean, rstd: the forward's; x: its input; gain: H. Writes dx (N x H,
   bf16 if dx_bf16, contiguous; it may be dh itself in fp32) and adds alpha * (the gradients of gain and shift) to
   gain_out and shift_out (H each). With t = dh s (1 - s) (= dL/dy / 4), A = sum t and B = sum t xhat per column:
   dgain = B, dshift = A, dx = rstd gain (t - A / N - xhat B / N). */
void fused_batchnorm_tanh_backward(const void *dh, int dh_bf16, const float *s, const void *x, int x_bf16,
                                   const float *mean, const float *rstd, const float *gain, float alpha,
                                   float *gain_out, float *shift_out, void *dx, int dx_bf16, long N, long H) {
    int T = omp_get_max_threads();
    double *partial = calloc((size_t)T * 2 * H, sizeof(double)); /* per thread: sum t, sum t xhat */
    float *AB = malloc(2 * H * sizeof(float));
#pragma omp parallel num_threads(T)
    {
        float *t = malloc(2 * H * sizeof(float)), *xhat = t + H;
        double *A = partial + (size_t)omp_get_thread_num() * 2 * H, *B = A + H;
#pragma omp for schedule(static)
        for (long i = 0; i < N; i++) {
            load_row(t, dh, dh_bf16, i, H);
            load_row(xhat, x, x_bf16, i, H);
            const float *si = s + i * H;
            for (long j = 0; j < H; j++) {
                float tj = t[j] * si[j] * (1.0f - si[j]);
                A[j] += tj;
                B[j] += (double)tj * ((xhat[j] - mean[j]) * rstd[j]);
            }
        }
#pragma omp single
        for (long j = 0; j < H; j++) {
            double a = 0, b = 0;
            for (int k = 0; k < T; k++) {
                a += partial[(size_t)k * 2 * H + j];
                b += partial[(size_t)k * 2 * H + H + j];
            }
            AB[j] = (float)(a / N);
            AB[H + j] = (float)(b / N);
        }
#pragma omp for schedule(static)
        for (long i = 0; i < N; i++) {
            load_row(t, dh, dh_bf16, i, H);
            load_row(xhat, x, x_bf16, i, H);
            const float *si = s + i * H;
            float *o32 = (float *)dx + i * H;
            uint16_t *o16 = (uint16_t *)dx + i * H;
            for (long j = 0; j < H; j++) {
                float tj = t[j] * si[j] * (1.0f - si[j]);
                float xh = (xhat[j] - mean[j]) * rstd[j];
                float v = rstd[j] * gain[j] * (tj - AB[j] - xh * AB[H + j]);
                if (dx_bf16) o16[j] = f32_to_bf16(v);
                else o32[j] = v;
            }
        }
        free(t);
    }
    for (long j = 0; j < H; j++) { /* after every row has read gain: gain_out may be gain */
        gain_out[j] += alpha * AB[H + j] * N;
        shift_out[j] += alpha * AB[j] * N;
    }
    free(AB);
    free(partial);
}

/* AdamW on the flat buffer in one pass (update.py's closed form, element by element, in its order):
   p *= 1 - lr wd[i] (wd NULL: none; its own pass, so that both loops vectorize); m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
   p -= lr / bc1 * m / (sqrt(v) / sqrt_bc2 + eps). Instead of seven whole-buffer torch calls. */
void fused_adamw(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                 const float *restrict wd, long n, float lr, float b1, float b2, float bc1, float sqrt_bc2,
                 float eps) {
    const float w1 = 1.0f - b1, w2 = 1.0f - b2, step = -lr / bc1;
    if (wd) {
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) p[i] = p[i] + p[i] * wd[i] * -lr;
    }
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] + w1 * (gi - m[i]);
        float vi = v[i] * b2 + gi * gi * w2;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] + step * (mi / (sqrtf(vi) / sqrt_bc2 + eps));
    }
}
