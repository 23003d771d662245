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

/* exp(x): 2^n p(r), r = x - n ln2 in [-ln2/2, ln2/2], Cephes' expf polynomial (relative error ~2e-7); written
   without library calls so that the compiler vectorizes the loops around it. x is clamped to [-87, 88]:
   the sigmoid below saturates there anyway. */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, 4);
    return p * scale;
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
            if (h_bf16) {
                uint16_t *hi = (uint16_t *)h + i * h_stride;
                for (long j = 0; j < H; j++) hi[j] = f32_to_bf16(2.0f * si[j] - 1.0f);
            } else {
                float *hi = (float *)h + i * h_stride;
                for (long j = 0; j < H; j++) hi[j] = 2.0f * si[j] - 1.0f;
            }
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
